"""`sovkit check` and `sovkit policy test|input|schema|bundle`.

Exit codes: 0 allowed (tests passed), 3 denied by policy, 1 error (the engine
could not answer, a test failed, bad input) — fail closed, never "allowed".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sovkit import api
from sovkit.cli.options import BundleKeyOpt, InvArg, JsonAlwaysOpt, JsonOpt, PoliciesOpt, PolicyBundleOpt, StateDirOpt
from sovkit.cli.output import console, emit_json, emit_result
from sovkit.cli.signing import KeyOpt, attest_decision, load_signer
from sovkit.errors import PolicyDenied, PolicyError

TOKEN_ENV = "SOVKIT_OPA_TOKEN"

OpaUrlOpt = Annotated[str | None, typer.Option("--opa-url", help="Evaluate on this OPA server instead of the "
                                                                 "embedded engine (e.g. http://127.0.0.1:8181).")]
OpaTokenOpt = Annotated[str | None, typer.Option("--opa-token", help=f"Bearer token for the OPA server (default: "
                                                                      f"${TOKEN_ENV}).")]
OpaTimeoutOpt = Annotated[float, typer.Option("--opa-timeout", help="Seconds to wait for each OPA request.")]


def engine_from_options(opa_url: str | None, opa_token: str | None, opa_timeout: float) -> api.PolicyEngine | None:
    """The OPA-server engine when --opa-url is given; None means the embedded default."""
    if opa_url is None:
        if opa_token is not None:
            raise PolicyError("--opa-token needs --opa-url", "pass the OPA server URL too")
        return None
    return api.opa_engine(url=opa_url, token=opa_token or os.environ.get(TOKEN_ENV) or None, timeout=opa_timeout)


_STYLE = {"deny": "red", "warn": "yellow", "waived": "cyan"}


def print_findings(decision: api.PolicyDecision) -> None:
    """Findings grouped by severity (deny, warn, waived) in one table, then the verdict."""
    groups = [("deny", decision.by_severity("deny")), ("warn", decision.by_severity("warn")),
              ("waived", decision.by_severity("deny", True) + decision.by_severity("warn", True))]
    if decision.findings:
        table = Table(show_lines=False, expand=False)
        for col in ("severity", "rule", "resource", "finding", "remediation"):
            table.add_column(col, overflow="fold")
        for label, items in groups:
            for f in items:
                msg = str(f.get("msg", ""))
                if label == "waived":
                    w = f.get("waived") or {}
                    msg += f" [waived until {w.get('expires')}: {w.get('reason')}]"
                table.add_row(f"[{_STYLE[label]}]{label}[/]", escape(str(f.get("id"))), escape(str(f.get("resource"))),
                              escape(msg), escape(str(f.get("remediation", ""))))
        console.print(table)
    verdict = "[green]allowed[/]" if decision.allowed else "[red]DENIED[/]"
    counts = ", ".join(f"{len(items)} {label}" for label, items in groups)
    console.print(f"Policy: {verdict} ({counts}; engine {decision.engine}, pack {decision.pack_digest[:12]})")


def check(
    inventory: InvArg,
    policies: PoliciesOpt = None,
    opa_url: OpaUrlOpt = None,
    opa_token: OpaTokenOpt = None,
    opa_timeout: OpaTimeoutOpt = 5.0,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = None,
    key: KeyOpt = None,
    policy_bundle: PolicyBundleOpt = None,
    bundle_key: BundleKeyOpt = None,
) -> int:
    """Evaluate the policy pack against the inventory: exit 0 allowed, 3 denied, 1 error."""
    engine = engine_from_options(opa_url, opa_token, opa_timeout)
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir, policy_engine=engine, extra_policies=policies,
                            policy_bundle=policy_bundle, bundle_keys=bundle_key)
    decision = api.check_policy(workspace=ws)
    attest_decision(ws, decision, key, "check", quiet=json_out)
    if json_out:
        emit_json(decision.summary())
    else:
        print_findings(decision)
    if not decision.allowed:
        raise PolicyDenied(f"policy denies this inventory ({len(decision.by_severity('deny'))} denial(s))",
                           "fix the denials (or waive them with a reason and expiry under waivers:)")
    return 0


policy_app = typer.Typer(help="The Rego policy pack: unit tests, the input document, the OPA bundle.",
                         no_args_is_help=True)


@policy_app.command("test")
def test(
    directory: Annotated[Path | None, typer.Argument(help="Operator policy directory (default: the shipped pack).",
                                                     show_default=False)] = None,
    json_out: JsonOpt = False,
) -> int:
    """Run the Rego unit tests (*_test.rego, test_* rules) like `opa test`: exit 1 on any failure."""
    results = api.run_policy_tests(directory=directory)
    failed = [r for r in results if not r.passed]
    if json_out:
        emit_result(results)
    else:
        for r in results:
            mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            console.print(f"{mark} {escape(r.file)}: data.{escape(r.package)}.{escape(r.name)}"
                          + (f" — {escape(r.error)}" if r.error else ""))
        console.print(f"{len(results) - len(failed)}/{len(results)} passed" + (f", {len(failed)} failed" if failed
                                                                               else ""))
    if failed or not results:
        raise PolicyError(f"{len(failed)} of {len(results)} Rego test(s) failed" if results else "no Rego tests found",
                          "see the FAIL lines above")
    return 0


@policy_app.command("input")
def input_(inventory: InvArg, state_dir: StateDirOpt = None, json_out: JsonAlwaysOpt = False) -> None:
    """Print the exact policy input document (evaluate it with any Rego tool: opa eval -i …)."""
    emit_json(api.policy_input(workspace=api.open_workspace(inventory=inventory, state_dir=state_dir)))


@policy_app.command("schema")
def schema(json_out: JsonAlwaysOpt = False) -> None:
    """Print the JSON Schema of the policy input document."""
    emit_json(api.input_schema())


@policy_app.command("bundle")
def bundle(
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the bundle (.tar.gz).")],
    policies: PoliciesOpt = None,
    sign: Annotated[Path | None, typer.Option("--sign", help="Sign the bundle with this private key (ECDSA P-256; "
                                                             "writes OPA's .signatures.json).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the pack as an OPA bundle (.manifest with revision and roots, data.json, modules)."""
    signer = load_signer(sign) if sign is not None else None
    written = api.export_policy_bundle(out, policies, signer)
    if json_out:
        emit_result(written)
        return
    signed = f", signed by key {written.signed_by[:16]}…" if written.signed_by else ""
    console.print(f"Wrote OPA bundle {escape(written.path)} (pack digest {written.pack_digest}{signed}). Load it "
                  f"with `opa run --server --bundle {escape(written.path)}`.")


def register(app: typer.Typer) -> None:
    app.command("check")(check)
    app.add_typer(policy_app, name="policy")
