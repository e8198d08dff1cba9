"""Fakes of sovkit's ports, shipped so tests, examples and downstream code can run without hosts or disks.

Each fake passes the same contract tests (``tests/contracts/``) as the real adapter it stands for, so a
test that runs on a fake tells the truth about the real thing:

- :class:`ScriptedExecutor` for the ``Executor`` port (real: ``AnsibleRunnerExecutor``): replays a script
  of per-host steps as the same events and :class:`RunResult` the real one produces, and records what it
  was asked to run (playbook, targets, variables).
- :class:`MemoryStateStore` for the ``StateStore`` port (real: ``LocalStateStore``): serial, lineage and
  lock rules of the local store, kept in memory; :meth:`MemoryStateStore.reopen` gives a second handle
  on the same state, as a second process would have.
- :class:`SeededSigner` for the ``Signer`` port (real: ``LocalSigner``): a deterministic Ed25519 key
  derived from a seed. The seed *is* the private key: tests and examples only.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sovkit.errors import ProvisionError, StateError, StateLocked
from sovkit.provision.executor import RECORD_KEYS, ExecEvent, HostOutcome, HostTarget, RunResult
from sovkit.resources import templates_dir
from sovkit.signing.keys import LocalSigner, PublicKey
from sovkit.state.models import HistoryEntry, LockInfo, State
from sovkit.state.store import check_successor, history_entry

__all__ = [
    "MemoryStateStore",
    "ScriptedExecutor",
    "ScriptedRun",
    "SeededSigner",
    "Step",
    "failed",
    "observed",
    "ok",
    "record",
    "unreachable",
]

# ansible-playbook's exit codes, as the real executor reports them (unreachable wins over failed)
RC_OK, RC_FAILED, RC_UNREACHABLE, RC_CANCELLED = 0, 2, 4, 254

# --------------------------------------------------------------------------------------------- executor

StepKind = Literal["ok", "record", "failed", "unreachable"]
_RECORD_KEYS = tuple(sorted(RECORD_KEYS))


@dataclass(frozen=True)
class Step:
    """One task's outcome on one host; build it with :func:`ok`, :func:`record`, :func:`failed`,
    :func:`unreachable`."""

    kind: StepKind
    task: str
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    changed: bool = False


def ok(task: str, changed: bool = False) -> Step:
    """A task that succeeded (counted in ``HostOutcome.ok``, and in ``changed`` when ``changed``)."""
    return Step("ok", task, changed=changed)


def record(task: str, data: Mapping[str, Any]) -> Step:
    """A ``sovkit record`` task: ``data`` is the debug ``msg``, ``{"sovkit_record": {...}}`` as the roles
    in templates/ansible emit it (apply, rollback) or ``{"sovkit_observed": {...}}`` (observe.yml)."""
    if not any(k in data for k in _RECORD_KEYS):
        # the real executor would report such a message as a plain "ok": a script saying "record" is wrong
        raise ValueError(f"a record step needs a {' or '.join(_RECORD_KEYS)} key, got {sorted(data)}")
    return Step("record", task, data=json.loads(json.dumps(dict(data))))


def failed(task: str, message: str) -> Step:
    """A task that failed: the host stops here, as Ansible stops a failed host."""
    return Step("failed", task, message=message)


def unreachable(task: str, message: str = "unreachable") -> Step:
    """A host that could not be reached at ``task``: it stops here."""
    return Step("unreachable", task, message=message)


def observed(**lists: list[Any]) -> dict[str, Any]:
    """The ``msg`` of observe.yml's record task: every list it has, empty unless given."""
    keys = ("drivers", "firmware", "firmware_rc", "runtimes", "runtimes_rc", "models_current", "model_files",
            "serving", "serving_status", "serving_models", "facts", "facts_rc")
    unknown = set(lists) - set(keys)
    if unknown:
        raise ValueError(f"observe.yml records no {', '.join(sorted(unknown))}")
    return {"sovkit_observed": {k: list(lists.get(k, [])) for k in keys}}


Script = Mapping[str, Mapping[str, Sequence[Step]]]
Responder = Callable[[str, HostTarget], Sequence[Step] | None]


