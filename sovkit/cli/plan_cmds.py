"""`sovkit plan`, `apply`, `refresh`, `force-unlock`, `demo`."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.status import Status

from sovkit import api
from sovkit.cli.options import (
    BatchSizeOpt,
    BundleKeyOpt,
    CanaryOpt,
    ForksOpt,
    InvArg,
    JsonOpt,
    LimitOpt,
    LockTimeoutOpt,
    MaxFailOpt,
    PoliciesOpt,
    PolicyBundleOpt,
    StateDirOpt,
    StateUrlOpt,
)
from sovkit.cli.output import console, emit_result, err_console
from sovkit.cli.policy_cmds import OpaTimeoutOpt, OpaTokenOpt, OpaUrlOpt, engine_from_options, print_findings
from sovkit.cli.render import BIG_PLAN, plan_detail, plan_overview, plan_text, summary_line
from sovkit.cli.signing import (
    KeyOpt,
    attest_decision,
    key_ref,
    load_signer,
    wire_optional_signer,
    wire_signer,
)
from sovkit.errors import PolicyDenied, ProvisionError, SovkitError


class Progress:
    """Live per-host progress lines; quiet in JSON mode. Started and stopped around each phase."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.status: Status | None = None

    def start(self) -> None:
        if self.enabled and self.status is None:
            self.status = console.status("starting Ansible…")
            self.status.__enter__()

    def stop(self) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)
            self.status = None

    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __call__(self, event: api.ExecEvent) -> None:
        if not self.enabled:
            return
        if event.kind == "task" and self.status:
            self.status.update(f"{escape(event.host)}: {escape(event.task)}")
        elif event.kind == "record" and "sovkit_record" in event.data:
            r = event.data["sovkit_record"]
            what = "removed" if r.get("removed") else r.get("version") or r.get("role") or "done"
            if r.get("component") == "serving" and r.get("status"):  # started, start-failed, stopped
                what = f"{what} {r['model']} {r['model_version']} ({r['status']})"
            mark = "[red]✗[/]" if r.get("status") in ("start-failed", "stopped") else "[green]✓[/]"
            console.print(f"  {mark} {escape(event.host)}: {r['component']} {escape(str(r['name']))} → "
                          f"{escape(str(what))}")
        elif event.kind in ("failed", "unreachable"):
            console.print(f"  [red]✗[/] {escape(event.host)}: {escape(event.task)}: {escape(event.message)}")


def _print_decision(result: api.PlanResult) -> None:
    print_findings(result.decision)


def _print_warnings(result: api.PlanResult) -> None:
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")


