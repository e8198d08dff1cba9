"""`sovkit keys generate|id` and `sovkit attest verify|log`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sovkit import api
from sovkit.cli.options import JsonOpt
from sovkit.cli.output import console, emit_json, emit_result
from sovkit.cli.signing import pin_prompt
from sovkit.errors import SigningKeyError, VerificationError

keys_app = typer.Typer(help="Signing keys: generate an operator key, print a key id.", no_args_is_help=True)
attest_app = typer.Typer(help="Attestations: verify the append-only log offline, list it.", no_args_is_help=True)


def _passphrase(allow_empty: bool) -> bytes | None:
    env = os.environ.get(api.PASSPHRASE_ENV)
    if env:
        return env.encode()
    if allow_empty:
        return None
    if not sys.stdin.isatty():
        raise SigningKeyError(f"no passphrase: set {api.PASSPHRASE_ENV} or run in a terminal to be asked",
                              "the private key is always written encrypted")
    value: str = typer.prompt("Passphrase for the new key", hide_input=True, confirmation_prompt=True)
    if not value:
        raise SigningKeyError("the passphrase is empty", "choose a passphrase: the private key is written encrypted")
    return value.encode()


@keys_app.command("generate")
def generate(
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Private key file; the public key goes beside it as "
                                                                 "<out>.pub (default operator.key). With --pkcs11: "
                                                                 "the public key file (default <object>.pub).",
                                             show_default=False)] = None,
    algorithm: Annotated[str, typer.Option("--algorithm", help=f"One of {', '.join(api.ALGORITHMS)}.")] = "ed25519",
    no_passphrase: Annotated[bool, typer.Option("--insecure-no-passphrase",
                                                help="Write the private key unencrypted (test rigs only).")] = False,
    pkcs11: Annotated[str | None, typer.Option("--pkcs11", help="Create the key pair inside this PKCS#11 token "
                                               "instead: pkcs11:token=T;object=O (PIN from $SOVKIT_PKCS11_PIN, "
                                               "pin-source=file: or a prompt).", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate a signing key (Ed25519 by default): the private PEM encrypted with a passphrase, mode 0600 — or,
    with --pkcs11, a non-extractable key in an HSM token and its public key PEM."""
    if algorithm not in api.ALGORITHMS:
        raise SigningKeyError(f"unknown key algorithm {algorithm!r}", f"use one of {', '.join(api.ALGORITHMS)}")
    alg: api.Algorithm = "ed25519" if algorithm == "ed25519" else "ecdsa-p256"
    if pkcs11 is not None:
        _generate_in_token(pkcs11, alg, out, no_passphrase, json_out)
        return
    out = out or Path("operator.key")
    for p in (out, out.with_name(out.name + ".pub")):
        if p.exists():
            raise SigningKeyError(f"{p} already exists", "choose another name or move the old key away")
    passphrase = _passphrase(no_passphrase)
    made = api.generate_key(out, alg, passphrase)
    if json_out:
        emit_result(made)
        return
    console.print(f"Wrote {escape(made.private_key)} (0600, {'encrypted' if made.encrypted else '[red]unencrypted[/]'})"
                  f" and {escape(made.public_key)}")
    console.print(f"keyid {made.keyid}")


def _generate_in_token(uri: str, alg: api.Algorithm, out: Path | None, no_passphrase: bool, json_out: bool) -> None:
    if not api.is_key_uri(ref=uri):
        raise SigningKeyError(f"--pkcs11 {uri[:60]!r} is not a pkcs11: URI", "e.g. --pkcs11 'pkcs11:token=T;object=O'")
    if no_passphrase:
        raise SigningKeyError("--insecure-no-passphrase is for key files", "a token key is protected by its PIN")
    made = api.generate_token_key(uri=uri, algorithm=alg, public_path=out, pin_prompt=pin_prompt)
    if json_out:
        emit_result(made)
        return
    console.print(f"Created {made.algorithm} key {escape(made.object)!r} (id {made.id}) in token "
                  f"{escape(made.token)!r}: sensitive={made.sensitive}, extractable={made.extractable}")
    console.print(f"Wrote the public key {escape(made.public_key)}")
    console.print(f"keyid {made.keyid}")
    console.print(f"sign with --key '{escape(made.uri)}'")


