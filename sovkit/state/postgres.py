"""State in PostgreSQL: the StateStore port over a shared database, so a team of operators works on one state.

The one module that imports psycopg. Per site, one row in ``sovkit.state`` (lineage, serial, the state
JSON); every write also inserts the new serial into ``sovkit.history`` (who, host, when, operation, run),
so the whole history is kept. A write is ``UPDATE … WHERE serial = <the serial it was read at>`` in a
transaction: a write that lost a race is refused, never applied over the other one.

The lock is a PostgreSQL *session* advisory lock on a key derived from the site name, taken by a dedicated
connection held open for the whole operation (the operation's writes go through it). When the holder dies,
its session ends and the lock goes with it. A row in ``sovkit.locks`` says who holds it (user, host, pid,
operation, id, since, and the database backend pid) for "locked by X" messages and ``force-unlock ID``,
which terminates that backend (only the one that both holds the advisory lock and is recorded under that
id), or, when no session holds the lock any more, just clears the row.

The schema is versioned: ``sovkit.schema_version`` lists the migrations applied, they are applied in
order in one transaction on first use, and a database migrated by a newer sovkit is refused.

Credentials come from libpq's usual places (``PGPASSWORD``, a passfile ``~/.pgpass`` / ``PGPASSFILE`` /
``passfile=`` in the URL) or the URL itself; a password is never part of a message (``redact``).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from pydantic import ValidationError

from sovkit.errors import StateError, StateLocked
from sovkit.state.models import HistoryEntry, LockInfo, State
from sovkit.state.store import LOCK_POLL, check_successor, history_entry

SCHEMA = "sovkit"

# (version, description, statements). Append only: a released migration is never edited.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "state, history and locks", [
        """CREATE TABLE sovkit.state (
             site text PRIMARY KEY,
             lineage uuid NOT NULL,
             serial bigint NOT NULL CHECK (serial >= 1),
             state jsonb NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now(),
             updated_by text NOT NULL)""",
        """CREATE TABLE sovkit.history (
             id bigserial PRIMARY KEY,
             site text NOT NULL,
             lineage uuid NOT NULL,
             serial bigint NOT NULL,
             who text NOT NULL,
             hostname text NOT NULL,
             at timestamptz NOT NULL,
             operation text NOT NULL,
             run text NOT NULL,
             db_user text NOT NULL DEFAULT current_user,
             state_sha256 text NOT NULL)""",
        "CREATE INDEX history_site ON sovkit.history (site, id)",
        """CREATE TABLE sovkit.locks (
             site text PRIMARY KEY,
             id text NOT NULL,
             owner text NOT NULL,
             hostname text NOT NULL,
             pid integer NOT NULL,
             operation text NOT NULL,
             created text NOT NULL,
             since timestamptz NOT NULL DEFAULT now(),
             backend_pid integer NOT NULL)""",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
_MIGRATION_KEY = int.from_bytes(hashlib.sha256(b"sovkit-state-migrations").digest()[:8], "big", signed=True)


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the only form a URL takes in a message."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = (parts.username or "") + ":***"
        return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))
    except ValueError:
        return "<unparseable PostgreSQL URL>"


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def lock_key(site: str) -> int:
    """The advisory lock key of a site's state (a signed 64-bit integer, stable across versions)."""
    return int.from_bytes(hashlib.sha256(b"sovkit-state\0" + site.encode()).digest()[:8], "big", signed=True)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class SiteRow:
    """One site's state in the database, as `sovkit state list` shows it."""

    site: str
    lineage: str
    serial: int
    hosts: int
    updated_at: str
    updated_by: str
    locked_by: str | None


