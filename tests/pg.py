"""A throwaway PostgreSQL for tests: initdb into a temp dir, pg_ctl on a free loopback port.

Use the fixtures from a test module::

    from tests.pg import pg_server, pg_store_url, pg_url  # noqa: F401  (pytest fixtures)

    def test_x(pg_url: str) -> None:  # noqa: F811  (a fresh, empty database per test)

``pg_server`` is one cluster per test session (initdb costs ~1 s); ``pg_url`` creates a new
empty database in it for each test, ``pg_store_url`` one at the newest nac schema (also
``pg_server.create_database(migrate=True)``). ``PgServer.restart()`` / ``stop()`` /
``start()`` let a test take the database away under a running client. Skips when the
PostgreSQL binaries are missing (CI installs them: see .ci/install).
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14, 13)]
USER = "nac"  # the database superuser initdb creates (trust auth, loopback only)


def pg_bin() -> Path | None:
    """Directory holding initdb and pg_ctl, or None."""
    for d in PG_BIN_DIRS:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """One running cluster. As root, everything runs as the `postgres` system user because
    PostgreSQL refuses to run as root."""

    bindir: Path
    root: Path
    port: int
    run_as: str | None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def initdb(self) -> None:
        self._run(self.bindir / "initdb", "-D", str(self.datadir), "-U", USER,
                  "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")

    def start(self) -> None:
        # fsync off: the tests kill clients, not the database host; speed matters more.
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200")
        self._run(self.bindir / "pg_ctl", "-D", str(self.datadir), "-l",
                  str(self.root / "pg.log"), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.bindir / "pg_ctl", "-D", str(self.datadir), "-m", mode, "-w",
                  "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self, name: str | None = None, *, migrate: bool = False) -> str:
        """A new empty database (migrate=True: at the newest nac schema); returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        if migrate:
            from nac.store.migrations import migrate_postgres

            with psycopg.connect(url) as conn:
                migrate_postgres(conn)
        return url

    def log(self) -> str:
        p = self.root / "pg.log"
        return p.read_text(errors="replace") if p.exists() else ""


def start_pg() -> PgServer:
    """initdb + start a cluster in a fresh temp dir. Caller stops it (``stop_pg``)."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed "
                    "(CI installs them: see .ci/install)")
    run_as = None
    # Under /tmp directly: pytest's tmp dirs are 0700 root and `postgres` cannot enter them.
    root = Path(tempfile.mkdtemp(prefix="nac-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL")
        run_as = "postgres"
        os.chown(root, pw.pw_uid, pw.pw_gid)
    srv = PgServer(bindir, root, _free_tcp_port(), run_as)
    try:
        srv.initdb()
        srv.start()
    except subprocess.CalledProcessError as exc:
        log = srv.log()
        stop_pg(srv)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr}\n{log}") from exc
    # Also at interpreter exit: a test run stopped half-way leaves no postgres behind.
    atexit.register(stop_pg, srv)
    return srv


def stop_pg(srv: PgServer) -> None:
    srv.stop("immediate")
    shutil.rmtree(srv.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    srv = start_pg()
    yield srv
    stop_pg(srv)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh empty database (no schema: tests of migrations start here)."""
    return pg_server.create_database()


@pytest.fixture
def pg_store_url(pg_server: PgServer) -> str:
    """A fresh database at the newest nac schema: ready for PostgresStore / PgJobQueue."""
    return pg_server.create_database(migrate=True)