@keys_app.command("id")
def key_id(
    pub: Annotated[Path, typer.Argument(help="A public key PEM (.pub).", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Print the key id (sha256 of the key as securesystemslib computes it)."""
    info = api.key_info(pub)
    if json_out:
        emit_result(info)
        return
    console.print(info.keyid)


@attest_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="Attestation log directory, state directory, or inventory.")] = Path(),
    key: Annotated[list[Path] | None, typer.Option("--key", help="Trusted public key (repeatable).")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="State directory when PATH is an "
                                                                       "inventory.")] = None,
    keyring: Annotated[Path | None, typer.Option("--keyring", help="The operator's signed keyring: its keys are "
                                                 "trusted, each only while valid (a --key must have signed a "
                                                 "version of it).")] = None,
    json_out: JsonOpt = False,
) -> int:
    """Verify the attestation log offline in named steps; exit 1 naming the first step that fails."""
    if not key:
        raise SigningKeyError("no trusted key given", "pass the operator's public key with --key PUB")
    keys = [api.load_public_key(path=k) for k in key]
    target = api.attestation_target(path=path, state_dir=state_dir)
    ring = api.load_keyring(path=keyring, keys=keys) if keyring is not None else None
    result = api.verify_attestations(target=target, keys=keys, keyring=ring)
    if json_out:
        emit_json(result.model_dump(mode="json"))
    else:
        table = Table(title=f"Attestation log {target.log_dir} ({len(result.entries)} entries)")
        table.add_column("step")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        for s in result.steps:
            verdict = {"not-checked": "[yellow]not checked[/]", "ok": "[green]ok[/]"}.get(s.status, "[red]FAILED[/]")
            table.add_row(api.STEP_TITLES.get(s.name, s.name), verdict, escape(s.detail))
        console.print(table)
    if not result.ok:
        first = result.failures[0]
        raise VerificationError(f"attestation log failed at step {api.STEP_TITLES.get(first.name, first.name)}: "
                                f"{first.detail}", first.hint, step=first.name)
    if not json_out:
        skipped = [api.STEP_TITLES.get(s.name, s.name) for s in result.steps if s.status == "not-checked"]
        console.print("[green]All steps verified[/]" + (f" ({', '.join(skipped)}: not checked)." if skipped else "."))
    return 0


@attest_app.command("log")
def show_log(
    path: Annotated[Path, typer.Argument(help="Attestation log directory, state directory, or inventory.")] = Path(),
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="State directory when PATH is an "
                                                                       "inventory.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the log's entries (unverified: use `attest verify` for that)."""
    target = api.attestation_target(path=path, state_dir=state_dir)
    entries = api.read_attestations(target=target)
    if json_out:
        emit_result([api.AttestationEntryView.of(e) for e in entries])
        return
    table = Table(title=f"{target.log_dir}")
    for col in ("#", "kind", "host / site", "outcome", "time"):
        table.add_column(col)
    for e in entries:
        p = e.predicate
        kind = e.predicate_type.rsplit("/", 2)[-2]
        what = str(p.get("host") or p.get("site") or "")
        if "compliant" in p:  # a monitor check
            outcome = "compliant" if p["compliant"] else "not compliant"
        elif "drift" in p:  # a refresh: how many differences it found
            outcome = f"{sum(len(v) for v in p['drift'].values())} drift"
        else:
            outcome = str(p.get("outcome") or ("allowed" if p.get("allowed") else "denied"))
        table.add_row(str(e.index), f"{kind} ({p.get('operation', '')})", escape(what), outcome,
                      str(p.get("finished") or p.get("time") or ""))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(attest_app, name="attest")
