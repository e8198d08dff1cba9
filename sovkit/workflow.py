"""The operations on a workspace: plan, apply (saved plan or plan → confirm → apply), refresh, rollback, check.

This is the workflow the CLI used to re-run itself; here it is library code that returns results and
takes a ``confirm`` callback where a person has to say yes. Adapters come from the Workspace.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from sovkit.artifactstore import open_store
from sovkit.attest import log as attest_log
from sovkit.attest.emit import attest_drift, attest_policy_decision, attest_provision
from sovkit.attest.predicates import PROVISION_PREDICATE
from sovkit.attest.provenance import ApplyContext
from sovkit.audit.drift import write_refresh_record
from sovkit.components.host import DesiredHost, desired_site, pinned_artifacts
from sovkit.errors import PolicyDenied, SovkitError
from sovkit.plan.diff import diff, restrict, serving_ties
from sovkit.plan.drift import recorded_drift
from sovkit.plan.model import Change, Plan, Rollout
from sovkit.plan.planfile import Bindings, SavedPlan
from sovkit.plan.planfile import check_bindings as check_bindings_values
from sovkit.policy.api import PolicyDecision, evaluate_policy, policy_pack_digest
from sovkit.provision.apply import ApplyReport, execute_plan, run_recording
from sovkit.provision.executor import ExecEvent
from sovkit.provision.hostvars import common_target, rollback_target
from sovkit.provision.observe import observe, with_findings
from sovkit.provision.preflight import Preflight
from sovkit.provision.serving import ServingCheck
from sovkit.state.models import State, now
from sovkit.workspace import Workspace

OnEvent = Callable[[ExecEvent], None]


def _quiet(event: ExecEvent) -> None:
    """The default progress callback: nothing to show."""


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanView(_Out):
    """A plan as `--json` shows it: the changes plus their counts."""

    site: str
    summary: dict[str, int]
    unchanged: int
    changes: list[Change]
    rollout: Rollout = Rollout()
    held_back: int = 0

    @classmethod
    def of(cls, plan: Plan) -> PlanView:
        return cls(site=plan.site, summary=plan.summary(), unchanged=plan.unchanged, changes=list(plan.changes),
                   rollout=plan.rollout, held_back=plan.held_back)


class PlanOutput(_Out):
    """`sovkit plan --json`."""

    plan: PlanView
    decision: dict[str, Any]
    bindings: Bindings
    saved: str | None
    drift: PlanView | None
    unreachable: dict[str, str]
    warnings: list[str]


class Failure(_Out):
    host: str
    task: str
    message: str


class ApplyOutput(_Out):
    """`sovkit apply --json` and `sovkit rollback --json` (run_id is null when there was nothing to apply)."""

    run_id: str | None
    ok: bool
    state_serial: int | None
    failures: list[Failure]
    records: dict[str, list[dict[str, Any]]]
    serving_checks: list[ServingCheck] = []
    batches: list[list[str]] = []
    stopped: str | None = None

    @classmethod
    def of(cls, report: ApplyReport) -> ApplyOutput:
        return cls(run_id=report.run_id, ok=report.ok, state_serial=report.state.serial,
                   failures=[Failure(host=h, task=t, message=m) for h, t, m in report.failures],
                   records=report.records, serving_checks=report.serving_checks, batches=report.batches,
                   stopped=report.stopped)


class RefreshOutput(_Out):
    """`sovkit refresh --json`: the drift, who could not be read, the new serial, and the attestation entry."""

    drift: PlanView
    unreachable: dict[str, str]
    state_serial: int
    attestation: int | None = None


@dataclass
class PlanResult:
    plan: Plan
    decision: PolicyDecision
    bindings: Bindings
    drift: Plan | None = None
    unreachable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def output(self, saved: str | None = None) -> PlanOutput:
        return PlanOutput(plan=PlanView.of(self.plan), decision=self.decision.summary(), bindings=self.bindings,
                          saved=saved, drift=PlanView.of(self.drift) if self.drift is not None else None,
                          unreachable=self.unreachable, warnings=self.warnings)


@dataclass
class RefreshResult:
    drift: Plan
    unreachable: dict[str, str]
    state: State
    attestation: attest_log.LogEntry | None = None

    def output(self) -> RefreshOutput:
        return RefreshOutput(drift=PlanView.of(self.drift), unreachable=self.unreachable,
                             state_serial=self.state.serial,
                             attestation=self.attestation.index if self.attestation else None)


@dataclass
class ApplyOutcome:
    """What `apply <inventory>` did: the plan it showed, and the report (None: nothing to do, or not confirmed)."""

    planned: PlanResult
    report: ApplyReport | None
    confirmed: bool

    def output(self) -> ApplyOutput:
        if self.report is not None:
            return ApplyOutput.of(self.report)
        return ApplyOutput(run_id=None, ok=True, state_serial=self.planned.bindings.state_serial, failures=[],
                           records={})


# --- warnings -----------------------------------------------------------------------------------------------


def _logged_applies(ws: Workspace) -> int:
    """How many provision attestations (applies, rollbacks) the log holds; unreadable lines are not counted."""
    try:
        lines = (ws.attestations / attest_log.LOG_FILE).read_bytes().splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        try:
            payload = json.loads(base64.b64decode(json.loads(line)["envelope"]["payload"]))
        except (ValueError, KeyError, TypeError):
            continue
        count += isinstance(payload, dict) and payload.get("predicateType") == PROVISION_PREDICATE
    return count


def missing_state_warning(ws: Workspace) -> str | None:
    """A missing state.json where a backup or attestations show earlier applies: plan would reinstall everything."""
    state_file = ws.state_file
    if state_file.exists() or ws.store.location != str(state_file):  # a database store keeps no state.json
        return None
    backup = ws.directory / "state.json.backup"
    log = ws.attestations / attest_log.LOG_FILE
    seen = [str(backup)] if backup.is_file() else []
    applies = _logged_applies(ws)
    if applies:
        seen.append(f"{log} ({applies} provision attestation{'s' if applies != 1 else ''})")
    if not seen:
        return None
    restore = f"`cp {backup} {state_file}` (the previous serial), then " if backup.is_file() else ""
    return (f"{state_file} is missing but {' and '.join(seen)} show(s) earlier applies: this plan treats "
            f"every host as empty. Restore the state with {restore}`sovkit refresh` to read back what the hosts "
            "really have, and plan again")


# --- plan ------------------------------------------------------------------------------------------------------


def bindings(ws: Workspace, state: State, desired: dict[str, DesiredHost], plan: Plan) -> Bindings:
    """What a saved plan is bound to: state serial, inventory, policy pack, and the artifacts it installs."""
    touched = {c.host for c in plan.changes}
    needed = pinned_artifacts({h: d for h, d in desired.items() if h in touched})
    port = open_store(ws.inventory)
    actual = {p: port.bound_digest(p, d) for p, d in needed.items()}
    return Bindings(state_lineage=state.lineage, state_serial=state.serial, inventory_digest=ws.inventory.digest,
                    policy_pack_digest=policy_pack_digest(ws.extra_policies), artifact_digests=actual)


def make_plan(ws: Workspace, refresh: bool = False, on_event: OnEvent = _quiet, rollout: Rollout | None = None
              ) -> PlanResult:
    """Desired (inventory) vs recorded or observed state, with the policy decision. Changes nothing.

    A ``rollout`` rides along in the plan; its limit keeps only the changes on the hosts it selects.
    """
    state = ws.store.read()
    desired = desired_site(ws.inventory)
    decision = evaluate_policy(ws.inventory, state, ws.extra_policies, ws.policy_engine)
    observed = state.hosts
    drift = None
    unreachable: dict[str, str] = {}
    if refresh:
        obs = observe(ws.inventory, desired, state.hosts, ws.executor, ws.runs, on_event)
        unreachable = obs.unreachable
        observed = {**state.hosts, **obs.hosts}
        drift = with_findings(recorded_drift(ws.inventory.site.metadata.name, state.hosts, obs.hosts),
                              obs.untrusted)
    plan = diff(ws.inventory.site.metadata.name, desired, observed)
    if rollout is not None and not rollout.default:
        racks = {h.name: h.rack for h in ws.inventory.site.hosts}
        plan = restrict(plan, rollout, racks, serving_ties(desired))
    warning = missing_state_warning(ws)
    return PlanResult(plan, decision, bindings(ws, state, desired, plan), drift, unreachable,
                      [warning] if warning else [])


def record_policy_decision(ws: Workspace, decision: PolicyDecision, operation: str = "check"
                           ) -> attest_log.LogEntry:
    """Append a policy-decision attestation signed with the workspace signer."""
    if ws.signer is None:
        raise SovkitError("no signer: the policy decision cannot be attested", "pass the operator key (--key)")
    return attest_policy_decision(
        ws.attestations, operation=operation, site=ws.inventory.site.metadata.name,
        inventory_digest=ws.inventory.digest, pack_digest=policy_pack_digest(ws.extra_policies),
        summary={"allowed": decision.allowed, **decision.summary()}, signer=ws.signer)


# --- apply -----------------------------------------------------------------------------------------------------


def apply_plan(ws: Workspace, plan: Plan, decision: PolicyDecision, expected: Bindings | None = None,
               on_event: OnEvent = _quiet) -> ApplyReport:
    """Apply under the state lock; refuses a denied decision or (for saved plans) any stale binding.

    With a workspace signer, one provision attestation per host the plan touched is appended to the
    attestation log before the lock is released (the CLI always wires the operator key).
    """
    if not decision.allowed:
        raise PolicyDenied("policy denies this inventory: nothing was applied",
                           "run `sovkit check` to see the denials, fix them, and plan again")
    with ws.store.lock("apply"):
        state = ws.store.read()
        desired = desired_site(ws.inventory)
        if expected is not None:
            check_bindings_values(expected, bindings(ws, state, desired, plan))
        if ws.signer is not None:
            attest_log.check_appendable(ws.attestations, ws.signer)
        report = execute_plan(ws.inventory, plan, desired, ws.store, ws.executor, ws.runs, on_event)
        if ws.signer is not None:
            summary = decision.summary()
            pack = expected.policy_pack_digest if expected is not None else policy_pack_digest(ws.extra_policies)
            ctx = ApplyContext(operation="apply", site=ws.inventory.site.metadata.name, plan=plan,
                               inventory_digest=ws.inventory.digest, policy_pack_digest=pack,
                               policy_allowed=decision.allowed, findings=list(summary.get("findings", [])))
            attest_provision(ws.attestations, report, ctx, plan.hosts(), desired, ws.signer)
        return report


def apply_saved_plan(ws: Workspace, saved: SavedPlan, on_event: OnEvent = _quiet) -> ApplyOutcome:
    """Apply a verified saved plan (no question asked: the plan file is the approval)."""
    decision = PolicyDecision.from_summary(saved.decision)
    planned = PlanResult(saved.plan, decision, saved.bindings)
    if saved.plan.empty:
        return ApplyOutcome(planned, None, True)
    return ApplyOutcome(planned, apply_plan(ws, saved.plan, decision, saved.bindings, on_event), True)


def apply_inventory(ws: Workspace, confirm: Callable[[PlanResult], bool], refresh: bool = False,
                    on_plan_event: OnEvent = _quiet, on_event: OnEvent = _quiet, rollout: Rollout | None = None
                    ) -> ApplyOutcome:
    """Plan, ask ``confirm`` (which sees the plan and decision; the CLI shows them there), then apply.

    Nothing to change: ``confirm`` is still called (to show the plan) but its answer is not needed.
    """
    planned = make_plan(ws, refresh=refresh, on_event=on_plan_event, rollout=rollout)
    answer = confirm(planned)
    if planned.plan.empty:
        return ApplyOutcome(planned, None, True)
    if not answer:
        return ApplyOutcome(planned, None, False)
    report = apply_plan(ws, planned.plan, planned.decision, planned.bindings, on_event)
    return ApplyOutcome(planned, report, True)


# --- refresh / rollback -----------------------------------------------------------------------------------------


def refresh_state(ws: Workspace, on_event: OnEvent = _quiet) -> RefreshResult:
    """Read back the hosts, record what is really there, attest the drift found (with a signer), return it."""
    site = ws.inventory.site.metadata.name
    with ws.store.lock("refresh"):
        state = ws.store.read()
        before = state.serial
        desired = desired_site(ws.inventory)
        if ws.signer is not None:
            attest_log.check_appendable(ws.attestations, ws.signer)
        obs = observe(ws.inventory, desired, state.hosts, ws.executor, ws.runs, on_event)
        drift = with_findings(recorded_drift(site, state.hosts, obs.hosts), obs.untrusted)
        state.hosts.update(obs.hosts)
        state.site = site
        new = ws.store.write(state)
        write_refresh_record(ws.directory, drift, obs.unreachable)  # the audit reports the last drift found
        entry = None
        if ws.signer is not None:
            entry = attest_drift(ws.attestations, site=site, inventory_digest=ws.inventory.digest,
                                 observed=list(obs.hosts), unreachable=obs.unreachable, drift=drift,
                                 lineage=new.lineage, serial_before=before, serial_after=new.serial,
                                 signer=ws.signer)
    return RefreshResult(drift, obs.unreachable, new, entry)


def rollback(ws: Workspace, model: str, hosts: list[str] | None = None, on_event: OnEvent = _quiet) -> ApplyReport:
    """Switch ``model`` back to the version kept as ``previous`` on each host (all hosts that have one).

    An emergency lever: the inventory still pins the newer version, so the next
    plan shows the update again until the inventory is changed too.
    """
    with ws.store.lock("rollback"):
        state = ws.store.read()
        desired = desired_site(ws.inventory)
        candidates = [h for h, rec in state.hosts.items()
                      if model in rec.models and rec.models[model].previous and h in desired]
        chosen = [h for h in candidates if hosts is None or h in hosts]
        if not chosen:
            raise SovkitError(f"no host has a previous version of model {model!r} recorded",
                              "rollback needs an earlier apply of another version on the host")
        if ws.signer is not None:
            attest_log.check_appendable(ws.attestations, ws.signer)
        known = ws.directory / "known_hosts"
        targets = [rollback_target(ws.inventory, desired[h], model, state.hosts[h], known) for h in chosen]
        started = now()
        new_state, run_id, outcomes, records = run_recording(
            "rollback.yml", targets, state, ws.store, ws.executor, ws.runs, on_event, {})
        report = ApplyReport(run_id=run_id, started=started, finished=now(), hosts=outcomes, state=new_state,
                             preflight=Preflight(), records=records)
        if ws.signer is not None:
            ctx = ApplyContext(operation="rollback", site=ws.inventory.site.metadata.name, plan=None,
                               inventory_digest=ws.inventory.digest, policy_pack_digest=policy_pack_digest(None),
                               policy_allowed=True, findings=[])
            attest_provision(ws.attestations, report, ctx, chosen, desired, ws.signer)
    return report


def stop_serving(ws: Workspace, hosts: list[str] | None = None, on_event: OnEvent = _quiet) -> ApplyReport:
    """Stop the serving processes recorded on ``hosts`` (default: all); each is recorded ``stopped``.

    Not attested as a provision: nothing installed changes. The next plan shows each stopped process as a
    restart, because the inventory still asks for it.
    """
    with ws.store.lock("serving stop"):
        state = ws.store.read()
        desired = desired_site(ws.inventory)
        known = ws.directory / "known_hosts"
        targets = []
        for host, rec in sorted(state.hosts.items()):
            want = desired.get(host)
            if want is None or (hosts is not None and host not in hosts):
                continue
            items = [{"name": name, "service": w.service, "manager": w.service_manager, "rundir": w.rundir,
                      "fields": rec.serving[name].model_dump(mode="json", exclude={"served_version", "ttft_ms"})}
                     for name, w in sorted(want.serving.items()) if name in rec.serving]
            if items:
                target = common_target(ws.inventory, want, known)
                target.variables["sovkit_serving_stop"] = items
                targets.append(target)
        if not targets:
            raise SovkitError("no serving process is recorded on " + (", ".join(hosts) if hosts else "this site"),
                              "`sovkit apply` starts them")
        started = now()
        new_state, run_id, outcomes, records = run_recording(
            "serving_stop.yml", targets, state, ws.store, ws.executor, ws.runs, on_event, {})
    return ApplyReport(run_id=run_id, started=started, finished=now(), hosts=outcomes, state=new_state,
                       preflight=Preflight(), records=records)
