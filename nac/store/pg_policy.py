"""The site policy in a PostgreSQL store: one policy for every server sharing the database.

`nac policy apply FILE --store postgresql://...` adds a version to ``site_policy`` (the TOML
text, its digest, who applied it when; older versions stay as the history). Each server
follows the newest version (nac/runtime.py: a `SiteFollower` thread polls here, never the
packet loop) and says which digest it enforces in ``site_policy_servers``, refreshed every
poll, so that `nac policy apply --wait` knows which live servers follow and which do not.
The tables: migration 7 in nac/store/migrations.py.
"""

from __future__ import annotations

import getpass
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

log = logging.getLogger("nac.policy")

CHANNEL = "nac_site_policy"  # NOTIFY'd by publish: servers learn of a version at once
POLL = 0.5  # seconds between a server's looks at what it has loaded (no database call)
HEARTBEAT = 2.5  # seconds between a server's reports when nothing changed
LIVE = 10.0  # a server not heard from for this long is not waited for (stopped or away)
CONNECT_TIMEOUT = 3  # seconds: a database away must not hold a poll for long


@dataclass(frozen=True, slots=True)
class SiteVersion:
    version: int
    name: str
    digest: str
    text: str
    applied_at: datetime
    applied_by_host: str
    applied_by_user: str

    def describe(self) -> str:
        return (f"site policy version {self.version} ({self.name!r}, digest "
                f"{self.digest[:16]}, applied {self.applied_at:%Y-%m-%d %H:%M:%S %Z} by "
                f"{self.applied_by_user}@{self.applied_by_host})")


@dataclass(frozen=True, slots=True)
class ServerRow:
    server: str
    host: str
    pid: int
    state_dir: str
    digest: str | None
    version: int | None
    loaded_at: datetime | None
    seen_at: datetime
    age: float  # seconds since seen_at, by the database's clock
    live: bool


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row,
                           connect_timeout=CONNECT_TIMEOUT)


def server_id(state_dir: os.PathLike[str] | str, pid: int | None = None) -> str:
    """This process among the site's servers: host, state dir and pid (a worker each)."""
    return f"{socket.gethostname()}:{os.fspath(state_dir)}:{os.getpid() if pid is None else pid}"


def _version(row: dict[str, Any] | None) -> SiteVersion | None:
    return None if row is None else SiteVersion(**row)


def newest(conn: psycopg.Connection[Any], *, with_text: bool = True) -> SiteVersion | None:
    """The policy the site enforces now (the highest version), or None before any apply."""
    cols = "version, name, digest, text" if with_text else "version, name, digest, '' AS text"
    row = conn.execute(f"SELECT {cols}, applied_at, applied_by_host, applied_by_user "
                       "FROM site_policy ORDER BY version DESC LIMIT 1").fetchone()
    return _version(row)


def newest_version(conn: psycopg.Connection[Any]) -> int | None:
    """The newest version's number alone: what a server's poll reads."""
    row = conn.execute("SELECT max(version) AS v FROM site_policy").fetchone()
    return None if row is None or row["v"] is None else int(row["v"])


