"""The diff: a pure function from (desired, observed) to a Plan. No I/O, no clock."""

from __future__ import annotations

from sovkit.components import registry
from sovkit.components.host import DesiredHost
from sovkit.errors import PlanError
from sovkit.plan.model import Change, Plan
from sovkit.plan.rollout import Rollout
from sovkit.state.models import HostRecord


def _host_changes(want: DesiredHost, have: HostRecord) -> tuple[list[Change], int]:
    """Each kind's changes for one host, in kind order (a kind's deletes after its creates and updates)."""
    changes: list[Change] = []
    same = 0
    for kind in registry.kinds():
        kind_changes, kind_same = kind.diff(want.name, kind.desired_of(want), kind.records_of(have))
        changes += kind_changes
        same += kind_same
    return changes, same


def diff(site: str, desired: dict[str, DesiredHost], observed: dict[str, HostRecord]) -> Plan:
    """Changes that take ``observed`` to ``desired``, host by host, in kind order (firmware → runtime → model
    → serving)."""
    changes: list[Change] = []
    unchanged = 0
    for name, want in desired.items():
        host_changes, same = _host_changes(want, observed.get(name, HostRecord()))
        changes.extend(host_changes)
        unchanged += same
    for name in sorted(set(observed) - set(desired)):
        changes.append(Change(host=name, component="host", name=name, action="delete",
                              reason="host removed from the inventory: its state record is dropped"))
    return Plan(site=site, changes=tuple(changes), unchanged=unchanged)


def serving_ties(desired: dict[str, DesiredHost]) -> list[set[str]]:
    """Hosts that must be applied together: those of one serving group (its prefill, decode and router)."""
    groups: dict[str, set[str]] = {}
    for host, want in desired.items():
        for s in want.serving.values():
            if s.group:
                groups.setdefault(s.group, set()).add(host)
    return [hosts for _, hosts in sorted(groups.items()) if len(hosts) > 1]


def restrict(plan: Plan, rollout: Rollout, racks: dict[str, str], ties: list[set[str]]) -> Plan:
    """``plan`` with the rollout attached and only the changes on the hosts its limit selects.

    A limit that takes some hosts of a serving group with changes and leaves out others that have changes is
    refused: applying one half would leave a prefill/decode pair on two versions.
    """
    hosts = {c.host for c in plan.changes} | set(racks)
    keep = rollout.select(sorted(hosts), racks)
    changed = {c.host for c in plan.changes}
    for tie in ties:
        inside, outside = tie & changed & keep, (tie & changed) - keep
        if inside and outside:
            raise PlanError(f"--limit {rollout.limit!r} splits a serving group: {', '.join(sorted(inside))} "
                            f"would change but {', '.join(sorted(outside))} (same group) would not",
                            f"add {', '.join(sorted(outside))} to the limit, or leave {', '.join(sorted(inside))} out")
    kept = tuple(c for c in plan.changes if c.host in keep)
    return Plan(site=plan.site, changes=kept, unchanged=plan.unchanged, rollout=rollout,
                held_back=len(plan.changes) - len(kept))
