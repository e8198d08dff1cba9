"""The Executor contract, run on every adapter: ansible-runner (real Ansible on local-connection hosts and
a refused SSH port) and the scripted fake.

Each adapter comes as a ``Rig``: the executor plus three ways to make a host — healthy, failing (its
module interpreter is missing), unreachable. Adding an adapter (a site-worker executor, ...) is one line in
``ADAPTERS``. The fake is scripted with what the real one emits for observe.yml on such hosts.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest

from sovkit.errors import ProvisionError
from sovkit.fakes import ScriptedExecutor, failed, observed, ok, record, unreachable
from sovkit.provision.ansible_executor import AnsibleRunnerExecutor
from sovkit.provision.executor import EventKind, ExecEvent, Executor, HostTarget, RunResult
from sovkit.provision.hostvars import SYSTEM_PATH, helper

PLAYBOOK = "observe.yml"


@dataclass
class Rig:
    executor: Executor
    healthy: Callable[[str], HostTarget]
    failing: Callable[[str], HostTarget]
    unreachable: Callable[[str], HostTarget]
    workdir: Path

    def run(self, targets: list[HostTarget], run_id: str | None = None,
            cancel: Callable[[], bool] = lambda: False) -> tuple[list[ExecEvent], RunResult]:
        events: list[ExecEvent] = []
        result = self.executor.run(PLAYBOOK, targets, events.append, self.workdir, cancel=cancel, run_id=run_id)
        return events, result


def _variables(models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """observe.yml's variables (as hostvars.observe_target makes them): one device query, optional models."""
    return {
        "sovkit_root": "", "sovkit_path_env": SYSTEM_PATH, "sovkit_python": sys.executable,
        "sovkit_version_probe": helper("version_probe"), "sovkit_host_facts": helper("host_facts"),
        "sovkit_npu_devices": helper("npu_devices"),
        "sovkit_observe": {"firmware": [{"kind": "contract-npu", "query": json.dumps(
            {"format": "furiosa-smi", "commands": [["echo", "[]"]], "chips": {}})}], "runtimes": [],
                           "models": models or [], "serving": []},
    }


LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
NO_PYTHON = {"ansible_connection": "local", "ansible_python_interpreter": "/nonexistent/python3"}
MISSING_MODEL = [{"name": "m", "dir": "/nonexistent", "files": []}]


