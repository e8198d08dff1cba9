"""State in PostgreSQL beyond the shared contract (tests/contracts/test_state_store_contract.py): schema
migrations, credentials and redaction, controllers in separate processes (waiting, refused, killed, forced),
`sovkit state list|show|history|pull|push`, and a real plan/apply with --state-url. The server is real
(tests/pgserver.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import yaml

from sovkit import api
from sovkit.errors import StateError, StateLocked
from sovkit.inventory import load_inventory
from sovkit.state.models import HostRecord, State
from sovkit.state.postgres import SCHEMA_VERSION, PostgresStateStore, redact
from sovkit.state.store import LocalStateStore
from tests.conftest import ROOT, CliResult, run_cli
from tests.pgserver import PASSWORD, USER, PgServer
from tests.sitefactory import make_site

# A controller holding the lock in its own process: takes it, says so, writes one serial per line read on stdin,
# and stops at EOF (the lock is released when the `with` ends, or with its session when the process dies).
HOLDER = textwrap.dedent("""
    import sys
    from sovkit.state.postgres import PostgresStateStore
    store = PostgresStateStore(sys.argv[1], sys.argv[2], lock_timeout=float(sys.argv[3]))
    with store.lock(sys.argv[4]) as held:
        print("locked", held.id, flush=True)
        for _ in sys.stdin:
            try:
                print("wrote", store.write(store.read()).serial, flush=True)
            except Exception as exc:
                print("error", exc, flush=True)
    print("released", flush=True)
