"""State storage: the StateStore port and the local JSON file implementation.

Writes are atomic (temp file, fsync, rename, fsync of the directory), so a
crash at any moment leaves either the old or the new state, never a torn file.
The lock is a file created with O_EXCL holding the owner, pid, host and an id;
a lock whose pid is gone is reported as stale with the `force-unlock` hint.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from sovkit.errors import StateError, StateLocked
from sovkit.fsutil import atomic_write
from sovkit.state.models import LockInfo, State


class StateStore(Protocol):
    def read(self) -> State: ...

    def write(self, state: State) -> State: ...

    def lock(self, operation: str) -> contextlib.AbstractContextManager[LockInfo]: ...

    def force_unlock(self, lock_id: str) -> LockInfo: ...

    @property
    def location(self) -> str: ...


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


class LocalStateStore:
    """``state.json`` and ``state.lock`` in a directory (default: ``.sovkit/`` beside the inventory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"
        self.lock_path = directory / "state.lock"

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

    def write(self, state: State) -> State:
        """Write ``state`` with serial + 1; keeps the previous file as ``state.json.backup``."""
        new = state.model_copy(update={"serial": state.serial + 1, "lineage": state.lineage or str(uuid.uuid4())})
        data = (new.model_dump_json(indent=2) + "\n").encode()
        try:
            if self.path.exists():
                atomic_write(self.directory / "state.json.backup", self.path.read_bytes())
            atomic_write(self.path, data)
        except OSError as exc:  # atomic: the old state (serial state.serial) is still in place
            what = "no space left on the device" if exc.errno == errno.ENOSPC else exc.strerror
            raise StateError(
                f"cannot write state {self.path}: {what}; it still holds serial {state.serial}",
                "free space (or fix permissions) on that filesystem and re-run",
            ) from exc
        return new

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
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
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
        try:
            yield info
        finally:
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
