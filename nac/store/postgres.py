"""PostgreSQL store: several servers share one database (DESIGN.md, "Scaling out").

Same methods and row shapes as SqliteStore. Packet-path writes are queued and committed in
batches by one writer thread on its own connection; when the database goes away the batch
stays queued and the writer reconnects. Reads use a small connection pool.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from nac.events import AccountingRecord, DecisionRecord
from nac.store.base import name_os_thread
from nac.store.migrations import check_postgres, migrate_postgres
from nac.store.queries import ReadQueries
from nac.store.rows import POSTURE_AT, decision_row, keep_latest, posture_row, session_row

log = logging.getLogger("nac.store")

# A batch goes in by COPY, the fastest way in (several times faster than one INSERT per
# record, even pipelined), into per-connection temporary staging tables (no WAL), then one
# statement per table. Decisions go in binary (floats and text as they are: a third of the
# text format's Python time) with their JSON as text, cast to JSONB by the INSERT; the
# nodes' rows are derived by PostgreSQL from the staged decisions, so the writer thread
# neither builds nor sends a second row per decision.
_NODE_COLS = ("mac, first_seen, last_seen, segment, vlan, reason, identity, role, last_nas, "
              "last_port, decided_at")
_ACCT_COLS = ("nas, acct_session_id, mac, user_name, nas_port, nas_port_id, framed_ip, "
              "framed_ipv6_prefix, started_at, updated_at, stopped_at, input_octets, "
              "output_octets, session_time, terminate_cause")
_DECISION_COLS = ("at, mac, identity, role, nas, nas_port, method, source, segment, vlan, "
                  "reasons, remediation")
# decisions_in: the decision's columns (JSON as text), then the node's reason text and the
# record's place in the batch (the last decision of a MAC in a batch makes its node row).
_DECISION_TYPES = ("float8", "text", "text", "text", "text", "text", "text", "text", "text",
                   "int4", "text", "text", "text", "int4")
_DECISION_COPY = (f"COPY decisions_in ({_DECISION_COLS}, reason, n) FROM STDIN "
                  "(FORMAT BINARY)")

_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS decisions_in (at float8, mac text, identity text, "
    "role text, nas text, nas_port text, method text, source text, segment text, vlan int4, "
    "reasons text, remediation text, reason text, n int4) ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE IF NOT EXISTS sessions_in ON COMMIT DELETE ROWS AS "
    f"SELECT {_ACCT_COLS} FROM sessions WITH NO DATA",
)

# One round trip: the decisions in batch order (their ids follow it), and one node upsert
# per MAC from its latest decision. MACs go in sorted, so two servers' batches lock node rows
# in the same order and do not deadlock on each other. The node row follows the decision
# with the latest decision time whatever order two servers' batches commit in: an older one
# committed later leaves it alone (its decisions row stays). decided_at, not last_seen, is
# the guard (accounting moves last_seen); NULL (registration only, rows from before
# migration 8) loses to any decision.
_DECISIONS_AND_NODES = f"""
WITH audit AS (
    INSERT INTO decisions ({_DECISION_COLS})
    SELECT at, mac, identity, role, nas, nas_port, method, source, segment, vlan,
           reasons::jsonb, remediation::jsonb
    FROM decisions_in ORDER BY n
)
INSERT INTO nodes ({_NODE_COLS})
SELECT DISTINCT ON (mac) mac, at, at, segment, vlan, reason, identity, role, nas, nas_port,
       at
FROM decisions_in WHERE mac <> '' ORDER BY mac, at DESC, n DESC
ON CONFLICT (mac) DO UPDATE SET
    last_seen = GREATEST(nodes.last_seen, excluded.last_seen),
    decided_at = excluded.decided_at, segment = excluded.segment, vlan = excluded.vlan,
    reason = excluded.reason, identity = COALESCE(excluded.identity, nodes.identity),
    role = COALESCE(excluded.role, nodes.role), last_nas = excluded.last_nas,
    last_port = excluded.last_port
