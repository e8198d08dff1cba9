"""A real PostgreSQL for the state tests: Debian's server binaries, ``initdb`` in a temporary directory.

The server runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root), listens
on 127.0.0.1 on a free port and a unix socket in its own directory, and asks for a password over TCP
(scram-sha-256) — the tests give it through ``PGPASSWORD``, as an operator would. One server per test session
(fixture ``pg_server``); each test uses its own site names or its own database (``new_database``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

USER = "sovkit"
PASSWORD = "pg-test-" + uuid.uuid4().hex[:12]


def server_bindir() -> Path:
    """The newest /usr/lib/postgresql/N/bin holding initdb and postgres; fails (not skips) without one."""
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()
                    and (p / "postgres").exists()), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install Debian's "
                    "`postgresql` package (tests/run-all.sh does on a fresh machine)", pytrace=False)
    return found[-1]


@dataclass
class PgServer:
    host: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres", password: bool = False) -> str:
        """A URL without the password (it comes from PGPASSWORD) unless asked for."""
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(database, password=True), autocommit=True)

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL (no password)."""
        name = "t_" + uuid.uuid4().hex[:12]
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as(user: pwd.struct_passwd | None) -> list[str]:
    return ["runuser", "-u", user.pw_name, "--"] if user else []


def start_server(base: Path) -> PgServer:
    bindir = server_bindir()
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if os.geteuid() == 0 and owner is None:
        owner = pwd.getpwnam("nobody")
    directory = Path(tempfile.mkdtemp(prefix="sovkit-pg-", dir=base))
    pwfile = directory / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if owner is not None:
        for path in (directory, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(directory, 0o700)
    data = directory / "data"
    init = subprocess.run([*_run_as(owner), str(bindir / "initdb"), "-D", str(data), "-U", USER,
                           f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                           "--no-sync", "--no-instructions"], capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}", pytrace=False)
    pwfile.unlink()
    port = _free_port()
    process = subprocess.Popen(
        [*_run_as(owner), str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-c",
         "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}", "-c", "fsync=off",
         "-c", "max_connections=300", "-c", "shared_buffers=16MB"],
        stdout=subprocess.DEVNULL, stderr=(directory / "server.log").open("wb"), start_new_session=True)
    server = PgServer("127.0.0.1", port, directory, process)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.admin().close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "server.log").read_text(errors="replace")[-2000:]
                stop_server(server)
                pytest.fail(f"PostgreSQL did not start: {log}", pytrace=False)
            time.sleep(0.1)


def stop_server(server: PgServer) -> None:
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGINT)  # fast shutdown: ends client sessions
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """One PostgreSQL for the session; ``PGPASSWORD`` is set for it (as an operator's environment would be)."""
    server = start_server(Path(tempfile.gettempdir()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSWORD", PASSWORD)
        mp.delenv("SOVKIT_STATE_URL", raising=False)
        try:
            yield server
        finally:
            stop_server(server)