def publish(url: str, text: str, name: str, digest: str) -> SiteVersion:
    """Add a version (the caller validated `text`, whose policy has `digest`)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's numeric uid)
        user = str(os.getuid())
    with connect(url) as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO site_policy (name, digest, text, applied_by_host, applied_by_user) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING version, name, digest, text, applied_at, "
            "applied_by_host, applied_by_user",
            (name, digest, text, socket.gethostname(), user)).fetchone()
        conn.execute(f"NOTIFY {CHANNEL}")  # delivered at commit, to every listening server
    version = _version(row)
    assert version is not None
    return version


def history(url: str, limit: int = 20) -> list[SiteVersion]:
    with connect(url) as conn:
        rows = conn.execute("SELECT version, name, digest, '' AS text, applied_at, "
                            "applied_by_host, applied_by_user FROM site_policy "
                            "ORDER BY version DESC LIMIT %s", (limit,)).fetchall()
    return [SiteVersion(**r) for r in rows]


def servers(conn: psycopg.Connection[Any]) -> list[ServerRow]:
    """Every server that reported, newest first; `live`: heard from in the last LIVE s."""
    rows = conn.execute(
        "SELECT server, host, pid, state_dir, digest, version, loaded_at, seen_at, "
        "EXTRACT(EPOCH FROM now() - seen_at)::float8 AS age FROM site_policy_servers "
        "ORDER BY seen_at DESC, server").fetchall()
    return [ServerRow(**r, live=r["age"] < LIVE) for r in rows]


def wait_for_servers(url: str, digest: str, timeout: float,
                     sleep: Callable[[float], None] | None = None
                     ) -> tuple[list[ServerRow], list[ServerRow]]:
    """Wait until every live server enforces `digest`: (following, not following) at the
    end. A server that stops reporting meanwhile drops out of both (it is gone)."""
    sleep = sleep or time.sleep
    deadline = time.monotonic() + timeout
    with connect(url) as conn:
        while True:
            live = [s for s in servers(conn) if s.live]
            ok = [s for s in live if s.digest == digest]
            behind = [s for s in live if s.digest != digest]
            if not behind or time.monotonic() > deadline:
                return ok, behind
            sleep(0.1)


class SiteFollower:
    """A thread that follows the newest site policy version for one server process.

    It LISTENs on CHANNEL, so a published version reaches it at once; the version's text
    goes to `on_version` (the server validates and installs it). The heartbeat row says
    which digest `loaded()` reports: at once when that changes (looked at every POLL
    seconds, in memory), else every HEARTBEAT seconds. Polling the table every half second
    instead cost an idle server ~1 ms/s of CPU and PostgreSQL ~0.8 ms/s. A database away
    is retried every POLL; the server keeps enforcing what it has. Never on the packet loop.
    """

    def __init__(self, url: str, state_dir: os.PathLike[str] | str,
                 on_version: Callable[[SiteVersion], None],
                 loaded: Callable[[], tuple[str | None, int | None]],
                 seen: int | None = None, poll: float = POLL,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.url = url
        self.state_dir = os.fspath(state_dir)
        self.server = server_id(state_dir)
        self.on_version = on_version
        self.loaded = loaded
        self.seen = seen  # the newest version handed to on_version
        self.poll = poll
        self.on_tick = on_tick
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._failing = False
        self._notified = True  # read the newest version: first round, after a NOTIFY
        self._reported: tuple[str | None, int | None] | None = None
        self._reported_at = 0.0
        self._thread = threading.Thread(target=self._run, name="nac-site-policy",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop, and leave the servers' table (a clean stop is not a server that lags)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=CONNECT_TIMEOUT + 2)
        try:
            with connect(self.url) as conn:
                conn.execute("DELETE FROM site_policy_servers WHERE server = %s",
                             (self.server,))
        except psycopg.Error as exc:
            log.debug("site policy: could not remove %s from the servers: %s",
                      self.server, exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        while not self._stop.is_set():
            queried = self.tick()
            conn = self._conn
            if conn is None:
                self._stop.wait(self.poll)
                continue
            try:
                # A NOTIFY that arrived during the tick's queries was read off the socket
                # with their results (psycopg keeps it aside): select() would not see it.
                if queried and any(True for _ in conn.notifies(timeout=0)):
                    self._notified = True
                    continue
                # Sleeps in select() until the server sends something (a NOTIFY) or the
                # timeout: no query while idle. Not conn.notifies(timeout=): psycopg wakes
                # every 0.1 s inside it, which doubled an idle server's CPU.
                readable, _, _ = select.select([conn.fileno()], [], [], self.poll)
                if readable:
                    if any(True for _ in conn.notifies(timeout=0)):
                        self._notified = True
                    else:  # readable without a NOTIFY: the connection may have closed
                        conn.execute("SELECT 1")
                        self._notified = True  # and a NOTIFY may have come with its answer
            except (psycopg.Error, OSError, ValueError):
                self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._notified = True  # NOTIFYs sent while disconnected are lost: look once

    def tick(self) -> bool:
        """One round: a newer version if notified, a local edit, the heartbeat if due.
        True if it sent the database a query."""
        queried = False
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.url)
                self._conn.execute(f"LISTEN {CHANNEL}")
                self._notified = True
            conn = self._conn
            if self._notified:
                self._notified = False
                queried = True
                top = newest_version(conn)
                if top is not None and (self.seen is None or top > self.seen):
                    got = newest(conn)
                    if got is not None:
                        self.on_version(got)
                        self.seen = got.version
            if self.on_tick is not None:
                self.on_tick()
            loaded = self.loaded()
            now = time.monotonic()
            if loaded == self._reported and now - self._reported_at < HEARTBEAT:
                return queried
            digest, version = loaded
            queried = True
            conn.execute(
                "INSERT INTO site_policy_servers (server, host, pid, state_dir, digest, "
                "version, loaded_at, seen_at) VALUES (%s, %s, %s, %s, %s, %s, now(), now()) "
                "ON CONFLICT (server) DO UPDATE SET seen_at = now(), "
                "loaded_at = CASE WHEN site_policy_servers.digest IS DISTINCT FROM "
                "EXCLUDED.digest THEN now() ELSE site_policy_servers.loaded_at END, "
                "digest = EXCLUDED.digest, version = EXCLUDED.version",
                (self.server, socket.gethostname(), os.getpid(), self.state_dir, digest,
                 version))
            self._reported, self._reported_at = loaded, now
            if self._failing:
                log.info("site policy: the database %s answers again", _redact(self.url))
                self._failing = False
        except psycopg.Error as exc:
            if not self._failing:  # once per outage, not every half second
                log.warning("site policy: cannot read %s (keeping the policy loaded): %s",
                            _redact(self.url), str(exc).strip())
                self._failing = True
            self._drop()
        except Exception:  # a bug in on_version must not end the thread silently
            log.exception("site policy: follower tick failed")
        return queried


def _redact(url: str) -> str:
    from nac.store.postgres import redact

    return redact(url)
