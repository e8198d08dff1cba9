"""Supervise a service without systemd: supervise.py start SPEC_JSON | stop NAME RUNDIR | status NAME RUNDIR.

sovkit's process supervisor for hosts without systemd (the demo and lab hosts), run by Ansible as
``python -c SOURCE COMMAND ARGS...``. Standard library only. Every call prints exactly one JSON line on stdout
and exits 0 when the operation was done, 1 (with "error" in the JSON) when it could not be done.

start SPEC_JSON: the spec is {"name", "argv", "env", "rundir", "cwd"?}. A service that is running is stopped
  first (restart). argv is executed directly, never through a shell, in a new session (so it outlives the ssh
  session that started it), stdin /dev/null, stdout and stderr appended to RUNDIR/NAME.log, no inherited file
  descriptors, cwd "/" unless given. The environment is exactly the spec's env, plus PATH and LANG defaults
  (below) when the spec has none: nothing leaks from the Ansible/ssh environment. A small monitor process
  (its own session, stdio on /dev/null) is the service's parent: it waits for the service and records how it
  ended in RUNDIR/NAME.exit and the log, so status can say why a service is down. RUNDIR/NAME.pid (written
  atomically) holds {"pid", "start_time", "argv_sha256", "started_at", "monitor_pid"}; start_time is field 22
  of /proc/PID/stat, so a pid reused by another process is never taken for the service; argv_sha256 is the
  sha256 of json.dumps(argv, separators=(",", ":")). start waits 1 s: a service that exits at once is
  reported as {"ok": false, "error": "exited with code N: LAST LOG LINE"}.
stop NAME RUNDIR: SIGTERM to the service's process group, SIGKILL after --timeout seconds (default 10), pidfile
  removed; {"ok": true, "was_running": bool}. A pid that now belongs to another process is left alone.
status NAME RUNDIR: {"ok": true, "running", "pid", "exit", "log_tail"}; running only if the pid is alive, not a
  zombie, and has the recorded start_time.

A crashed service is NOT restarted: sovkit reports a dead service as drift (`plan --refresh`) and `apply`
restarts it; restarting it here would hide the failure from the operator and from the audit trail.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
DEFAULT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SPEC_KEYS = {"name", "argv", "env", "rundir", "cwd"}
MARK = "[supervise] "
START_WAIT_S = 1.0
KILL_WAIT_S = 5.0


class Refused(Exception):
    """The operation cannot be done; the message goes into the JSON "error"."""


def now() -> str:
    # timezone.utc, not 3.11's datetime.UTC: this runs on the host's python, which may be older.
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017


def reply(doc: dict[str, Any], code: int = 0) -> NoReturn:
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Refused(f"invalid service name {name!r}: must match {NAME_RE.pattern}")
    return name


def check_abs(path: object, what: str) -> str:
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        raise Refused(f"{what} must be an absolute path, got {path!r}")
    return os.path.normpath(path)


def paths(name: str, rundir: str) -> tuple[str, str, str]:
    base = os.path.join(rundir, name)
    return base + ".pid", base + ".log", base + ".exit"


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of a live or zombie pid, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # fields[0] is field 3 (state) of proc(5)
    return fields[0], int(fields[2]), int(fields[19])


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never a part."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def leader(rec: dict[str, Any] | None) -> str:
    """State of the recorded process: running, dead (exited or zombie) or reused (the pid is another process)."""
    if rec is None or not isinstance(rec.get("pid"), int) or not isinstance(rec.get("start_time"), int):
        return "dead"
    st = proc_stat(rec["pid"])
    if st is None:
        return "dead"
    if st[2] != rec["start_time"]:
        return "reused"
    return "dead" if st[0] in "ZXx" else "running"


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group pgid (the service and anything it spawned)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[1] == pgid and st[0] not in "ZXx":
                return True
    return False


def wait_until(done: Callable[[], object], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return bool(done())
        time.sleep(0.05)
    return True


def log_lines(log: str, offset: int = 0, count: int = 5) -> list[str]:
    try:
        with open(log, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, size - 65536))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]


def log_mark(log: str, text: str) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{MARK}{now()} {text}\n")


def stop(name: str, rundir: str, timeout: float) -> bool:
    """Stop the service if it is ours and alive (or left children in its group); True if it was running."""
    pidfile, log, _ = paths(name, rundir)
    rec = read_json(pidfile)
    state = leader(rec)
    if rec is not None and state != "reused" and isinstance(rec.get("pid"), int):
        pgid = rec["pid"]
        if state == "running" or group_alive(pgid):
            # start_new_session made the service a group leader, so its pid is its process group id; a pid
            # that is dead but still names a live group cannot have been reused (Linux keeps the id in use).
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_WAIT_S)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                if wait_until(lambda: not group_alive(pgid), wait):
                    break
            if group_alive(pgid):
                raise Refused(f"process group {pgid} of {name} survived SIGKILL")
            log_mark(log, f"stopped {name} pid {pgid}")
    remove(pidfile)
    return state == "running"


def status(name: str, rundir: str) -> dict[str, Any]:
    pidfile, log, exitfile = paths(name, rundir)
    rec = read_json(pidfile)
    running = leader(rec) == "running"
    ended = None
    if not running:
        ended = read_json(exitfile)
        if ended is not None and rec is not None and ended.get("pid") != rec.get("pid"):
            ended = None  # the record is about an earlier run
    doc: dict[str, Any] = {"ok": True, "name": name, "running": running,
                           "pid": rec["pid"] if running and rec else None, "exit": ended,
                           "log_tail": log_lines(log)}
    if running and rec:
        doc["started_at"], doc["argv_sha256"] = rec.get("started_at"), rec.get("argv_sha256")
    return doc


def load_spec(path: str) -> dict[str, Any]:
    spec = read_json(path)
    if spec is None:
        raise Refused(f"cannot read the spec {path!r} as a JSON object")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise Refused(f"unknown spec keys: {', '.join(sorted(unknown))}")
    check_name(spec.get("name"))
    argv, env = spec.get("argv"), spec.get("env", {})
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise Refused("spec argv must be a non-empty list of strings")
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
            for k, v in env.items()):
        raise Refused("spec env must map variable names to strings")
    spec["rundir"] = check_abs(spec.get("rundir"), "rundir")
    spec["cwd"] = check_abs(spec.get("cwd", "/"), "cwd")
    spec["env"] = {**{k: v for k, v in DEFAULT_ENV.items() if k not in env}, **env}
    return spec


def monitor(spec: dict[str, Any], log_fd: int, report_fd: int) -> NoReturn:
    """Forked child: own session, no inherited descriptors; start the service, report its pid, wait, record."""
    code = 0
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        for entry in os.listdir("/proc/self/fd"):
            if int(entry) > 2 and int(entry) not in (log_fd, report_fd):
                with contextlib.suppress(OSError):
                    os.close(int(entry))
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        try:
            proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                                    close_fds=True, start_new_session=True, env=spec["env"], cwd=spec["cwd"])
        except (OSError, ValueError) as exc:
            os.write(report_fd, json.dumps({"error": f"cannot execute {spec['argv'][0]!r}: {exc}"}).encode())
            os._exit(1)
        os.write(report_fd, json.dumps({"pid": proc.pid}).encode())
        os.close(report_fd)
        os.close(log_fd)
        st = proc_stat(proc.pid)
        rc = proc.wait()
        _, log, exitfile = paths(spec["name"], spec["rundir"])
        ended = {"pid": proc.pid, "start_time": st[2] if st else None, "at": now(),
                 "code": rc if rc >= 0 else None, "signal": -rc if rc < 0 else None}
        write_json(exitfile, ended)
        how = f"exited with code {rc}" if rc >= 0 else f"killed by signal {-rc}"
        log_mark(log, f"{spec['name']} pid {proc.pid} {how}")
    except BaseException:
        code = 1
    os._exit(code)


def start(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    name, rundir = spec["name"], spec["rundir"]
    pidfile, log, exitfile = paths(name, rundir)
    was_running = stop(name, rundir, timeout)
    remove(exitfile)
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    offset = os.fstat(log_fd).st_size
    os.write(log_fd, f"{MARK}{now()} starting {name}: {json.dumps(spec['argv'])}\n".encode())
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        monitor(spec, log_fd, write_end)
    os.close(write_end)
    os.close(log_fd)
    chunks = []
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    try:
        started = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        started = {}
    if "pid" not in started:
        raise Refused(started.get("error", "the supervisor's monitor process failed before starting the service"))
    pid = started["pid"]
    st = proc_stat(pid)
    rec = {"pid": pid, "start_time": st[2] if st else None, "started_at": now(), "monitor_pid": child,
           "argv_sha256": hashlib.sha256(json.dumps(spec["argv"], separators=(",", ":")).encode()).hexdigest()}
    write_json(pidfile, rec)

    def ended() -> dict[str, Any] | None:
        doc = read_json(exitfile)
        return doc if doc is not None and doc.get("pid") == pid else None

    wait_until(lambda: ended() is not None or leader(rec) != "running", START_WAIT_S)
    if leader(rec) != "running":
        wait_until(lambda: ended() is not None, START_WAIT_S)  # the monitor records the code right after
        remove(pidfile)
        rc = ended()
        how = ("exited (exit status unknown)" if rc is None else
               f"exited with code {rc['code']}" if rc["code"] is not None else f"killed by signal {rc['signal']}")
        last = [line for line in log_lines(log, offset, 50) if not line.startswith(MARK)]
        raise Refused(f"{how}: {last[-1] if last else '(no output)'}")
    return {"ok": True, "name": name, "pid": pid, "restarted": was_running, "pidfile": pidfile, "log": log,
            "argv_sha256": rec["argv_sha256"], "started_at": rec["started_at"]}


def lock(name: str, rundir: str) -> int:
    """Serialise operations on one service (held until this process exits)."""
    fd = os.open(os.path.join(rundir, f".{name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def timeout_arg(rest: list[str]) -> float:
    if not rest:
        return 10.0
    if len(rest) == 2 and rest[0] == "--timeout":
        try:
            value = float(rest[1])
        except ValueError:
            value = -1.0
        if 0 <= value <= 3600:
            return value
    raise Refused(f"expected [--timeout SECONDS], got {' '.join(rest)!r}")


def main(args: list[str]) -> dict[str, Any]:
    if args[:1] == ["start"] and len(args) >= 2:
        spec, timeout = load_spec(args[1]), timeout_arg(args[2:])
        os.makedirs(spec["rundir"], mode=0o755, exist_ok=True)
        lock(spec["name"], spec["rundir"])
        return start(spec, timeout)
    if args[:1] in (["stop"], ["status"]) and len(args) >= 3:
        name, rundir = check_name(args[1]), check_abs(args[2], "RUNDIR")
        if args[0] == "status":
            if len(args) != 3:
                raise Refused("usage: status NAME RUNDIR")
            return status(name, rundir)
        timeout = timeout_arg(args[3:])
        if not os.path.isdir(rundir):
            return {"ok": True, "name": name, "was_running": False}
        lock(name, rundir)
        return {"ok": True, "name": name, "was_running": stop(name, rundir, timeout)}
    raise Refused("usage: start SPEC_JSON [--timeout S] | stop NAME RUNDIR [--timeout S] | status NAME RUNDIR")


if __name__ == "__main__":
    try:
        reply(main(sys.argv[1:]))
    except Refused as exc:
        reply({"ok": False, "error": str(exc)}, 1)
    except Exception as exc:
        reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 1)
