"""The operator signing key as the CLI finds it, and attesting policy decisions with it.

One place for the key lookup (``--key``, ``$SOVKIT_SIGNING_KEY``, then
``<state dir>/keys/operator.key``) so plan, check, apply and audit agree.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sovkit import api
from sovkit.cli.output import err_console
from sovkit.errors import SigningKeyError
from sovkit.policy.api import PolicyDecision
from sovkit.signing.keys import PASSPHRASE_ENV, LocalSigner

KeyOpt = Annotated[Path | None, typer.Option("--key", help="Operator signing key (default: $SOVKIT_SIGNING_KEY or "
                                                           "<state-dir>/keys/operator.key).")]


def signing_key_path(ws: api.Workspace, key: Path | None) -> Path:
    if key is not None:
        return key
    env = os.environ.get("SOVKIT_SIGNING_KEY")
    return Path(env) if env else ws.directory / "keys" / "operator.key"


def load_signer(path: Path) -> LocalSigner:
    if not path.exists():
        raise SigningKeyError(f"signing key {path} not found: plans and attestations are signed with it",
                              f"create one with `sovkit keys generate -o {path}` or pass --key")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encrypted = _is_encrypted(path)
    if passphrase is None and sys.stdin.isatty() and encrypted:
        passphrase = typer.prompt(f"Passphrase for {path}", hide_input=True)
    if not encrypted:
        # SOVKIT_KEY_PASSPHRASE unlocks encrypted keys; an unencrypted key needs none (the crypto library would
        # refuse the pair, and the message would wrongly say the key is encrypted)
        passphrase = None
    return LocalSigner.load(path, passphrase.encode() if passphrase else None)


def _is_encrypted(path: Path) -> bool:
    """PKCS#8 ("BEGIN ENCRYPTED PRIVATE KEY") or traditional ("Proc-Type: 4,ENCRYPTED") encrypted PEM."""
    try:
        with path.open("rb") as fh:
            return b"ENCRYPTED" in fh.read(128)
    except OSError:
        return True  # let LocalSigner.load report the read error


def attest_decision(ws: api.Workspace, decision: PolicyDecision, key: Path | None, policies: Path | None,
                    operation: str, quiet: bool, required: bool = False) -> LocalSigner | None:
    """Record the decision in the attestation log when an operator key exists (or is required); else warn."""
    path = signing_key_path(ws, key)
    if not (required or key is not None or path.exists()):
        if not quiet:
            err_console.print(f"[yellow]warning:[/] no operator key at {escape(str(path))}: the policy decision "
                              "was not attested (create one with `sovkit keys generate`)")
        return None
    signer = load_signer(path)
    api.record_policy_decision(ws, decision, signer, operation=operation, extra_policies=policies)
    return signer
