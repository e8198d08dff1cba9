"""State storage: the StateStore port and the local JSON file implementation.

Writes are atomic (temp file, fsync, rename, fsync of the directory), so a
crash at any moment leaves either the old or the new state, never a torn file.
Every write is refused unless it continues the stored state (same lineage, the
serial it was read at), so no update is lost, and each serial is kept in
``history/``. The lock is a file created with O_EXCL holding the owner, pid,
host and an id; a lock whose pid is gone is reported as stale with the
`force-unlock` hint. The PostgreSQL store (sovkit/state/postgres.py) keeps the
same contract.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from sovkit.errors import StateError, StateLocked
from sovkit.fsutil import atomic_write
from sovkit.state.models import HistoryEntry, LockInfo, State, now


class StateStore(Protocol):
    def read(self) -> State: ...

    def write(self, state: State) -> State: ...

    def lock(self, operation: str) -> contextlib.AbstractContextManager[LockInfo]: ...

    def force_unlock(self, lock_id: str) -> LockInfo: ...

    def current_lock(self) -> LockInfo | None:
        """Who holds the lock now (None: nobody)."""
        ...

    def history(self) -> list[HistoryEntry]:
        """Every serial written, oldest first."""
        ...

    def replace(self, state: State, operation: str) -> State:
        """Store ``state`` exactly as given (its lineage and serial): what `state pull|push` moves. The caller
        holds the lock and has decided the stored state may be overwritten."""
        ...

    @property
    def location(self) -> str: ...


LOCK_POLL = 0.2  # seconds between attempts while waiting for a held lock (--lock-timeout)


def check_successor(location: str, lineage: str, serial: int, state: State) -> None:
    """Refuse a write that does not continue the stored state (``lineage``/``serial``): one of another
    lineage, or one read at an older serial (a lost update). An empty store takes any state."""
    if serial == 0 and not lineage:
        return
    if state.lineage != lineage:
        raise StateError(
            f"state {location} has lineage {lineage}, the state being written has "
            f"{'lineage ' + state.lineage if state.lineage else 'none (a new state)'}: not written",
            "it is another site's or an older copy's state; `sovkit state push --force` replaces the stored one "
            "on purpose")
    if state.serial != serial:
        raise StateError(
            f"lost update refused: the state being written was read at serial {state.serial} but {location} is "
            f"at serial {serial} (another run wrote it meanwhile); serial {serial} is kept",
            "run `sovkit plan` again against the current state and apply that plan")


@dataclass(frozen=True)
class Moved:
    """What `state pull|push` did: the state moved (or found already there), from where to where."""

    source: str
    target: str
    lineage: str
    serial: int
    replaced: str | None  # "lineage L serial N" of the state overwritten, None when the target was empty
    changed: bool


def move_state(source: StateStore, target: StateStore, operation: str, force: bool = False) -> Moved:
    """Copy ``source``'s current state into ``target`` as it is (same lineage and serial), under the target's
    lock. Refused without ``force`` when the target holds another lineage or a newer serial of the same one."""
    state = source.read()
    if state.serial == 0:
        raise StateError(f"{source.location} holds no state: nothing to {operation}",
                         "run `sovkit apply` or `sovkit refresh` first" if operation == "push" else
                         "push a state there first (`sovkit state push`)")
    with target.lock(operation):
        current = target.read()
        replaced = f"lineage {current.lineage} serial {current.serial}" if current.serial else None
        if current.serial and current.lineage != state.lineage and not force:
            raise StateError(
                f"{target.location} holds another state (lineage {current.lineage}, serial {current.serial}) than "
                f"{source.location} (lineage {state.lineage}, serial {state.serial}): nothing was moved",
                f"check that both are the same site; `sovkit state {operation} --force` replaces it (its serials "
                "stay in the history)")
        if current.lineage == state.lineage and current.serial > state.serial and not force:
            raise StateError(
                f"{target.location} is newer (serial {current.serial}) than {source.location} (serial "
                f"{state.serial}) of the same lineage: nothing was moved",
                f"move the other way, or `sovkit state {operation} --force` to go back to serial {state.serial}")
        if (current.lineage, current.serial) == (state.lineage, state.serial):
            return Moved(source.location, target.location, state.lineage, state.serial, None, False)
        target.replace(state, operation)
    return Moved(source.location, target.location, state.lineage, state.serial, replaced, True)


def history_entry(state: State, held: LockInfo | None, operation: str | None = None,
                  compact: bytes | None = None) -> HistoryEntry:
    """Who wrote ``state`` (an already bumped serial), when, under which lock, and the digest of what was written
    (``compact``: the state's compact JSON, when the caller has it already)."""
    data = compact if compact is not None else state.model_dump_json().encode()
    return HistoryEntry(serial=state.serial, lineage=state.lineage, who=getpass.getuser(),
                        hostname=socket.gethostname(), at=now(),
                        operation=operation or (held.operation if held else "write"), run=held.id if held else "",
                        sha256=hashlib.sha256(data).hexdigest())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _locate(path: Path, raw: bytes, loc: tuple[int | str, ...]) -> str:
    """``path:line`` of the last key of ``loc`` in the file (the state is written one key per line)."""
    keys = [k for k in loc if isinstance(k, str)]
    if keys:
        needle = json.dumps(keys[-1]).encode() + b":"
        at = raw.find(needle)
        if at >= 0:
            line = raw.count(b"\n", 0, at) + 1
            return f"{path}:{line}"
    return str(path)


_HEAD = re.compile(rb'^\{\s*"version":\s*\d+,\s*"lineage":\s*"([0-9a-f-]*)",\s*"serial":\s*(\d+)\s*,')


class LocalStateStore:
    """``state.json``, ``state.lock`` and ``history/`` in a directory (default: ``.sovkit/`` beside the
    inventory). ``lock_timeout``: seconds to wait for a held lock before giving up (0: do not wait)."""

    def __init__(self, directory: Path, lock_timeout: float = 0.0) -> None:
        self.directory = directory
        self.path = directory / "state.json"
        self.lock_path = directory / "state.lock"
        self.history_dir = directory / "history"
        self.lock_timeout = lock_timeout
        self._held: LockInfo | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    def read(self) -> State:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"cannot read state {self.path}: {exc.strerror}", "check permissions") from exc
        try:
            return State.model_validate_json(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(map(str, err["loc"]))
            raise StateError(
                f"state file {_locate(self.path, raw, err['loc'])} is corrupt"
                f"{f' at {field}' if field else ''}: {err['msg']}",
                f"restore it from {self.directory / 'state.json.backup'} (the previous serial) or run "
                "`sovkit refresh` after moving it away; do not edit it by hand",
            ) from exc

    def _stored_head(self) -> tuple[str, int, bytes | None]:
        """(lineage, serial, raw file) of the stored state; the head is read from the file's first lines."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return "", 0, None
        except OSError as exc:
            raise StateError(f"cannot read state {self.path}: {exc.strerror}", "check permissions") from exc
        head = _HEAD.match(raw[:400])
        if head:
            return head.group(1).decode(), int(head.group(2)), raw
        current = self.read()
        return current.lineage, current.serial, raw

    def write(self, state: State) -> State:
        """Write ``state`` with serial + 1 (refusing a stale or foreign one: ``check_successor``); keeps the
        previous file as ``state.json.backup`` and the new serial in ``history/``."""
        lineage, serial, raw = self._stored_head()
        check_successor(str(self.path), lineage, serial, state)
        new = state.model_copy(update={"serial": state.serial + 1, "lineage": state.lineage or str(uuid.uuid4())})
        return self._store(new, raw, history_entry(new, self._held))

    def replace(self, state: State, operation: str) -> State:
        if state.serial < 1 or not state.lineage:
            raise StateError(f"cannot store a state without lineage and serial in {self.path}",
                             "only a state that was written once can be moved")
        _, _, raw = self._stored_head()
        return self._store(state.model_copy(deep=True), raw, history_entry(state, self._held, operation))

    def _history_file(self, entry: HistoryEntry) -> Path:
        return self.history_dir / f"{entry.serial:012d}-{entry.lineage}.jsonl"

    def _store(self, new: State, raw: bytes | None, entry: HistoryEntry) -> State:
        data = (new.model_dump_json(indent=2) + "\n").encode()
        record = entry.model_dump_json().encode() + b"\n"
        try:
            if raw is not None:
                atomic_write(self.directory / "state.json.backup", raw)
            atomic_write(self._history_file(entry), record)  # before state.json: every serial it holds is kept
            atomic_write(self.path, data)
        except OSError as exc:  # atomic: the old state (serial state.serial) is still in place
            what = "no space left on the device" if exc.errno == errno.ENOSPC else exc.strerror
            raise StateError(
                f"cannot write state {self.path}: {what}; it still holds serial {entry.serial - 1}"
                if entry.operation not in ("push", "pull") else f"cannot write state {self.path}: {what}",
                "free space (or fix permissions) on that filesystem and re-run",
            ) from exc
        return new

    def history(self) -> list[HistoryEntry]:
        """Every serial in ``history/`` (line 1 of each file is its entry), oldest first."""
        entries = []
        try:
            files = sorted(self.history_dir.glob("*.jsonl"))
        except OSError:
            return []
        for path in files:
            try:
                with path.open("rb") as fh:
                    entries.append(HistoryEntry.model_validate_json(fh.readline()))
            except (OSError, ValidationError) as exc:
                raise StateError(f"state history file {path} is unreadable: {exc}",
                                 "move it away; the other serials are still listed") from exc
        return sorted(entries, key=lambda e: (e.at, e.serial))

    def current_lock(self) -> LockInfo | None:
        try:
            return LockInfo.model_validate_json(self.lock_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError):
            return LockInfo(id="unreadable", owner="?", pid=0, hostname="?", operation="?")

    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        info = LockInfo(owner=getpass.getuser(), pid=os.getpid(), hostname=socket.gethostname(),
                        operation=operation)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                if time.monotonic() < deadline:
                    time.sleep(LOCK_POLL)
                    continue
                held = self.current_lock()
                raise self._locked_error(held) from None
            except OSError as exc:
                raise StateError(f"cannot create the state lock {self.lock_path}: {exc.strerror}",
                                 "free space (or fix permissions) on that filesystem and re-run") from exc
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(info.model_dump_json())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.lock_path.unlink(missing_ok=True)
            raise StateError(f"cannot write the state lock {self.lock_path}: {exc.strerror}",
                             "free space on that filesystem and re-run; nothing was changed") from exc
        outer, self._held = self._held, info
        try:
            yield info
        finally:
            self._held = outer
            with contextlib.suppress(FileNotFoundError):
                current = self.current_lock()
                if current is not None and current.id == info.id:
                    self.lock_path.unlink()

    def _locked_error(self, held: LockInfo | None) -> StateLocked:
        if held is None:
            return StateLocked(f"state {self.path} was locked and released while acquiring", "run again")
        stale = held.hostname == socket.gethostname() and held.pid > 0 and not _pid_alive(held.pid)
        what = "a stale lock (its process is gone)" if stale else "locked"
        return StateLocked(
            f"state {self.path} is {what}: {held.operation} by {held.owner} (pid {held.pid} on {held.hostname}) "
            f"since {held.created}, lock id {held.id}",
            f"if no other sovkit run is active, run `sovkit force-unlock {held.id}`, then `sovkit refresh` "
            f"(a killed run may have finished one more component on a host than the state records)",
        )

    def force_unlock(self, lock_id: str) -> LockInfo:
        held = self.current_lock()
        if held is None:
            raise StateError(f"state {self.path} is not locked", "nothing to unlock")
        if held.id != lock_id:
            raise StateError(f"lock id {lock_id} does not match the current lock {held.id}",
                             "copy the id from the error message of the locked run")
        self.lock_path.unlink()
        return held
