"""`sovkit fleet plan|apply|status|audit FLEET` (the controller) and `sovkit fleet agent` (on a site's gateway)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sovkit import api
from sovkit.cli.options import (
    BatchSizeOpt,
    CanaryOpt,
    ForksOpt,
    JsonAlwaysOpt,
    JsonOpt,
    LimitOpt,
    MaxFailOpt,
    StateDirOpt,
)
from sovkit.cli.output import console, emit_json
from sovkit.cli.signing import load_signer, signing_key_path
from sovkit.errors import FleetError

fleet_app = typer.Typer(help="Many sites, each driven through its own gateway (ansible-runner worker over SSH).",
                        no_args_is_help=True)

FleetArg = Annotated[Path, typer.Argument(help="The fleet file.", show_default=False)]
SiteOpt = Annotated[list[str] | None, typer.Option("--site", help="Only this site (repeatable).")]
ParallelOpt = Annotated[int | None, typer.Option("--parallel", min=1, max=256,
                                                 help="Sites worked on at once (default: the fleet file's).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Keep each site's signed summary here "
                                                           "(<site>.summary.json).")]


def _drive(verb: api.Verb, fleet: Path, sites: list[str] | None, parallel: int | None, out: Path | None,
           json_out: bool, rollout: api.Rollout) -> int:
    loaded = api.load_fleet(path=fleet)
    workdir = fleet.resolve().parent / ".sovkit-fleet" / "runs"

    def progress(r: api.SiteResult) -> None:
        if not json_out:
            mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
            console.print(f"  {mark} {escape(r.site)}: {escape(_verdict(r))}")

    results = api.run_fleet(fleet=loaded, verb=verb, rollout=rollout, workdir=workdir, parallel=parallel,
                            sites=sites, on_result=progress)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            if r.envelope is not None:
                (out / f"{r.site}.summary.json").write_text(r.envelope + "\n", encoding="utf-8")
    if json_out:
        emit_json({"fleet": loaded.fleet.metadata.name, "verb": verb, "ok": all(r.ok for r in results),
                   "sites": [{"site": r.site, "gateway": r.gateway, "ok": r.ok, "verified": r.summary is not None,
                              "error": r.error, "summary": r.summary.model_dump(mode="json") if r.summary else None}
                             for r in results]})
    else:
        _table(loaded.fleet.metadata.name, verb, results)
    failed = [r.site for r in results if not r.ok]
    if failed:
        raise FleetError(f"fleet {verb}: {len(failed)} of {len(results)} site(s) did not succeed: "
                         f"{', '.join(failed)}", "see each site's row above; the other sites were not affected")
    return 0


def _verdict(r: api.SiteResult) -> str:
    s = r.summary
    if s is None:
        return r.error or "no answer"
    if s.error:
        return s.error
    if s.verb in ("plan", "apply") and s.changes:
        c = s.changes
        text = f"{c.get('create', 0)} create, {c.get('update', 0)} update, {c.get('delete', 0)} delete"
        if s.verb == "apply":
            text = ("applied: " if s.ok else "apply failed: ") + text
            if s.stopped:
                text += f"; {s.stopped}"
            elif s.failures:
                text += f"; {len(s.failures)} host(s) failed"
        return text
    if s.verb == "status":
        healthy = sum(1 for e in s.endpoints if e.get("healthy"))
        return f"{healthy}/{len(s.endpoints)} endpoint(s) healthy"
    if s.verb == "audit":
        return f"audit pack written at the site: {s.audit_pack}"
    return "ok" if s.ok else "failed"


def _table(fleet: str, verb: str, results: list[api.SiteResult]) -> None:
    table = Table(title=f"Fleet {fleet}: {verb}")
    for col in ("site", "gateway", "result", "summary", "state serial", "attestations", "signed summary"):
        table.add_column(col)
    for r in results:
        s = r.summary
        table.add_row(escape(r.site), escape(r.gateway), "[green]ok[/]" if r.ok else "[red]FAILED[/]",
                      escape(_verdict(r)), str(s.state_serial) if s and s.state_serial is not None else "-",
                      str(s.attestations) if s and s.attestations is not None else "-",
                      "[green]verified[/]" if s else "[red]none[/]")
    console.print(table)


@fleet_app.command("plan")
def plan(fleet: FleetArg, site: SiteOpt = None, parallel: ParallelOpt = None, out: OutOpt = None,
         json_out: JsonOpt = False, limit: LimitOpt = None) -> int:
    """Plan every site at the site (its gateway runs `sovkit plan`); a table of what each would change."""
    return _drive("plan", fleet, site, parallel, out, json_out, api.rollout_from_options(limit=limit))


@fleet_app.command("apply")
def apply(fleet: FleetArg, site: SiteOpt = None, parallel: ParallelOpt = None, out: OutOpt = None,
          json_out: JsonOpt = False, limit: LimitOpt = None, batch_size: BatchSizeOpt = None, canary: CanaryOpt = None,
          max_fail_percent: MaxFailOpt = None, forks: ForksOpt = None) -> int:
    """Apply every site at the site, with the rollout controls applied within each site."""
    rollout = api.rollout_from_options(limit=limit, batch_size=batch_size, canary=canary,
                                       max_fail_percent=max_fail_percent, forks=forks)
    return _drive("apply", fleet, site, parallel, out, json_out, rollout)


@fleet_app.command("status")
def status(fleet: FleetArg, site: SiteOpt = None, parallel: ParallelOpt = None, out: OutOpt = None,
           json_out: JsonOpt = False) -> int:
    """Each site's serving endpoints, probed from its gateway, and its state serial and log length."""
    return _drive("status", fleet, site, parallel, out, json_out, api.Rollout())


