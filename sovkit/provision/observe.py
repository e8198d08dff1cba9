"""Read back what is really on the hosts and turn it into host records (for refresh and drift)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovkit.components import registry
from sovkit.components.base import Finding
from sovkit.components.host import DesiredHost
from sovkit.errors import ObserveError
from sovkit.inventory.loader import LoadedInventory
from sovkit.plan.model import Change, Plan
from sovkit.provision.executor import ExecEvent, Executor, HostOutcome, HostTarget
from sovkit.provision.facts import FactsError, HostFacts, check_hardware, facts_of
from sovkit.provision.hostvars import observe_target
from sovkit.state.models import HostRecord

__all__ = ["Finding", "Observation", "observe", "with_findings"]


@dataclass
class Observation:
    hosts: dict[str, HostRecord]
    unreachable: dict[str, str] = field(default_factory=dict)
    untrusted: dict[str, list[Finding]] = field(default_factory=dict)
    facts: dict[str, HostFacts] = field(default_factory=dict)


def with_findings(drift: Plan, untrusted: dict[str, list[Finding]]) -> Plan:
    """The drift with each refused host value as its own change (replacing the generic one for that component)."""
    if not untrusted:
        return drift
    flagged = {(h, f.component, f.name) for h, found in untrusted.items() for f in found}
    changes = [c for c in drift.changes if (c.host, c.component, c.name) not in flagged]
    for host, found in untrusted.items():
        for f in found:
            changes.append(Change(host=host, component=f.component, name=f.name, action="update",
                                  reason=f"untrusted value reported by the host, refused: {f.message}"))
    return drift.model_copy(update={"changes": tuple(changes)})


def _parse(target: HostTarget, desired: DesiredHost, recorded: HostRecord, obs: dict[str, Any],
           findings: list[Finding] | None = None) -> HostRecord:
    """Turn the observe play's output into a host record, each kind parsing its own part. Everything a host
    reports is untrusted input: device ids, versions and link targets must be plain identifiers (and a model's
    ``current`` must point at ``<model dir>/<version>``), else the component is recorded as version
    ``untrusted`` — which the diff plans to repair — and a :class:`Finding` is added; the refused value itself
    is never stored."""
    found = findings if findings is not None else []
    spec = target.variables["sovkit_observe"]
    out = HostRecord(last_apply=recorded.last_apply, updated_at=recorded.updated_at)
    for kind in registry.kinds():
        if kind.var not in spec:
            continue
        parsed = kind.parse(spec[kind.var], obs, kind.desired_of(desired), kind.records_of(recorded), found)
        kind.records_of(out, write=True).update(parsed)
    return out


def observe(
    inv: LoadedInventory,
    desired: dict[str, DesiredHost],
    recorded: dict[str, HostRecord],
    executor: Executor,
    workdir: Path,
    on_event: Callable[[ExecEvent], None] = lambda e: None,
    partial: bool = False,
    cancel: Callable[[], bool] = lambda: False,
) -> Observation:
    """Read every desired host back; raises ObserveError naming each host that could not be read (fail closed:
    a refresh that silently fell back to recorded state would report "no drift" for a host nobody looked at),
    and HardwareMismatch when a host's hardware (arch, CPU, accelerator cards) is not what the inventory says
    (that is the inventory's error, not drift an apply could repair).

    ``partial`` (the monitor) returns the hosts that were read with the others in ``unreachable`` instead of
    raising: the caller reports those as unknown, never as unchanged. ``cancel`` stops the play (every host not
    yet read is then unreachable)."""
    known_hosts = workdir.parent / "known_hosts"
    targets = {h: observe_target(inv, d, recorded.get(h, HostRecord()), known_hosts) for h, d in desired.items()}
    raw: dict[str, dict[str, Any]] = {}

    def handle(event: ExecEvent) -> None:
        if event.kind == "record" and "sovkit_observed" in event.data:
            raw[event.host] = event.data["sovkit_observed"]
        on_event(event)

    result = executor.run("observe.yml", list(targets.values()), handle, workdir, cancel=cancel,
                          run_id=f"observe-{uuid.uuid4().hex[:12]}")
    out = Observation(hosts={})
    checked: dict[str, HostFacts | FactsError] = {}
    for host, target in targets.items():
        outcome: HostOutcome = result.hosts.get(host, HostOutcome())
        if host not in raw or outcome.failed or outcome.unreachable or result.cancelled:
            what = "unreachable" if outcome.unreachable else "observe failed"
            task = f" at {outcome.failed_task}" if outcome.failed_task else ""
            out.unreachable[host] = f"{what}{task}: {outcome.error}" if outcome.error else \
                "the observe play returned no observation"
            continue
        hw = facts_of(raw[host])
        if hw is not None:
            checked[host] = hw
            if not isinstance(hw, FactsError):
                out.facts[host] = hw
        found: list[Finding] = []
        out.hosts[host] = _parse(target, desired[host], recorded.get(host, HostRecord()), raw[host], found)
        if found:
            out.untrusted[host] = found
    if out.unreachable and not partial:  # fail closed: a host not read back is never replaced by its recorded state
        raise ObserveError(out.unreachable)
    check_hardware({h: inv.site.host(h) for h in checked}, checked)
    return out