class Database:
    """A connection factory for one URL that turns connection failures into StateErrors without the password."""

    def __init__(self, url: str) -> None:
        if not is_postgres_url(url):
            raise StateError(f"{redact(url)!r} is not a PostgreSQL URL", "use postgresql://[USER@]HOST[:PORT]/DB")
        self.url = url
        self.shown = redact(url)
        self._migrated = False

    def error(self, exc: BaseException, what: str) -> StateError:
        text = " ".join(str(exc).split())
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        return StateError(f"{what} ({self.shown}): {text}",
                          "check the URL, that the server is up, and the credentials (PGPASSWORD or a passfile)")

    def connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10, application_name="sovkit")
        except psycopg.Error as exc:
            raise self.error(exc, "cannot connect to the state database") from None
        if not self._migrated:
            try:
                migrate(conn, self.shown)
            except BaseException:
                conn.close()
                raise
            self._migrated = True
        return conn


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The newest migration applied (0 on an empty database)."""
    if conn.execute("SELECT to_regclass('sovkit.schema_version')").fetchone() == (None,):
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM sovkit.schema_version").fetchone()
    return int(row[0]) if row else 0


def _refuse_newer(found: int, shown: str) -> None:
    if found > SCHEMA_VERSION:
        raise StateError(f"the state database {shown} has schema version {found}, newer than this sovkit knows "
                         f"({SCHEMA_VERSION}): not used", "upgrade sovkit to the version that migrated it")


def migrate(conn: psycopg.Connection[Any], shown: str = "") -> int:
    """Apply the missing migrations in order, in one transaction (serialised by an advisory lock, so two
    first uses do not race); refuse a schema newer than this code. Returns the version now in place."""
    try:
        found = schema_version(conn)
        _refuse_newer(found, shown)
        if found == SCHEMA_VERSION:
            return found
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_KEY,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute("""CREATE TABLE IF NOT EXISTS sovkit.schema_version (
                              version integer PRIMARY KEY, description text NOT NULL,
                              applied_at timestamptz NOT NULL DEFAULT now(),
                              applied_by text NOT NULL DEFAULT current_user)""")
            found = schema_version(conn)  # again, under the lock: another process may have migrated meanwhile
            _refuse_newer(found, shown)
            for version, description, statements in MIGRATIONS:
                if version <= found:
                    continue
                for statement in statements:
                    conn.execute(statement.encode())
                conn.execute("INSERT INTO sovkit.schema_version (version, description) VALUES (%s, %s)",
                             (version, description))
        return SCHEMA_VERSION
    except psycopg.Error as exc:
        raise StateError(f"cannot migrate the state database {shown}: {' '.join(str(exc).split())}",
                         "the role needs CREATE on the database for the first use") from None


class PostgresStateStore:
    """One site's state in a PostgreSQL database. ``lock_timeout``: seconds to wait for a held lock."""

    def __init__(self, url: str, site: str, lock_timeout: float = 0.0) -> None:
        self.db = Database(url)
        self.site = site
        self.key = lock_key(site)
        self.lock_timeout = lock_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._held: tuple[LockInfo, psycopg.Connection[Any]] | None = None

    @property
    def location(self) -> str:
        return f"{self.db.shown}#{self.site}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _data(self) -> psycopg.Connection[Any]:
        """The connection for reads and writes: the lock's own while this store holds it (so a write after
        the lock's session was terminated fails), else a shared one opened on first use."""
        if self._held is not None:
            return self._held[1]
        if self._conn is None or self._conn.closed:
            self._conn = self.db.connect()
        return self._conn

    def _failed(self, exc: psycopg.Error, what: str) -> StateError:
        if self._held is not None and self._held[1].closed:
            return StateError(f"{what}: the session holding the state lock of {self.location} is gone (was it "
                              f"force-unlocked?)", "run `sovkit refresh`, then plan again")
        return self.db.error(exc, what)

    # --- read / write ---------------------------------------------------------------------------------------

    def read(self) -> State:
        try:
            row = self._data().execute("SELECT state::text FROM sovkit.state WHERE site = %s",
                                       (self.site,)).fetchone()
        except psycopg.Error as exc:
            raise self._failed(exc, "cannot read the state") from None
        if row is None:
            return State()
        try:
            return State.model_validate_json(row[0])
        except ValidationError as exc:
            err = exc.errors()[0]
            raise StateError(f"state {self.location} is corrupt at {'.'.join(map(str, err['loc']))}: {err['msg']}",
                             "restore it from a backup (or `sovkit state push` a good local copy), then run "
                             "`sovkit refresh`") from None

    def write(self, state: State) -> State:
        new = state.model_copy(update={"serial": state.serial + 1, "lineage": state.lineage or str(uuid.uuid4())})
        held = self._held[0] if self._held else None
        self._store(new, history_entry(new, held), state)
        return new

    def replace(self, state: State, operation: str) -> State:
        if state.serial < 1 or not state.lineage:
            raise StateError(f"cannot store a state without lineage and serial in {self.location}",
                             "only a state that was written once can be moved")
        held = self._held[0] if self._held else None
        self._store(state, history_entry(state, held, operation), None)
        return state.model_copy(deep=True)

    def _store(self, new: State, entry: HistoryEntry, expected: State | None) -> None:
        """In one transaction: check the lock is still ours, check ``expected`` continues the row, update
        it only at the serial it was read at, and append the history row."""
        data = new.model_dump_json()
        conn = self._data()
        try:
            with conn.transaction():
                if self._held is not None:
                    lock = conn.execute("SELECT id FROM sovkit.locks WHERE site = %s", (self.site,)).fetchone()
                    if lock is None or lock[0] != self._held[0].id:
                        raise StateError(f"the state lock of {self.location} was force-unlocked: serial "
                                         f"{new.serial} not written", "run `sovkit refresh`, then plan again")
                row = conn.execute("SELECT lineage::text, serial FROM sovkit.state WHERE site = %s FOR UPDATE",
                                   (self.site,)).fetchone()
                if expected is not None:
                    check_successor(self.location, row[0] if row else "", int(row[1]) if row else 0, expected)
                if row is None:
                    done = conn.execute(
                        "INSERT INTO sovkit.state (site, lineage, serial, state, updated_by) "
                        "VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT (site) DO NOTHING",
                        (self.site, new.lineage, new.serial, data, entry.who)).rowcount
                else:
                    done = conn.execute(
                        "UPDATE sovkit.state SET lineage = %s, serial = %s, state = %s::jsonb, updated_at = now(), "
                        "updated_by = %s WHERE site = %s AND serial = %s",
                        (new.lineage, new.serial, data, entry.who, self.site, int(row[1]))).rowcount
                if done != 1:
                    now_at = self.read().serial
                    raise StateError(
                        f"lost update refused: serial {new.serial} was to follow {row[1] if row else 0} but "
                        f"{self.location} moved to serial {now_at} meanwhile; serial {now_at} is kept",
                        "run `sovkit plan` again against the current state and apply that plan")
                conn.execute(
                    "INSERT INTO sovkit.history (site, lineage, serial, who, hostname, at, operation, run, "
                    "state_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (self.site, new.lineage, new.serial, entry.who, entry.hostname,
                     datetime.strptime(entry.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
                     entry.operation, entry.run, entry.sha256))
        except psycopg.Error as exc:
            raise self._failed(exc, f"cannot write serial {new.serial} of the state") from None

    def history(self) -> list[HistoryEntry]:
        try:
            rows = self._data().execute(
                "SELECT serial, lineage::text, who, hostname, at, operation, run, state_sha256 FROM sovkit.history "
                "WHERE site = %s ORDER BY id", (self.site,)).fetchall()
        except psycopg.Error as exc:
            raise self._failed(exc, "cannot read the state history") from None
        return [HistoryEntry(serial=int(s), lineage=lin, who=w, hostname=h, at=_ts(at), operation=op, run=run,
                             sha256=digest) for s, lin, w, h, at, op, run, digest in rows]

    # --- lock -----------------------------------------------------------------------------------------------

    def _holder_backend(self, conn: psycopg.Connection[Any]) -> int | None:
        """The backend pid holding this site's advisory lock right now (None: nobody)."""
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid = %s::bigint::oid AND objid = %s::bigint::oid "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF)).fetchone()
        return int(row[0]) if row else None

    def _lock_row(self, conn: psycopg.Connection[Any]) -> tuple[LockInfo, int] | None:
        row = conn.execute("SELECT id, owner, hostname, pid, operation, created, backend_pid FROM sovkit.locks "
                           "WHERE site = %s", (self.site,)).fetchone()
        if row is None:
            return None
        info = LockInfo(id=row[0], owner=row[1], hostname=row[2], pid=row[3], operation=row[4], created=row[5])
        return info, int(row[6])

    def current_lock(self) -> LockInfo | None:
        """The recorded holder, if a session really holds the lock (a crashed holder's row is not a lock)."""
        conn = self._data()
        row = self._lock_row(conn)
        if row is None or self._holder_backend(conn) != row[1]:
            return None
        return row[0]

    def _locked_error(self, conn: psycopg.Connection[Any]) -> StateLocked:
        backend = self._holder_backend(conn)
        row = self._lock_row(conn)
        if row is None or row[1] != backend:
            return StateLocked(f"state {self.location} is locked by database session {backend} which has not "
                               "recorded its holder yet", "run again in a moment")
        held = row[0]
        return StateLocked(
            f"state {self.location} is locked: {held.operation} by {held.owner} (pid {held.pid} on "
            f"{held.hostname}) since {held.created}, lock id {held.id}",
            f"wait for it (--lock-timeout SECONDS), or if that run is stuck, run `sovkit force-unlock {held.id}` "
            "(it ends that run's database session), then `sovkit refresh`")

    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        info = LockInfo(owner=getpass.getuser(), pid=os.getpid(), hostname=socket.gethostname(),
                        operation=operation)
        conn = self.db.connect()
        try:
            try:
                deadline = time.monotonic() + self.lock_timeout
                while conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone() != (True,):
                    if time.monotonic() >= deadline:
                        raise self._locked_error(conn)
                    time.sleep(LOCK_POLL)
                conn.execute(
                    "INSERT INTO sovkit.locks (site, id, owner, hostname, pid, operation, created, backend_pid) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, pg_backend_pid()) ON CONFLICT (site) DO UPDATE SET "
                    "id = EXCLUDED.id, owner = EXCLUDED.owner, hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, "
                    "operation = EXCLUDED.operation, created = EXCLUDED.created, since = now(), "
                    "backend_pid = EXCLUDED.backend_pid",
                    (self.site, info.id, info.owner, info.hostname, info.pid, info.operation, info.created))
            except psycopg.Error as exc:
                raise self.db.error(exc, "cannot take the state lock") from None
            outer, self._held = self._held, (info, conn)
            try:
                yield info
            finally:
                self._held = outer
                with contextlib.suppress(psycopg.Error):  # a terminated session has lost the lock already
                    conn.execute("DELETE FROM sovkit.locks WHERE site = %s AND id = %s", (self.site, info.id))
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        finally:
            conn.close()

    def force_unlock(self, lock_id: str) -> LockInfo:
        """Free the lock recorded under ``lock_id``: terminate its session if it still holds the advisory lock
        (and is the recorded one), then clear the row. Any other session is never touched."""
        conn = self.db.connect()
        try:
            row = self._lock_row(conn)
            backend = self._holder_backend(conn)
            if row is None:
                if backend is not None:
                    raise StateError(f"state {self.location} is locked by database session {backend} which has "
                                     "not recorded its holder", "run again in a moment")
                raise StateError(f"state {self.location} is not locked", "nothing to unlock")
            held, recorded = row
            if held.id != lock_id:
                raise StateError(f"lock id {lock_id} does not match the current lock {held.id}",
                                 "copy the id from the error message of the locked run")
            if backend is not None and backend != recorded:
                raise StateError(f"the lock of {self.location} is held by database session {backend}, not the "
                                 f"recorded one ({recorded}): nothing was done", "run again in a moment")
            if backend is not None:
                ok = conn.execute("SELECT pg_terminate_backend(%s, 5000)", (backend,)).fetchone()
                if ok != (True,) or self._holder_backend(conn) is not None:
                    raise StateError(f"could not end database session {backend} holding the lock of "
                                     f"{self.location}", "the role needs pg_signal_backend, or ask a superuser")
            conn.execute("DELETE FROM sovkit.locks WHERE site = %s AND id = %s", (self.site, lock_id))
            return held
        except psycopg.Error as exc:
            raise self.db.error(exc, "cannot force-unlock the state") from None
        finally:
            conn.close()


def list_sites(url: str) -> list[SiteRow]:
    """Every site with a state in the database, with its current lock holder (if a session holds it)."""
    db = Database(url)
    with contextlib.closing(db.connect()) as conn:
        try:
            rows = conn.execute(
                "SELECT s.site, s.lineage::text, s.serial, "
                "(SELECT count(*) FROM jsonb_object_keys(s.state->'hosts')), s.updated_at, s.updated_by, "
                "l.operation || ' by ' || l.owner || ' (pid ' || l.pid || ' on ' || l.hostname || '), lock id ' "
                "|| l.id FROM sovkit.state s LEFT JOIN sovkit.locks l ON l.site = s.site AND EXISTS ("
                "SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' AND p.granted AND p.pid = l.backend_pid) "
                "ORDER BY s.site").fetchall()
        except psycopg.Error as exc:
            raise db.error(exc, "cannot list the sites") from None
    return [SiteRow(site=r[0], lineage=r[1], serial=int(r[2]), hosts=int(r[3]), updated_at=_ts(r[4]),
                    updated_by=r[5], locked_by=r[6]) for r in rows]
