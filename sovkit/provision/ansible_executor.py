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

import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from sovkit import identifiers
from sovkit.errors import ProvisionError
from sovkit.provision.executor import ExecEvent, HostOutcome, HostTarget, RunResult
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


class AnsibleRunnerExecutor:
    """Runs sovkit's playbooks through ansible-runner (and so ansible-core), locally or over SSH."""

    def __init__(self, forks: int = 10, verbosity: int = 0) -> None:
        self.forks = forks
        self.verbosity = verbosity

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
    ) -> RunResult:
        run_dir = self.prepare(playbook, targets, workdir, run_id)
        outcomes = {t.name: HostOutcome() for t in targets}
        run_id = run_dir.name

        def handle(event: dict[str, Any]) -> bool:
            kind = event.get("event", "")
            data = event.get("event_data") or {}
            host = data.get("host") or data.get("remote_addr") or ""
            task = str(data.get("task", "")).strip()
            res = data.get("res") or {}
            if kind == "runner_on_start" and host:
                on_event(ExecEvent("task", host, task))
            elif kind == "runner_item_on_ok" and host in outcomes:
                msg = res.get("msg")
                if isinstance(msg, dict) and ("sovkit_record" in msg or "sovkit_observed" in msg):
                    on_event(ExecEvent("record", host, task, data=msg))
            elif kind == "runner_on_ok" and host in outcomes:
                outcomes[host].ok += 1
                outcomes[host].changed += int(bool(res.get("changed")))
                msg = res.get("msg")
                if isinstance(msg, dict) and ("sovkit_record" in msg or "sovkit_observed" in msg):
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

        try:
            runner = ansible_runner.run(
                private_data_dir=str(run_dir),
                playbook=playbook,
                inventory=str(run_dir / "inventory" / "hosts.yml"),
                event_handler=handle,
                cancel_callback=cancel,
                quiet=True,
                forks=self.forks,
                verbosity=self.verbosity or None,
                suppress_env_files=False,
            )
        except Exception as exc:  # ansible-runner raises plain exceptions for setup problems
            raise ProvisionError(f"could not start Ansible: {exc}", "check the ansible-core installation") from exc
        stats = runner.stats or {}
        for host in stats.get("dark", {}) or {}:
            if host in outcomes:
                outcomes[host].unreachable = True
        for host in stats.get("failures", {}) or {}:
            if host in outcomes:
                outcomes[host].failed = True
        for name, out in outcomes.items():
            if not (out.failed or out.unreachable):
                on_event(ExecEvent("host_done", name))
        if runner.status not in ("successful", "failed", "canceled"):
            tail = (runner.stdout.read() if runner.stdout else "")[-2000:]
            raise ProvisionError(f"Ansible run {run_id} ended with status {runner.status}: {tail.strip()}",
                                 f"see {run_dir} for the full log")
        return RunResult(run_id=run_id, rc=int(runner.rc or 0), hosts=outcomes,
                         cancelled=runner.status == "canceled")
