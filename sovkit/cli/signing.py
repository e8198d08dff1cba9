"""The operator signing key as the CLI finds it, and attesting policy decisions with it.

One place for the key lookup (``--key``, ``$SOVKIT_SIGNING_KEY``, then
``<state dir>/keys/operator.key``, see ``Workspace.signing_key_path``) so plan, check, apply, refresh,
audit and bundle agree. A reference starting with ``pkcs11:`` is a key in a token (RFC 7512 URI), loaded
through ``api.load_signer_ref``. Loading lives here because an encrypted key may need a passphrase prompt
and a token a PIN prompt (only on a terminal; never a command-line option).
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

KeyOpt = Annotated[str | None, typer.Option("--key", help="Operator signing key: a private key file or a PKCS#11 "
                                                          "URI pkcs11:token=T;object=O (default: "
                                                          "$SOVKIT_SIGNING_KEY or <state-dir>/keys/operator.key).")]
SIGNING_KEY_ENV = "SOVKIT_SIGNING_KEY"
KeyRef = Path | str  # a key file, or a pkcs11: URI (kept a str: a Path would fold its '//')


def key_ref(value: str | None) -> KeyRef | None:
    """``--key`` as given (a URI stays a string), else ``$SOVKIT_SIGNING_KEY``; None when neither is set."""
    value = value if value is not None else (os.environ.get(SIGNING_KEY_ENV) or None)
    if value is None:
        return None
    return value if api.is_key_uri(ref=value) else Path(value)


def signing_key_path(ws: api.Workspace, key: str | None) -> KeyRef:
    ref = key_ref(key)
    return ref if isinstance(ref, str) else ws.signing_key_path(ref)


def pin_prompt(what: str) -> str | None:
    """Ask for a token PIN on a terminal; elsewhere there is no one to ask (the library says what to set)."""
    if not sys.stdin.isatty():
        return None
    value: str = typer.prompt(what, hide_input=True, default="", show_default=False)
    return value


def load_signer(ref: KeyRef) -> api.Signer:
    """The signer ``ref`` names: a token key (PIN: pin-source, $SOVKIT_PKCS11_PIN, prompt) or a key file."""
    if isinstance(ref, str):
        return api.load_signer_ref(ref=ref, pin_prompt=pin_prompt)
    path = ref
    if not path.exists():
        raise SigningKeyError(f"signing key {path} not found: plans and attestations are signed with it",
                              f"create one with `sovkit keys generate -o {path}` or pass --key")
    passphrase = os.environ.get(api.PASSPHRASE_ENV)
    encrypted = _is_encrypted(path)
    if passphrase is None and sys.stdin.isatty() and encrypted:
        passphrase = typer.prompt(f"Passphrase for {path}", hide_input=True)
    if not encrypted:
        # SOVKIT_KEY_PASSPHRASE unlocks encrypted keys; an unencrypted key needs none (the crypto library would
        # refuse the pair, and the message would wrongly say the key is encrypted)
        passphrase = None
    return api.load_signer_ref(ref=path, passphrase=passphrase.encode() if passphrase else None)


def _is_encrypted(path: Path) -> bool:
    """PKCS#8 ("BEGIN ENCRYPTED PRIVATE KEY") or traditional ("Proc-Type: 4,ENCRYPTED") encrypted PEM."""
    try:
        with path.open("rb") as fh:
            return b"ENCRYPTED" in fh.read(128)
    except OSError:
        return True  # let load_signer_file report the read error


def wire_signer(ws: api.Workspace, key: str | None) -> api.Workspace:
    """Put the operator key into the workspace (required: a missing key is an error)."""
    ws.signer = load_signer(signing_key_path(ws, key))
    return ws


def wire_optional_signer(ws: api.Workspace, key: str | None, what: str, quiet: bool,
                         required: bool = False) -> bool:
    """Wire the operator key when one exists (or is required); else warn that ``what`` is not attested."""
    path = signing_key_path(ws, key)
    if not (required or key is not None or isinstance(path, str) or path.exists()):
        if not quiet:
            err_console.print(f"[yellow]warning:[/] no operator key at {escape(str(path))}: {what} "
                              "was not attested (create one with `sovkit keys generate`)")
        return False
    ws.signer = load_signer(path)
    return True


def attest_decision(ws: api.Workspace, decision: api.PolicyDecision, key: str | None, operation: str,
                    quiet: bool, required: bool = False) -> bool:
    """Record the decision in the attestation log when an operator key exists (or is required); else warn."""
    if not wire_optional_signer(ws, key, "the policy decision", quiet, required):
        return False
    api.record_policy_decision(workspace=ws, decision=decision, operation=operation)
    return True