@dataclass(frozen=True)
class ScriptedRun:
    """What one ``run`` call was handed, as the real executor would pass it to Ansible."""

    playbook: str
    run_id: str
    workdir: Path
    targets: tuple[HostTarget, ...]
    events: tuple[ExecEvent, ...]
    result: RunResult
    forks: int | None = None

    def target(self, host: str) -> HostTarget:
        for t in self.targets:
            if t.name == host:
                return t
        raise KeyError(f"host {host} was not a target of run {self.run_id}")

    def variables(self, host: str) -> dict[str, Any]:
        return self.target(host).variables

    def inventory(self) -> dict[str, Any]:
        """The inventory document the real executor writes (``inventory/hosts.json``)."""
        return {"all": {"hosts": {t.name: {**t.connection_vars, **t.variables} for t in self.targets}}}


class ScriptedExecutor:
    """Replays scripted per-host outcomes of a playbook instead of running Ansible.

    ``script[playbook][host]`` is the list of steps that host goes through on every run of that
    playbook; ``respond(playbook, target)``, when given, is asked first (return ``None`` to fall back to
    the script), so steps can depend on the variables a host was given. A host with no script gets
    ``default`` (one ok task: a healthy host that records nothing). Hosts run in target order; within a
    host, events come in the real executor's order (``task`` then its outcome; ``host_done`` for every
    host that neither failed nor was unreachable, after all hosts).
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        respond: Responder | None = None,
        default: Sequence[Step] = (Step("ok", "sovkit | scripted"),),
    ) -> None:
        self._script: dict[str, dict[str, list[Step]]] = {
            pb: {h: list(steps) for h, steps in hosts.items()} for pb, hosts in (script or {}).items()
        }
        self._respond = respond
        self._default = list(default)
        self.runs: list[ScriptedRun] = []

    def script(self, playbook: str, host: str, *steps: Step) -> ScriptedExecutor:
        """Set (replace) what ``host`` does on runs of ``playbook``; returns self for chaining."""
        self._script.setdefault(playbook, {})[host] = list(steps)
        return self

    @property
    def last(self) -> ScriptedRun:
        if not self.runs:
            raise LookupError("the scripted executor has not run anything")
        return self.runs[-1]

    def _steps(self, playbook: str, target: HostTarget) -> list[Step]:
        if self._respond is not None:
            steps = self._respond(playbook, target)
            if steps is not None:
                return list(steps)
        return self._script.get(playbook, {}).get(target.name, self._default)

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
        if not (templates_dir() / "ansible" / playbook).is_file():
            raise ProvisionError(f"playbook {playbook} is missing from sovkit's templates", "reinstall sovkit")
        # a JSON round trip: the record keeps what the caller handed over even if it mutates it later,
        # and variables the real executor could not write to its inventory fail here too
        frozen = tuple(HostTarget(t.name, json.loads(json.dumps(t.connection_vars)),
                                  json.loads(json.dumps(t.variables))) for t in targets)
        run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
        outcomes = {t.name: HostOutcome() for t in frozen}
        finished: list[str] = []
        events: list[ExecEvent] = []
        cancelled = False

        def emit(event: ExecEvent) -> None:
            events.append(event)
            on_event(event)

        for target in frozen:
            if cancelled:
                break
            out = outcomes[target.name]
            for step in self._steps(playbook, target):
                if cancel():
                    cancelled = True
                    break
                emit(ExecEvent("task", target.name, step.task))
                if step.kind == "ok":
                    out.ok += 1
                    out.changed += int(step.changed)
                    emit(ExecEvent("ok", target.name, step.task))
                elif step.kind == "record":
                    out.ok += 1
                    emit(ExecEvent("record", target.name, step.task, data=json.loads(json.dumps(dict(step.data)))))
                elif step.kind == "failed":
                    out.failed, out.failed_task, out.error = True, step.task, step.message
                    emit(ExecEvent("failed", target.name, step.task, step.message))
                    break
                else:
                    out.unreachable, out.failed_task = True, step.task
                    out.error = step.message or "unreachable"
                    emit(ExecEvent("unreachable", target.name, step.task, out.error))
                    break
            else:
                finished.append(target.name)
        for name in finished:
            if not (outcomes[name].failed or outcomes[name].unreachable):
                emit(ExecEvent("host_done", name))
        if cancelled:
            rc = RC_CANCELLED
        elif any(o.unreachable for o in outcomes.values()):
            rc = RC_UNREACHABLE
        elif any(o.failed for o in outcomes.values()):
            rc = RC_FAILED
        else:
            rc = RC_OK
        result = RunResult(run_id=run_id, rc=rc, hosts=outcomes, cancelled=cancelled)
        self.runs.append(ScriptedRun(playbook, run_id, workdir, frozen, tuple(events), result, forks))
        return result


# ------------------------------------------------------------------------------------------ state store


@dataclass
class _Cell:
    """The shared storage behind every handle of one in-memory state."""

    data: bytes | None = None
    backup: bytes | None = None
    lock: LockInfo | None = None
    mutex: threading.Lock = field(default_factory=threading.Lock)
    history: list[HistoryEntry] = field(default_factory=list)


class MemoryStateStore:
    """An in-memory ``StateStore`` with the local store's rules.

    ``write`` returns the state with ``serial + 1`` of the state given (refusing a stale or foreign one, like
    ``LocalStateStore``) and a lineage set on the first write and kept after; the state is stored as
    JSON, so nothing a caller mutates later leaks into it and every ``read`` is a fresh copy. The lock
    is exclusive across all handles from :meth:`reopen`.
    """

    def __init__(self, name: str = "state", *, _cell: _Cell | None = None) -> None:
        self.name = name
        self._cell = _cell or _Cell()

    @property
    def location(self) -> str:
        return f"memory:{self.name}"

    def reopen(self) -> MemoryStateStore:
        """A second handle on the same state (what re-opening the local store's directory is)."""
        return MemoryStateStore(self.name, _cell=self._cell)

    def read(self) -> State:
        data = self._cell.data
        return State() if data is None else State.model_validate_json(data)

    def write(self, state: State) -> State:
        new = state.model_copy(update={"serial": state.serial + 1, "lineage": state.lineage or str(uuid.uuid4())})
        data = new.model_dump_json().encode()
        with self._cell.mutex:
            current = State() if self._cell.data is None else State.model_validate_json(self._cell.data)
            check_successor(self.location, current.lineage, current.serial, state)
            self._cell.backup, self._cell.data = self._cell.data, data
            self._cell.history.append(history_entry(new, self._cell.lock))
        return new

    def replace(self, state: State, operation: str) -> State:
        with self._cell.mutex:
            self._cell.backup, self._cell.data = self._cell.data, state.model_dump_json().encode()
            self._cell.history.append(history_entry(state, self._cell.lock, operation))
        return state.model_copy(deep=True)

    def history(self) -> list[HistoryEntry]:
        return list(self._cell.history)

    def backup(self) -> State | None:
        """The state before the last write (``state.json.backup`` of the local store)."""
        data = self._cell.backup
        return None if data is None else State.model_validate_json(data)

    def current_lock(self) -> LockInfo | None:
        return self._cell.lock

    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        info = LockInfo(owner=getpass.getuser(), pid=os.getpid(), hostname=socket.gethostname(),
                        operation=operation)
        with self._cell.mutex:
            held = self._cell.lock
            if held is not None:
                raise StateLocked(
                    f"state {self.location} is locked: {held.operation} by {held.owner} (pid {held.pid} on "
                    f"{held.hostname}) since {held.created}, lock id {held.id}",
                    f"if no other sovkit run is active, run `sovkit force-unlock {held.id}`",
                )
            self._cell.lock = info
        try:
            yield info
        finally:
            with self._cell.mutex:
                if self._cell.lock is not None and self._cell.lock.id == info.id:
                    self._cell.lock = None

    def force_unlock(self, lock_id: str) -> LockInfo:
        with self._cell.mutex:
            held = self._cell.lock
            if held is None:
                raise StateError(f"state {self.location} is not locked", "nothing to unlock")
            if held.id != lock_id:
                raise StateError(f"lock id {lock_id} does not match the current lock {held.id}",
                                 "copy the id from the error message of the locked run")
            self._cell.lock = None
            return held


# ----------------------------------------------------------------------------------------------- signer

DEFAULT_SEED = b"sovkit fake signer (public seed, tests and examples only)"


class SeededSigner:
    """A deterministic Ed25519 ``Signer``: the same seed always gives the same key and key id.

    It signs through :meth:`LocalSigner.from_seed` (no crypto of its own) but exposes only the port, so
    code tested with it cannot depend on anything a hardware signer would lack (the private key).
    """

    def __init__(self, seed: bytes | str = DEFAULT_SEED) -> None:
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self._local = LocalSigner.from_seed(self.seed)

    def __repr__(self) -> str:
        return f"SeededSigner(seed={self.seed!r}, keyid={self.keyid[:16]}…)"

    @property
    def keyid(self) -> str:
        return self._local.keyid

    @property
    def public_key(self) -> PublicKey:
        return self._local.public_key

    def sign(self, data: bytes) -> bytes:
        return self._local.sign(data)
