"""Finding 8 (bundle part): an import that runs out of space leaves the store exactly as it was.

Before the fix an import that hit ENOSPC committed the artifacts, left the store index emptied or
torn, and reported an internal error. These tests run real imports on a small tmpfs (root only;
unmounted afterwards): once with too little space from the start, and once with the file system
filled (by a test hook, with real bytes) just before the index is rewritten, the last step of the
commit, after the new files were put in place.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sovkit.bundle.importer import INDEX, WORK, import_bundle
from sovkit.errors import BundleError
from tests.bundlekit import KEYS, demo_copy, make_bundle, snapshot
from tests.conftest import run_cli

WEIGHTS = "models/demo-ko-chat/1.0/model.safetensors"


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test only."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _bundles(tmp: Path) -> tuple[Path, Path]:
    """Bundle A (the demo) and bundle B (the demo with new model weights, 64 KiB)."""
    a_inv = demo_copy(tmp / "a")
    make_bundle(a_inv, tmp / "A")
    b_inv = demo_copy(tmp / "b")
    new = os.urandom(64 * 1024)
    (b_inv.parent / "artifacts" / WEIGHTS).write_bytes(new)
    data = yaml.safe_load(b_inv.read_text())
    files = data["models"][0]["files"]
    f = next(x for x in files if x["path"] == WEIGHTS)
    f.update(sha256=hashlib.sha256(new).hexdigest(), size=len(new))
    b_inv.write_text(yaml.safe_dump(data, sort_keys=False))
    make_bundle(b_inv, tmp / "B")
    return tmp / "A", tmp / "B"


def _fill(mnt: Path) -> None:
    """Write real bytes until the file system is full (ENOSPC)."""
    with open(mnt / "filler", "ab", buffering=0) as fh:
        chunk = b"\0" * 4096
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == 28


def _store_with_a(tmp_path: Path, fs: Path) -> tuple[Path, Path, dict[str, str]]:
    a, b = _bundles(tmp_path)
    store = fs / "store"
    import_bundle(a, store, KEYS)
    assert (store / INDEX).stat().st_size > 0
    return b, store, snapshot(store)


def _assert_unchanged(store: Path, before: dict[str, str], err: BundleError) -> None:
    assert snapshot(store) == before
    assert not (store / WORK).exists()
    assert err.message.startswith(f"no space left on {store}: the import needs ")
    assert "nothing was imported" in err.message


def test_too_little_space_from_the_start(tmp_path: Path, fs: Path) -> None:
    a, _ = _bundles(tmp_path)
    store = fs / "store"
    store.mkdir()
    (store / "keep.bin").write_bytes(b"site data")
    free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
    (fs / "filler").write_bytes(b"\0" * (free - 128 * 1024))  # the bundle carries ~290 KiB
    before = snapshot(store)
    with pytest.raises(BundleError) as exc:
        import_bundle(a, store, KEYS)
    _assert_unchanged(store, before, exc.value)


def test_disk_fills_before_the_index_is_rewritten(tmp_path: Path, fs: Path) -> None:
    b, store, before = _store_with_a(tmp_path, fs)

    def fault(stage: str, name: str) -> None:
        if stage == "index":
            _fill(fs)

    with pytest.raises(BundleError) as exc:
        import_bundle(b, store, KEYS, fault=fault)
    _assert_unchanged(store, before, exc.value)
    (fs / "filler").unlink()
    import_bundle(b, store, KEYS)  # with space back, the same import goes through
    assert (store / WEIGHTS).read_bytes() != b""


def test_cli_says_no_space_without_internal_error(tmp_path: Path, fs: Path) -> None:
    from tests.bundlekit import SIGNER

    a, _ = _bundles(tmp_path)
    free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
    (fs / "filler").write_bytes(b"\0" * (free - 64 * 1024))
    pub = tmp_path / "b.pub"
    pub.write_bytes(SIGNER.public_key.pem())
    r = run_cli("bundle", "import", a, "--store", fs / "store", "--key", pub)
    assert r.code == 1
    assert "internal error" not in r.text
    assert f"no space left on {fs / 'store'}" in r.err
    assert not (fs / "store").exists()