@contextlib.contextmanager
def _refused_port() -> Iterator[int]:
    """A bound, never-listening TCP port: connections to it are refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def ansible_runner(tmp: Path) -> Iterator[Rig]:
    with _refused_port() as port:
        ssh = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": port,
               "ansible_python_interpreter": sys.executable,
               "ansible_ssh_common_args": "-o BatchMode=yes -o StrictHostKeyChecking=no "
                                          "-o UserKnownHostsFile=/dev/null"}
        yield Rig(AnsibleRunnerExecutor(),
                  healthy=lambda n: HostTarget(n, LOCAL, _variables()),
                  failing=lambda n: HostTarget(n, NO_PYTHON, _variables(MISSING_MODEL)),
                  unreachable=lambda n: HostTarget(n, ssh, _variables()),
                  workdir=tmp / "runs")


def scripted_rig(fake: ScriptedExecutor, tmp: Path) -> Rig:
    """``fake`` scripted, host by host, with what ansible-runner reports for the same hosts."""

    def healthy(name: str) -> HostTarget:
        fake.script(PLAYBOOK, name, ok("observe | query devices"),
                    record("sovkit record observe", observed(firmware=[""], firmware_rc=[0])))
        return HostTarget(name, LOCAL, _variables())

    def failing(name: str) -> HostTarget:
        fake.script(PLAYBOOK, name, ok("observe | query devices"),
                    failed("observe | active model versions",
                           "The module interpreter '/nonexistent/python3' was not found."))
        return HostTarget(name, NO_PYTHON, _variables(MISSING_MODEL))

    def gone(name: str) -> HostTarget:
        fake.script(PLAYBOOK, name, unreachable("observe | query devices", "ssh: connect to host 127.0.0.1 "
                                                "port 1: Connection refused"))
        return HostTarget(name, LOCAL, _variables())

    return Rig(fake, healthy, failing, gone, tmp / "runs")


def scripted(tmp: Path) -> Iterator[Rig]:
    yield scripted_rig(ScriptedExecutor(), tmp)


ADAPTERS: list[Any] = [pytest.param(ansible_runner, marks=pytest.mark.slow, id="ansible_runner"),
                       pytest.param(scripted, id="scripted")]


@pytest.fixture(params=ADAPTERS)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    factory: Callable[[Path], Iterator[Rig]] = request.param
    yield from factory(tmp_path)


# ---------------------------------------------------------------------------------------------- contract

def _well_formed(events: list[ExecEvent], targets: list[HostTarget]) -> None:
    """Kinds are the port's; hosts are targets; each outcome follows the start of its own task on that host;
    nothing happens on a host after it failed, became unreachable or was done."""
    names = {t.name for t in targets}
    current: dict[str, str] = {}
    ended: set[str] = set()
    for e in events:
        assert e.kind in get_args(EventKind) and e.host in names, e
        assert e.host not in ended, f"event after the end of {e.host}: {e}"
        if e.kind == "task":
            current[e.host] = e.task
        elif e.kind in ("ok", "record", "failed", "unreachable"):
            assert current.get(e.host) == e.task, f"{e} does not follow the start of its task"
        if e.kind in ("failed", "unreachable", "host_done"):
            ended.add(e.host)


def healthy_host_records_and_is_done(rig: Rig) -> None:
    targets = [rig.healthy("n1")]
    events, result = rig.run(targets, run_id="contract-healthy")
    _well_formed(events, targets)
    assert (result.run_id, result.rc, result.cancelled, set(result.hosts)) == ("contract-healthy", 0, False, {"n1"})
    out = result.hosts["n1"]
    assert out.ok >= 1 and not out.failed and not out.unreachable and out.error == "" and out.failed_task == ""
    assert events[0].kind == "task" and events[-1] == ExecEvent("host_done", "n1")
    assert [e.kind for e in events].count("host_done") == 1
    records = [e for e in events if e.kind == "record"]
    assert len(records) == 1 and isinstance(records[0].data["sovkit_observed"], dict)
    assert records[0].data["sovkit_observed"]["firmware_rc"] == [0]


def failing_host_fails_alone(rig: Rig) -> None:
    targets = [rig.healthy("n1"), rig.failing("n2")]
    events, result = rig.run(targets)
    _well_formed(events, targets)
    assert result.rc == 2 and not result.cancelled
    bad = result.hosts["n2"]
    failure = [e for e in events if e.kind == "failed"]
    assert [e.host for e in failure] == ["n2"]
    assert bad.failed and not bad.unreachable
    assert (bad.failed_task, bad.error) == (failure[0].task, failure[0].message)
    assert "interpreter" in bad.error and bad.failed_task == "observe | active model versions"
    done = [e.host for e in events if e.kind == "host_done"]
    assert done == ["n1"] and not result.hosts["n1"].failed
    assert not any(e.kind == "record" and e.host == "n2" for e in events)


def unreachable_host_is_reported_not_done(rig: Rig) -> None:
    targets = [rig.healthy("n1"), rig.unreachable("n3")]
    events, result = rig.run(targets)
    _well_formed(events, targets)
    assert result.rc == 4
    gone = result.hosts["n3"]
    assert gone.unreachable and not gone.failed and gone.error and gone.failed_task == "observe | query devices"
    assert [e.host for e in events if e.kind == "unreachable"] == ["n3"]
    assert [e.host for e in events if e.kind == "host_done"] == ["n1"]


def unreachable_wins_the_exit_code_over_failed(rig: Rig) -> None:
    targets = [rig.failing("n2"), rig.unreachable("n3"), rig.healthy("n1")]
    _, result = rig.run(targets)
    assert result.rc == 4 and result.hosts["n2"].failed and result.hosts["n3"].unreachable


def cancel_is_reported(rig: Rig) -> None:
    events, result = rig.run([rig.healthy("n1")], cancel=lambda: True)
    assert result.cancelled and result.rc != 0
    assert not any(e.kind in ("failed", "unreachable") for e in events)


def run_ids_are_fresh_unless_given(rig: Rig) -> None:
    _, a = rig.run([rig.healthy("n1")])
    _, b = rig.run([rig.healthy("n1")])
    assert a.run_id.startswith("run-") and b.run_id.startswith("run-") and a.run_id != b.run_id


def unknown_playbook_is_refused(rig: Rig) -> None:
    with pytest.raises(ProvisionError, match="missing from sovkit's templates"):
        rig.executor.run("no-such.yml", [rig.healthy("n1")], lambda e: None, rig.workdir)


CONTRACT = [
    healthy_host_records_and_is_done,
    failing_host_fails_alone,
    unreachable_host_is_reported_not_done,
    unreachable_wins_the_exit_code_over_failed,
    cancel_is_reported,
    run_ids_are_fresh_unless_given,
    unknown_playbook_is_refused,
]


@pytest.mark.parametrize("behaviour", CONTRACT, ids=lambda f: f.__name__)
def test_executor(rig: Rig, behaviour: Callable[[Rig], None]) -> None:
    behaviour(rig)


# ------------------------------------------------------------------------- the contract can fail

class _ForgetsHostDone(ScriptedExecutor):
    """A broken executor: never says a host is done (a progress display would wait forever)."""

    def run(self, playbook: str, targets: list[HostTarget], on_event: Callable[[ExecEvent], None],
            workdir: Path, cancel: Callable[[], bool] = lambda: False, run_id: str | None = None) -> RunResult:
        return super().run(playbook, targets, lambda e: None if e.kind == "host_done" else on_event(e),
                           workdir, cancel, run_id)


class _FailureIsSuccess(ScriptedExecutor):
    """A broken executor: a failed host ends the run with rc 0."""

    def run(self, playbook: str, targets: list[HostTarget], on_event: Callable[[ExecEvent], None],
            workdir: Path, cancel: Callable[[], bool] = lambda: False, run_id: str | None = None) -> RunResult:
        result = super().run(playbook, targets, on_event, workdir, cancel, run_id)
        result.rc = 0
        return result


@pytest.mark.parametrize("broken", [_ForgetsHostDone, _FailureIsSuccess])
def test_contract_catches_a_broken_executor(broken: type[ScriptedExecutor], tmp_path: Path) -> None:
    rig = scripted_rig(broken(), tmp_path)
    check = healthy_host_records_and_is_done if broken is _ForgetsHostDone else failing_host_fails_alone
    with pytest.raises(AssertionError):
        check(rig)
