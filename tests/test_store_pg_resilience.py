"""The PostgreSQL store under failure: a killed server process, a restarted database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from nac.events import DecisionRecord
from tests.pg import PgServer, start_pg, stop_pg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgServer]:
    """A cluster of this module's own: these tests stop and restart it."""
    srv = start_pg()
    yield srv
    stop_pg(srv)


def rec(i: int) -> DecisionRecord:
    return DecisionRecord(at=float(i), mac=f"02:00:00:00:{i // 256 % 256:02x}:{i % 256:02x}",
                          segment="normal", vlan=30, source="eap", reasons=("ok",),
                          identity=f"user{i}")


def identities(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT identity FROM decisions")]


def wait_for(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_killed_process_keeps_what_it_flushed(own_pg: PgServer) -> None:
    from nac.store.postgres import PostgresStore

    url = own_pg.create_database()
    PostgresStore(url, migrate=True).close()
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        from nac.store.postgres import PostgresStore
        from tests.test_store_pg_resilience import rec
        s = PostgresStore({url!r})
        for i in range(2000):
            s.record_decision(rec(i))
        s.flush(timeout=60)
        print("flushed", flush=True)
        i = 2000
        while True:  # keep writing until killed
            s.record_decision(rec(i))
            i += 1
            time.sleep(0.0005)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = set(identities(url))
    assert {f"user{i}" for i in range(2000)} <= got
    # Whole batches or nothing: what made it after the flush is a prefix, no holes.
    later = sorted(int(x[4:]) for x in got if int(x[4:]) >= 2000)
    assert later == list(range(2000, 2000 + len(later)))
    # The store opens again on the same database.
    s = PostgresStore(url)
    assert s.healthy()
    s.close()


def test_database_restart_loses_nothing_queued(own_pg: PgServer) -> None:
    from nac.store.postgres import PostgresStore

    url = own_pg.create_database()
    s = PostgresStore(url, migrate=True, flush_interval=0.01)
    try:
        for i in range(500):
            s.record_decision(rec(i))
        s.flush()
        assert s.healthy()

        # The database goes away: writes queue up, the store says why and is unhealthy.
        own_pg.stop()
        for i in range(500, 1000):
            s.record_decision(rec(i))
        wait_for(lambda: s.last_write_error is not None)
        assert not s.healthy()
        assert s.backlog > 0
        own_pg.start()
        s.flush(timeout=30)
        assert s.last_write_error is None and s.healthy()
        assert s.reconnects >= 1

        # A restart while a producer keeps writing.
        stop = threading.Event()
        sent = [1000]

        def produce() -> None:
            while not stop.is_set():
                s.record_decision(rec(sent[0]))
                sent[0] += 1
                time.sleep(0.0005)

        t = threading.Thread(target=produce)
        t.start()
        time.sleep(0.3)
        own_pg.restart()
        time.sleep(0.5)
        stop.set()
        t.join()
        s.flush(timeout=30)
        assert s.healthy()
        got = identities(url)
        # At-least-once: everything queued is there (a commit whose answer was lost in the
        # restart could in principle land twice; it did not here).
        assert set(got) == {f"user{i}" for i in range(sent[0])}
        assert len(got) == sent[0]
        assert s.get_node(rec(0).mac)["segment"] == "normal"  # type: ignore[index]
    finally:
        s.close()


def test_healthz_follows_the_database(own_pg: PgServer) -> None:
    """/healthz wired to PostgresStore.healthy(): 503 naming the store while the database is
    down (answered promptly), 200 again once it is back."""
    import asyncio
    import json

    from nac.metrics import start_metrics
    from nac.store.postgres import PostgresStore

    url = own_pg.create_database(migrate=True)
    s = PostgresStore(url)

    async def healthz(port: int) -> tuple[int, dict, float]:
        t = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body), time.monotonic() - t

    async def main() -> None:
        server = await start_metrics("127.0.0.1", 0, health=lambda: {"store": s.healthy()},
                                     gauges=lambda: {"store_backlog": s.backlog})
        port = server.sockets[0].getsockname()[1]
        try:
            status, doc, _ = await healthz(port)
            assert status == 200 and doc["checks"] == {"store": True}
            own_pg.stop()
            status, doc, took = await healthz(port)
            assert status == 503 and doc["failed"] == ["store"]
            assert took < 4.0
            own_pg.start()
            status, doc, _ = await healthz(port)
            assert status == 200
        finally:
            server.close()
            await server.wait_closed()

    try:
        asyncio.run(main())
    finally:
        s.close()



def test_job_queue_across_a_database_restart(own_pg: PgServer) -> None:
    """While the database is away a queue call fails fast (the enforcer logs it and backs
    off); once it is back the same queue works again, and nothing queued is lost."""
    from nac.store.pg_jobs import PgJobQueue

    url = own_pg.create_database(migrate=True)
    q = PgJobQueue(url, connect_timeout=2.0)
    try:
        job = q.enqueue("set_vlan", "sw1", "p1", vlan=20)
        own_pg.stop()
        t0 = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - whatever psycopg says, it says it
            q.claim(4)
        assert time.monotonic() - t0 < 5.0
        own_pg.start()
        wait_for(lambda: _claims(q) == [job], timeout=20)
        assert q.complete(job, "ok") and q.counts() == {"done": 1}
    finally:
        q.close()


def _claims(q: object) -> list[int]:
    try:
        return [j.id for j in q.claim(4)]  # type: ignore[attr-defined]
    except Exception:  # still reconnecting
        return []


def test_enforcer_loop_runs_on_while_the_database_is_away(own_pg: PgServer) -> None:
    """The server's queue (defer_enqueue) and the enforcer's worker (for_worker) make no
    database call on the event loop: with PostgreSQL stopped, pushes queued from the loop and
    the enforcer's claims leave a 10 ms ticker on time (a synchronous claim or enqueue waited
    for its connect timeout, 2 s here); once it is back, every job queued meanwhile is
    applied, under the id enqueue returned."""
    import asyncio

    from enforcers.enforcer import Enforcer
    from enforcers.inventory import Switch
    from nac.store.pg_jobs import PgJobQueue
    from tests.test_enforcers_wake import SWITCH, Recorder

    url = own_pg.create_database(migrate=True)
    q = PgJobQueue(url, connect_timeout=2.0, defer_enqueue=True)
    Recorder.applied = []
    enf = Enforcer([Switch.model_validate(SWITCH)], q, poll_interval=0.05,
                   driver_factory=lambda sw, kind: Recorder(sw), queue_backoff=0.05,
                   queue_backoff_max=0.2)

    async def go() -> tuple[float, list[int]]:
        stop = asyncio.Event()
        runner = asyncio.create_task(enf.run(stop))
        worst = 0.0
        ids: list[int] = []
        try:
            first = enf.set_vlan("sw1", "p0", 20)
            while not Recorder.applied:
                await asyncio.sleep(0.01)
            assert q.get(first).state in ("claimed", "done")  # type: ignore[union-attr]
            await asyncio.to_thread(own_pg.stop)
            t_end = time.monotonic() + 3.0
            last = time.monotonic()
            n = 0
            while time.monotonic() < t_end:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                worst = max(worst, now - last)
                last = now
                if n < 5:  # decisions keep coming while the database is away
                    ids.append(enf.set_vlan("sw1", f"p{n + 1}", 30))
                    n += 1
            await asyncio.to_thread(own_pg.start)
            deadline = time.monotonic() + 20
            while len(Recorder.applied) < 6:
                assert time.monotonic() < deadline, Recorder.applied
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await runner
            await enf.close()
        return worst, ids

    try:
        worst, ids = asyncio.run(go())
        assert worst < 0.25, f"the event loop stalled {worst:.3f} s"
        assert sorted(p for p, _, _ in Recorder.applied) == [f"p{i}" for i in range(6)]
        wait_for(lambda: all(q.get(i).state == "done" for i in ids))  # type: ignore[union-attr]
        assert all(i > 0 for i in ids)
        assert q.write_errors >= 1  # the outbox did wait for the database
    finally:
        q.close()


def test_deferred_enqueue_keeps_jobs_through_an_outage(own_pg: PgServer) -> None:
    """enqueue returns at once while the database is down; close() commits what waits once
    it is back; a job the database refuses is dropped alone, the rest of its batch goes in."""
    from nac.store.pg_jobs import PgJobQueue

    url = own_pg.create_database(migrate=True)
    q = PgJobQueue(url, connect_timeout=2.0, defer_enqueue=True)
    own_pg.stop()
    try:
        t0 = time.monotonic()
        a = q.enqueue("set_vlan", "sw1", "p1", vlan=20, decided_at=1.0)
        bad = q.enqueue("set_vlan", "sw1", "p2", vlan=20, mac="02\x00")  # text cannot hold NUL
        b = q.enqueue("set_vlan", "sw1", "p1", vlan=30, decided_at=2.0)
        assert time.monotonic() - t0 < 0.05
        assert 0 < a < bad < b
        with pytest.raises(TimeoutError):
            q.flush(timeout=0.5)
    finally:
        own_pg.start()
    q.close()  # flushes
    check = PgJobQueue(url)
    try:
        got = {j.id: (j.port, j.vlan, j.state) for j in check.list_jobs()}
        # Latest decision wins across the batch, as for jobs queued one by one.
        assert got == {a: ("p1", 20, "superseded"), b: ("p1", 30, "pending")}
    finally:
        check.close()