WHERE excluded.decided_at >= nodes.decided_at OR nodes.decided_at IS NULL
"""

# Few per batch (whole postures arrive with inspections only); sorted like the nodes.
_POSTURE_UPSERT = """
INSERT INTO node_postures (mac, posture_at, posture) VALUES (%s, %s, %s)
ON CONFLICT (mac) DO UPDATE SET posture_at = excluded.posture_at, posture = excluded.posture
WHERE excluded.posture_at >= node_postures.posture_at
"""

# One row per (nas, session) per batch (an upsert cannot touch a row twice): the batch's
# updates of a session are merged first by _merge_acct, with this statement's rules.
_ACCT_UPSERT = f"""
INSERT INTO sessions ({_ACCT_COLS})
SELECT {_ACCT_COLS} FROM sessions_in ORDER BY nas, acct_session_id
ON CONFLICT (nas, acct_session_id) DO UPDATE SET
    mac = COALESCE(excluded.mac, sessions.mac),
    user_name = COALESCE(excluded.user_name, sessions.user_name),
    nas_port = COALESCE(excluded.nas_port, sessions.nas_port),
    nas_port_id = COALESCE(excluded.nas_port_id, sessions.nas_port_id),
    framed_ip = COALESCE(excluded.framed_ip, sessions.framed_ip),
    framed_ipv6_prefix = COALESCE(excluded.framed_ipv6_prefix, sessions.framed_ipv6_prefix),
    started_at = COALESCE(sessions.started_at, excluded.started_at),
    updated_at = excluded.updated_at,
    stopped_at = COALESCE(excluded.stopped_at, sessions.stopped_at),
    input_octets = COALESCE(excluded.input_octets, sessions.input_octets),
    output_octets = COALESCE(excluded.output_octets, sessions.output_octets),
    session_time = COALESCE(excluded.session_time, sessions.session_time),
    terminate_cause = COALESCE(excluded.terminate_cause, sessions.terminate_cause)
"""
_ACCT_STARTED = 8  # started_at keeps the first value; every other column takes the newest
_ACCT_UPDATED = 9  # updated_at always takes the newest

_TOUCH = """
UPDATE nodes SET last_seen = GREATEST(nodes.last_seen, t.at)
FROM (SELECT * FROM unnest(%s::text[], %s::float8[]) ORDER BY 1) AS t(mac, at)
WHERE nodes.mac = t.mac
"""


def _copy(cur: psycopg.Cursor[Any], sql: str, rows: Any,
          types: tuple[str, ...] | None = None) -> None:
    with cur.copy(sql) as cp:
        if types is not None:
            cp.set_types(list(types))
        for row in rows:
            cp.write_row(row)


def _merge_acct(old: list[object], new: tuple[object, ...]) -> list[object]:
    """Apply one accounting update on top of another, as the upsert would."""
    out = [n if n is not None else o for o, n in zip(old, new, strict=True)]
    out[_ACCT_STARTED] = old[_ACCT_STARTED] if old[_ACCT_STARTED] is not None \
        else new[_ACCT_STARTED]
    out[_ACCT_UPDATED] = new[_ACCT_UPDATED]
    return out


# Registrations take this transaction lock so their seq values commit in order: a poller
# that has seen seq N can never later meet a smaller seq committed after it.
_REGISTRATION_LOCK_KEY = 0x6E61635F726567  # "nac_reg"

BATCH = 5000
# Least time between two commits under a steady stream of decisions (see _write_loop).
COMMIT_SPACING = 0.02


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class _Partial(Exception):
    """The connection failed part-way through an isolating commit."""

    def __init__(self, done: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.done = done
        self.cause = cause


def _retryable(exc: BaseException, conn: psycopg.Connection[Any]) -> bool:
    """Connection trouble, deadlocks, shutdowns: retry the same records later. Anything else
    is the data's fault."""
    return isinstance(exc, psycopg.OperationalError) or conn.closed or conn.broken