def plan(
    inventory: InvArg,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Save the signed plan to this file.")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Read back the hosts first and plan against "
                                                            "what is really there.")] = False,
    detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode",
                                                    help="Exit 0 no changes, 2 changes, 1 error.")] = False,
    json_out: JsonOpt = False,
    detail: Annotated[bool, typer.Option("--detail", help="List every change, grouped per rack (big plans "
                                                          f"— over {BIG_PLAN} changes — show a summary "
                                                          "otherwise).")] = False,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    policies: PoliciesOpt = None,
    key: KeyOpt = None,
    opa_url: OpaUrlOpt = None,
    opa_token: OpaTokenOpt = None,
    opa_timeout: OpaTimeoutOpt = 5.0,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = None,
    canary: CanaryOpt = None,
    max_fail_percent: MaxFailOpt = None,
    forks: ForksOpt = None,
    policy_bundle: PolicyBundleOpt = None,
    bundle_key: BundleKeyOpt = None,
) -> int:
    """Show what apply would change on each host and why, with the policy decision."""
    rollout = api.rollout_from_options(limit=limit, batch_size=batch_size, canary=canary,
                                       max_fail_percent=max_fail_percent, forks=forks)
    with _no_cycle_collection():
        engine = engine_from_options(opa_url, opa_token, opa_timeout)
        ws = api.open_workspace(inventory=inventory, state_dir=state_dir, policy_engine=engine, extra_policies=policies,
                                policy_bundle=policy_bundle, bundle_keys=bundle_key, state_url=state_url)
        with Progress(enabled=refresh and not json_out) as progress:
            result = api.make_plan(workspace=ws, refresh=refresh, on_event=progress, rollout=rollout)
        attest_decision(ws, result.decision, key, "plan", quiet=json_out, required=out is not None)
        saved = None
        if out is not None and result.decision.allowed:
            saved = api.save_plan(workspace=ws, result=result, path=out)
        if json_out:
            emit_result(result.output(saved=str(out) if saved else None))
        else:
            _print_warnings(result)
            if result.drift is not None:
                if result.drift.empty:
                    console.print("Refresh: no drift — the hosts match the recorded state.")
                else:
                    console.print(plan_text(result.drift, "Drift (hosts differ from the recorded state):"))
            for host, msg in result.unreachable.items():
                console.print(f"[red]✗[/] {escape(host)}: unreachable, not observed ({escape(msg)})")
            _print_plan(result, {h.name: h.rack for h in ws.inventory.site.hosts}, detail)
            if saved:
                console.print(f"Saved signed plan to {out} (apply it with `sovkit apply {out}`).")
        if not result.decision.allowed:
            raise PolicyDenied("policy denies this inventory", "fix the denials above (or waive them) and plan again")
        if detailed_exitcode:
            return 0 if result.plan.empty else 2
        return 0


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Loading, planning and printing build millions of acyclic objects at 10,000 hosts; the cycle collector's
    passes over them cost about a quarter of the CPU and free nothing, so it is paused for the command
    (refcounting still frees)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _print_plan(result: api.PlanResult, racks: dict[str, str] | None = None, detail: bool = False) -> None:
    """Every change for small plans; with ``racks`` (the plan command), big plans as a summary and ``detail``
    as every change grouped per rack."""
    title = f"Site {result.plan.site}:"
    if result.plan.empty:
        pass
    elif racks is not None and detail:
        console.print(plan_detail(result.plan, racks, title))
    elif racks is not None and len(result.plan.changes) > BIG_PLAN:
        console.print(plan_overview(result.plan, racks, title))
    else:
        console.print(plan_text(result.plan, title))
    _print_decision(result)
    console.print(f"[bold]{summary_line(result.plan)}[/]")
    if not result.plan.rollout.default:
        console.print(f"Rollout: {escape(result.plan.rollout.describe())}.")
    if result.plan.held_back:
        console.print(f"[yellow]{result.plan.held_back} change(s) on hosts outside --limit are left for a later "
                      "apply.[/]")


def _is_plan_file(path: Path) -> bool:
    """A saved plan (even a damaged one: it is then reported as a plan, not as a broken inventory)."""
    return path.is_file() and api.looks_like_plan(path)


def show_report(report: api.ApplyReport, json_out: bool) -> None:
    if json_out:
        emit_result(api.ApplyOutput.of(report))
        return
    done = sum(len(v) for v in report.records.values())
    console.print(f"[bold]Apply {report.run_id}:[/] {done} component(s) recorded across {len(report.records)} "
                  f"host(s); state serial {report.state.serial}.")
    if len(report.batches) > 1:
        console.print(f"Rollout: {len(report.batches)} batch(es) planned: " + "; ".join(
            f"{i + 1}: {_hosts_named(b)}" for i, b in enumerate(report.batches)))
    if report.stopped:
        err_console.print(f"[red]Rollout {escape(report.stopped)}[/]")
    for c in report.serving_checks:
        if c.smoke is None:
            continue
        mark = "[green]✓[/]" if c.smoke else "[red]✗[/]"
        timing = f"first token in {c.ttft_ms:.1f} ms" if c.ttft_ms is not None else escape(c.error)
        console.print(f"{mark} serving {escape(c.unit)} ({c.phase}): smoke request through {escape(c.name)} on "
                      f"{escape(c.host)}, model {escape(c.model_version)}: {timing}")
    for host, task, msg in report.failures:
        err_console.print(f"[red]✗ {escape(host)}[/] failed at {escape(task)}: {escape(msg)}")


