"""Execute a plan: preflight, run the apply playbook, and record state as each component completes.

State is written after every completed component (atomic file replace), so a
crash or a lost host loses at most the component in flight; the next plan
picks up exactly what is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovkit import identifiers as ids
from sovkit.components import registry
from sovkit.components.host import DesiredHost
from sovkit.errors import PlanError, ProvisionError, StateError
from sovkit.inventory.loader import LoadedInventory
from sovkit.plan.diff import serving_ties
from sovkit.plan.model import Plan
from sovkit.provision.executor import ExecEvent, Executor, HostOutcome, HostTarget
from sovkit.provision.hostvars import apply_target
from sovkit.provision.preflight import Preflight, run_preflight
from sovkit.provision.serving import ServingCheck, check_serving
from sovkit.state.models import HostRecord, State, now
from sovkit.state.store import StateStore


@dataclass
class ApplyReport:
    run_id: str
    started: str
    finished: str
    hosts: dict[str, HostOutcome]
    state: State
    preflight: Preflight
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    serving_checks: list[ServingCheck] = field(default_factory=list)
    #: the hosts of each batch the rollout ran, in order (one batch without rollout controls)
    batches: list[list[str]] = field(default_factory=list)
    #: why the rollout stopped before its last batch (None when every batch ran)
    stopped: str | None = None
    #: hosts of the batches never started, each with the reason
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[tuple[str, str, str]]:
        """(host, task, message) for each host that did not complete (a host the rollout never reached too)."""
        out = [(h, "preflight", msg) for h, msg in self.preflight.failed_hosts.items()]
        for host, o in self.hosts.items():
            if o.unreachable:
                out.append((host, o.failed_task or "connect", f"unreachable: {o.error}"))
            elif o.failed:
                out.append((host, o.failed_task, o.error))
        out += [(h, "rollout", msg) for h, msg in self.skipped.items()]
        return out

    def failed_hosts(self) -> set[str]:
        """Hosts that were tried and failed (preflight, a task, unreachable); not those never reached."""
        return set(self.preflight.failed_hosts) | {h for h, o in self.hosts.items() if o.failed or o.unreachable}

    @property
    def ok(self) -> bool:
        return not self.failures


def apply_record(host: HostRecord, record: dict[str, Any], run_id: str,
                 signatures_ok: dict[str, bool]) -> None:
    """Fold one ``sovkit record`` result from a host into its state record.

    Raises ValueError (pydantic's ValidationError is one) for a value that is not a plain identifier or path:
    records come back from the host, so they are untrusted input; the state models hold the patterns.
    """
    component, name = record["component"], record["name"]
    kind = registry.find(component)
    if kind is not None:
        records = kind.records_of(host, write=True)
        if record.get("removed"):
            if kind.removable:
                records.pop(name, None)
        else:
            records[name] = kind.from_record(name, record, records.get(name), signatures_ok)
    host.last_apply = run_id
    host.updated_at = now()


def check_plan_targets(plan: Plan, desired: dict[str, DesiredHost], state: State) -> None:
    """Refuse a plan (even a correctly signed one) naming a host or component that neither the inventory nor
    the state has: Ansible would do nothing for it, and the apply would still be attested as a success."""
    for c in plan.changes:
        rec = state.hosts.get(c.host)
        kind = registry.find(c.component)
        if c.component == "host":
            ok = c.action == "delete" and c.name == c.host and rec is not None and c.host not in desired
        elif kind is None:
            ok = False
        elif c.action == "delete":
            ok = rec is not None and c.name in kind.records_of(rec)
        else:
            want = desired.get(c.host)
            ok = want is not None and c.name in kind.desired_of(want)
        if not ok:
            where = "the state" if c.action == "delete" else "the inventory"
            raise PlanError(
                f"plan names {c.component} {c.name!r} on host {c.host!r} ({c.action}), which {where} does not "
                "have: nothing was applied",
                "the plan does not match this site; run `sovkit plan` against it again")


def execute_plan(
    inv: LoadedInventory,
    plan: Plan,
    desired: dict[str, DesiredHost],
    store: StateStore,
    executor: Executor,
    workdir: Path,
    on_event: Callable[[ExecEvent], None] = lambda e: None,
) -> ApplyReport:
    """Run ``plan`` (the caller holds the state lock). Never raises for host failures: see ApplyReport."""
    started = now()
    state = store.read()
    check_plan_targets(plan, desired, state)
    state.site = inv.site.metadata.name
    preflight = run_preflight(inv, desired, plan)
    for host, msg in preflight.failed_hosts.items():
        on_event(ExecEvent("failed", host, "preflight", msg))
    dropped = [c.host for c in plan.changes if c.component == "host" and c.action == "delete"]
    for host in dropped:
        state.hosts.pop(host, None)
    if dropped:
        state = store.write(state)
    rollout = plan.rollout
    planned = [h for h in plan.hosts() if h in desired]
    total = len(planned)
    sig_ok = {label: check.verified for label, check in preflight.signatures.items()}
    report = ApplyReport(run_id=f"apply-{uuid.uuid4().hex[:12]}", started=started, finished="", hosts={},
                         state=state, preflight=preflight)
    batches = rollout.batches(planned, serving_ties(desired))
    for number, batch in enumerate(batches):
        report.batches.append(batch)
        _run_batch(report, inv, plan, desired, batch, store, executor, workdir, on_event, sig_ok, number,
                   len(batches))
        failed = report.failed_hosts()
        reason = rollout.stop_reason(number, sorted(failed & set(batch)), len(failed & set(planned)), total)
        if reason is not None and number + 1 < len(batches):
            report.stopped = f"stopped after batch {number + 1} of {len(batches)}: {reason}"
            for host in (h for later in batches[number + 1:] for h in later):
                report.skipped[host] = f"not attempted: the rollout {report.stopped}"
                on_event(ExecEvent("failed", host, "rollout", report.skipped[host]))
            break
    report.finished = now()
    return report


def _run_batch(report: ApplyReport, inv: LoadedInventory, plan: Plan, desired: dict[str, DesiredHost],
               batch: list[str], store: StateStore, executor: Executor, workdir: Path,
               on_event: Callable[[ExecEvent], None], sig_ok: dict[str, bool], number: int, count: int) -> None:
    """Apply one batch's hosts, then check the serving they (re)started; fold the results into ``report``."""
    state = report.state
    targets = [apply_target(inv, desired[h], plan.for_host(h), state.hosts.get(h, HostRecord()),
                            workdir.parent / "known_hosts")
               for h in batch if h not in report.preflight.failed_hosts]
    before = state.model_copy(deep=True)
    run_id = report.run_id if count == 1 else f"{report.run_id}-b{number + 1}"
    state, _, hosts, records = run_recording("apply.yml", targets, state, store, executor, workdir, on_event,
                                             sig_ok, run_id=run_id, forks=plan.rollout.forks)
    served = check_serving(inv, desired, before, state, records, store, executor, workdir, on_event, run_recording)
    for host, (task, message) in served.failures.items():
        outcome = hosts.setdefault(host, HostOutcome())
        if not (outcome.failed or outcome.unreachable):
            outcome.failed, outcome.failed_task, outcome.error = True, task, message
            on_event(ExecEvent("failed", host, task, message))
    for host, recs in served.records.items():
        records.setdefault(host, []).extend(recs)
    report.hosts.update(hosts)
    for host, recs in records.items():
        report.records.setdefault(host, []).extend(recs)
    report.serving_checks.extend(served.checks)
    report.state = served.state


def run_recording(
    playbook: str,
    targets: list[HostTarget],
    state: State,
    store: StateStore,
    executor: Executor,
    workdir: Path,
    on_event: Callable[[ExecEvent], None],
    signatures_ok: dict[str, bool],
    run_id: str | None = None,
    forks: int | None = None,
) -> tuple[State, str, dict[str, HostOutcome], dict[str, list[dict[str, Any]]]]:
    """Run a playbook whose roles emit ``sovkit record`` results; write the state after each one."""
    run_id = run_id or f"{playbook.removesuffix('.yml')}-{uuid.uuid4().hex[:12]}"
    records: dict[str, list[dict[str, Any]]] = {}
    refused: dict[str, tuple[str, str]] = {}
    box = [state]
    unrecorded: list[str] = []
    write_error: list[StateError] = []

    def handle(event: ExecEvent) -> None:
        if event.kind == "record" and "sovkit_record" in event.data:
            record = event.data["sovkit_record"]
            current = box[0]
            try:
                apply_record(current.hosts.setdefault(event.host, HostRecord()), record, run_id, signatures_ok)
            except (ValueError, KeyError, TypeError) as exc:  # a value the host reported is refused, not stored
                what = f"{record.get('component', '?')} {ids.describe(record.get('name', '?'))}"
                msg = f"untrusted value reported for {what}, not recorded: {_first_line(exc)}"
                refused.setdefault(event.host, (event.task, msg))
                on_event(ExecEvent("failed", event.host, event.task, msg))
                return
            records.setdefault(event.host, []).append(record)
            if write_error:  # the run is being stopped; say what the hosts did that the state does not hold
                unrecorded.append(f"{event.host} {record['component']} {record['name']}")
            else:
                try:
                    box[0] = store.write(current)
                except StateError as exc:
                    write_error.append(exc)
                    unrecorded.append(f"{event.host} {record['component']} {record['name']}")
        on_event(event)

    hosts: dict[str, HostOutcome] = {}
    try:
        if targets:
            hosts = executor.run(playbook, targets, handle, workdir, run_id=run_id,
                                 cancel=lambda: bool(write_error), forks=forks).hosts
    except ProvisionError:
        if not write_error:
            raise
    for host, (task, msg) in refused.items():
        outcome = hosts.setdefault(host, HostOutcome())
        outcome.failed, outcome.failed_task, outcome.error = True, task, msg
    if write_error:
        raise StateError(
            f"{write_error[0].message}: run {run_id} was stopped; the hosts completed "
            f"{', '.join(unrecorded)} which the state does not record",
            "free space on that filesystem, then run `sovkit refresh` to record what the hosts really have, "
            "and plan again",
        )
    return box[0], run_id, hosts, records


def _first_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', '')}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
