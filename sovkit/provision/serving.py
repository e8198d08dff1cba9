"""After apply: prove that what was (re)started serves — readiness, then one smoke request — or roll it back.

A *unit* is what must work as a whole: a serving group (its prefill and decode deployments and its router) or
a plain deployment. Every unit with a process (re)started by this apply is checked:

1. readiness of every process of the unit, each probed on its own host, within its deadline;
2. when all are ready, a smoke request to the unit's front (the router, or the plain deployment), timed;
3. a unit that failed is rolled back as a whole — each process started by this apply goes back to the config
   (and the model version) it ran before, is restarted and checked again — so a prefill/decode pair is never
   left half-switched. A process with no previous config (first install) cannot go back: the unit's new
   processes are stopped and the host fails with that said.

The checks run on the hosts (``probe.yml``: each host probes 127.0.0.1), so the controller needs no route to
the serving ports. Every outcome goes into the state and into the report, from which the provision
attestation is made: the failed check and the rollback's check are both attested.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from sovkit.components.host import DesiredHost
from sovkit.components.serving import DesiredServing
from sovkit.inventory.loader import LoadedInventory
from sovkit.provision.executor import ExecEvent, Executor, HostOutcome, HostTarget
from sovkit.provision.hostvars import common_target
from sovkit.state.models import HostRecord, State, now
from sovkit.state.store import StateStore

Phase = Literal["apply", "rollback"]
#: provision.apply.run_recording, passed in (apply imports this module): runs a playbook whose roles send
#: ``sovkit record`` results, folding each into the state as it arrives
RecordRun = Callable[..., tuple[State, str, dict[str, HostOutcome], dict[str, list[dict[str, Any]]]]]


class ServingCheck(BaseModel):
    """One process's check: attested in the host's provision statement and shown by `apply`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    name: str
    role: str
    unit: str
    endpoint: str
    model_version: str
    phase: Phase
    ready: bool
    smoke: bool | None = None
    ttft_ms: float | None = None
    answer: str | None = None
    error: str = ""


@dataclass(frozen=True)
class Member:
    host: str
    want: DesiredServing


@dataclass
class Unit:
    """A serving group (prefill, decode, router) or a plain deployment: checked and rolled back as one."""

    name: str
    members: list[Member] = field(default_factory=list)

    @property
    def front(self) -> Member | None:
        """Where the smoke request goes: the router of a group, or the plain deployment."""
        return next((m for m in self.members if m.want.takes_traffic), None)


@dataclass
class ServingOutcome:
    state: State
    checks: list[ServingCheck]
    failures: dict[str, tuple[str, str]]  # host -> (task, message)
    records: dict[str, list[dict[str, Any]]]


def units(desired: dict[str, DesiredHost]) -> list[Unit]:
    out: dict[str, Unit] = {}
    for host, d in sorted(desired.items()):
        for name, want in sorted(d.serving.items()):
            key = f"group {want.group}" if want.group else f"deployment {name}"
            out.setdefault(key, Unit(key)).members.append(Member(host, want))
    return list(out.values())


def _probe_args(m: Member, op: str) -> list[str]:
    base = f"http://127.0.0.1:{m.want.port}"
    if op == "ready":
        return ["ready", base, m.want.readiness_path, str(m.want.deadline_s)]
    return ["smoke", base, m.want.served_model_name, str(m.want.deadline_s)]


def _parse(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"ok": False, "error": f"the probe printed no result: {raw[:200]!r}"}
    return value if isinstance(value, dict) else {"ok": False, "error": "the probe printed no object"}


def _err(result: dict[str, Any]) -> str:
    return str(result.get("error") or f"status {result.get('status')}")[:300]


