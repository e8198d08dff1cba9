"""sovkit's process supervisor (templates/ansible/helpers/supervise.py), run exactly as Ansible runs it:
``python -c SOURCE COMMAND ARGS``, with real child processes and a real HTTP server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sovkit.provision.hostvars import helper

SOURCE = helper("supervise")
SLEEPER = [sys.executable, "-c", "import time; print('sleeper up', flush=True); time.sleep(600)"]


def run(*args: str | Path) -> tuple[int, dict[str, Any]]:
    """One call of the helper: its exit code and its single JSON line."""
    proc = subprocess.run([sys.executable, "-c", SOURCE, *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    assert proc.stderr == ""
    return proc.returncode, json.loads(lines[0])


def alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZXx"


def eventually(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Poll until check() holds (a deadline for slow machines, not a timing assert)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Supervisor:
    """Writes specs into a temp run dir and drives the helper; remembers every service it started."""

    def __init__(self, root: Path) -> None:
        self.rundir = root / "run"
        self.root = root
        self.names: set[str] = set()
        self.pids: set[int] = set()

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        spec = self.root / f"{name}.json"
        spec.write_text(json.dumps({"name": name, "argv": argv, "env": env or {}, "rundir": str(self.rundir)}))
        self.names.add(name)
        code, out = run("start", spec)
        if "pid" in out:
            self.pids.add(out["pid"])
        return code, out

    def status(self, name: str) -> dict[str, Any]:
        code, out = run("status", name, self.rundir)
        assert code == 0, out
        return out

    def stop(self, name: str) -> dict[str, Any]:
        code, out = run("stop", name, self.rundir)
        assert code == 0, out
        return out


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[Supervisor]:
    s = Supervisor(tmp_path)
    try:
        yield s
    finally:
        for name in s.names:
            run("stop", name, s.rundir, "--timeout", "2")
        for pid in s.pids:  # whatever stop could not reach
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_start_status_serve_restart_stop(sup: Supervisor) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    code, first = sup.start("web", argv)
    assert code == 0 and first["ok"] and first["restarted"] is False, first
    pid = first["pid"]
    status = sup.status("web")
    assert status["running"] is True and status["pid"] == pid and status["exit"] is None
    pidfile = json.loads((sup.rundir / "web.pid").read_text())
    assert pidfile["pid"] == pid and pidfile["argv_sha256"] == first["argv_sha256"]
    # its own session and process group: the ssh session's hangup and process-group kills do not reach it
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    assert eventually(answers)

    code, second = sup.start("web", argv)
    assert code == 0 and second["restarted"] is True and second["pid"] != pid, second
    assert not alive(pid)
    assert sup.status("web")["pid"] == second["pid"]
    assert eventually(answers)

    assert sup.stop("web") == {"ok": True, "name": "web", "was_running": True}
    assert not alive(second["pid"])
    assert not (sup.rundir / "web.pid").exists()
    after = sup.status("web")
    assert after["running"] is False and after["pid"] is None
    assert not answers()
    # a second stop is a no-op, not an error
    assert sup.stop("web")["was_running"] is False


def test_start_leaves_no_pipe_open_and_the_service_outlives_it(sup: Supervisor) -> None:
    """As under Ansible/ssh: the caller reads the helper's stdout/stderr pipes to EOF. If the service or the
    monitor kept them, communicate() would block until the timeout (600 s sleeper) and raise."""
    spec = sup.root / "detach.json"
    spec.write_text(json.dumps({"name": "detach", "argv": SLEEPER, "env": {}, "rundir": str(sup.rundir)}))
    sup.names.add("detach")
    proc = subprocess.Popen([sys.executable, "-c", SOURCE, "start", str(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    started = json.loads(out)
    sup.pids.add(started["pid"])
    assert proc.returncode == 0 and started["ok"], (out, err)
    assert sup.status("detach")["running"] is True
    fds = {os.readlink(f"/proc/{started['pid']}/fd/{fd}") for fd in ("0", "1", "2")}
    assert fds == {"/dev/null", str(sup.rundir / "detach.log")}
    assert sorted(os.listdir(f"/proc/{started['pid']}/fd")) == ["0", "1", "2"]


def test_stop_escalates_to_sigkill_for_the_whole_group(sup: Supervisor) -> None:
    """A service that ignores SIGTERM and has a worker child: stop kills both after --timeout."""
    worker_file = sup.root / "worker.pid"
    code = (f"import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(worker_file)!r}, 'w').write(str(w.pid)); time.sleep(600)")
    rc, out = sup.start("stubborn", [sys.executable, "-c", code])
    assert rc == 0, out
    assert eventually(lambda: worker_file.exists() and worker_file.read_text().isdigit())
    worker = int(worker_file.read_text())
    sup.pids.add(worker)
    assert alive(worker) and os.getpgid(worker) == out["pid"]
    rc, stopped = run("stop", "stubborn", sup.rundir, "--timeout", "1")
    assert rc == 0 and stopped["was_running"] is True
    assert not alive(out["pid"]) and not alive(worker)
    assert eventually(lambda: sup.status("stubborn")["exit"] is not None)
    assert sup.status("stubborn")["exit"]["signal"] == signal.SIGKILL


def test_killed_service_is_reported_dead_not_restarted(sup: Supervisor) -> None:
    code, out = sup.start("victim", SLEEPER)
    assert code == 0, out
    os.kill(out["pid"], signal.SIGKILL)
    assert eventually(lambda: sup.status("victim")["exit"] is not None)
    status = sup.status("victim")
    assert status["running"] is False and status["pid"] is None
    assert status["exit"]["signal"] == signal.SIGKILL and status["exit"]["pid"] == out["pid"]
    assert any("killed by signal 9" in line for line in status["log_tail"])
    # nothing brought it back (sovkit reports it as drift instead)
    assert sup.status("victim")["running"] is False
    assert sup.stop("victim")["was_running"] is False
    assert not (sup.rundir / "victim.pid").exists()


def test_immediate_exit_is_reported_with_the_last_log_line(sup: Supervisor) -> None:
    argv = [sys.executable, "-c", "import sys; print('loading'); print('digest mismatch for model.bin'); sys.exit(3)"]
    code, out = sup.start("broken", argv)
    assert code == 1 and out["ok"] is False
    assert out["error"] == "exited with code 3: digest mismatch for model.bin"
    assert not (sup.rundir / "broken.pid").exists()
    assert sup.status("broken")["exit"]["code"] == 3


def test_missing_executable_is_an_error(sup: Supervisor) -> None:
    code, out = sup.start("nobin", [str(sup.root / "no-such-binary"), "serve"])
    assert code == 1 and "cannot execute" in out["error"] and "no-such-binary" in out["error"]
    assert not (sup.rundir / "nobin.pid").exists()


def test_reused_pid_is_not_running_and_not_killed(sup: Supervisor) -> None:
    bystander = subprocess.Popen(SLEEPER, stdout=subprocess.DEVNULL)
    try:
        stat = Path(f"/proc/{bystander.pid}/stat").read_text()
        start_time = int(stat[stat.rindex(")") + 2:].split()[19])
        sup.rundir.mkdir()
        (sup.rundir / "ghost.pid").write_text(json.dumps(
            {"pid": bystander.pid, "start_time": start_time - 1, "argv_sha256": "0" * 64,
             "started_at": "2020-01-01T00:00:00+00:00"}))
        status = sup.status("ghost")
        assert status["running"] is False and status["pid"] is None
        assert sup.stop("ghost")["was_running"] is False
        assert bystander.poll() is None and alive(bystander.pid)
        assert not (sup.rundir / "ghost.pid").exists()
        # start over a stale pidfile with a reused pid starts the service and leaves the bystander alone
        (sup.rundir / "ghost.pid").write_text(json.dumps({"pid": bystander.pid, "start_time": start_time - 1}))
        code, out = sup.start("ghost", SLEEPER)
        assert code == 0 and out["restarted"] is False and out["pid"] != bystander.pid
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_env_is_exactly_the_spec_env(sup: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVKIT_MUST_NOT_LEAK", "secret")
    dump = str(sup.root / "env.json")
    argv = [sys.executable, "-c",
            f"import json, os, time; json.dump(dict(os.environ), open({dump!r}, 'w')); time.sleep(600)"]
    # the spec's PATH wins over the default; LANG is defaulted (a C locale would make the python child add
    # LC_CTYPE itself, PEP 538)
    code, out = sup.start("envdump", argv, {"MODEL_DIR": "/srv/models/chat", "PATH": "/opt/rt/bin:/usr/bin"})
    assert code == 0, out
    assert eventually(lambda: Path(dump).exists() and Path(dump).read_text().endswith("}"))
    assert json.loads(Path(dump).read_text()) == {
        "MODEL_DIR": "/srv/models/chat", "PATH": "/opt/rt/bin:/usr/bin", "LANG": "C.UTF-8"}


@pytest.mark.parametrize("args", [
    ["status", "../etc", "/tmp/run"],
    ["status", "Web", "/tmp/run"],
    ["stop", "web;rm", "/tmp/run"],
    ["status", "web", "relative/run"],
    ["stop", "web", "/tmp/run", "--timeout", "soon"],
    ["restart", "web", "/tmp/run"],
    [],
])
def test_bad_arguments_are_refused(args: list[str]) -> None:
    code, out = run(*args)
    assert code == 1 and out["ok"] is False and out["error"]


@pytest.mark.parametrize("spec", [
    {"name": "Bad Name", "argv": ["/bin/true"], "env": {}},
    {"name": "x" * 64, "argv": ["/bin/true"], "env": {}},
    {"name": "ok", "argv": "/bin/true --flag", "env": {}},
    {"name": "ok", "argv": [], "env": {}},
    {"name": "ok", "argv": ["/bin/true"], "env": {"A=B": "c"}},
    {"name": "ok", "argv": ["/bin/true"], "env": {}, "shell": True},
    {"name": "ok", "argv": ["/bin/true"], "env": {}, "cwd": "relative"},
])
def test_bad_specs_are_refused(tmp_path: Path, spec: dict[str, Any]) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"rundir": str(tmp_path / "run"), **spec}))
    code, out = run("start", path)
    assert code == 1 and out["ok"] is False and out["error"]
    assert not (tmp_path / "run").exists()


def test_relative_rundir_in_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "ok", "argv": ["/bin/true"], "env": {}, "rundir": "run"}))
    code, out = run("start", path)
    assert code == 1 and "absolute" in out["error"]