def _hosts_named(hosts: list[str], most: int = 5) -> str:
    """A batch's hosts, the first few by name: a 10,000-host rollout stays one readable line per batch."""
    shown = ", ".join(escape(h) for h in hosts[:most])
    return shown if len(hosts) <= most else f"{shown} and {len(hosts) - most} more ({len(hosts)} hosts)"


def apply(
    target: Annotated[Path, typer.Argument(help="A saved plan file (from `plan -o`) or an inventory.",
                                           show_default=False)],
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Apply without asking.")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="(inventory only) Read back the hosts first, so "
                                                            "drift is repaired.")] = False,
    plan_key: Annotated[Path | None, typer.Option("--plan-key", help="Public key that signed the plan "
                                                                     "(default: the signing key's .pub).")] = None,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    policies: PoliciesOpt = None,
    key: KeyOpt = None,
    opa_url: OpaUrlOpt = None,
    opa_token: OpaTokenOpt = None,
    opa_timeout: OpaTimeoutOpt = 5.0,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = None,
    canary: CanaryOpt = None,
    max_fail_percent: MaxFailOpt = None,
    forks: ForksOpt = None,
    policy_bundle: PolicyBundleOpt = None,
    bundle_key: BundleKeyOpt = None,
    detail: Annotated[bool, typer.Option("--detail", help="(inventory only) Show every change, grouped per rack, "
                                                          f"before asking (plans over {BIG_PLAN} changes are "
                                                          "otherwise shown as a summary).")] = False,
) -> int:
    """Apply a saved plan (refusing a stale or tampered one), or plan + confirm + apply an inventory."""
    rollout = api.rollout_from_options(limit=limit, batch_size=batch_size, canary=canary,
                                       max_fail_percent=max_fail_percent, forks=forks)
    if _is_plan_file(target):
        if not rollout.default:
            raise SovkitError("a saved plan carries its own rollout controls: they cannot be changed at apply",
                              "make the plan again with them (`sovkit plan -o PLAN --limit …`), or apply the "
                              "inventory directly with them")
        ref = key_ref(key)
        token = load_signer(ref) if isinstance(ref, str) else None  # a token key: its public key is in the token
        pub_path = plan_key
        if pub_path is None and token is None:
            env = os.environ.get("SOVKIT_SIGNING_KEY")
            pub_path = Path(env + ".pub") if env else None
        if pub_path is not None:
            plan_pub = api.load_public_key(path=pub_path)
        elif token is not None:
            plan_pub = token.public_key
        else:
            raise SovkitError("which key signed this plan?", "pass --plan-key PUB (the operator's public key)")
        ws, saved = api.load_saved_plan(path=target, key=plan_pub, state_dir=state_dir,
                                        state_url=state_url, lock_timeout=lock_timeout)
        if token is not None:
            ws.signer = token
        else:
            wire_signer(ws, key)
        if saved.plan.empty and not json_out:
            console.print("Nothing to apply.")
        with Progress(enabled=not json_out and not saved.plan.empty) as progress:
            outcome = api.apply_saved_plan(workspace=ws, saved=saved, on_event=progress)
    else:
        engine = engine_from_options(opa_url, opa_token, opa_timeout)
        ws = wire_signer(api.open_workspace(inventory=target, state_dir=state_dir, policy_engine=engine,
                                            extra_policies=policies, policy_bundle=policy_bundle,
                                            bundle_keys=bundle_key, state_url=state_url,
                                            lock_timeout=lock_timeout), key)

        plan_progress = Progress(enabled=refresh and not json_out)
        run_progress = Progress(enabled=not json_out)

        def confirm(result: api.PlanResult) -> bool:
            """Show the plan and the decision; ask unless --auto-approve (or nothing is to be done)."""
            plan_progress.stop()
            _print_warnings(result)
            if not json_out:
                _print_plan(result, {h.name: h.rack for h in ws.inventory.site.hosts}, detail)
            if result.plan.empty:
                if not json_out:
                    console.print("Nothing to apply.")
                return True
            confirmed = auto_approve or typer.confirm("Apply these changes?", default=False)
            if confirmed:
                run_progress.start()
            return confirmed

        with plan_progress, run_progress:
            outcome = api.apply_inventory(workspace=ws, confirm=confirm, refresh=refresh, on_plan_event=plan_progress,
                                          on_event=run_progress, rollout=rollout)
        if not outcome.confirmed:
            err_console.print("Apply cancelled; nothing was changed.")
            return 1
    if outcome.report is None:
        if json_out:
            emit_result(outcome.output())
        return 0
    report = outcome.report
    show_report(report, json_out)
    if not report.ok:
        raise ProvisionError(f"apply finished with {len(report.failures)} failed host(s)",
                             "fix the causes above and run `sovkit plan` / `sovkit apply` again: completed "
                             "work is recorded and will not be redone")
    return 0


