"""A SoftHSM2 token store in a temp directory, for tests of keys held in a PKCS#11 token.

SoftHSM reads its token directory from the file ``$SOFTHSM2_CONF`` names, once, when a process initialises
the module: so every sovkit command using the token runs as its own process with :attr:`SoftHsm.env`.
Missing ``softhsm2-util`` is a test failure, not a skip: CI installs Debian's ``softhsm2`` (tests/run-all.sh).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")  # Debian's softhsm2; sovkit's default module


@dataclass(frozen=True)
class SoftHsm:
    """A private token store: ``env`` points SoftHSM (and sovkit's PIN lookup) at it."""

    root: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    def init_token(self, label: str, pin: str, so_pin: str = "so-pin-5678") -> None:
        """A new token ``label`` with user PIN ``pin`` in the first free slot."""
        util = _util()
        subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
                       check=True, capture_output=True, env={"SOFTHSM2_CONF": str(self.conf), "PATH": "/usr/bin:/bin"},
                       timeout=60)

    @staticmethod
    def uri(token: str, obj: str, query: str = "") -> str:
        """An RFC 7512 key URI, labels percent-encoded."""
        return f"pkcs11:token={quote(token, safe='')};object={quote(obj, safe='')}" + (f"?{query}" if query else "")


def _util() -> str:
    util = shutil.which("softhsm2-util") or ("/usr/bin/softhsm2-util" if Path("/usr/bin/softhsm2-util").exists()
                                            else None)
    if util is None or not MODULE.exists():
        pytest.fail("SoftHSM2 is not installed (softhsm2-util and /usr/lib/softhsm/libsofthsm2.so): "
                    "apt-get install softhsm2 — tests/run-all.sh installs it; these tests must not be skipped")
    return util


def make_softhsm(root: Path) -> SoftHsm:
    """A SoftHSM configuration and empty token directory under ``root``."""
    _util()
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    return SoftHsm(root, conf)
