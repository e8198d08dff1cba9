"""`sovkit audit` (write the regulator pack) and `sovkit verify` (check a pack offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sovkit import api
from sovkit.cli.options import BundleKeyOpt, InvArg, JsonOpt, PoliciesOpt, PolicyBundleOpt, StateDirOpt
from sovkit.cli.output import console, emit_json, emit_result
from sovkit.cli.signing import KeyOpt, wire_signer
from sovkit.errors import VerificationError


def audit(
    inventory: InvArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory to write the pack to (must not exist or be "
                                                          "empty).", show_default=False)],
    key: KeyOpt = None,
    policies: PoliciesOpt = None,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
    policy_bundle: PolicyBundleOpt = None,
    bundle_key: BundleKeyOpt = None,
) -> None:
    """Write the regulator audit pack: HTML + JSON report, ML-BOMs, attestations, policy bundle, signed manifest."""
    ws = wire_signer(api.open_workspace(inventory=inventory, state_dir=state_dir, extra_policies=policies,
                                        policy_bundle=policy_bundle, bundle_keys=bundle_key), key)
    pack = api.build_audit_pack(workspace=ws, out=out)
    r = pack.report
    if json_out:
        emit_result(api.AuditWritten.of(pack))
        return
    console.print(f"[green]✓[/] audit pack for {escape(r.overview.site)} written to {escape(str(pack.path))}")
    console.print(f"  {len(pack.manifest.files)} files signed (keyid {pack.keyid[:16]}…): report.html, report.json, "
                  f"{len(r.model_boms)} ML-BOM(s), {len(r.attestations)} attestation(s), policy bundle")
    console.print(f"  policy: {'allowed' if r.policy.allowed else 'DENIED'}, {len(r.policy.findings)} finding(s); "
                  f"drift: {'not recorded' if r.drift is None else f'{len(r.drift.changes)} change(s)'}")
    console.print(f"  verify offline with: sovkit verify {escape(str(pack.path))} --key <operator public key>")


def verify(
    pack: Annotated[Path, typer.Argument(help="An audit pack directory (from `sovkit audit -o`).",
                                         show_default=False)],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key (repeatable): the pack signer's and "
                                                          "the attestation signers'.", show_default=False)],
    keyring: Annotated[Path | None, typer.Option("--keyring", help="The operator's signed keyring: its keys are "
                                                 "trusted, each only while valid (a --key must have signed a "
                                                 "version of it).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check an audit pack offline: manifest signature, every file, ML-BOMs, the attestation log."""
    keys = api.load_public_keys(key)
    ring = api.load_keyring(path=keyring, keys=keys) if keyring is not None else None
    result = api.verify_audit_pack(pack=pack, keys=keys, keyring=ring)
    if json_out:
        emit_json(result.model_dump(mode="json"))
    else:
        for s in result.steps:
            mark = {"ok": "[green]✓[/]", "not-checked": "[yellow]-[/]"}.get(s.status, "[red]✗[/]")
            shown = s.detail and s.detail not in s.problems
            console.print(f"{mark} {s.name}" + (f": {escape(s.detail)}" if shown else ""))
            for p in s.problems:
                console.print(f"    {escape(p)}")
    if not result.ok:
        failed = [s.name for s in result.failures]
        raise VerificationError(f"audit pack {pack} does not verify ({', '.join(failed)})",
                                "do not rely on this pack: obtain an untampered copy from the operator")
    if not json_out:
        console.print(f"[bold green]audit pack verifies[/] (site {escape(str(result.facts.get('site', '?')))})")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
    app.command("verify")(verify)