def refresh(inventory: InvArg, json_out: JsonOpt = False, state_dir: StateDirOpt = None, key: KeyOpt = None,
            state_url: StateUrlOpt = None, lock_timeout: LockTimeoutOpt = 0.0) -> int:
    """Read back firmware, runtimes, models and serving configs from the hosts; record them; attest the drift."""
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir, state_url=state_url, lock_timeout=lock_timeout)
    wire_optional_signer(ws, key, "the drift found", quiet=json_out)
    with Progress(enabled=not json_out) as progress:
        result = api.refresh(workspace=ws, on_event=progress)
    if json_out:
        emit_result(result.output())
    else:
        if result.drift.empty:
            console.print("No drift: the hosts match the recorded state.")
        else:
            console.print(plan_text(result.drift, "Drift (hosts differ from the recorded state):"))
        for host, msg in result.unreachable.items():
            console.print(f"[red]✗[/] {escape(host)}: unreachable ({escape(msg)})")
        console.print(f"State recorded (serial {result.state.serial}).")
    return 1 if result.unreachable else 0


def force_unlock(
    lock_id: Annotated[str, typer.Argument(help="The lock id printed by the locked run.")],
    inventory: InvArg,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove a state lock left behind by a crashed or killed run (in PostgreSQL: end that run's session)."""
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir, state_url=state_url)
    held = api.force_unlock(workspace=ws, lock_id=lock_id)
    if json_out:  # the lock that was removed
        emit_result(held)
        return
    console.print(f"Unlocked state (lock {held.id}: {held.operation} by {held.owner}, pid {held.pid}).")


def rollback(
    inventory: InvArg,
    model: Annotated[str, typer.Option("--model", help="The model to switch back.")],
    host: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    key: KeyOpt = None,
) -> int:
    """Switch a model back to the version kept as `previous` (atomic symlink switch), and record it."""
    ws = wire_signer(api.open_workspace(inventory=inventory, state_dir=state_dir, state_url=state_url,
                                        lock_timeout=lock_timeout), key)
    with Progress(enabled=not json_out) as progress:
        report = api.rollback(workspace=ws, model=model, hosts=host or None, on_event=progress)
    show_report(report, json_out)
    if not report.ok:
        raise ProvisionError(f"rollback failed on {len(report.failures)} host(s)", "see the messages above")
    if not json_out:
        console.print("[yellow]The inventory still pins the newer version: change it, or the next apply "
                      "re-installs it.[/]")
    return 0


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("apply")(apply)
    app.command("refresh")(refresh)
    app.command("force-unlock")(force_unlock)
    app.command("rollback")(rollback)
