"""The StateStore contract, run on every adapter: the local JSON store, PostgreSQL and the in-memory fake.

Adding an adapter is one line in ``ADAPTERS``: a function that opens a fresh, empty store and says how to
open a second handle on the same state (another process's view). The PostgreSQL adapter runs against the
session's real server (tests/pgserver.py), one new site per test.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sovkit.errors import StateError, StateLocked
from sovkit.fakes import MemoryStateStore
from sovkit.state.models import HostRecord, State
from sovkit.state.postgres import PostgresStateStore
from sovkit.state.store import LocalStateStore, StateStore
from tests.pgserver import PgServer


@dataclass
class Opened:
    store: StateStore
    reopen: Callable[[], StateStore]


def local(tmp: Path, request: pytest.FixtureRequest) -> Opened:
    return Opened(LocalStateStore(tmp / ".sovkit"), lambda: LocalStateStore(tmp / ".sovkit"))


def memory(tmp: Path, request: pytest.FixtureRequest) -> Opened:
    store = MemoryStateStore()
    return Opened(store, store.reopen)


def postgres(tmp: Path, request: pytest.FixtureRequest) -> Opened:
    server: PgServer = request.getfixturevalue("pg_server")
    site = "site-" + uuid.uuid4().hex[:10]
    return Opened(PostgresStateStore(server.url(), site), lambda: PostgresStateStore(server.url(), site))


ADAPTERS: list[Callable[[Path, pytest.FixtureRequest], Opened]] = [local, postgres, memory]


@pytest.fixture(params=ADAPTERS, ids=lambda f: f.__name__)
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Opened:
    factory: Callable[[Path, pytest.FixtureRequest], Opened] = request.param
    return factory(tmp_path, request)


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


def stale_serial_is_refused_naming_both_serials(o: Opened) -> None:
    base = o.store.write(State(site="s"))
    mine, theirs = base.model_copy(deep=True), o.reopen().read()
    theirs.hosts["h2"] = HostRecord(last_apply="theirs")
    assert o.reopen().write(theirs).serial == 2
    mine.hosts["h1"] = HostRecord(last_apply="mine")
    with pytest.raises(StateError, match=r"read at serial 1 but .* is at serial 2") as err:
        o.store.write(mine)
    assert "plan" in (err.value.hint or "")
    back = o.store.read()
    assert back.serial == 2 and set(back.hosts) == {"h2"}


def another_lineage_is_refused(o: Opened) -> None:
    stored = o.store.write(State(site="s"))
    for foreign in (State(site="s"), State(lineage=str(uuid.uuid4()), serial=stored.serial, site="s")):
        with pytest.raises(StateError, match=f"has lineage {stored.lineage}"):
            o.reopen().write(foreign)
    assert o.store.read() == stored


def history_keeps_every_serial_in_order(o: Opened) -> None:
    state = o.store.write(State(site="s"))
    with o.store.lock("apply") as held:
        state = o.store.write(state)
        state = o.store.write(state)
    history = o.reopen().history()
    assert [e.serial for e in history] == [1, 2, 3]
    assert {e.lineage for e in history} == {state.lineage}
    assert {e.who for e in history} == {getpass.getuser()}
    assert [(e.operation, e.run) for e in history] == [("write", ""), ("apply", held.id), ("apply", held.id)]
    assert [e.at for e in history] == sorted(e.at for e in history)


def replace_stores_a_state_as_given(o: Opened) -> None:
    o.store.write(State(site="before"))
    moved = State(lineage=str(uuid.uuid4()), serial=41, site="moved", hosts={"h": HostRecord(last_apply="x")})
    with o.store.lock("push"):
        o.store.replace(moved, "push")
    assert o.reopen().read() == moved
    assert [(e.serial, e.operation) for e in o.store.history()][-1] == (41, "push")
    assert o.reopen().write(o.reopen().read()).serial == 42


def lock_and_unlock_leave_no_lock(o: Opened) -> None:
    assert o.store.current_lock() is None
    with o.store.lock("apply") as held:
        assert o.reopen().current_lock() == held
    assert o.reopen().current_lock() is None
    with o.reopen().lock("refresh"):
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
    stale_serial_is_refused_naming_both_serials,
    another_lineage_is_refused,
    history_keeps_every_serial_in_order,
    replace_stores_a_state_as_given,
    lock_and_unlock_leave_no_lock,
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
