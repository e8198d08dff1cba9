"""The diff: a pure function from (desired, observed) to a Plan. No I/O, no clock."""

from __future__ import annotations

from sovkit.components import registry
from sovkit.components.host import DesiredHost
from sovkit.plan.model import Change, Plan
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
