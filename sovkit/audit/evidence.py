"""The audit's view of evidence other parts of sovkit produce: policy input, bundle, trust roots, the log.

Kept in one module so the audit depends on few contracts: ``sovkit.policy.api``
(input, evaluation, bundle), ``sovkit.attest.log`` and the inventory's trust roots.
"""

from __future__ import annotations

import json
import posixpath
import shutil
from pathlib import Path
from typing import Any

from sovkit.attest.log import HEAD_FILE, LOG_DIRNAME, LOG_FILE, LogEntry, log_dir_for, read_log, verify_log
from sovkit.audit.model import LogCheck, TrustRootKey
from sovkit.errors import SovkitError, VerificationError
from sovkit.inventory.loader import LoadedInventory
from sovkit.policy.api import (
    PolicyDecision,
    PolicyEngine,
    PolicySource,
    evaluate_bundle,
    evaluate_input,
    write_policy_bundle,
)
from sovkit.policy.input import build_input
from sovkit.policy.pack import read_bundle
from sovkit.signing.keyring import KEYRING_RELPATH, Keyring, keyring_path_for
from sovkit.signing.keys import PublicKey
from sovkit.signing.paths import path_problem
from sovkit.state.models import State

ATTESTATIONS_DIR = LOG_DIRNAME
LOG_FILES = (LOG_FILE, HEAD_FILE)


def write_bundle(path: Path, extra: PolicySource) -> str:
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


def copy_keyring(state_dir: Path, root: Path) -> bool:
    """Copy the operator's keyring (rotations, revocations) into the pack, so a regulator can judge each signer by
    the time it signed with nothing but the pack and one pinned key; False when the site never rotated."""
    source = keyring_path_for(log_dir(state_dir))
    if not source.is_file():
        return False
    target = root / KEYRING_RELPATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return True


def read_entries(directory: Path) -> list[LogEntry]:
    """The log's entries in order (parsed, not verified); an absent log is an empty one."""
    return read_log(directory)


def verify_entries(directory: Path, keys: list[PublicKey], keyring: Keyring | None = None
                   ) -> tuple[int, list[VerificationError]]:
    """Verify the whole log (format, keys, signatures, chain, signed head, signing times): count and failures."""
    result = verify_log(directory, keys, keyring)
    return len(result.entries), result.errors


def write_policy_input(path: Path, inv: LoadedInventory, state: State) -> dict[str, Any]:
    """Write the policy input document and return it as read back: the decision is made on exactly these bytes."""
    doc = build_input(inv, state)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    loaded: dict[str, Any] = json.loads(path.read_bytes())
    return loaded


def decide(doc: dict[str, Any], extra: PolicySource, engine: PolicyEngine | None) -> PolicyDecision:
    return evaluate_input(doc, extra, engine)


def redecide(bundle: Path, doc: dict[str, Any]) -> PolicyDecision:
    """The decision the pack's own bundle gives on the pack's own input (offline, embedded engine)."""
    return evaluate_bundle(bundle, doc)


def bundle_modules(bundle: Path) -> dict[str, str]:
    """The Rego modules of a pack's policy bundle, read in memory (never evaluated: safe on an untrusted pack)."""
    return read_bundle(bundle).modules


def copy_trust_roots(inv: LoadedInventory, root: Path, inventory_dir: str) -> list[TrustRootKey]:
    """Copy each trust-root public key beside the inventory copy, at the path the inventory names.

    Only files that load as a public key are copied (nothing else leaves the site
    by way of a key path); the others are listed without a path.
    """
    out = []
    for section in ("publishers", "vendors"):
        for entry in getattr(inv.site.trust_roots, section):
            try:
                key = PublicKey.load(inv.resolve(entry.public_key))
            except SovkitError:
                out.append(TrustRootKey(section=section, name=entry.name))
                continue
            rel = posixpath.join(inventory_dir, posixpath.normpath(entry.public_key))
            if path_problem(rel, refuse_reserved=False):  # a key path the pack cannot hold: listed, not copied
                out.append(TrustRootKey(section=section, name=entry.name, keyid=key.keyid))
                continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(inv.resolve(entry.public_key).read_bytes())
            out.append(TrustRootKey(section=section, name=entry.name, keyid=key.keyid,
                                    path=rel))
    return out


def check_log(directory: Path, keys: list[PublicKey]) -> LogCheck | None:
    """The copied log verified with ``keys``; None when there is no log."""
    if not (directory / LOG_FILE).is_file():
        return None
    count, errors = verify_entries(directory, keys)
    return LogCheck(verified=not errors, keyids=[k.keyid for k in keys], entries=count,
                    problems=[f"{e.message} ({e.step})" if e.step else e.message for e in errors])