class _Runner:
    """Runs probe and rollback plays for one apply and folds their results into the state."""

    def __init__(self, inv: LoadedInventory, desired: dict[str, DesiredHost], store: StateStore,
                 executor: Executor, workdir: Path, on_event: Callable[[ExecEvent], None]) -> None:
        self.inv, self.desired, self.store, self.executor = inv, desired, store, executor
        self.workdir, self.on_event = workdir, on_event
        self.known = workdir.parent / "known_hosts"

    def probe(self, jobs: list[tuple[Member, str]]) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Run probes (member, "ready"|"smoke"); a host that could not be reached answers every probe as failed."""
        if not jobs:
            return {}
        per_host: dict[str, list[tuple[Member, str]]] = {}
        for m, op in jobs:
            per_host.setdefault(m.host, []).append((m, op))
        targets = []
        for host, items in per_host.items():
            target = common_target(self.inv, self.desired[host], self.known)
            target.variables["sovkit_probes"] = [{"name": m.want.deployment, "args": _probe_args(m, op)}
                                                 for m, op in items]
            targets.append(target)
        seen: dict[str, list[str]] = {}

        def handle(event: ExecEvent) -> None:
            if event.kind == "record" and "sovkit_probed" in event.data:
                seen[event.host] = [str(x) for x in event.data["sovkit_probed"]]
            self.on_event(event)

        result = self.executor.run("probe.yml", targets, handle, self.workdir, run_id=f"probe-{uuid.uuid4().hex[:12]}")
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        for host, items in per_host.items():
            lines = seen.get(host)
            outcome = result.hosts.get(host, HostOutcome())
            for i, (m, op) in enumerate(items):
                if lines is None or i >= len(lines):
                    out[(host, m.want.deployment, op)] = {
                        "ok": False, "unprobed": True, "error": f"host not probed: {outcome.error or 'no result'}"}
                else:
                    out[(host, m.want.deployment, op)] = _parse(lines[i])
        return out

    def check(self, todo: list[Unit], phase: Phase, state: State, must: set[tuple[str, str]]
              ) -> tuple[list[ServingCheck], set[str]]:
        """Readiness of every process of each unit, then a smoke request to the unit's front.

        A unit passes when every process in ``must`` (those this phase (re)started) and its front are ready and
        the smoke request is answered. A process the phase did not touch is probed and reported too, but does
        not fail the unit by itself (a decode on a host that failed earlier in the apply is already reported
        there; the router sends around it). Returns the checks and the names of the failed units; statuses
        are written into ``state``.
        """
        failed_start = {(m.host, m.want.deployment): rec.detail for u in todo for m in u.members
                        if (rec := state.hosts.get(m.host, HostRecord()).serving.get(m.want.deployment)) is not None
                        and rec.status == "start-failed" and (m.host, m.want.deployment) in must}
        # a unit with a process that exited at once has failed already: waiting out the others' deadlines (the
        # router's /health stays 503 without its decode) would only delay the rollback
        doomed = {u.name: next(name for (_h, name) in failed_start if any(
                  (m.host, m.want.deployment) in failed_start for m in u.members))
                  for u in todo if any((m.host, m.want.deployment) in failed_start for m in u.members)}
        ready = self.probe([(m, "ready") for u in todo if u.name not in doomed for m in u.members])
        for u in todo:
            for m in u.members:
                key = (m.host, m.want.deployment)
                if key in failed_start:
                    ready[(*key, "ready")] = {"ok": False, "unprobed": True, "start_failed": True,
                                              "error": f"did not start: {failed_start[key] or 'no reason given'}"}
                elif u.name in doomed:
                    ready[(*key, "ready")] = {"ok": False, "unprobed": True,
                                              "error": f"not checked: {doomed[u.name]} did not start"}

        def needed(u: Unit) -> list[Member]:
            return [m for m in u.members if (m.host, m.want.deployment) in must or m is u.front]

        fronts = [u.front for u in todo if u.front is not None
                  and all(ready[(m.host, m.want.deployment, "ready")].get("ok") for m in needed(u))]
        smoke = self.probe([(f, "smoke") for f in fronts if f is not None])
        checks: list[ServingCheck] = []
        failed: set[str] = set()
        stamp = now()
        for u in todo:
            unit_ok = u.front is not None and (u.front.host, u.front.want.deployment, "smoke") in smoke
            for m in u.members:
                r = ready[(m.host, m.want.deployment, "ready")]
                s = smoke.get((m.host, m.want.deployment, "smoke"))
                ok = bool(r.get("ok")) and (s is None or bool(s.get("ok")))
                if not ok and m in needed(u):
                    unit_ok = False
                error = "" if r.get("ok") else (_err(r) if r.get("unprobed") else
                                                 f"not ready within {m.want.deadline_s} s: {_err(r)}")
                if not error and s is not None and not s.get("ok"):
                    error = f"smoke request failed: {_err(s)}"
                rec = state.hosts.get(m.host, HostRecord()).serving.get(m.want.deployment)
                version = rec.model_version if rec else m.want.model_version
                ttft = s.get("ttft_ms") if s and s.get("ok") and isinstance(s.get("ttft_ms"), (int, float)) else None
                checks.append(ServingCheck(
                    host=m.host, name=m.want.deployment, role=m.want.role, unit=u.name, endpoint=m.want.endpoint,
                    model_version=version, phase=phase, ready=bool(r.get("ok")),
                    smoke=None if s is None else bool(s.get("ok")), ttft_ms=ttft,
                    answer=str(s.get("text"))[:200] if s and s.get("ok") else None, error=error))
                if rec is not None:
                    restored = phase == "rollback" and (m.host, m.want.deployment) in must
                    status = ("rolled-back" if restored else "ready") if ok else "unhealthy"
                    state.hosts[m.host].serving[m.want.deployment] = rec.model_copy(update={
                        "status": status, "checked_at": stamp, "detail": error,
                        "ttft_ms": ttft if ttft is not None else rec.ttft_ms})
            if not unit_ok:
                failed.add(u.name)
        return checks, failed


def check_serving(inv: LoadedInventory, desired: dict[str, DesiredHost], before: State, state: State,
                  records: dict[str, list[dict[str, Any]]], store: StateStore, executor: Executor, workdir: Path,
                  on_event: Callable[[ExecEvent], None], record_run: RecordRun) -> ServingOutcome:
    """Check every unit this apply (re)started; roll back the ones that fail (see the module docstring).

    ``records`` are the apply's ``sovkit record`` results (which processes were started, and whether each kept
    a previous config); ``record_run`` runs a recording playbook (provision.apply.run_recording).
    """
    started = {(h, r["name"]): bool(r.get("kept")) for h, recs in records.items() for r in recs
               if r.get("component") == "serving" and not r.get("removed")}
    todo = [u for u in units(desired) if any((m.host, m.want.deployment) in started for m in u.members)]
    if not todo:
        return ServingOutcome(state, [], {}, {})
    runner = _Runner(inv, desired, store, executor, workdir, on_event)
    checks, failed = runner.check(todo, "apply", state, set(started))
    state = store.write(state)
    failures: dict[str, tuple[str, str]] = {}
    rb_records: dict[str, list[dict[str, Any]]] = {}
    bad = [u for u in todo if u.name in failed]
    if bad:
        state, rb_records, restored, stopped = _roll_back(runner, bad, started, before, state, record_run)
        if restored:
            rechecks, refailed = runner.check(restored, "rollback", state, set(started))
            checks += rechecks
            state = store.write(state)
        else:
            refailed = set()
        for u in bad:
            # the cause first: a process that did not start, then one not ready, then the router or the smoke request
            errors = sorted((c for c in checks if c.unit == u.name and c.phase == "apply" and c.error
                             and not c.error.startswith("not checked")),
                            key=lambda c: ((c.host, c.name) not in started, not c.error.startswith("did not start"),
                                           c.role == "router"))
            first = errors[0] if errors else None
            why = f"{first.name} on {first.host}: {first.error}" if first else "the smoke request was not answered"
            if u in stopped:
                after = "nothing to roll back to (first install): its new processes were stopped"
            elif u.name in refailed:
                after = "rolled back to the previous config, which failed its check too"
            else:
                after = "rolled back to the previous config and model, which answers"
            for m in u.members:
                if (m.host, m.want.deployment) in started:
                    failures.setdefault(m.host, ("serving check", f"{u.name}: {why}; {after}"))
    return ServingOutcome(state, checks, failures, rb_records)


def _roll_back(runner: _Runner, bad: list[Unit], started: dict[tuple[str, str], bool], before: State,
               state: State, record_run: RecordRun
               ) -> tuple[State, dict[str, list[dict[str, Any]]], list[Unit], list[Unit]]:
    """Restore (or stop) each process of the failed units that this apply started; returns the new state, the
    rollback's records, the units restored (to check again) and the units stopped."""
    per_host: dict[str, dict[str, list[dict[str, Any]]]] = {}
    restored: list[Unit] = []
    stopped: list[Unit] = []
    for u in bad:
        mine = [m for m in u.members if (m.host, m.want.deployment) in started]
        can = all(started[(m.host, m.want.deployment)] for m in mine)
        (restored if can else stopped).append(u)
        for m in mine:
            w = m.want
            item = {"name": w.deployment, "action": "restore" if can else "stop", "service": w.service,
                    "manager": w.service_manager, "rundir": w.rundir, "spec_path": w.spec_path,
                    "record_path": w.record_path,
                    "files": [w.spec_path] + ([w.unit_path] if w.service_manager == "systemd" else []),
                    "fields": w.record()}
            slot = per_host.setdefault(m.host, {"serving": [], "models": []})
            slot["serving"].append(item)
            old = before.hosts.get(m.host, HostRecord()).models.get(w.model)
            new = state.hosts.get(m.host, HostRecord()).models.get(w.model)
            if can and old and new and old.version != new.version and new.previous == old.version \
                    and w.model not in {x["name"] for x in slot["models"]}:
                slot["models"].append({"name": w.model, "dir": str(Path(new.path).parent)})
    targets: list[HostTarget] = []
    for host, slot in per_host.items():
        target = common_target(runner.inv, runner.desired[host], runner.known)
        target.variables["sovkit_serving_rollback"] = slot["serving"]
        target.variables["sovkit_model_back"] = slot["models"]
        targets.append(target)
    new_state, _run_id, _hosts, rb_records = record_run("serving_rollback.yml", targets, state, runner.store,
                                                        runner.executor, runner.workdir, runner.on_event, {})
    return new_state, rb_records, restored, stopped