""")


def holder(url: str, site: str, operation: str = "apply", wait: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, url, site, str(wait), operation], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    out = proc.stdout.readline()
    assert out, proc.stderr.read() if proc.stderr else "no output"
    return out.strip()


def site_name() -> str:
    return "site-" + uuid.uuid4().hex[:10]


# ------------------------------------------------------------------------------------------- migrations

def test_first_use_migrates_an_empty_database_and_a_newer_schema_is_refused(pg_server: PgServer) -> None:
    url = pg_server.new_database()
    store = PostgresStateStore(url, "a")
    assert store.read() == State()
    name = url.rsplit("/", 1)[1]
    with pg_server.admin(name) as conn:
        versions = conn.execute("SELECT version, applied_by FROM sovkit.schema_version").fetchall()
        assert versions == [(v, USER) for v in range(1, SCHEMA_VERSION + 1)]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'sovkit'")}
        assert {"state", "history", "locks", "schema_version"} <= tables
    # a second first use (another process) finds it migrated and changes nothing
    assert PostgresStateStore(url, "b").write(State()).serial == 1
    with pg_server.admin(name) as conn:
        assert conn.execute("SELECT count(*) FROM sovkit.schema_version").fetchone() == (SCHEMA_VERSION,)
        conn.execute("INSERT INTO sovkit.schema_version (version, description) VALUES (%s, 'from the future')",
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(StateError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this sovkit knows "
                                         f"\\({SCHEMA_VERSION}\\)") as err:
        PostgresStateStore(url, "b").read()
    assert "upgrade sovkit" in (err.value.hint or "")


# ------------------------------------------------------------------------------------------ credentials

def test_credentials_from_a_passfile_and_a_password_is_never_shown(pg_server: PgServer, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(StateError, match="cannot connect to the state database") as err:
        PostgresStateStore(pg_server.url(), "a").read()
    assert "PGPASSWORD or a passfile" in (err.value.hint or "")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{pg_server.host}:{pg_server.port}:*:{USER}:{PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert PostgresStateStore(pg_server.url(), site_name()).write(State()).serial == 1
    monkeypatch.delenv("PGPASSFILE")
    wrong = pg_server.url().replace(f"{USER}@", f"{USER}:Wr0ngSecret@")
    with pytest.raises(StateError) as err:
        PostgresStateStore(wrong, "a").read()
    assert "Wr0ngSecret" not in err.value.message and f"{USER}:***@" in err.value.message
    assert redact(pg_server.url(password=True)) == pg_server.url().replace(f"{USER}@", f"{USER}:***@")
    assert PostgresStateStore(pg_server.url(password=True), "a").location.count(PASSWORD) == 0


# --------------------------------------------------------------------------------- controllers at once

def test_two_controllers_one_stops_naming_the_holder_one_waits_and_no_serial_is_lost(pg_server: PgServer) -> None:
    url, site = pg_server.url(), site_name()
    first = holder(url, site, "apply")
    assert line(first).startswith("locked")
    first_pid = first.pid
    with pytest.raises(StateLocked, match=f"is locked: apply by .* \\(pid {first_pid} on ") as err, \
            PostgresStateStore(url, site).lock("refresh"):
        pass
    assert "sovkit force-unlock" in (err.value.hint or "")
    second = holder(url, site, "apply", wait=60)  # waits for the first one's lock
    assert first.stdin is not None and second.stdin is not None
    for _ in range(3):
        first.stdin.write("\n")
        first.stdin.flush()
        assert line(first).startswith("wrote")
    first.stdin.close()
    assert line(first) == "released" and first.wait(30) == 0
    assert line(second).startswith("locked")
    for _ in range(2):
        second.stdin.write("\n")
        second.stdin.flush()
        assert line(second).startswith("wrote")
    second.stdin.close()
    assert line(second) == "released" and second.wait(30) == 0
    store = PostgresStateStore(url, site)
    history = store.history()
    assert store.read().serial == 5 and [e.serial for e in history] == [1, 2, 3, 4, 5]
    assert len({e.run for e in history[:3]}) == 1 and history[0].run != history[3].run
    assert store.current_lock() is None


def test_a_killed_holders_lock_goes_with_its_session(pg_server: PgServer) -> None:
    url, site = pg_server.url(), site_name()
    proc = holder(url, site, "apply")
    lock_id = line(proc).split()[1]
    store = PostgresStateStore(url, site)
    assert store.current_lock() is not None and store.current_lock().id == lock_id  # type: ignore[union-attr]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with PostgresStateStore(url, site, lock_timeout=20).lock("apply") as taken:  # the server sees the socket close
        assert taken.id != lock_id
        assert store.current_lock() == taken
    # the dead holder's row (replaced above) cannot be force-unlocked any more; nothing is locked
    with pytest.raises(StateError, match="not locked"):
        store.force_unlock(lock_id)


def test_force_unlock_ends_the_holders_session_and_its_next_write_is_refused(pg_server: PgServer) -> None:
    url, site = pg_server.url(), site_name()
    PostgresStateStore(url, site).write(State(site=site))
    proc = holder(url, site, "apply")
    lock_id = line(proc).split()[1]
    freed = PostgresStateStore(url, site).force_unlock(lock_id)
    assert (freed.id, freed.operation, freed.pid) == (lock_id, "apply", proc.pid)
    with PostgresStateStore(url, site).lock("refresh"):  # free at once: the holder's session was ended
        pass
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    said = line(proc)
    assert said.startswith("error") and "is gone (was it force-unlocked?)" in said
    proc.stdin.close()
    proc.wait(30)
    assert PostgresStateStore(url, site).read().serial == 1


# ------------------------------------------------------------------------------------ selection and CLI

def _with_state(site_path: Path, state: dict[str, str]) -> None:
    data = yaml.safe_load(site_path.read_text())
    data["state"] = state
    site_path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_inventory_selects_the_database_and_refuses_a_password_in_it(pg_server: PgServer, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    _with_state(site.path, {"backend": "postgres", "url_env": "SITE_STATE_DB"})
    with pytest.raises(StateError, match=r"\$SITE_STATE_DB, which is not set"):
        api.open_workspace(inventory=site.path)
    monkeypatch.setenv("SITE_STATE_DB", pg_server.url())
    ws = api.open_workspace(inventory=site.path)
    assert isinstance(ws.store, PostgresStateStore) and ws.store.site == site.data["metadata"]["name"]
    local = api.open_workspace(inventory=site.path, state_url=None, state_store=LocalStateStore(tmp_path / "x"))
    assert isinstance(local.store, LocalStateStore)
    _with_state(site.path, {"backend": "postgres", "url": pg_server.url(password=True)})
    r = cli("validate", site.path)
    assert r.code != 0 and "must not hold a password" in r.text and PASSWORD not in r.text
    _with_state(site.path, {"backend": "postgres", "url": pg_server.url()})
    assert isinstance(api.open_workspace(inventory=site.path).store, PostgresStateStore)
    load_inventory(site.path)
    # the CLI on the inventory's database: the holder is shown, and force-unlock ends its session
    proc = holder(pg_server.url(), site.data["metadata"]["name"], "refresh")
    lock_id = line(proc).split()[1]
    r = cli("state", "show", site.path)
    assert r.code == 0 and "locked: refresh by" in r.out and f"(pid {proc.pid} on" in r.out, r.text
    r = cli("force-unlock", lock_id, site.path)
    assert r.code == 0 and f"Unlocked state (lock {lock_id}: refresh" in r.out, r.text
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert "force-unlocked" in line(proc)
    proc.stdin.close()
    proc.wait(30)


def test_state_push_pull_round_trip_with_history_and_lineage_guard(pg_server: PgServer, tmp_path: Path,
                                                                   cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    name = site.data["metadata"]["name"]
    url = pg_server.new_database()
    local = LocalStateStore(site.root / ".sovkit")
    first = local.write(State(site=name, hosts={"npu-node-1": HostRecord(last_apply="a1")}))
    first = local.write(first)
    r = cli("state", "push", site.path, "--state-url", url)
    assert r.code == 0 and f"Pushed serial 2 (lineage {first.lineage})" in r.out, r.text
    assert "already holds serial 2" in cli("state", "push", site.path, "--state-url", url).out
    remote = PostgresStateStore(url, name)
    assert remote.read() == first
    newer = remote.write(remote.read())
    r = cli("state", "pull", site.path, "--state-url", url)
    assert r.code == 0 and "Pulled serial 3" in r.out, r.text
    assert local.read() == newer
    assert [(e.serial, e.operation) for e in local.history()][-1] == (3, "pull")
    # the local copy must not go back over a newer database state, nor replace another lineage, without --force
    (site.root / ".sovkit" / "state.json").write_text(first.model_dump_json(indent=2))
    r = cli("state", "push", site.path, "--state-url", url)
    assert r.code == 1 and "is newer (serial 3)" in r.text and "--force" in r.text
    (site.root / ".sovkit" / "state.json").unlink()
    other = LocalStateStore(site.root / ".sovkit").write(State(site=name))
    r = cli("state", "push", site.path, "--state-url", url)
    assert r.code == 1 and f"holds another state (lineage {first.lineage}, serial 3)" in r.text, r.text
    assert remote.read() == newer
    r = cli("state", "push", site.path, "--state-url", url, "--force")
    assert r.code == 0 and f"replacing lineage {first.lineage} serial 3" in r.out, r.text
    assert remote.read() == other
    assert [(e.serial, e.operation) for e in remote.history()] == [(2, "push"), (3, "write"), (1, "push")]
    r = cli("state", "history", site.path, "--state-url", url, "--json")
    assert [e["serial"] for e in json.loads(r.out)] == [2, 3, 1]
    r = cli("state", "list", "--state-url", url, "--json")
    assert [(s["site"], s["serial"], s["lineage"]) for s in json.loads(r.out)] == [(name, 1, other.lineage)]
    r = cli("state", "show", site.path, "--state-url", url)
    assert f"lineage {other.lineage}, serial 1" in r.out and "#" + name in r.out


@pytest.mark.slow
def test_plan_and_apply_with_state_url_and_a_second_controller_locked_out(pg_server: PgServer, tmp_path: Path,
                                                                          cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)  # one host, firmware only: the smallest real apply (Ansible on a local host)
    site.data.update(hosts=site.data["hosts"][:1], deployments=[], serving_groups=[], endpoints=[])
    site.save()
    name = site.data["metadata"]["name"]
    url = pg_server.new_database()
    proc = holder(url, name, "apply")
    lock_id = line(proc).split()[1]
    r = cli("apply", site.path, "--auto-approve", "--state-url", url)
    assert r.code == 1 and "is locked: apply by" in r.text and f"(pid {proc.pid} on" in r.text, r.text
    assert f"lock id {lock_id}" in r.text
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(30) == 0
    r = run_cli("apply", site.path, "--auto-approve", "--state-url", url, "--lock-timeout", "5")
    assert r.code == 0 and "+ firmware rebellions-atom-max" in r.out, r.text
    assert not (site.root / ".sovkit" / "state.json").exists()  # the state went to the database only
    store = PostgresStateStore(url, name)
    state, history = store.read(), store.history()
    assert state.hosts["npu-node-1"].firmware["rebellions-atom-max"].version == "1.2.0"
    assert f"state serial {state.serial}" in r.out
    assert [e.serial for e in history] == list(range(1, state.serial + 1))
    assert {(e.operation, e.lineage) for e in history} == {("apply", state.lineage)}
    assert len({e.run for e in history}) == 1
    again = cli("plan", site.path, "--state-url", url, "--detailed-exitcode")
    assert again.code == 0 and "No changes" in again.out and "is missing" not in again.text, again.text
    verified = api.verify_attestations(target=api.attestation_target(path=site.path),
                                       keys=[api.load_public_key(path=site.root / ".sovkit/keys/operator.key.pub")])
    assert verified.step("subjects").status == "ok", verified.step("subjects").detail  # against the database state
    with psycopg.connect(url) as conn:  # the row and the JSON agree
        assert conn.execute("SELECT serial FROM sovkit.state WHERE site = %s", (name,)).fetchone() == (state.serial,)
