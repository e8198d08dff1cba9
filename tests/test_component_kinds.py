"""A component kind is one module: a toy kind registered for the test is planned, diffed, recorded and audited.

The "sysctl" kind below is the whole of it (desired records from a test-provided source, a diff with
reasons, a state record, an audit row); nothing in plan/, provision/, attest/ or audit/ knows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.attest.provenance import host_subjects
from sovkit.audit.collect import installed
from sovkit.components import registry
from sovkit.components.base import Change, ComponentKind, HostContext, Row
from sovkit.components.host import desired_site
from sovkit.inventory import load_inventory
from sovkit.plan.diff import diff
from sovkit.plan.model import COMPONENT_ORDER, Plan
from sovkit.provision.apply import apply_record, check_plan_targets
from sovkit.state.models import HostRecord, State
from sovkit.state.store import LocalStateStore
from tests.conftest import INVENTORIES

DEMO = load_inventory(INVENTORIES / "demo")
HOST = DEMO.site.hosts[0].name
# the test's "inventory" for the kind: host -> sysctl key -> value
SETTINGS = {h.name: {"vm.swappiness": "10", "net.core.somaxconn": "4096"} for h in DEMO.site.hosts}


class SysctlDesired(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str
    value: str


class SysctlRecord(BaseModel):
    """What a host reported back: a plain value only (records are untrusted input)."""

    model_config = ConfigDict(extra="forbid")
    value: str = Field(pattern=r"^[0-9A-Za-z._-]{1,64}$")


class SysctlRow(Row):
    key: str
    value: str
    matches_inventory: bool


class Sysctl(ComponentKind):
    name = "sysctl"
    order = 15  # between firmware (10) and runtime (20)
    field = "sysctl"
    var = "sysctl"
    record = SysctlRecord

    def __init__(self, source: Mapping[str, Mapping[str, str]]) -> None:
        self.source = source

    def desired(self, ctx: HostContext) -> dict[str, Any]:
        return {k: SysctlDesired(key=k, value=v) for k, v in self.source.get(ctx.host.name, {}).items()}

    def changes(self, host: str, name: str, want: SysctlDesired, have: SysctlRecord | None) -> Change | None:
        if have is None:
            return Change(host=host, component=self.name, name=name, action="create", after={"value": want.value},
                          reason=f"set {name} = {want.value}")
        if have.value == want.value:
            return None
        return Change(host=host, component=self.name, name=name, action="update", before={"value": have.value},
                      after={"value": want.value}, reason=f"{name} is {have.value}, wanted {want.value}")

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> SysctlRecord:
        return SysctlRecord(value=result["value"])

    def audit_index(self, inv: Any) -> Any:
        return self.source

    def audit_rows(self, recorded: Mapping[str, SysctlRecord], index: Any) -> list[SysctlRow]:
        wanted = {k: v for host in index.values() for k, v in host.items()}
        return [SysctlRow(key=k, value=r.value, matches_inventory=wanted.get(k) == r.value)
                for k, r in sorted(recorded.items())]




def test_toy_kind_is_planned_recorded_and_audited(tmp_path: Path) -> None:
    with registry.registered(Sysctl(SETTINGS)):
        assert list(COMPONENT_ORDER) == ["driver", "firmware", "sysctl", "runtime", "model", "serving", "host"]
        desired = desired_site(DEMO)
        assert desired[HOST].extra_kinds["sysctl"]["vm.swappiness"].value == "10"

        # plan/diff: its creates, with their reasons, sit between firmware and runtime on each host
        plan = diff(DEMO.site.metadata.name, desired, {})
        mine = [c for c in plan.for_host(HOST)]
        components = [c.component for c in mine]
        assert components.index("sysctl") > components.index("firmware")
        assert max(i for i, c in enumerate(components) if c == "sysctl") < components.index("runtime")
        assert {(c.name, c.reason) for c in mine if c.component == "sysctl"} == {
            ("vm.swappiness", "set vm.swappiness = 10"), ("net.core.somaxconn", "set net.core.somaxconn = 4096")}

        # state: a host's sovkit_record result is folded in, written to state.json and read back
        store = LocalStateStore(tmp_path)
        state = store.read()
        rec = state.hosts.setdefault(HOST, HostRecord())
        apply_record(rec, {"component": "sysctl", "name": "vm.swappiness", "value": "60"}, "apply-1", {})
        apply_record(rec, {"component": "sysctl", "name": "net.core.somaxconn", "value": "4096"}, "apply-1", {})
        with pytest.raises(ValueError):  # an untrusted value is refused by the kind's record model
            apply_record(rec, {"component": "sysctl", "name": "kernel.x", "value": "1; reboot"}, "apply-1", {})
        store.write(state)
        back = store.read()
        assert back.hosts[HOST].extra_kinds["sysctl"]["vm.swappiness"] == SysctlRecord(value="60")

        # the recorded value drives the next diff: one update with its reason, the matching key is unchanged
        again = [c for c in diff(back.site, desired, back.hosts).for_host(HOST) if c.component == "sysctl"]
        assert [(c.name, c.action, c.reason) for c in again] == [
            ("vm.swappiness", "update", "vm.swappiness is 60, wanted 10")]
        check_plan_targets(Plan(site=back.site, changes=tuple(again)), desired, back)

        # audit: its rows appear in the installed section of the report
        rows = {h.host: h for h in installed(DEMO, back)}[HOST].extra_kinds["sysctl"]
        assert rows == [{"key": "net.core.somaxconn", "value": "4096", "matches_inventory": True},
                        {"key": "vm.swappiness", "value": "60", "matches_inventory": False}]
        assert '"sysctl"' in {h.host: h for h in installed(DEMO, back)}[HOST].model_dump_json()
        assert host_subjects(back.hosts[HOST], desired[HOST]) == host_subjects(HostRecord.model_validate(
            back.hosts[HOST].model_dump(exclude={"extra_kinds"})), desired[HOST])  # it names no artifacts

    # unregistered: nothing plans it, a change naming it is refused, a state carrying its records is refused
    assert registry.find("sysctl") is None
    assert list(COMPONENT_ORDER) == ["driver", "firmware", "runtime", "model", "serving", "host"]
    assert not desired_site(DEMO)[HOST].extra_kinds
    assert all(c.component != "sysctl" for c in diff(DEMO.site.metadata.name, desired_site(DEMO), {}).changes)
    with pytest.raises(ValidationError, match="unknown component"):
        Change(host=HOST, component="sysctl", name="vm.swappiness", action="create", reason="x")
    with pytest.raises(ValidationError, match="unknown component kind"):
        HostRecord.model_validate({"extra_kinds": {"sysctl": {"vm.swappiness": {"value": "60"}}}})


def test_builtin_state_and_report_keep_their_shape() -> None:
    """No kind beyond the built-ins: the state file and report.json carry no ``extra_kinds`` key."""
    rec = HostRecord()
    assert "extra_kinds" not in rec.model_dump() and "extra_kinds" not in rec.model_dump_json()
    state = State(site="s", hosts={HOST: rec})
    assert all("extra_kinds" not in h.model_dump_json() for h in installed(DEMO, state))


def test_a_kind_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("firmware"))