@fleet_app.command("audit")
def audit(fleet: FleetArg, site: SiteOpt = None, parallel: ParallelOpt = None, out: OutOpt = None,
          json_out: JsonOpt = False) -> int:
    """Write each site's signed audit pack at the site (it stays there); the table says where."""
    return _drive("audit", fleet, site, parallel, out, json_out, api.Rollout())


@fleet_app.command("agent", hidden=True)
def agent(
    verb: Annotated[str, typer.Argument(help="plan, apply, status or audit")],
    inventory: Annotated[Path, typer.Argument(help="The site's inventory (on this gateway).")],
    site: Annotated[str, typer.Option("--site", help="The site the controller expects.")],
    nonce: Annotated[str, typer.Option("--nonce", help="The controller's request id, echoed in the summary.")],
    state_dir: StateDirOpt = None,
    key: Annotated[str | None, typer.Option("--key", help="The site's operator key (default: the state "
                                                         "directory's).")] = None,
    limit: LimitOpt = None, batch_size: BatchSizeOpt = None, canary: CanaryOpt = None,
    max_fail_percent: MaxFailOpt = None, forks: ForksOpt = None, json_out: JsonAlwaysOpt = False,
) -> int:
    """(Run by the controller on a site's gateway.) Run one verb here; print the summary signed with the site key."""
    verbs: dict[str, api.Verb] = {"plan": "plan", "apply": "apply", "status": "status", "audit": "audit"}
    if verb not in verbs:
        raise FleetError(f"unknown fleet verb {verb!r}", "use plan, apply, status or audit")
    rollout = api.rollout_from_options(limit=limit, batch_size=batch_size, canary=canary,
                                       max_fail_percent=max_fail_percent, forks=forks)
    line = api.fleet_agent(verb=verbs[verb], inventory=inventory.resolve(), site=site, nonce=nonce, rollout=rollout,
                           state_dir=state_dir.resolve() if state_dir else None,
                           signer_for=lambda ws: load_signer(signing_key_path(ws, key)))
    sys.stdout.write(line + "\n")
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(fleet_app, name="fleet")
