"""SQLite store in WAL mode; packet-path writes go to a writer process in batches."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import operator
import os
import pickle
import select
import selectors
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

from nac.events import AccountingRecord, DecisionRecord
from nac.store.base import name_os_thread
from nac.store.migrations import latest, migrate_sqlite
from nac.store.queries import ReadQueries
from nac.store.rows import (
    NODE_DECIDED_AT,
    decision_row,
    encode_posture,
    json_list,
    keep_latest,
    node_row,
    put_node,
    session_row,
)

log = logging.getLogger("nac.store")

# A pool's supervisor runs one writer process for every worker (nac/workers.py) and tells
# each worker where it listens by this variable; a server on its own starts its own writer.
WRITER_ENV = "NAC_STORE_WRITER"

SCHEMA_VERSION = latest("sqlite")  # the tables themselves: nac/store/migrations.py

# The row follows the decision with the latest decision time, whatever order commits come
# in (two workers' writers, two batches of a shared writer): an older decision committed
# later leaves it alone (its decisions row stays). decided_at, not last_seen, is the guard:
# accounting moves last_seen. NULL (a registration, a row from before migration 7) loses.
_NODE_UPSERT = """
INSERT INTO nodes (mac, first_seen, last_seen, segment, vlan, reason, identity, role,
                   last_nas, last_port, decided_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (mac) DO UPDATE SET
    last_seen = MAX(nodes.last_seen, excluded.last_seen), decided_at = excluded.decided_at,
    segment = excluded.segment, vlan = excluded.vlan,
    reason = excluded.reason, identity = COALESCE(excluded.identity, nodes.identity),
    role = COALESCE(excluded.role, nodes.role), last_nas = excluded.last_nas,
    last_port = excluded.last_port
WHERE excluded.decided_at >= nodes.decided_at OR nodes.decided_at IS NULL
"""

_POSTURE_UPSERT = """
INSERT INTO node_postures (mac, posture_at, posture) VALUES (?, ?, ?)
ON CONFLICT (mac) DO UPDATE SET posture_at = excluded.posture_at, posture = excluded.posture
WHERE excluded.posture_at >= node_postures.posture_at
"""

_DECISION_INSERT = """
INSERT INTO decisions (at, mac, identity, role, nas, nas_port, method, source, segment, vlan,
                       reasons, remediation)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_ACCT_UPSERT = """
INSERT INTO sessions (nas, acct_session_id, mac, user_name, nas_port, nas_port_id, framed_ip,
                      framed_ipv6_prefix, started_at, updated_at, stopped_at, input_octets,
                      output_octets, session_time, terminate_cause)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.row_factory = sqlite3.Row
    return conn


class SqliteStore(ReadQueries):
    """Store on one SQLite file. Thread-safe: reads use a lock-guarded connection, packet
    path writes are queued to a writer process that commits them in batches.

    Why a process and not a thread: sqlite3 gives up and retakes the GIL around every row
    it steps, so a writer thread fought the event loop for the GIL at every row; measured
    under MAB load, the two ran one at a time and the loop paid ~8 us per request in GIL
    handoffs. The writer process gets the records in pickled batches over a pipe and
    answers with how far it has committed. A server's store does this from its event loop
    (attach); elsewhere (CLI, tools) a feeder and an acks thread do it."""

    def __init__(self, path: Path, *, flush_interval: float = 0.05,
                 writer: str | None = None) -> None:
        """writer: the Unix socket address of a writer process shared with other servers
        of a pool (start_shared_writer; "@name" for an abstract one); None: start a writer
        process of its own."""
        self.path = path
        self._writer_address = writer
        self.url = f"sqlite:///{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(path)
        self._lock = threading.Lock()
        # One server per file: pending migrations apply on open (nac/store/migrations.py).
        migrate_sqlite(self._conn)
        self._pending: deque[tuple[str, object]] = deque()
        self._wake = threading.Event()
        self._idle = False  # the feeder thread waits for the next record, not a timer
        self._urgent = False  # an accounting record waits: hand it over without a pause
        self._stop = False
        self._interval = flush_interval
        self._writer: threading.Thread | None = None  # feeds the writer process
        self._link: _Link | None = None  # the way to the writer process
        # Batches sent but not acknowledged yet, resent if the writer process dies.
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._unacked_lock = threading.Lock()
        self._sent = 0
        # Names this store's batches to the writer, which keeps how far each stream is
        # committed: a batch resent after a writer died is not committed twice.
        self._stream = int.from_bytes(os.urandom(8), "big") >> 1
        # Only the event loop enqueues and only the writer commits, so two plain counters
        # tell flush() when everything queued so far is on disk, without a lock per record.
        self._queued = 0
        self._committed = 0
        self._commit_callbacks: list[Callable[[int], None]] = []
        self.write_errors = 0
        self.dropped = 0  # records the database refused (logged); the rest went in
        self.last_write_error: str | None = None
        # A server's store hands its records over from the event loop itself (attach):
        # no feeder or acks thread, whose wake-ups a lone decision paid in full.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._handle: asyncio.Handle | None = None  # the next batch's send, scheduled
        self._handle_soon = False  # ... at once (call_soon), not after the interval
        self._last_send = 0.0
        self._out = bytearray()  # frames not yet written whole (the writer is behind)
        self._writing = False  # the loop waits for the writer's end to take more
        self._acks = b""  # the writer's last report, if it came in pieces
        # The loop watches the writer's reports only while a reply waits for a commit;
        # otherwise it reads them when it next sends or at housekeeping (poll): a lone
        # decision's ack then costs no wake-up of its own.
        self._reading = False
        self._ack_wanted = 0

    # ---- packet-path writes -------------------------------------------------------------
    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._feed_loop, name="store-feeder",
                                        daemon=True)
        self._writer.start()

    def record_decision(self, rec: DecisionRecord) -> None:
        self._pending.append(("decision", rec))
        self._queued += 1
        if self._loop is not None:
            if self._handle is None:
                self._schedule(False)
            return
        if self._writer is None:
            self._start_writer()
        elif self._idle:
            self._wake.set()  # the feeder sleeps until the first record after a lull

    def record_accounting(self, rec: AccountingRecord) -> int:
        """Queue an accounting record; returns its ticket: the record is on disk once
        `committed` reaches it (RFC 2866: answer only what was recorded)."""
        self._pending.append(("acct", rec))
        self._queued += 1
        if self._loop is not None:
            self._ack_wanted = self._queued
            self._schedule(True)
            return self._queued
        if self._writer is None:
            self._start_writer()
        self._urgent = True
        self._wake.set()  # accounting replies wait for this commit: do not sleep on it
        return self._queued

    @property
    def committed(self) -> int:
        return self._committed

    def on_commit(self, callback: Callable[[int], None]) -> None:
        """Call `callback(committed)` from a store thread after every commit. Only a server
        asks for this: start the writer process now, not at the first record (whose reply
        would wait for a Python start-up)."""
        self._commit_callbacks.append(callback)
        if self._loop is not None:
            if self._link is None:
                self._respawn()
        elif self._writer is None:
            self._start_writer()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every write queued so far is committed (tests, shutdown)."""
        if self._loop is not None:
            if threading.get_ident() == self._loop_thread:
                self._drain(timeout)
                return
            self._ack_wanted = self._queued
            self._loop.call_soon_threadsafe(self._schedule, True)
        elif self._writer is None:
            return
        target = self._queued
        deadline = time.monotonic() + timeout
        while self._committed < target:
            if time.monotonic() > deadline:
                raise TimeoutError("store writes still pending")
            self._wake.set()
            time.sleep(0.002)

    def _feed_loop(self) -> None:
        """Hand queued records to the writer process in batches; restart it if it died."""
        name_os_thread("nac-store-feed")
        if self._link is None:
            self._spawn()
        while not (self._stop and not self._pending):
            if not self._pending and not self._stop:
                # Idle: sleep until a record comes (record_decision wakes an idle feeder),
                # the writer dies (the ack reader wakes it) or close(); no timer, so an
                # idle server's feeder costs nothing.
                self._idle = True
                if not self._pending:
                    self._wake.wait()
                self._idle = False
                if not (self._urgent or self._stop):
                    self._wake.clear()
            # Gather a batch for an interval (accounting, flush and close cut it short).
            self._wake.wait(self._interval)
            self._wake.clear()
            self._urgent = False
            if self._unacked and not self._alive():
                self._spawn()  # it died with batches in hand: they go to the next one
            while self._pending:
                self._send(self._take_frame())
        if self._link is not None:
            self._link.finish()  # the writer commits what it has, then exits (or forgets us)

    def _take_frame(self) -> bytes:
        """The next batch of queued records as a frame for the writer, kept until it is
        acknowledged (resent to a new writer if this one dies)."""
        pop = self._pending.popleft
        as_fields = _DECISION_FIELDS
        # Decisions and accounting records apart, as plain tuples of their fields (the
        # writer commits each kind in one go anyway): no kind tag to rebuild every tuple
        # with.
        decisions: list[tuple[object, ...]] = []
        accts: list[tuple[object, ...]] = []
        taken = 0
        try:
            while taken < 5000:
                kind, rec = pop()
                taken += 1
                if kind == "decision":
                    fields = as_fields(rec)
                    if fields[_POSTURE_AT] is not None:
                        fields = _posture_as_text(fields)
                    decisions.append(fields)
                else:
                    accts.append(_ACCT_FIELDS(rec))
        except IndexError:
            pass
        try:
            payload = pickle.dumps((decisions, accts), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a record that cannot travel: set it aside alone
            payload = self._picklable(decisions, accts)
        self._sent += taken
        frame = (_FRAME.pack(len(payload) + 16) + self._stream.to_bytes(8, "big")
                 + self._sent.to_bytes(8, "big") + payload)
        with self._unacked_lock:
            self._unacked.append((self._sent, frame))
        return frame

    def _picklable(self, decisions: list[tuple[object, ...]],
                   accts: list[tuple[object, ...]]) -> bytes:
        """The batch without the records that cannot be pickled (the count of records
        sent still includes them: their tickets complete with the batch)."""
        keep: tuple[list[tuple[object, ...]], ...] = ([], [])
        for kind, items, out in (("decision", decisions, keep[0]), ("acct", accts, keep[1])):
            for item in items:
                try:
                    pickle.dumps(item)
                except Exception:
                    self.dropped += 1
                    log.exception("store: a %s record was refused and set aside", kind)
                else:
                    out.append(item)
        return pickle.dumps(keep, protocol=pickle.HIGHEST_PROTOCOL)

    def _alive(self) -> bool:
        return self._link is not None and self._link.alive()

    def _send(self, frame: bytes) -> None:
        """Write one batch to the writer process; if it is gone, a new one gets every
        batch not committed yet, this one included."""
        while True:
            if not self._alive():
                if self._spawn() is not None:
                    return  # a new one gets every unacknowledged batch, this one too
                time.sleep(0.5)
                continue
            link = self._link
            assert link is not None
            try:
                link.out.write(frame)
                link.out.flush()
                return
            except (OSError, ValueError):
                log.error("store writer process lost (%s); %s", link.why(),
                          "starting another" if link.proc else "reconnecting")
                link.kill()
                if self._spawn() is not None:
                    return  # the new one got every unacknowledged batch, this one too
                time.sleep(0.5)

    def _spawn(self) -> _Link | None:
        """A new way to the writer (its own process, or the pool's shared one), which gets
        every batch not acknowledged yet."""
        if self._link is not None:
            self._unwatch()
            if self._loop is not None:
                self._link.close()
            else:
                self._link.kill()
            self._link = None
        if self._writer_address is not None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                address = self._writer_address
                sock.connect("\0" + address[1:] if address.startswith("@") else address)
            except OSError as exc:  # the supervisor is restarting it: try again shortly
                sock.close()
                log.error("cannot reach the pool's store writer: %s", exc)
                return None
            link = _Link(sock.makefile("wb"), sock.makefile("rb"), sock=sock)
        else:
            try:
                proc = subprocess.Popen(_writer_command(self.path), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=_writer_env())
            except OSError as exc:
                log.error("cannot start the store writer process: %s", exc)
                return None
            assert proc.stdin is not None and proc.stdout is not None
            link = _Link(proc.stdin, proc.stdout, proc=proc)
        self._link = link
        with self._unacked_lock:
            resend = [frame for _, frame in self._unacked]
        if self._loop is not None:
            # Every frame still in _out is among the unacknowledged: all of them go again.
            self._out = bytearray(b"".join(resend))
            self._acks = b""
            self._writing = False
            os.set_blocking(link.out_fd, False)
            os.set_blocking(link.in_fd, False)
            self._reading = False
            self._watch_acks()
            self._write_out()
            return self._link
        threading.Thread(target=self._read_acks, args=(link,), name="store-acks",
                         daemon=True).start()
        try:
            for frame in resend:
                link.out.write(frame)
            link.out.flush()
        except (OSError, ValueError):
            pass  # died again: the next send or wake-up notices
        return link

    def _read_acks(self, link: _Link) -> None:
        """The writer process's reports: one JSON line after each batch or failed try."""
        name_os_thread("nac-store-acks")
        with link.inp:  # closed at the writer's end of file (no stray pipe)
            for line in link.inp:
                self._ack(line)
        link.eof.set()
        if not self._stop:
            self._wake.set()  # the writer died: let the feeder start another

    def _ack(self, line: bytes) -> None:
        """One report of the writer: how far it committed, or why it could not."""
        try:
            rep = json.loads(line)
        except ValueError:
            return
        for what, why in rep.get("refused", ()):
            self.dropped += 1
            log.error("store: a %s record was refused and set aside: %s", what, why)
        error = rep.get("error")
        if error is not None:
            self.write_errors += 1
            if self.last_write_error != error:
                log.error("store write failed, will retry: %s", error)
            self.last_write_error = error
            return
        self.last_write_error = None
        done = int(rep["committed"])
        with self._unacked_lock:
            while self._unacked and self._unacked[0][0] <= done:
                self._unacked.popleft()
        if done > self._committed:
            self._committed = done
            for cb in self._commit_callbacks:
                cb(done)

    # ---- the hand-off on a server's event loop ------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand records to the writer from `loop` (call this on it), not from threads: the
        loop serialises each batch right after the requests that made it (warm), writes
        it without blocking (what the writer's end cannot take yet waits for add_writer)
        and reads the writer's reports with add_reader; commit callbacks run on the loop.
        A lone decision cost ~1.4 ms of CPU with a feeder and an acks thread, whose every
        wake-up (futex, GIL hand-off, eventfd back to the loop) met cold caches."""
        if self._writer is not None or self._loop is not None:
            return  # already fed by threads
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def _schedule(self, urgent: bool) -> None:
        """Send what is queued at once if the last batch left an interval ago or more
        (a lone decision does not wait, and no timer wakes the loop for it); else when
        the interval is up (under load: one batch per interval, as the writer likes).
        Accounting and flush go at once: their replies wait for the commit."""
        loop = self._loop
        if loop is None:
            return  # closing: close() sends what is left
        if threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._schedule, urgent)  # e.g. the monitor's intake
            return
        handle = self._handle
        if handle is not None:
            if self._handle_soon or not urgent:
                return
            handle.cancel()
        wait = self._last_send + self._interval - time.monotonic()
        if urgent or wait <= 0:
            # call_soon: after the reply of the request that made the record.
            self._handle = loop.call_soon(self._send_on_loop)
            self._handle_soon = True
        else:
            self._handle = loop.call_later(wait, self._send_on_loop)
            self._handle_soon = False

    def _send_on_loop(self) -> None:
        self._handle = None
        if not self._pending:
            self._watch_acks()  # flush() from another thread waits for what was sent
            return
        self._last_send = time.monotonic()
        link = self._link
        if link is not None and not self._reading:
            self._on_acks(link)  # what it said since (the loop is awake anyway)
        out = self._out
        while self._pending:
            out += self._take_frame()
        if self._link is None:
            return  # a writer is being reached: it gets every unacknowledged frame
        self._watch_acks()
        self._write_out()

    def _watch_acks(self) -> None:
        """Watch the writer's reports while a reply waits for a commit, not longer."""
        link = self._link
        if link is None or self._loop is None:
            return
        want = self._committed < self._ack_wanted
        if want and not self._reading:
            self._loop.add_reader(link.in_fd, self._on_acks, link)
            self._reading = True
        elif self._reading and not want:
            self._loop.remove_reader(link.in_fd)
            self._reading = False

    def poll(self) -> None:
        """Read what the writer reported since (errors, a writer gone: its batches go to
        another): from a server's housekeeping, while nothing waits for a commit."""
        link = self._link
        if self._loop is not None and link is not None and not self._reading:
            self._on_acks(link)

    def _write_out(self) -> None:
        """Write what the writer's end takes now; the rest when it becomes writable."""
        link = self._link
        if link is None or self._loop is None:
            return
        out = self._out
        while out:
            try:
                n = os.write(link.out_fd, out)
            except BlockingIOError:
                break
            except OSError:
                self._lost(link)
                return
            del out[:n]
        if out and not self._writing:
            self._loop.add_writer(link.out_fd, self._write_out)
            self._writing = True
        elif not out and self._writing:
            self._loop.remove_writer(link.out_fd)
            self._writing = False

    def _on_acks(self, link: _Link) -> None:
        if link is not self._link:
            return
        try:
            data = os.read(link.in_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost(link)
            return
        *lines, self._acks = (self._acks + data).split(b"\n")
        for line in lines:
            self._ack(line)
        if self._reading and self._committed >= self._ack_wanted:
            self._watch_acks()

    def _unwatch(self) -> None:
        link = self._link
        if self._loop is None or link is None:
            return
        if self._reading:
            self._loop.remove_reader(link.in_fd)
            self._reading = False
        if self._writing:
            self._loop.remove_writer(link.out_fd)
            self._writing = False

    def _lost(self, link: _Link) -> None:
        """The writer is gone (end of its reports, or a write failed): another one gets
        every batch it had not acknowledged."""
        if link is not self._link:
            return
        log.error("store writer process lost (%s); %s", link.why(),
                  "starting another" if link.proc else "reconnecting")
        link.eof.set()
        self._unwatch()
        link.close()
        self._link = None
        self._respawn()

    def _respawn(self) -> None:
        if self._loop is None or self._stop or self._link is not None:
            return
        if self._spawn() is None and self._loop is not None:
            self._loop.call_later(0.5, self._respawn)  # the pool's writer is restarting

    def _drain(self, timeout: float) -> None:
        """flush() on the loop's own thread (close): the loop cannot run, so wait here
        for the writer's reports."""
        target = self._queued
        deadline = time.monotonic() + timeout
        if self._handle is not None:
            self._handle.cancel()
        self._send_on_loop()
        while self._committed < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("store writes still pending")
            link = self._link
            if link is None:
                if self._spawn() is None:
                    time.sleep(min(0.2, left))
                continue
            readable, writable, _ = select.select(
                [link.in_fd], [link.out_fd] if self._out else [], [], min(left, 0.5))
            if writable:
                self._write_out()
            if readable:
                self._on_acks(link)

    def _close_on_loop(self) -> None:
        try:
            self._drain(30)
        except TimeoutError:
            log.error("store: %d record(s) not committed at close",
                      self._queued - self._committed)
        self._stop = True
        link = self._link
        self._unwatch()
        self._loop = None
        if link is None:
            return
        link.finish()
        # Our own writer exits; the pool's closes its end once it has forgotten us.
        deadline = time.monotonic() + 10
        while link.proc is None and not link.eof.is_set() and time.monotonic() < deadline:
            if select.select([link.in_fd], [], [], 0.5)[0]:
                try:
                    if not os.read(link.in_fd, 65536):
                        link.eof.set()
                except BlockingIOError:
                    pass
                except OSError:
                    link.eof.set()
        if not link.wait(timeout=max(0.0, deadline - time.monotonic())):
            log.error("store writer did not finish in time")
        link.close()

    # ---- administrative -----------------------------------------------------------------
    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, args).fetchall()]

    def register_node(self, mac: str, segment: str | None, reason: str) -> None:
        now = time.time()
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO nodes (mac, first_seen, last_seen, registered_segment, reason) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET "
                "registered_segment = excluded.registered_segment",
                (mac, now, now, segment, reason),
            )
            self._conn.execute(
                "INSERT INTO node_changes (mac, registered_segment, at) VALUES (?, ?, ?)",
                (mac, segment, now),
            )

    def registrations_since(self, seq: int) -> tuple[int, list[tuple[str, str | None]]]:
        """Registrations changed after `seq` (seq 0: all of them; a negative seq: every
        change recorded) and the newest seq."""
        if seq == 0:
            # The top first: a change racing this read is seen again next poll, never missed.
            top = self._query("SELECT COALESCE(MAX(seq), 0) AS s FROM node_changes")[0]["s"]
            rows = self._query(
                "SELECT mac, registered_segment FROM nodes WHERE registered_segment IS NOT NULL"
            )
            return top, [(r["mac"], r["registered_segment"]) for r in rows]
        rows = self._query(
            "SELECT seq, mac, registered_segment FROM node_changes WHERE seq > ? ORDER BY seq",
            (seq,),
        )
        if not rows:
            return seq, []
        return rows[-1]["seq"], [(r["mac"], r["registered_segment"]) for r in rows]

    def decisions_for(self, mac: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT * FROM decisions WHERE mac = ? ORDER BY id DESC LIMIT ?", (mac, limit)
        )
        for r in rows:
            r["reasons"] = json.loads(r["reasons"])
            r["remediation"] = json.loads(r["remediation"])
        return rows

    def healthy(self) -> bool:
        try:
            self._query("SELECT 1 AS ok")
        except sqlite3.Error:
            return False
        return self.last_write_error is None

    def close(self) -> None:
        if self._loop is not None:
            self._close_on_loop()
        elif self._writer is not None:
            self.flush(timeout=30)
            self._stop = True
            self._wake.set()
            self._writer.join(timeout=5)
            if self._link is not None and not self._link.wait(timeout=10):
                self._link.kill()
        self._conn.close()


class _Link:
    """The way to a writer process: the pipes of one of our own, or a Unix socket to the
    one a pool's supervisor runs for every worker."""

    def __init__(self, out: Any, inp: Any, *, proc: subprocess.Popen[bytes] | None = None,
                 sock: socket.socket | None = None) -> None:
        self.out, self.inp, self.proc, self.sock = out, inp, proc, sock
        self.out_fd: int = out.fileno()
        self.in_fd: int = inp.fileno()
        self.eof = threading.Event()  # the writer's reports ended: it is gone

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return not self.eof.is_set()

    def why(self) -> str:
        return f"exit {self.proc.poll()}" if self.proc is not None else "connection lost"

    def finish(self) -> None:
        """No more batches: our own writer commits what it has and exits; the shared one
        commits what it has from us and forgets us."""
        try:
            if self.sock is not None:
                self.out.flush()
                self.sock.shutdown(socket.SHUT_WR)
            else:
                self.out.close()
        except (OSError, ValueError):
            pass

    def wait(self, timeout: float) -> bool:
        """Whether the writer answered its last report within `timeout` seconds."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return self.eof.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            return
        assert self.sock is not None
        for f in (self.out, self.sock):
            try:
                f.close()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Kill it if need be and close our ends (no acks thread closes them here)."""
        self.kill()
        for f in (self.out, self.inp):
            with contextlib.suppress(OSError, ValueError):
                f.close()


def _writer_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(WRITER_ENV, None)
    root = str(Path(__file__).resolve().parents[2])  # where the nac package is
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _writer_command(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from nac.store.sqlite import writer_main; writer_main()",
            str(path), *args]


def shared_writer_socket(path: Path) -> socket.socket:
    """A listening Unix socket for the writer a pool shares (abstract: no file to leave
    behind; named after this process and the store file). The supervisor keeps it, so a
    restarted writer takes over the connections waiting in it."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(f"\0nac-store-{os.getpid()}-{digest}")
    sock.listen(64)
    return sock


def start_shared_writer(path: Path, listener: socket.socket) -> subprocess.Popen[bytes]:
    """The writer process every worker of a pool sends its records to, through `listener`
    (shared_writer_socket); it exits once its stdin is closed and every worker is gone."""
    fd = listener.fileno()
    return subprocess.Popen(_writer_command(path, "--listen-fd", str(fd)), pass_fds=[fd],
                            stdin=subprocess.PIPE, env=_writer_env())


# ---- the writer process -----------------------------------------------------------------
_FRAME = struct.Struct("!I")


# Records travel as plain tuples of their fields, in declaration order: several times
# cheaper to pickle than the dataclasses (and cheaper than any other format tried: orjson
# of the dataclasses 1.6 us a decision, against 0.7 for these tuples and their pickle).
_DECISION_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(DecisionRecord)))
_ACCT_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(AccountingRecord)))


_POSTURE_AT = [f.name for f in dataclasses.fields(DecisionRecord)].index("posture")


def _posture_as_text(fields: tuple[Any, ...]) -> tuple[object, ...]:
    """A decision's fields with its posture as the text stored: JSON text pickles for
    nothing; a dict does not."""
    return (*fields[:_POSTURE_AT], encode_posture(fields[_POSTURE_AT]),
            *fields[_POSTURE_AT + 1:])


def _decision_fields(rec: DecisionRecord) -> tuple[object, ...]:
    """What the feeder sends of a decision (as its loop does inline)."""
    fields = _DECISION_FIELDS(rec)
    return fields if fields[_POSTURE_AT] is None else _posture_as_text(fields)


# Rows per multi-row INSERT. One statement of 128 rows costs about 40% less per row than
# executemany's 128 steps (bind and step overhead per statement, measured: a decision row
# 6.7 -> 4.0 us). Smaller statements (64, 32, ... 1) take a batch's remainder, so a few
# fixed texts cover every size and stay in the connection's statement cache.
_CHUNK = 128


@functools.lru_cache(maxsize=64)
def _multi_row(sql: str, rows: int) -> str:
    """`sql` (INSERT ... VALUES (?, ...) [ON CONFLICT ...]) with `rows` value tuples."""
    head, rest = sql.split("VALUES", 1)
    open_, close = rest.index("("), rest.index(")") + 1
    one = rest[open_:close]
    return f"{head}VALUES {', '.join([one] * rows)}{rest[close:]}"


def _insert(conn: sqlite3.Connection, sql: str, rows: list[tuple[object, ...]]) -> None:
    """Execute the one-row statement `sql` for every row, in multi-row statements."""
    i, n = 0, len(rows)
    size = _CHUNK
    while i < n:
        while n - i < size:
            size >>= 1
        stmt = _multi_row(sql, size)
        for j in range(i, n - size + 1, size):
            conn.execute(stmt, list(chain.from_iterable(rows[j:j + size])))
            i = j + size


def _plain_rows(item: tuple[Any, ...]) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """(decision row, node row) of a decision without posture, straight from its tuple:
    the same rows as rows.decision_row/node_row (checked below at import, and by a test),
    without rebuilding the DecisionRecord: about 0.9 of the writer's ~9 us per record."""
    (at, mac, segment, vlan, source, reasons, remediation, identity, nas, nas_port, method,
     role, _posture, _port_id, _port_number) = item
    return ((at, mac, identity, role, nas, nas_port, method, source, segment, vlan,
             json_list(reasons), json_list(remediation)),
            (mac, at, at, segment, vlan, "; ".join(reasons), identity, role, nas, nas_port,
             at))


def _plain_rows_agree() -> bool:
    """Whether _plain_rows still matches the record's fields and rows.py's columns (a
    field added to DecisionRecord, a column moved): if not, every record takes the
    general path, slower but right."""
    sample = DecisionRecord(*(f"v{i}" if i not in (5, 6) else (f"r{i}", f"s{i}")
                              for i in range(len(dataclasses.fields(DecisionRecord)))))
    sample.posture = None
    try:
        got = _plain_rows(_decision_fields(sample))
    except ValueError:
        return False
    return got == (decision_row(sample), node_row(sample))


_PLAIN_ROWS_OK = _plain_rows_agree()


_STREAM_MARK = """
INSERT INTO store_streams (stream, committed, at) VALUES (?, ?, ?)
ON CONFLICT (stream) DO UPDATE SET committed = MAX(committed, excluded.committed),
    at = excluded.at
"""


def _commit(conn: sqlite3.Connection, batch_decisions: list[tuple[Any, ...]],
            batch_accts: list[tuple[Any, ...]],
            marks: dict[int, int] | None = None) -> None:
    """Commit records in one transaction, with how far each stream is then committed."""
    decisions = []
    nodes: dict[str, tuple[object, ...]] = {}  # one upsert per MAC per batch
    postures: dict[str, tuple[object, ...]] = {}
    accts = []
    touches = []
    plain = _PLAIN_ROWS_OK
    for item in batch_decisions:
        if plain and item[_POSTURE_AT] is None and item[1]:
            decision, node = _plain_rows(item)
            decisions.append(decision)
            keep_latest(nodes, item[1], node, NODE_DECIDED_AT)
            continue
        d = DecisionRecord(*item)
        decisions.append(decision_row(d))
        if d.mac:
            put_node(nodes, postures, d.mac, d)
    for item in batch_accts:
        a = AccountingRecord(*item)
        accts.append(session_row(a))
        if a.mac:
            touches.append((a.at, a.mac))
    with conn:
        if decisions:
            _insert(conn, _DECISION_INSERT, decisions)
        if nodes:
            _insert(conn, _NODE_UPSERT, list(nodes.values()))
        if postures:
            conn.executemany(_POSTURE_UPSERT, list(postures.values()))
        if accts:
            conn.executemany(_ACCT_UPSERT, accts)
            conn.executemany("UPDATE nodes SET last_seen = MAX(last_seen, ?) WHERE mac = ?",
                             touches)
        if marks:
            now = time.time()
            conn.executemany(_STREAM_MARK, [(k, v, now) for k, v in marks.items()])


def _read_exact(inp: Any, n: int) -> bytes | None:
    data = inp.read(n)
    return data if data is not None and len(data) == n else None


class _Streams:
    """How far each sender's stream of batches is committed (table store_streams, written
    in the transaction that commits them): a batch resent to a new writer, after the old
    one committed it but died before saying so, is acknowledged, not committed twice."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.done: dict[int, int] = {}
        try:
            with conn:  # streams of servers long gone
                conn.execute("DELETE FROM store_streams WHERE at < ?", (time.time() - 86400,))
        except sqlite3.Error:
            pass  # busy: next time

    def committed(self, stream: int) -> int:
        done = self.done.get(stream)
        if done is None:
            row = self.conn.execute("SELECT committed FROM store_streams WHERE stream = ?",
                                    (stream,)).fetchone()
            done = self.done[stream] = int(row[0]) if row else 0
        return done


# A batch as the writer gets it: (stream, end, decisions, accounting records); `end` is
# the stream's count of records up to and including this batch.
_Frame = tuple[int, int, list[Any], list[Any]]


def _parse(body: bytes) -> _Frame:
    decisions, accts = pickle.loads(body[16:])
    return (int.from_bytes(body[:8], "big"), int.from_bytes(body[8:16], "big"), decisions,
            accts)


def _commit_frames(conn: sqlite3.Connection, streams: _Streams, frames: list[_Frame],
                   on_error: Callable[[str], None]) -> list[list[tuple[str, str]]]:
    """Commit batches in one transaction (those already committed are skipped); a locked,
    full or read-only database is retried (on_error says why each time); a record the
    database refuses is set aside and the rest committed. The records refused, per batch."""
    refused: list[list[tuple[str, str]]] = [[] for _ in frames]
    fresh = [f for f in frames if f[1] > streams.committed(f[0])]
    if not fresh:
        return refused
    marks: dict[int, int] = {}
    for stream, end, _, _ in fresh:
        marks[stream] = max(end, marks.get(stream, 0))
    while True:
        try:
            if len(fresh) == 1:
                _commit(conn, fresh[0][2], fresh[0][3], marks)
            else:
                _commit(conn, list(chain.from_iterable(f[2] for f in fresh)),
                        list(chain.from_iterable(f[3] for f in fresh)), marks)
        except sqlite3.OperationalError as exc:
            on_error(str(exc))
            time.sleep(0.5)
            continue
        except Exception:  # a record the database refuses must not stall the rest
            for out, frame in zip(refused, frames, strict=True):
                if frame not in fresh:
                    continue
                for item in frame[2]:
                    try:
                        _commit(conn, [item], [])
                    except Exception as exc:
                        out.append(("decision", repr(exc)))
                for item in frame[3]:
                    try:
                        _commit(conn, [], [item])
                    except Exception as exc:
                        out.append(("acct", repr(exc)))
            try:
                _commit(conn, [], [], marks)
            except sqlite3.Error as exc:  # the records are in; a resend would repeat them
                on_error(str(exc))
        streams.done.update(marks)
        return refused


def _report(write: Callable[[bytes], object], **kw: object) -> None:
    write((json.dumps(kw) + "\n").encode())


def _open_writer_db(path: Path, on_error: Callable[[str], None]) -> sqlite3.Connection:
    while True:
        try:
            conn = connect(path)
            # A bigger page cache (the random-MAC indexes outgrow the 2 MB default) and
            # fewer, larger checkpoints: measured, about a third less CPU per record, most
            # of it system time.
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA wal_autocheckpoint=5000")
            return conn
        except sqlite3.Error as exc:
            on_error(str(exc))
            time.sleep(0.5)


def writer_main() -> None:
    """The writer process: batches from stdin, a JSON report per batch on stdout; exits
    when stdin closes (the server stopped, or died: what arrived is still committed).
    With --listen-fd FD: the writer a pool shares, serving every worker on that listening
    Unix socket (_serve_pool)."""
    # The server stops it by closing the pipe, after its last batch: a Ctrl-C or SIGTERM
    # to the whole process group must not cut that short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(sys.argv) > 3 and sys.argv[2] == "--listen-fd":
        _serve_pool(Path(sys.argv[1]), socket.socket(fileno=int(sys.argv[3])))
        return
    inp = sys.stdin.buffer
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    conn = _open_writer_db(Path(sys.argv[1]), lambda e: _report(write, error=e))
    streams = _Streams(conn)
    while True:
        head = _read_exact(inp, 4)
        if head is None:
            break
        body = _read_exact(inp, _FRAME.unpack(head)[0])
        if body is None:
            break
        frame = _parse(body)
        refused = _commit_frames(conn, streams, [frame], lambda e: _report(write, error=e))
        _report(write, committed=frame[1], refused=refused[0])
    conn.close()


def _serve_pool(path: Path, listener: socket.socket) -> None:
    """The writer of a pool: every worker connects (and reconnects) on `listener` and
    sends its batches as to a writer of its own; what arrived from all of them since the
    last commit goes in one transaction (one page cache, one commit for the pool instead
    of one per worker), then each is told how far it is committed. Exits once stdin is
    closed (the supervisor stopped, or died) and every worker has hung up."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "listen")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    clients: dict[socket.socket, bytearray] = {}

    def broadcast(error: str) -> None:
        for c in list(clients):
            with contextlib.suppress(OSError):
                _report(c.sendall, error=error)

    conn = _open_writer_db(path, broadcast)
    streams = _Streams(conn)
    stopping = False
    while not (stopping and not clients):
        gone: list[socket.socket] = []
        for key, _ in sel.select(timeout=1.0):
            if key.data == "listen":
                try:
                    c, _ = listener.accept()
                except OSError:
                    continue
                clients[c] = bytearray()
                sel.register(c, selectors.EVENT_READ, "client")
            elif key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    stopping = True
                    sel.unregister(sys.stdin.fileno())
                    sel.unregister(listener)
            else:
                c = key.fileobj  # type: ignore[assignment]
                try:
                    data = c.recv(1 << 20)
                except OSError:
                    data = b""
                if data:
                    clients[c] += data
                else:
                    gone.append(c)
        frames: list[_Frame] = []
        owners: list[socket.socket] = []
        for c, buf in clients.items():
            while len(buf) >= 4:
                size = _FRAME.unpack_from(buf)[0]
                if len(buf) < 4 + size:
                    break
                frames.append(_parse(bytes(buf[4:4 + size])))
                del buf[:4 + size]
                owners.append(c)
        if frames:
            refused = _commit_frames(conn, streams, frames, broadcast)
            acks: dict[socket.socket, tuple[int, list[tuple[str, str]]]] = {}
            for c, (_, end, _, _), out in zip(owners, frames, refused, strict=True):
                prev = acks.get(c, (0, []))
                acks[c] = (max(prev[0], end), prev[1] + out)
            for c, (end, out) in acks.items():
                with contextlib.suppress(OSError):
                    _report(c.sendall, committed=end, refused=out)
        for c in gone:  # a worker that stopped (or died: it resends to the next writer)
            sel.unregister(c)
            c.close()
            del clients[c]
    conn.close()
