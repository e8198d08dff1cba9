"""What the shipped fakes offer beyond their ports' contracts (tests/contracts/): the scripted executor
records what it was handed, and the fakes drive sovkit's real apply bookkeeping together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sovkit.fakes import MemoryStateStore, ScriptedExecutor, failed, observed, ok, record
from sovkit.provision.apply import run_recording
from sovkit.provision.executor import ExecEvent, HostTarget
from sovkit.state.models import State
from tests.conftest import ROOT

FW = {"sovkit_record": {"component": "firmware", "name": "rebellions-atom-max", "version": "1.2.0",
                        "image_sha256": "ab" * 32, "devices": {"0": "1.2.0", "1": "1.2.0"}}}


def test_it_records_targets_and_variables_as_handed_over(tmp_path: Path) -> None:
    fake = ScriptedExecutor()
    variables: dict[str, Any] = {"sovkit_root": "/r", "sovkit_apply": {"firmware": [{"kind": "k"}]}}
    target = HostTarget("n1", {"ansible_connection": "local"}, variables)
    fake.run("apply.yml", [target], lambda e: None, tmp_path, run_id="apply-1")
    variables["sovkit_root"] = "/changed-after-the-run"
    run = fake.last
    assert (run.playbook, run.run_id, run.workdir) == ("apply.yml", "apply-1", tmp_path)
    assert run.variables("n1") == {"sovkit_root": "/r", "sovkit_apply": {"firmware": [{"kind": "k"}]}}
    assert run.inventory() == {"all": {"hosts": {"n1": {"ansible_connection": "local", "sovkit_root": "/r",
                                                        "sovkit_apply": {"firmware": [{"kind": "k"}]}}}}}
    with pytest.raises(KeyError, match="n9"):
        run.target("n9")


def test_variables_ansible_could_not_receive_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ScriptedExecutor().run("apply.yml", [HostTarget("n1", {}, {"sovkit_root": Path("/r")})],
                               lambda e: None, tmp_path)


def test_steps_can_depend_on_the_variables(tmp_path: Path) -> None:
    def respond(playbook: str, target: HostTarget) -> list[Any] | None:
        kinds = [f["kind"] for f in target.variables["sovkit_observe"]["firmware"]]
        return [record("sovkit record observe", observed(firmware=[f"{k}: 1.0" for k in kinds]))]

    events: list[ExecEvent] = []
    ScriptedExecutor(respond=respond).run(
        "observe.yml", [HostTarget("n1", {}, {"sovkit_observe": {"firmware": [{"kind": "a"}, {"kind": "b"}]}})],
        events.append, tmp_path)
    assert events[1].data["sovkit_observed"]["firmware"] == ["a: 1.0", "b: 1.0"]


def test_a_record_step_must_carry_a_sovkit_record() -> None:
    with pytest.raises(ValueError, match="sovkit_observed or sovkit_probed or sovkit_record"):
        record("sovkit record firmware", {"component": "firmware"})
    with pytest.raises(ValueError, match="no bogus"):
        observed(bogus=[1])


def test_cancel_mid_run_stops_before_the_next_step(tmp_path: Path) -> None:
    fake = ScriptedExecutor({"apply.yml": {"n1": [ok("a"), ok("b"), ok("c")]}})
    seen: list[ExecEvent] = []
    result = fake.run("apply.yml", [HostTarget("n1", {}, {})], seen.append, tmp_path,
                      cancel=lambda: len(seen) >= 2)
    assert [(e.kind, e.task) for e in seen] == [("task", "a"), ("ok", "a")]
    assert result.cancelled and result.rc == 254 and result.hosts["n1"].ok == 1


def test_fakes_drive_the_real_apply_bookkeeping(tmp_path: Path) -> None:
    """apply's record handling (provision/apply.py) writes the state once per ``sovkit record``."""
    fake = ScriptedExecutor({"apply.yml": {
        "n1": [ok("firmware | flash", changed=True), record("sovkit record firmware", FW)],
        "n2": [failed("firmware | flash", "device refused the image")],
    }})
    store = MemoryStateStore()
    targets = [HostTarget("n1", {}, {}), HostTarget("n2", {}, {})]
    state, run_id, hosts, records = run_recording("apply.yml", targets, State(site="s"), store, fake,
                                                  tmp_path, lambda e: None, {})
    assert state.serial == 1 and store.read() == state
    assert state.hosts["n1"].firmware["rebellions-atom-max"].version == "1.2.0"
    assert state.hosts["n1"].last_apply == run_id == fake.last.run_id
    assert "n2" not in state.hosts and hosts["n2"].error == "device refused the image"
    assert hosts["n1"].changed == 1 and records == {"n1": [FW["sovkit_record"]]}


def test_importing_the_fakes_pulls_in_no_heavy_dependency() -> None:
    """Code using the fakes must run where Ansible, regopy and the CLI are not installed."""
    probe = ("import sys, sovkit.fakes; "
             "print(sorted(m for m in ('ansible_runner', 'regopy', 'rich', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