def _clean_text(v: str) -> str:
    return v.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _cleaned(rec: Any) -> Any:
    """A copy of a record with every string made storable (no NUL, valid UTF-8), and a
    value of another type in a text field (a caller's slip: binary COPY refuses it where the
    text format wrote its str) as its text. The posture needs nothing: json.dumps escapes
    control characters."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(rec):
        v = getattr(rec, f.name)
        if isinstance(v, str):
            changes[f.name] = _clean_text(v)
        elif v is not None and f.type in ("str", "str | None"):
            changes[f.name] = _clean_text(str(v))
        elif isinstance(v, tuple):
            changes[f.name] = tuple(_clean_text(x) if isinstance(x, str) else x for x in v)
    return dataclasses.replace(rec, **changes)


class PostgresStore(ReadQueries):
    """Store on a PostgreSQL database. Thread-safe like SqliteStore.

    migrate=True applies pending migrations first (tests, `nac store migrate`); otherwise an
    older schema raises SchemaError (two servers must not race a migration).
    """

    def __init__(self, url: str, *, flush_interval: float = 0.05, pool_size: int = 2,
                 migrate: bool = False, connect_timeout: float = 5.0) -> None:
        self.url = redact(url)
        self._dsn = url
        self._connect_timeout = connect_timeout
        try:
            with self._connect() as conn:
                if migrate:
                    migrate_postgres(conn)
                check_postgres(conn, self.url)
        except psycopg.OperationalError as exc:
            # ConnectionError is an OSError: `nac serve` reports it as "cannot start".
            raise ConnectionError(f"cannot reach the store {self.url}: "
                                  f"{str(exc).strip()}") from None
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=True, name="nac-store",
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": max(1, int(connect_timeout))},
            # A pooled connection may be dead after a database restart: test it on checkout.
            check=ConnectionPool.check_connection, timeout=connect_timeout,
        )
        self._pending: deque[tuple[str, object]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._interval = flush_interval
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        # As in SqliteStore: the loop enqueues, the writer commits; two counters tell flush().
        self._queued = 0
        self._committed = 0
        self._commit_callbacks: list[Callable[[int], None]] = []
        self.write_errors = 0
        self.dropped = 0  # records the database refused even cleaned (logged)
        self.reconnects = 0
        self.last_write_error: str | None = None
        self._give_up_at = float("inf")  # set by close(): stop retrying a dead database

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._dsn, autocommit=True,
                               connect_timeout=max(1, int(self._connect_timeout)))

    # ---- packet-path writes -------------------------------------------------------------
    def _start_writer(self) -> None:
        with self._writer_lock:
            if self._writer is None:
                t = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
                t.start()
                self._writer = t

    def record_decision(self, rec: DecisionRecord) -> None:
        self._pending.append(("decision", rec))
        self._queued += 1
        if self._writer is None:
            self._start_writer()

    def record_accounting(self, rec: AccountingRecord) -> int:
        """Queue an accounting record; returns its ticket: the record is committed once
        `committed` reaches it (RFC 2866: answer only what was recorded)."""
        self._pending.append(("acct", rec))
        self._queued += 1
        if self._writer is None:
            self._start_writer()
        self._wake.set()  # an accounting reply waits for this commit: do not sleep on it
        return self._queued

    @property
    def committed(self) -> int:
        return self._committed

    def on_commit(self, callback: Callable[[int], None]) -> None:
        """Call `callback(committed)` from the writer thread after every commit."""
        self._commit_callbacks.append(callback)

    @property
    def backlog(self) -> int:
        """Records queued and not yet committed (a gauge for /metrics)."""
        return self._queued - self._committed

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every write queued so far is committed (tests, shutdown)."""
        if self._writer is None:
            return
        target = self._queued
        deadline = time.monotonic() + timeout
        while self._committed < target:
            if time.monotonic() > deadline:
                raise TimeoutError("store writes still pending")
            self._wake.set()
            time.sleep(0.002)

    def _write_loop(self) -> None:
        name_os_thread("nac-store-pg")
        conn: psycopg.Connection[Any] | None = None
        while not (self._stop and not self._pending):
            self._wake.wait(self._interval)
            self._wake.clear()
            while self._pending:
                batch: list[tuple[str, object]] = []
                try:
                    while len(batch) < BATCH:
                        batch.append(self._pending.popleft())
                except IndexError:
                    pass
                try:
                    if conn is None or conn.closed or conn.broken:
                        if conn is not None:
                            conn.close()
                            conn = None
                            self.reconnects += 1
                        fresh = self._connect()
                        try:
                            for stmt in _STAGING:
                                fresh.execute(stmt)
                        except BaseException:
                            fresh.close()
                            raise
                        conn = fresh  # only a connection with its staging tables is used
                    self._commit_isolating(conn, batch)
                except Exception as exc:  # whatever it is, the writer thread must live on
                    # Keep what is not committed for a later try (a failed transaction rolled
                    # back, so nothing of it is half-written); say why once per kind.
                    done = exc.done if isinstance(exc, _Partial) else 0
                    cause = exc.cause if isinstance(exc, _Partial) else exc
                    self._committed += done
                    self.write_errors += 1
                    msg = str(cause).strip() or type(cause).__name__
                    if self.last_write_error != msg:
                        log.error("store write failed, will retry: %s", msg)
                    self.last_write_error = msg
                    self._pending.extendleft(reversed(batch[done:]))
                    if self._stop and time.monotonic() > self._give_up_at:
                        log.error("store closing with %d write(s) not committed",
                                  len(self._pending))
                        self._pending.clear()
                        break
                    time.sleep(0.5)
                    break
                if self.last_write_error is not None:
                    log.warning("store writes resumed")
                self.last_write_error = None
                self._committed += len(batch)
                for cb in self._commit_callbacks:
                    cb(self._committed)
                if len(batch) < BATCH and not self._stop:
                    # Records keep coming: let them gather before the next commit. Back to
                    # back, each commit took only what arrived during the last one, and a
                    # commit's fixed cost (COPY set-up, statements, WAL flush) per record
                    # tripled PostgreSQL's CPU with two workers. An accounting record (its
                    # reply waits for the commit) or flush() wakes the writer at once.
                    self._wake.wait(COMMIT_SPACING)
                    self._wake.clear()
        if conn is not None:
            conn.close()

    def _commit_isolating(self, conn: psycopg.Connection[Any],
                          batch: list[tuple[str, object]]) -> None:
        """Commit the batch; if a record in it is refused (not the connection: the data, e.g.
        a NUL byte from a User-Name, which PostgreSQL text cannot hold), find it by halving,
        store it cleaned or drop it, and commit the rest. One bad packet must not stop the
        audit trail. Raises _Partial (records committed so far, in order) when the
        connection fails meanwhile."""
        segments = [batch]
        done = 0
        while segments:
            seg = segments.pop(0)
            try:
                self._commit(conn, seg)
            except Exception as exc:
                if _retryable(exc, conn):
                    raise _Partial(done, exc) from exc
                if len(seg) > 1:
                    mid = len(seg) // 2
                    segments[0:0] = [seg[:mid], seg[mid:]]
                    continue
                self._store_cleaned(conn, seg[0], exc, done)
            done += len(seg)

    def _store_cleaned(self, conn: psycopg.Connection[Any], item: tuple[str, object],
                       exc: Exception, done: int) -> None:
        kind, rec = item
        try:
            self._commit(conn, [(kind, _cleaned(rec))])
            log.warning("store: %s record kept with unstorable characters replaced (%s)",
                        kind, str(exc).strip())
        except Exception as exc2:
            if _retryable(exc2, conn):
                raise _Partial(done, exc2) from exc2
            self.dropped += 1
            log.error("store: %s record dropped, the database refuses it: %s (%r)",
                      kind, str(exc2).strip(), rec)

    @staticmethod
    def _commit(conn: psycopg.Connection[Any], batch: list[tuple[str, object]]) -> None:
        decisions = []
        postures: dict[str, tuple[object, ...]] = {}  # the latest whole posture per MAC
        accts: dict[tuple[str, str], list[object]] = {}
        touches: dict[str, float] = {}
        for n, (kind, rec) in enumerate(batch):
            if kind == "decision":
                d: DecisionRecord = rec  # type: ignore[assignment]
                decisions.append((*decision_row(d), "; ".join(d.reasons), n))
                if d.mac and d.posture is not None:
                    row = posture_row(d)
                    if row is not None:
                        keep_latest(postures, d.mac, row, POSTURE_AT)
            else:
                a: AccountingRecord = rec  # type: ignore[assignment]
                row = session_row(a)
                key = (a.nas, a.session_id)
                prev = accts.get(key)
                accts[key] = list(row) if prev is None else _merge_acct(prev, row)
                if a.mac:
                    touches[a.mac] = max(a.at, touches.get(a.mac, a.at))
        # If two servers' batches still deadlock, PostgreSQL aborts one: it is retried.
        with conn.transaction(), conn.cursor() as cur:
            if decisions:
                _copy(cur, _DECISION_COPY, decisions, _DECISION_TYPES)
                cur.execute(_DECISIONS_AND_NODES)
            if postures:
                cur.executemany(_POSTURE_UPSERT, [postures[m] for m in sorted(postures)])
            if accts:
                _copy(cur, f"COPY sessions_in ({_ACCT_COLS}) FROM STDIN", accts.values())
                cur.execute(_ACCT_UPSERT)
                cur.execute(_TOUCH, [list(touches), [float(t) for t in touches.values()]])

    # ---- administrative -----------------------------------------------------------------
    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        # The shared queries (nac/store/queries.py) are written with `?` placeholders.
        with self._pool.connection() as conn:
            return conn.execute(sql.replace("?", "%s"), args).fetchall()  # type: ignore[return-value]

    def register_node(self, mac: str, segment: str | None, reason: str) -> None:
        now = time.time()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REGISTRATION_LOCK_KEY,))
            conn.execute(
                "INSERT INTO nodes (mac, first_seen, last_seen, registered_segment, reason) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (mac) DO UPDATE SET "
                "registered_segment = excluded.registered_segment",
                (mac, now, now, segment, reason),
            )
            conn.execute(
                "INSERT INTO node_changes (mac, registered_segment, at) VALUES (%s, %s, %s)",
                (mac, segment, now),
            )

    def registrations_since(self, seq: int) -> tuple[int, list[tuple[str, str | None]]]:
        """Registrations changed after `seq` (seq 0: all of them) and the newest seq."""
        if seq == 0:
            # The top first: a change racing this read is seen again next poll, never missed.
            top = self._query("SELECT COALESCE(MAX(seq), 0) AS s FROM node_changes")[0]["s"]
            rows = self._query(
                "SELECT mac, registered_segment FROM nodes WHERE registered_segment IS NOT NULL"
            )
            return int(top), [(r["mac"], r["registered_segment"]) for r in rows]
        rows = self._query(
            "SELECT seq, mac, registered_segment FROM node_changes WHERE seq > %s ORDER BY seq",
            (seq,),
        )
        if not rows:
            return seq, []
        return int(rows[-1]["seq"]), [(r["mac"], r["registered_segment"]) for r in rows]

    def decisions_for(self, mac: str, limit: int = 20) -> list[dict[str, Any]]:
        # reasons/remediation are JSONB: psycopg hands them back as lists already.
        return self._query(
            "SELECT * FROM decisions WHERE mac = %s ORDER BY id DESC LIMIT %s", (mac, limit)
        )

    def healthy(self) -> bool:
        try:
            # A short wait: /healthz must answer while the database is away.
            with self._pool.connection(timeout=2.0) as conn:
                conn.execute("SELECT 1")
        except Exception:  # any failure to answer means unhealthy, whatever its class
            return False
        return self.last_write_error is None

    def close(self, timeout: float = 30.0) -> None:
        if self._writer is not None:
            try:
                self.flush(timeout=timeout)
            except TimeoutError:
                log.error("store: %d write(s) still pending at close", self.backlog)
            self._give_up_at = time.monotonic() + 1.0
            self._stop = True
            self._wake.set()
            self._writer.join(timeout=5)
        self._pool.close()
