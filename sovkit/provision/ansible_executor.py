"""The ansible-runner executor — the only module that imports ``ansible_runner``.

Each run gets a fresh private data directory: the generated inventory (YAML
dumped from data, never templated text), and the playbooks and roles copied
from sovkit's templates. Runner events are mapped to :class:`ExecEvent` so
callers never see Ansible's event format.

Every string sovkit hands to Ansible is data, never a template: Ansible renders
``{{ }}`` / ``{% %}`` in inventory variables (a ``lookup('pipe', …)`` there runs
on the controller), so the inventory is written as YAML with every string leaf
tagged ``!unsafe`` — see :func:`inventory_yaml`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from ansible_runner.interface import init_runner
from ansible_runner.interface import run as runner_run

from sovkit import identifiers
from sovkit.errors import ProvisionError
from sovkit.provision.executor import RECORD_KEYS, ExecEvent, HostOutcome, HostTarget, RunResult
from sovkit.resources import templates_dir

_TASK_EVENTS = {"runner_on_start", "playbook_on_task_start"}
_VAR_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Unsafe(str):
    """A string Ansible must never render: dumped as ``!unsafe``."""


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(_Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v)))
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def _leaf(value: str, where: str) -> str:
    """``!unsafe`` for a string that could be text; a plain quoted string for one that reads as a number,
    boolean, null or date (ansible-core 2.19 resolves an ``!unsafe`` scalar's type as if it were unquoted, so
    ``!unsafe '1.10'`` would arrive as the float 1.1). Such a string has no ``{``, ``%`` or ``#``, so it
    cannot be a template; that is checked, not assumed."""
    if _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG:  # type: ignore[no-untyped-call]
        return _Unsafe(value)
    if any(c in value for c in "{%#"):
        raise ProvisionError(f"variable {where} = {identifiers.describe(value)} cannot be passed safely",
                             "this is a sovkit bug: report it")
    return value


def _mark(value: Any, where: str) -> Any:
    """Tag every string leaf unsafe; mapping keys must be plain variable names (keys cannot be tagged)."""
    if isinstance(value, str):
        return _leaf(value, where)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not _VAR_KEY.match(k):
                raise ProvisionError(f"variable key {identifiers.describe(k)} in {where} is not a plain name",
                                     "this is a sovkit bug: report it")
            out[k] = _mark(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_mark(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise ProvisionError(f"variable {where} has an unsupported type {type(value).__name__}",
                         "this is a sovkit bug: report it")


def inventory_yaml(targets: list[HostTarget]) -> str:
    """The run's inventory: every host's connection vars and sovkit_* variables, every string ``!unsafe``.

    Why ``!unsafe`` rather than files the roles read: the connection vars (``ansible_user``,
    ``ansible_host``, ``ansible_python_interpreter``, ``ansible_ssh_common_args``, key file) must be
    inventory variables anyway, and ``!unsafe`` is the one marking ansible-core honours for all of them,
    through loops, ``argv``, ``environment`` and ``path`` alike, without changing a role (proven on 2.19 by
    tests/security/test_injection.py). Module results (what a host reports) are not rendered either.
    Host names are inventory keys and cannot be tagged: they must be plain identifiers.
    """
    hosts: dict[str, Any] = {}
    for t in targets:
        if not identifiers.matches(identifiers.NAME, t.name):
            raise ProvisionError(f"host name {identifiers.describe(t.name)} is not a plain name",
                                 "host names are lowercase letters, digits, '.', '_' and '-'")
        hosts[t.name] = _mark({**t.connection_vars, **t.variables}, t.name)
    return yaml.dump({"all": {"hosts": hosts}}, Dumper=_UnsafeDumper, sort_keys=True, allow_unicode=True)

_RESULT_EVENTS = {"runner_on_ok", "runner_on_failed", "runner_item_on_ok", "runner_on_unreachable"}

# ansible-runner seeds the playbook's environment with all of sovkit's and writes it to artifacts/*/command:
# only what Ansible needs is passed on, and nothing whose name or value is a secret.
_INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TZ",
                        "SSH_AUTH_SOCK", "VIRTUAL_ENV", "PWD"})
_INHERITED_PREFIXES = ("ANSIBLE_", "LC_", "PYTHON", "PYENV_", "SOVKIT_BMC_")
_SECRET_NAME = re.compile(r"PASSPHRASE|PASSWORD|PASSWD|_PASS$|TOKEN|SECRET|CREDENTIAL|_KEY$|^KEY$", re.IGNORECASE)
_MIN_SCANNED = 8  # shorter secret values are dropped from the environment but not searched for in files


def secret_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Name -> value of the variables in ``environ`` whose names say they hold a secret (a path to an existing
    file, such as $SOVKIT_SIGNING_KEY, names where a secret is, and is not one)."""
    return {k: v for k, v in environ.items() if _SECRET_NAME.search(k) and v and not os.path.exists(v)}


def runner_env(env: Mapping[str, str], inherited: Mapping[str, str]) -> dict[str, str]:
    """The environment for ansible-playbook: runner's and sovkit's own settings plus an allowlist of
    inherited variables, without any secret (by name, or by a secret's value appearing in it)."""
    secrets = [v for v in secret_values(inherited).values() if len(v) >= _MIN_SCANNED]
    out: dict[str, str] = {}
    for k, v in env.items():
        if k in inherited and inherited[k] == v and k not in _INHERITED and not k.startswith(_INHERITED_PREFIXES):
            continue
        if _SECRET_NAME.search(k) or any(s in v for s in secrets):
            continue
        out[k] = v
    return out


#: BMC credentials for vendor steps that go through the board's BMC (NVIDIA ``nvfwupd``): the address and user
#: pass through; the password never enters ansible-playbook's environment (runner writes that to
#: artifacts/*/command) — the firmware role reads it on the controller from the file this variable names.
BMC_AUTH_PATH = "SOVKIT_BMC_AUTH_PATH"


@contextlib.contextmanager
def bmc_password_file(environ: Mapping[str, str]) -> Iterator[str | None]:
    """The path of a file holding the BMC password: $SOVKIT_BMC_PASSWORD_FILE as given, or a private (0600)
    temporary file outside the run directory holding $SOVKIT_BMC_PASSWORD, removed when the run ends."""
    given = environ.get("SOVKIT_BMC_PASSWORD_FILE")
    if given:
        if not os.path.isfile(given):
            raise ProvisionError(f"$SOVKIT_BMC_PASSWORD_FILE names {given!r}, which is not a file",
                                 "point it at the file holding the BMC password, or unset it")
        yield given
        return
    password = environ.get("SOVKIT_BMC_PASSWORD")
    if not password:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="sovkit-bmc-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def scrub_secrets(run_dir: Path, secrets: Mapping[str, str]) -> list[tuple[Path, str]]:
    """Replace every known secret value found in a file under ``run_dir``; return (file, variable) found."""
    needles = {name: value.encode() for name, value in secrets.items() if len(value) >= _MIN_SCANNED}
    found: list[tuple[Path, str]] = []
    if not needles:
        return found
    for dirpath, _dirs, files in os.walk(run_dir):
        for fname in files:
            path = Path(dirpath) / fname
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits = [name for name, needle in needles.items() if needle in data]
            if hits:
                for name in hits:
                    data = data.replace(needles[name], f"<{name} redacted>".encode())
                try:
                    path.write_bytes(data)
                except OSError:  # a full disk cannot take the scrubbed copy: the file goes
                    path.unlink(missing_ok=True)
                found.extend((path, name) for name in hits)
    return found


def _message(res: dict[str, Any]) -> str:
    if res.get("results"):  # a loop: report the first failing item, not the summary ("All items completed")
        for item in res["results"]:
            if isinstance(item, dict) and (item.get("failed") or item.get("unreachable")):
                return _message(item)
    msg = res.get("msg") or res.get("reason") or ""
    if isinstance(msg, list):
        msg = "; ".join(map(str, msg))
    text = str(msg).strip()
    stderr = str(res.get("stderr") or "").strip()
    if stderr and res.get("rc") not in (None, 0):  # a command failed: its own words, not "non-zero return code"
        text = f"{stderr.splitlines()[-1]} (exit {res['rc']})"
    elif not text:
        text = stderr
    return text.splitlines()[-1] if text.count("\n") > 5 else text


# A run keeps Ansible's events on disk (about 1 MiB per host for an apply): refuse to start one that cannot
# finish, and stop one whose disk fills up on the way, instead of losing events (and state records) silently.
_FREE_BASE = 4 << 20
_FREE_PER_HOST = 1 << 20
_FREE_STOP = 512 << 10


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def disk_full(path: Path, what: str, started: bool) -> ProvisionError:
    """The one message for a run that ran out of space under ``path``."""
    free = _free(path) if path.exists() else 0
    return ProvisionError(
        f"no space left on {path} ({free // 1024} KiB free): {what}",
        "free space on that filesystem and re-run; " + (
            "each component the hosts completed before the stop is recorded in the state, nothing was started "
            "after it (`sovkit refresh` reads back a component cut off mid-way)" if started else
            "the hosts and the state are unchanged"),
    )


def _ansible_children() -> list[int]:
    """This process's ansible-playbook children (ansible-runner starts each in its own session)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] != "Z" and b"ansible-playbook" in cmdline:
            found.append(int(entry.name))
    return found


def _stop_ansible() -> None:
    """Stop ansible-playbook with SIGTERM, so it stops its workers too: since ansible-core 2.19 each worker is in
    its own session, and ansible-runner's SIGKILL of the playbook's process group would leave them running."""
    pids = _ansible_children()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not _ansible_children():
            return
        time.sleep(0.1)
    for pid in _ansible_children():
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


class AnsibleRunnerExecutor:
    """Runs sovkit's playbooks through ansible-runner (and so ansible-core), locally or over SSH."""

    def __init__(self, forks: int = 10, verbosity: int = 0, worker: list[str] | None = None,
                 worker_label: str = "the worker", worker_timeout: float = 3600.0) -> None:
        """``worker``: the argv of an ``ansible-runner worker`` elsewhere (``ssh GATEWAY python3 -m ansible_runner
        worker``). With it, a run is *transmitted* there, executed by that worker, and its event stream is
        *processed* here — ansible-runner's remote job protocol (the one AWX uses through Receptor): this machine
        never connects to the hosts of the run itself."""
        self.forks = forks
        self.verbosity = verbosity
        self.worker = worker
        self.worker_label = worker_label
        self.worker_timeout = worker_timeout

    def prepare(self, playbook: str, targets: list[HostTarget], workdir: Path, run_id: str | None = None) -> Path:
        """Write the private data dir ``workdir/RUN_ID``; it is kept after the run, so the exact playbook,
        inventory and variables can be inspected or replayed with plain ``ansible-playbook``."""
        run_dir = workdir / (run_id or f"run-{uuid.uuid4().hex[:12]}")
        project = run_dir / "project"
        shutil.copytree(templates_dir() / "ansible", project)
        inv_dir = run_dir / "inventory"
        inv_dir.mkdir(parents=True)
        (inv_dir / "hosts.yml").write_text(inventory_yaml(targets), encoding="utf-8")
        env = run_dir / "env"
        env.mkdir()
        (env / "envvars").write_text(yaml.safe_dump({
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s -o ServerAliveInterval=5 "
                                "-o ServerAliveCountMax=2 -o ConnectTimeout=10",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_TIMEOUT": "10",
            # a connection that fails (ssh exit 255) is retried twice before the host counts as unreachable:
            # one slow handshake on a busy network must not fail a whole host
            "ANSIBLE_SSH_RETRIES": "2",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
        }))
        if not (project / playbook).is_file():
            raise ProvisionError(f"playbook {playbook} is missing from sovkit's templates", "reinstall sovkit")
        return run_dir

    def run(
        self,
        playbook: str,
        targets: list[HostTarget],
        on_event: Callable[[ExecEvent], None],
        workdir: Path,
        cancel: Callable[[], bool] = lambda: False,
        run_id: str | None = None,
        forks: int | None = None,
    ) -> RunResult:
        with bmc_password_file(os.environ) as bmc_auth:
            return self._run(playbook, targets, on_event, workdir, cancel, run_id,
                             {BMC_AUTH_PATH: bmc_auth} if bmc_auth else {}, forks or self.forks)

    def _run(self, playbook: str, targets: list[HostTarget], on_event: Callable[[ExecEvent], None], workdir: Path,
             cancel: Callable[[], bool], run_id: str | None, extra_env: dict[str, str], forks: int) -> RunResult:
        need = _FREE_BASE + _FREE_PER_HOST * len(targets)
        workdir.mkdir(parents=True, exist_ok=True)
        if _free(workdir) < need:
            raise disk_full(workdir, f"Ansible was not started (a run of {len(targets)} host(s) needs about "
                                     f"{need >> 20} MiB for its events); no host was touched", started=False)
        run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
        try:
            run_dir = self.prepare(playbook, targets, workdir, run_id)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            shutil.rmtree(workdir / run_id, ignore_errors=True)
            raise disk_full(workdir, "Ansible was not started; no host was touched", started=False) from exc
        outcomes = {t.name: HostOutcome() for t in targets}
        run_id = run_dir.name
        stopped: list[str] = []

        terminated: list[bool] = []

        def stop() -> bool:
            if not stopped and _free(run_dir) < _FREE_STOP:
                stopped.append("disk")
            if stopped or cancel():
                if not terminated:
                    terminated.append(True)
                    _stop_ansible()
                return True
            return False

        reached: set[str] = set()

        def handle(event: dict[str, Any]) -> bool:
            kind = event.get("event", "")
            data = event.get("event_data") or {}
            host = data.get("host") or data.get("remote_addr") or ""
            task = str(data.get("task", "")).strip()
            res = data.get("res") or {}
            if host:
                reached.add(host)
            if kind in _RESULT_EVENTS and host in outcomes and "res" not in data and not stopped:
                stopped.append("lost")  # Ansible could not write this result's data (disk full): stop now
            if kind == "runner_on_start" and host:
                on_event(ExecEvent("task", host, task))
            elif kind == "runner_item_on_ok" and host in outcomes:
                msg = res.get("msg")
                if isinstance(msg, dict) and not RECORD_KEYS.isdisjoint(msg):
                    on_event(ExecEvent("record", host, task, data=msg))
            elif kind == "runner_on_ok" and host in outcomes:
                outcomes[host].ok += 1
                outcomes[host].changed += int(bool(res.get("changed")))
                msg = res.get("msg")
                if isinstance(msg, dict) and not RECORD_KEYS.isdisjoint(msg):
                    on_event(ExecEvent("record", host, task, data=msg))
                else:
                    on_event(ExecEvent("ok", host, task))
            elif kind == "runner_on_failed" and host in outcomes and not data.get("ignore_errors"):
                outcomes[host].failed = True
                outcomes[host].failed_task = task
                outcomes[host].error = _message(res)
                on_event(ExecEvent("failed", host, task, outcomes[host].error))
            elif kind == "runner_on_unreachable" and host in outcomes:
                outcomes[host].unreachable = True
                outcomes[host].failed_task = task
                outcomes[host].error = _message(res) or "unreachable"
                on_event(ExecEvent("unreachable", host, task, outcomes[host].error))
            return True

        if self.worker is not None:
            return self._stream(run_dir, playbook, forks, handle, outcomes, reached, on_event)
        try:
            runner = init_runner(
                private_data_dir=str(run_dir),
                playbook=playbook,
                inventory=str(run_dir / "inventory" / "hosts.yml"),
                event_handler=handle,
                cancel_callback=stop,
                quiet=True,
                forks=forks,
                verbosity=self.verbosity or None,
                suppress_env_files=False,
            )
            runner.config.env = {**runner_env(runner.config.env, os.environ), **extra_env}
            if runner.config.env.get("ORIGINAL_STDOUT_CALLBACK") == "awx_display":
                # sovkit started from inside an ansible-runner job (a fleet agent, an AWX job) inherits that
                # job's callback: as the "original" one it would make runner's callback load itself
                runner.config.env["ORIGINAL_STDOUT_CALLBACK"] = "default"
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise disk_full(run_dir, f"Ansible run {run_id} was not started; no host was touched",
                                started=False) from exc
            raise ProvisionError(f"could not start Ansible: {exc}", "check the ansible-core installation") from exc
        except Exception as exc:  # ansible-runner raises plain exceptions for setup problems
            raise ProvisionError(f"could not start Ansible: {exc}", "check the ansible-core installation") from exc
        try:
            runner.run()
        except OSError as exc:  # runner's own writes (stdout, status) failed: its ansible-playbook is still alive
            _stop_ansible()
            if exc.errno == errno.ENOSPC:
                raise disk_full(run_dir, f"Ansible run {run_id} was stopped", started=True) from exc
            raise ProvisionError(f"Ansible run {run_id} failed: {exc}", f"see {run_dir}") from exc
        finally:
            leaked = scrub_secrets(run_dir, secret_values(os.environ))
        if stopped and stopped[0] in ("disk", "lost"):
            raise disk_full(run_dir, f"Ansible run {run_id} was stopped" + (
                " after it could not record a result" if stopped[0] == "lost" else ""), started=True)
        if leaked:
            where = ", ".join(sorted({f"${name} in {path.relative_to(run_dir)}" for path, name in leaked}))
            raise ProvisionError(f"run {run_id} wrote a secret to disk ({where}); it was scrubbed from {run_dir}",
                                 "this is a bug in sovkit: report it; what the hosts completed is recorded "
                                 "in the state, and the secret should be rotated if the run directory was copied")
        stats = runner.stats or {}
        for host in stats.get("dark", {}) or {}:
            if host in outcomes:
                outcomes[host].unreachable = True
        for host in stats.get("failures", {}) or {}:
            if host in outcomes:
                outcomes[host].failed = True
        if runner.rc:
            _never_reached(outcomes, reached, runner.stdout.read() if runner.stdout else "", on_event)
        for name, out in outcomes.items():
            if not (out.failed or out.unreachable):
                on_event(ExecEvent("host_done", name))
        if runner.status not in ("successful", "failed", "canceled"):
            tail = (runner.stdout.read() if runner.stdout else "")[-2000:]
            raise ProvisionError(f"Ansible run {run_id} ended with status {runner.status}: {tail.strip()}",
                                 f"see {run_dir} for the full log")
        return RunResult(run_id=run_id, rc=int(runner.rc or 0), hosts=outcomes,
                         cancelled=runner.status == "canceled")

    def _stream(self, run_dir: Path, playbook: str, forks: int, handle: Callable[[dict[str, Any]], bool],
                outcomes: dict[str, HostOutcome], reached: set[str], on_event: Callable[[ExecEvent], None]
                ) -> RunResult:
        """Transmit the prepared run to the worker, run it there, and process its event stream here."""
        assert self.worker is not None
        where = self.worker_label
        with tempfile.TemporaryFile() as job, tempfile.TemporaryFile() as results:
            try:
                runner_run(private_data_dir=str(run_dir), playbook=playbook,
                           inventory=str(run_dir / "inventory" / "hosts.yml"), streamer="transmit", _output=job,
                           quiet=True, forks=forks, verbosity=self.verbosity or None)
                job.seek(0)
                proc = subprocess.run(self.worker, stdin=job, stdout=results, stderr=subprocess.PIPE,
                                      timeout=self.worker_timeout, check=False)
            except subprocess.TimeoutExpired as exc:
                raise ProvisionError(f"the worker on {where} did not finish within {self.worker_timeout:.0f} s",
                                     "look at the worker's host; nothing more was received from it") from exc
            except OSError as exc:
                raise ProvisionError(f"could not start the worker command {self.worker[0]}: {exc.strerror}",
                                     "check that ssh is installed on this machine") from exc
            if results.tell() == 0:
                detail = proc.stderr.decode(errors="replace").strip().splitlines()
                raise ProvisionError(f"the worker on {where} sent nothing back (exit {proc.returncode}): "
                                     f"{detail[-1] if detail else 'no message'}",
                                     "check that the gateway is reachable over SSH and has sovkit and "
                                     "ansible-runner installed")
            results.seek(0)
            try:
                processed = runner_run(private_data_dir=str(run_dir), streamer="process", _input=results,
                                       event_handler=handle, quiet=True)
            except Exception as exc:  # a broken or cut-off stream: ansible-runner raises plain exceptions
                raise ProvisionError(f"the worker's result stream from {where} could not be read: {exc}",
                                     f"see {run_dir}") from exc
        if getattr(processed, "rc", 0):
            stdout = next(iter(sorted(run_dir.glob("artifacts/*/stdout"))), None)
            _never_reached(outcomes, reached, stdout.read_text(errors="replace") if stdout else "", on_event)
        for name, out in outcomes.items():
            if not (out.failed or out.unreachable):
                on_event(ExecEvent("host_done", name))
        status = getattr(processed, "status", "failed")
        return RunResult(run_id=run_dir.name, rc=int(getattr(processed, "rc", 1) or 0) if status != "failed" else 1,
                         hosts=outcomes, cancelled=status == "canceled")


def _never_reached(outcomes: dict[str, HostOutcome], reached: set[str], stdout: str,
                   on_event: Callable[[ExecEvent], None]) -> None:
    """A failed run that never got to some hosts (ansible-playbook itself failed: a bad config, a crash) fails
    them: a host without a single event did nothing, and must not be reported done."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    why = lines[-1][:300] if lines else "no output"
    for name, out in outcomes.items():
        if name not in reached and not (out.failed or out.unreachable):
            out.failed, out.failed_task = True, "ansible-playbook"
            out.error = f"Ansible stopped before it reached this host: {why}"
            on_event(ExecEvent("failed", name, out.failed_task, out.error))
