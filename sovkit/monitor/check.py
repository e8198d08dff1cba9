"""One compliance check of a site: observe the hosts, evaluate the policy, verify the attestation log, probe the
serving endpoints, write the decision to the decision-log sinks, and append a signed statement of it all.

Read-only towards the site and its state: the hosts are observed the way `sovkit refresh` observes them, but the
observation is not recorded (no state write, no state lock), so saved plans stay bound to their serial and an
apply is never blocked by the monitor. Drift therefore stays visible until an apply repairs it or a refresh
records it; "pending" (what apply would change) stays visible until the host matches the inventory.

Every stage is guarded: a stage that fails is named in ``errors`` and the check goes on; a host that could
not be observed is ``unobservable`` (unknown), never "no drift"; a policy engine that does not answer makes the
check non-compliant (``allowed`` false), never compliant.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sovkit.attest import log as attest_log
from sovkit.attest.predicates import DriftChange
from sovkit.attest.provenance import check_subjects
from sovkit.components.host import DesiredHost, desired_site
from sovkit.errors import ObserveError, SovkitError
from sovkit.inventory.models import LogSink
from sovkit.monitor.decisionlog import decision_event, write_decision
from sovkit.plan.diff import diff
from sovkit.plan.drift import recorded_drift
from sovkit.plan.model import Plan
from sovkit.policy.api import PolicyDecision, evaluate_input
from sovkit.policy.engine import PolicyEngine
from sovkit.policy.input import build_input
from sovkit.provision.endpoints import serving_status
from sovkit.provision.executor import Executor
from sovkit.provision.observe import observe, with_findings
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer
from sovkit.signing.statement import Statement, Subject
from sovkit.state.models import State, now
from sovkit.workspace import Workspace

COMPLIANCE_CHECK_PREDICATE = "https://sovkit.dev/attestation/compliance-check/v1"
SERVING_TIMEOUT_S = 5.0


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointHealth(_M):
    """One serving process probed from the monitor: ready (HTTP 200 on its readiness path) or why not."""

    host: str
    name: str
    healthy: bool
    error: str = ""


class LogCheck(_M):
    """The attestation log's verification before this check's statement was appended."""

    ok: bool
    entries: int
    failed_steps: list[str] = Field(default_factory=list)


class CompliancePredicate(_M):
    """What one monitor check found (docs/monitor.md, field by field)."""

    operation: Literal["monitor"] = "monitor"
    site: str
    inventory_digest: str | None
    time: str = Field(description="when the check started (UTC)")
    duration_s: float
    ok: bool = Field(description="every stage ran; false when any stage is named in errors")
    compliant: bool = Field(description="allowed, every host observed with no drift and nothing pending, the log "
                                        "verifies and every endpoint is healthy")
    allowed: bool = Field(description="the policy decision; false when the engine gave no answer")
    engine: str | None
    pack_digest: str | None
    deny: list[str] = Field(description="rule ids with an unwaived deny finding (sorted, unique)")
    warn: list[str] = Field(description="rule ids with an unwaived warn finding (sorted, unique)")
    observed: list[str] = Field(description="hosts read back (sorted)")
    unobservable: dict[str, str] = Field(description="host -> why it could not be read: its drift is unknown")
    drift: dict[str, list[DriftChange]] = Field(description="host -> differences from the recorded state")
    pending: dict[str, list[DriftChange]] = Field(description="host -> what apply would change (inventory vs host)")
    serving: list[EndpointHealth]
    attestation_log: LogCheck | None
    decision_id: str
    decision_log: dict[str, str] = Field(description="decision-log sink -> 'ok' or the error writing to it")
    state_serial: int | None
    errors: dict[str, str] = Field(description="stage -> what failed (inventory, observe, policy, "
                                               "attestation-log, serving, decision-log)")


def compliance_statement(predicate: CompliancePredicate) -> Statement:
    """The subject is the inventory checked (like a policy decision); an unreadable one has no digest to name."""
    digest = (predicate.inventory_digest or "sha256:" + hashlib.sha256(b"").hexdigest()).removeprefix("sha256:")
    return Statement(subject=[Subject(name=f"inventory:{predicate.site}", digest={"sha256": digest})],
                     predicateType=COMPLIANCE_CHECK_PREDICATE, predicate=predicate.model_dump(mode="json"))


@dataclass
class CheckReport:
    """A check as the loop, the metrics and the CLI see it: the attested predicate plus what was not attested."""

    predicate: CompliancePredicate
    decision: PolicyDecision | None
    hosts: list[str]
    entry: attest_log.LogEntry | None = None
    attest_error: str | None = None
    log_entries: int | None = None
    finished: float = field(default_factory=time.time)

    @property
    def failed(self) -> bool:
        return not self.predicate.ok or self.attest_error is not None


def _changes(plan: Plan, hosts: set[str]) -> dict[str, list[DriftChange]]:
    out: dict[str, list[DriftChange]] = {}
    for c in plan.changes:
        if c.host in hosts:
            out.setdefault(c.host, []).append(
                DriftChange(component=c.component, name=c.name, action=c.action, reason=c.reason))
    return out


def _unique(findings: list[dict[str, object]], severity: str) -> list[str]:
    return sorted({str(f.get("id")) for f in findings if f.get("severity") == severity and not f.get("waived")})


class Monitor:
    """Checks one site again and again; the inventory is re-read for each check (an edit is picked up, an
    unreadable one is a failed check, not a stopped monitor)."""

    def __init__(self, workspace: Workspace, *, signer: Signer, keys: list[PublicKey],
                 serving_timeout: float = SERVING_TIMEOUT_S) -> None:
        self.inventory_path: Path = workspace.inventory.files[0] if len(workspace.inventory.files) == 1 \
            else workspace.inventory.root
        self.state_dir = workspace.directory
        self.engine: PolicyEngine | None = workspace.policy_engine
        self.extra = workspace.extra_policies
        self.executor: Executor = workspace.executor
        self.signer = signer
        self.keys = keys
        self.serving_timeout = serving_timeout
        self.site = workspace.inventory.site.metadata.name
        self.hosts = [h.name for h in workspace.inventory.site.hosts]
        self.sinks: list[LogSink] = list(workspace.inventory.site.log_sinks)
        self.log_dir = workspace.attestations

    def _open(self) -> Workspace:
        ws = Workspace.open(self.inventory_path, self.state_dir, executor=self.executor,
                            policy_engine=self.engine, extra_policies=self.extra)
        self.site = ws.inventory.site.metadata.name
        self.hosts = [h.name for h in ws.inventory.site.hosts]
        self.sinks = list(ws.inventory.site.log_sinks)
        return ws

    def check(self, cancel: Callable[[], bool] = lambda: False) -> CheckReport:
        """Run every stage, attest the result, and return it; never raises for what it checks.

        ``cancel`` (the monitor is stopping) abandons the observation under way: the check is still attested,
        with its hosts unobservable and the observe stage failed."""
        started, clock = now(), time.monotonic()
        errors: dict[str, str] = {}
        ws: Workspace | None = None
        try:
            ws = self._open()
        except Exception as exc:  # an unreadable inventory is a failed check, not a stopped monitor
            errors["inventory"] = _message(exc)
        state = State()
        desired: dict[str, DesiredHost] = {}
        observed: dict[str, object] = {}
        unobservable: dict[str, str] = {}
        drift: dict[str, list[DriftChange]] = {}
        pending: dict[str, list[DriftChange]] = {}
        merged = state
        if ws is not None:
            try:
                state = ws.store.read()
                desired = desired_site(ws.inventory)
                obs = observe(ws.inventory, desired, state.hosts, ws.executor, ws.runs, partial=True,
                              cancel=cancel)
                observed, unobservable = dict(obs.hosts), dict(obs.unreachable)
                seen = set(obs.hosts)
                drift = _changes(with_findings(recorded_drift(self.site, state.hosts, obs.hosts), obs.untrusted),
                                 seen)
                pending = _changes(diff(self.site, {h: d for h, d in desired.items() if h in seen}, obs.hosts),
                                   seen)
                merged = state.model_copy(update={"hosts": {**state.hosts, **obs.hosts}})
            except ObserveError as exc:
                unobservable = dict(exc.failures)
                errors["observe"] = exc.message
            except Exception as exc:  # a check never stops the monitor; the error is attested
                errors["observe"] = _message(exc)
        for host in self.hosts:
            if host not in observed and host not in unobservable:
                unobservable[host] = errors.get("observe") or errors.get("inventory") or "not observed"
        if cancel() and unobservable:
            errors["observe"] = "abandoned: the monitor was stopped during the check"
        if unobservable and "observe" not in errors:
            errors["observe"] = f"could not observe {', '.join(sorted(unobservable))}: their drift is unknown"
        decision, input_digest, policy_error = self._policy(ws, merged, errors)
        log = self._verify_log(state, ws, errors)
        serving = self._serving(desired, merged, errors)
        decision_id = str(uuid.uuid4())
        event = decision_event(
            decision_id=decision_id, site=self.site, timestamp=started, input_digest=input_digest,
            pack_digest=decision.pack_digest if decision else None, engine=decision.engine if decision else None,
            result={"allowed": decision.allowed, "findings": decision.findings} if decision else None,
            error=policy_error)
        written = write_decision(self.sinks, event)
        if not written:
            errors["decision-log"] = "no log sink has decision_log: true: the decision was not logged"
        elif any(v != "ok" for v in written.values()):
            errors["decision-log"] = "; ".join(v for v in written.values() if v != "ok")
        allowed = decision is not None and decision.allowed
        compliant = (allowed and not unobservable and not drift and not pending and bool(log and log.ok)
                     and all(s.healthy for s in serving) and not set(errors) - {"decision-log"})
        predicate = CompliancePredicate(
            site=self.site, inventory_digest=ws.inventory.digest if ws else None, time=started,
            duration_s=round(time.monotonic() - clock, 3), ok=not errors, compliant=compliant, allowed=allowed,
            engine=decision.engine if decision else None, pack_digest=decision.pack_digest if decision else None,
            deny=_unique(decision.findings, "deny") if decision else [],
            warn=_unique(decision.findings, "warn") if decision else [],
            observed=sorted(observed), unobservable=dict(sorted(unobservable.items())), drift=drift,
            pending=pending, serving=serving, attestation_log=log, decision_id=decision_id, decision_log=written,
            state_serial=state.serial if ws is not None else None, errors=errors)
        report = CheckReport(predicate, decision, list(self.hosts))
        try:
            (report.entry,) = attest_log.append(self.log_dir, [compliance_statement(predicate)], self.signer)
            report.log_entries = report.entry.index + 1
        except Exception as exc:  # reported as a failed check (metrics, exit code)
            report.attest_error = _message(exc)
        return report

    def _policy(self, ws: Workspace | None, state: State, errors: dict[str, str]
                ) -> tuple[PolicyDecision | None, str | None, str | None]:
        if ws is None:
            return None, None, errors["inventory"]
        digest = None
        try:
            doc = build_input(ws.inventory, state)
            digest = "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()
            return evaluate_input(doc, self.extra, self.engine), digest, None
        except Exception as exc:  # a dead engine is a non-compliant check, never a stopped monitor
            errors["policy"] = _message(exc)
            return None, digest, errors["policy"]

    def _verify_log(self, state: State, ws: Workspace | None, errors: dict[str, str]) -> LogCheck | None:
        try:
            result = attest_log.verify_log(self.log_dir, self.keys)
            if result.entries or result.ok:
                result.steps.append(check_subjects(result.entries, state if state.serial else None,
                                                   ws.inventory.artifact_root if ws else None))
            failed = [s.name for s in result.failures]
            if failed:
                errors["attestation-log"] = "; ".join(f"{s.name}: {'; '.join(s.problems) or s.detail}"
                                                      for s in result.failures)
            return LogCheck(ok=result.ok, entries=len(result.entries), failed_steps=failed)
        except Exception as exc:  # a check never stops the monitor
            errors["attestation-log"] = _message(exc)
            return None

    def _serving(self, desired: dict[str, DesiredHost], state: State, errors: dict[str, str]
                 ) -> list[EndpointHealth]:
        try:
            return [EndpointHealth(host=s.host, name=s.name, healthy=s.healthy, error=s.error)
                    for s in serving_status(desired, state, self.serving_timeout)]
        except Exception as exc:  # a check never stops the monitor
            errors["serving"] = _message(exc)
            return []


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, SovkitError) else f"{type(exc).__name__}: {exc}"
