"""`sovkit keys rotate|revoke`: hand over to a new operator key, revoke a key, both recorded in the keyring and
the attestation log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sovkit import api
from sovkit.cli.attest_cmds import keys_app
from sovkit.cli.options import JsonOpt
from sovkit.cli.output import console, emit_result
from sovkit.cli.signing import load_signer

LogOpt = Annotated[Path, typer.Option("--log", help="Attestation log directory, state directory, or inventory "
                                                    "whose log records the change.")]
KeyringOpt = Annotated[Path | None, typer.Option("--keyring", help="The keyring file (default: "
                                                                    "<state dir>/keys/keyring.json).")]
StateDirOpt = Annotated[Path | None, typer.Option("--state-dir", help="State directory when --log is an "
                                                                      "inventory.")]


def _public(path: Path) -> api.PublicKey:
    """A public key file, or the public half of a private key file."""
    try:
        head = path.read_bytes()[:64]
    except OSError:
        head = b""
    return load_signer(path).public_key if b"PRIVATE KEY" in head else api.load_public_key(path=path)


def _show(change: api.KeyChange, what: str, json_out: bool) -> None:
    if json_out:
        emit_result(change)
        return
    console.print(f"{what}: keyring {escape(change.keyring)} version {change.version} (signed by "
                  f"{change.signed_by[:16]}…), recorded as log entry {change.log_entry} at {change.at}")


@keys_app.command("rotate")
def rotate(
    key: Annotated[Path, typer.Option("--key", help="The current (old) operator private key.", show_default=False)],
    new: Annotated[Path, typer.Option("--new", help="The new key: its private key or its .pub.",
                                      show_default=False)],
    log: LogOpt = Path(),
    keyring: KeyringOpt = None,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Hand over to a new key: the old key signs a keyring version ending its window now and starting the new
    key's, and a rotation statement in the log; from then on only the new key may append."""
    old = load_signer(key)
    target = api.attestation_target(path=log, state_dir=state_dir)
    ring = keyring or api.default_keyring_path(log_dir=target.log_dir)
    change = api.rotate_key(log_dir=target.log_dir, keyring_path=ring, old=old, new=_public(new))
    _show(change, f"rotated to key {change.keyid[:16]}…", json_out)


@keys_app.command("revoke")
def revoke(
    keyid: Annotated[str, typer.Argument(help="Key id to revoke (or its .pub file): an operator key or a "
                                              "publisher/vendor trust root.", show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the keyring and the log).",
                                        show_default=False)],
    key: Annotated[Path, typer.Option("--key", help="A current operator private key: signs the revocation.",
                                      show_default=False)],
    at: Annotated[str | None, typer.Option("--at", help="Revoked from this time (ISO 8601 with a zone; default "
                                                        "now): signatures made earlier still verify.")] = None,
    log: LogOpt = Path(),
    keyring: KeyringOpt = None,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a key from a time on: its signatures made at or after it are refused, earlier ones verify."""
    signer = load_signer(key)
    target = api.attestation_target(path=log, state_dir=state_dir)
    ring = keyring or api.default_keyring_path(log_dir=target.log_dir)
    change = api.revoke_key(log_dir=target.log_dir, keyring_path=ring, signer=signer, key=keyid, reason=reason,
                            revoked_at=at)
    _show(change, f"revoked key {change.keyid[:16]}…", json_out)


def register(app: typer.Typer) -> None:
    """The commands join `sovkit keys` (registered by attest_cmds)."""
