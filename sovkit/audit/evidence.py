"""The audit's view of evidence other parts of sovkit produce: the policy bundle and the attestation log.

Kept in one module so the audit depends on exactly two contracts:
``sovkit.policy.api.write_policy_bundle`` and ``sovkit.attest.log``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sovkit.attest.keys import PublicKey
from sovkit.attest.log import HEAD_FILE, LOG_DIRNAME, LOG_FILE, LogEntry, log_dir_for, read_log, verify_log
from sovkit.errors import VerificationError
from sovkit.policy.api import write_policy_bundle

ATTESTATIONS_DIR = LOG_DIRNAME
LOG_FILES = (LOG_FILE, HEAD_FILE)


def write_bundle(path: Path, extra: Path | None) -> str:
    """Write the OPA bundle (tar.gz) of the policy pack in force; returns the pack digest."""
    return write_policy_bundle(path, extra)


def log_dir(state_dir: Path) -> Path:
    return log_dir_for(state_dir)


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
