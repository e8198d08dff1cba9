"""The local state store: serial/lineage, atomic writes with a backup, the lock and force-unlock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sovkit.errors import StateError, StateLocked
from sovkit.state.models import HostRecord, LockInfo, State
from sovkit.state.store import LocalStateStore


def test_missing_state_reads_as_empty_without_lineage(tmp_path: Path) -> None:
    state = LocalStateStore(tmp_path).read()
    assert (state.serial, state.lineage, state.hosts) == (0, "", {})
    assert not (tmp_path / "state.json").exists()


def test_write_bumps_serial_sets_lineage_once_and_keeps_a_backup(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path)
    first = store.write(State())
    assert first.serial == 1 and len(first.lineage) == 36
    first.hosts["h1"] = HostRecord(last_apply="a1")
    second = store.write(first)
    assert (second.serial, second.lineage) == (2, first.lineage)
    on_disk = State.model_validate_json((tmp_path / "state.json").read_bytes())
    assert on_disk.hosts["h1"].last_apply == "a1"
    backup = json.loads((tmp_path / "state.json.backup").read_text())
    assert backup["serial"] == 1 and backup["hosts"] == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_corrupt_state_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"serial": "many"')
    with pytest.raises(StateError, match="is corrupt") as err:
        LocalStateStore(tmp_path).read()
    assert "backup" in (err.value.hint or "")


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path)
    with store.lock("apply") as held:
        assert json.loads((tmp_path / "state.lock").read_text())["id"] == held.id
        with pytest.raises(StateLocked, match="is locked: apply by") as err, store.lock("plan"):
            pass
        assert f"sovkit force-unlock {held.id}" in (err.value.hint or "")
    assert not (tmp_path / "state.lock").exists()


def test_lock_of_a_dead_process_is_reported_stale_and_can_be_forced(tmp_path: Path) -> None:
    import socket

    dead = LockInfo(owner="root", pid=2**22 + 12345, hostname=socket.gethostname(), operation="apply")
    (tmp_path / "state.lock").write_text(dead.model_dump_json())
    store = LocalStateStore(tmp_path)
    with pytest.raises(StateLocked, match="stale lock"), store.lock("apply"):
        pass
    with pytest.raises(StateError, match="does not match"):
        store.force_unlock("not-the-id")
    assert store.force_unlock(dead.id).pid == dead.pid
    with store.lock("apply"):
        pass


def test_force_unlock_without_a_lock(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not locked"):
        LocalStateStore(tmp_path).force_unlock("x")


def test_write_failure_leaves_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStateStore(tmp_path)
    first = store.write(State(site="before"))

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StateError, match="no space left on the device; it still holds serial 1"):
        store.write(first.model_copy(update={"site": "after"}))
    monkeypatch.undo()
    assert store.read().site == "before"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
