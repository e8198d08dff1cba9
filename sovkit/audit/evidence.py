"""The audit's view of evidence other parts of sovkit produce: the policy bundle and the attestation log.

Kept in one module so the audit depends on exactly two contracts:
``sovkit.policy.api.write_policy_bundle`` and ``sovkit.attest.log``.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

from sovkit.attest.keys import PublicKey
from sovkit.attest.log import HEAD_FILE, LOG_DIRNAME, LOG_FILE, LogEntry, read_log, verify_log
from sovkit.errors import VerificationError
from sovkit.policy import api as policy_api
from sovkit.resources import policies_dir

ATTESTATIONS_DIR = LOG_DIRNAME
LOG_FILES = (LOG_FILE, HEAD_FILE)


def write_bundle(path: Path, extra: Path | None) -> str:
    """Write the OPA bundle (tar.gz) of the policy pack in force; returns its sha256."""
    writer = getattr(policy_api, "write_policy_bundle", None)
    if writer is not None:
        writer(path, extra)
    else:  # until the policy engine's bundle builder lands: the same sources, OPA bundle layout
        _write_source_bundle(path, extra)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_source_bundle(path: Path, extra: Path | None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for root, prefix in ((policies_dir(), ""), (extra, "extra/")):
            if root is None:
                continue
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for f in files:
                data = f.read_bytes()
                info = tarfile.TarInfo(prefix + (f.name if root.is_file() else f.relative_to(root).as_posix()))
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))


def log_dir(state_dir: Path) -> Path:
    return state_dir / LOG_DIRNAME


def copy_log(source: Path, target: Path) -> bool:
    """Copy the log's files (not its lock) into ``target``; False when there is no log to copy."""
    present = [name for name in LOG_FILES if (source / name).is_file()]
    if not present:
        return False
    target.mkdir(parents=True)
    for name in present:
        shutil.copyfile(source / name, target / name)
    return True


def read_entries(directory: Path) -> list[LogEntry]:
    """The log's entries in order (parsed, not verified); an absent log is an empty one."""
    return read_log(directory)


def verify_entries(directory: Path, keys: list[PublicKey]) -> tuple[int, list[VerificationError]]:
    """Verify the whole log (format, keys, signatures, chain, signed head): entry count and each failure."""
    result = verify_log(directory, keys)
    return len(result.entries), result.errors
