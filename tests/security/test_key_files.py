"""Low finding: key files get fixed modes whatever the umask (before: the .pub was 0666 under umask 000)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovkit.signing.keys import LocalSigner, write_keypair


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("passphrase", [None, b"pw"])
def test_keypair_modes_under_umask_000(tmp_path: Path, umask_000: None, passphrase: bytes | None) -> None:
    key = tmp_path / "k" / "operator.key"
    pub = write_keypair(LocalSigner.generate(), key, passphrase)
    assert _mode(key) == 0o600
    assert _mode(pub) == 0o644


def test_cli_keys_generate_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    from tests.conftest import run_cli

    out = tmp_path / "op.key"
    r = run_cli("keys", "generate", "-o", out, "--insecure-no-passphrase")
    assert r.code == 0, r.text
    assert _mode(out) == 0o600
    assert _mode(tmp_path / "op.key.pub") == 0o644
