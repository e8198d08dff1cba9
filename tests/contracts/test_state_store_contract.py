"""The StateStore contract, run on every adapter: the local JSON store and the in-memory fake.

Adding an adapter (a PostgreSQL store, ...) is one line in ``ADAPTERS``: a function that opens a fresh,
empty store and says how to open a second handle on the same state (another process's view).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sovkit.errors import StateError, StateLocked
from sovkit.fakes import MemoryStateStore
from sovkit.state.models import HostRecord, State
from sovkit.state.store import LocalStateStore, StateStore


@dataclass
class Opened:
    store: StateStore
    reopen: Callable[[], StateStore]


def local(tmp: Path) -> Opened:
    return Opened(LocalStateStore(tmp / ".sovkit"), lambda: LocalStateStore(tmp / ".sovkit"))


def memory(tmp: Path) -> Opened:
    store = MemoryStateStore()
    return Opened(store, store.reopen)


ADAPTERS: list[Callable[[Path], Opened]] = [local, memory]


@pytest.fixture(params=ADAPTERS, ids=lambda f: f.__name__)
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Opened:
    factory: Callable[[Path], Opened] = request.param
    return factory(tmp_path)


# ---------------------------------------------------------------------------------------------- contract

def fresh_state_is_empty(o: Opened) -> None:
    state = o.store.read()
    assert (state.serial, state.lineage, state.hosts, state.site) == (0, "", {}, "")


def write_bumps_serial_and_sets_lineage_once(o: Opened) -> None:
    first = o.store.write(o.store.read())
    assert first.serial == 1 and len(first.lineage) == 36
    first.hosts["h1"] = HostRecord(last_apply="a1")
    second = o.store.write(first)
    assert (second.serial, second.lineage) == (2, first.lineage)
    back = o.store.read()
    assert (back.serial, back.lineage, back.hosts["h1"].last_apply) == (2, first.lineage, "a1")
    assert back == second


def write_keeps_a_given_lineage(o: Opened) -> None:
    written = o.store.write(State(lineage="0f1e2d3c-0000-4000-8000-000000000000", serial=7, site="s"))
    assert (written.serial, written.lineage, written.site) == (8, "0f1e2d3c-0000-4000-8000-000000000000", "s")
    assert o.store.read() == written


def reads_are_copies(o: Opened) -> None:
    given = State(site="s")
    written = o.store.write(given)
    given.hosts["later"] = HostRecord()
    written.hosts["later"] = HostRecord()
    o.store.read().hosts["mutated"] = HostRecord()
    assert o.store.read().hosts == {}


def state_survives_reopen(o: Opened) -> None:
    written = o.store.write(State(site="s", hosts={"h1": HostRecord(last_apply="a1")}))
    again = o.reopen()
    assert again.read() == written
    assert again.write(again.read()).lineage == written.lineage


def lock_excludes_a_second_locker_naming_the_holder(o: Opened) -> None:
    with o.store.lock("apply") as held:
        for other in (o.store, o.reopen()):
            with pytest.raises(StateLocked) as err, other.lock("plan"):
                pytest.fail("a second lock was granted")
            assert "apply" in err.value.message and held.owner in err.value.message
            assert held.id in err.value.message
            assert f"sovkit force-unlock {held.id}" in (err.value.hint or "")
    with o.reopen().lock("plan") as next_holder:
        assert next_holder.operation == "plan" and next_holder.id != held.id


def force_unlock_needs_the_holders_id(o: Opened) -> None:
    with pytest.raises(StateError, match="not locked"):
        o.store.force_unlock("anything")
    with o.store.lock("apply") as held:
        with pytest.raises(StateError) as wrong:
            o.reopen().force_unlock("not-the-id")
        assert not isinstance(wrong.value, StateLocked)
        with pytest.raises(StateLocked), o.store.lock("plan"):
            pass
        freed = o.reopen().force_unlock(held.id)
        assert freed == held
        with o.store.lock("plan") as taken:
            assert taken.operation == "plan"


def leaving_after_a_force_unlock_keeps_the_new_holders_lock(o: Opened) -> None:
    first = o.store.lock("apply")
    held = first.__enter__()
    o.store.force_unlock(held.id)
    with o.reopen().lock("plan") as second:
        first.__exit__(None, None, None)
        with pytest.raises(StateLocked, match=second.id), o.store.lock("refresh"):
            pass


CONTRACT = [
    fresh_state_is_empty,
    write_bumps_serial_and_sets_lineage_once,
    write_keeps_a_given_lineage,
    reads_are_copies,
    state_survives_reopen,
    lock_excludes_a_second_locker_naming_the_holder,
    force_unlock_needs_the_holders_id,
    leaving_after_a_force_unlock_keeps_the_new_holders_lock,
]


@pytest.mark.parametrize("behaviour", CONTRACT, ids=lambda f: f.__name__)
def test_state_store(opened: Opened, behaviour: Callable[[Opened], None]) -> None:
    behaviour(opened)


# ------------------------------------------------------------------------- the contract can fail

class _NoSerialBump(MemoryStateStore):
    """A broken store: writes keep the serial, so two runs could not tell old state from new."""

    def write(self, state: State) -> State:
        new = super().write(state)
        return new.model_copy(update={"serial": state.serial})


class _LockIgnoresOtherHandles(MemoryStateStore):
    """A broken store: each handle has its own lock, so two processes could both hold 'the' lock."""

    def reopen(self) -> MemoryStateStore:
        return MemoryStateStore(self.name)  # a new cell: neither the state nor the lock is shared


def test_contract_catches_a_store_that_does_not_bump_the_serial() -> None:
    store = _NoSerialBump()
    with pytest.raises(AssertionError):
        write_bumps_serial_and_sets_lineage_once(Opened(store, store.reopen))


def test_contract_catches_a_lock_that_other_handles_do_not_see() -> None:
    store = _LockIgnoresOtherHandles()
    with pytest.raises(pytest.fail.Exception, match="a second lock was granted"):
        lock_excludes_a_second_locker_naming_the_holder(Opened(store, store.reopen))
