"""A job queued by another process starts at once in the running enforcer (enforcers/wake.py):
a datagram on SQLite, NOTIFY on a real PostgreSQL. The enforcer polls only every 30 s here,
so a job that starts within 0.2 s was woken, not polled."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from enforcers.base import NetworkDriver
from enforcers.enforcer import Enforcer
from enforcers.inventory import Switch
from enforcers.queue import JobQueue
from nac.store import open_job_queue
from tests.conftest import nac_cmd
from tests.pg import PgServer, pg_server, pg_store_url  # noqa: F401  (pytest fixtures)

SWITCH = {"name": "sw1", "address": "192.0.2.1", "driver": "snmp",
          "snmp": {"version": "2c", "community": "x"}, "bounce_after_vlan": False}
CONFIG = ('[[switches]]\nname = "sw1"\naddress = "192.0.2.1"\ndriver = "snmp"\n'
          'bounce_after_vlan = false\n[switches.snmp]\nversion = "2c"\ncommunity = "x"\n')


class Recorder(NetworkDriver):
    """Stands in for the switch: what is measured here is queued -> started."""

    name = "snmp"
    applied: list[tuple[str, int, float]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def set_port_vlan(self, port: str, vlan: int) -> None:
        self.applied.append((port, vlan, time.time()))


def queue_from_cli(tmp_path: Path, port: str, *store: str) -> int:
    cfg = tmp_path / "nac.toml"
    cfg.write_text(CONFIG)
    out = subprocess.run([*nac_cmd(), "enforce", "set-vlan", "sw1", port, "20", "--no-wait",
                          "--config", str(cfg), "--state-dir", str(tmp_path / "state"),
                          *store], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("queued job ")[1].split(":")[0])


def started_latencies(tmp_path: Path, queue: Any, store: tuple[str, ...]) -> list[float]:
    """Run an enforcer on ``queue`` polling every 30 s; queue three jobs from `nac enforce`
    processes; their queued -> claimed seconds."""
    Recorder.applied = []
    enf = Enforcer([Switch.model_validate(SWITCH)], queue, poll_interval=30.0,
                   driver_factory=lambda sw, kind: Recorder(sw))

    async def go() -> list[float]:
        stop = asyncio.Event()
        runner = asyncio.create_task(enf.run(stop))
        try:
            await asyncio.sleep(0.3)  # past the first claim: from now on only a wake-up helps
            assert enf.listener is not None
            await asyncio.wait_for(enf.listener.listening.wait(), 10)
            out = []
            for n in range(3):
                jid = await asyncio.to_thread(queue_from_cli, tmp_path, f"p{n}", *store)
                deadline = time.monotonic() + 5
                while (job := queue.get(jid)) is not None and job.state != "done":
                    assert time.monotonic() < deadline, f"job {jid} not started: {job}"
                    await asyncio.sleep(0.01)
                assert job is not None and job.claimed_at is not None
                out.append(job.claimed_at - job.created_at)
            return out
        finally:
            stop.set()
            await runner
            await enf.close()

    lat = asyncio.run(go())
    assert [(p, v) for p, v, _ in Recorder.applied] == [("p0", 20), ("p1", 20), ("p2", 20)]
    return lat


def test_sqlite_job_from_another_process_starts_at_once(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "state" / "nac.db")
    try:
        lat = started_latencies(tmp_path, q, ())
    finally:
        q.close()
    assert max(lat) < 0.2, lat
    # The enforcer's socket is gone with it: a later producer pokes nobody.
    assert not list((tmp_path / "state" / "run").glob("jobs-wake-*"))


def test_postgres_job_from_another_process_starts_at_once(tmp_path: Path,
                                                          pg_store_url: str) -> None:  # noqa: F811
    q = open_job_queue(pg_store_url, tmp_path / "state")
    try:
        lat = started_latencies(tmp_path, q, ("--store", pg_store_url))
    finally:
        q.close()
    assert max(lat) < 0.2, lat
    # The jobs are in PostgreSQL, none in the state dir's SQLite file.
    assert not (tmp_path / "state" / "nac.db").exists()


def test_postgres_listener_survives_a_database_restart(tmp_path: Path, pg_server: PgServer,  # noqa: F811
                                                       pg_store_url: str) -> None:  # noqa: F811
    q = open_job_queue(pg_store_url, tmp_path / "state")
    enf = Enforcer([Switch.model_validate(SWITCH)], q, poll_interval=30.0,
                   driver_factory=lambda sw, kind: Recorder(sw), queue_backoff=0.1,
                   queue_backoff_max=0.5)

    async def go() -> float:
        stop = asyncio.Event()
        runner = asyncio.create_task(enf.run(stop))
        try:
            await asyncio.sleep(0.1)
            assert enf.listener is not None
            await asyncio.wait_for(enf.listener.listening.wait(), 10)
            assert enf.listener.connects == 1
            await asyncio.to_thread(pg_server.restart)
            deadline = time.monotonic() + 30
            while enf.listener.connects < 2:
                assert time.monotonic() < deadline, "listener did not reconnect"
                await asyncio.sleep(0.05)
            jid = await asyncio.to_thread(queue_from_cli, tmp_path, "p9", "--store",
                                          pg_store_url)
            deadline = time.monotonic() + 5
            while (job := q.get(jid)) is None or job.state != "done":
                assert time.monotonic() < deadline, f"job {jid} not started: {job}"
                await asyncio.sleep(0.01)
            assert job.claimed_at is not None
            return job.claimed_at - job.created_at
        finally:
            stop.set()
            await runner
            await enf.close()

    try:
        lat = asyncio.run(go())
    finally:
        q.close()
    assert lat < 0.2, lat


def test_job_queued_from_another_thread_starts_at_once(tmp_path: Path) -> None:
    """The server queues pushes from its decision threads, not from the enforcer's loop."""
    q = JobQueue(tmp_path / "state" / "nac.db")
    Recorder.applied = []
    enf = Enforcer([Switch.model_validate(SWITCH)], q, poll_interval=30.0,
                   driver_factory=lambda sw, kind: Recorder(sw))

    async def go() -> float:
        stop = asyncio.Event()
        runner = asyncio.create_task(enf.run(stop))
        try:
            await asyncio.sleep(0.3)
            t0 = time.time()
            # A plain thread, and a loop asleep meanwhile: nothing else wakes it.
            threading.Thread(target=enf.set_vlan, args=("sw1", "p1", 20)).start()
            await asyncio.sleep(2.0)
            assert Recorder.applied, "job not started"
            return Recorder.applied[0][2] - t0
        finally:
            stop.set()
            await runner
            await enf.close()

    try:
        assert asyncio.run(go()) < 0.2
    finally:
        q.close()


def test_dead_listener_socket_is_removed(tmp_path: Path) -> None:
    import socket

    from enforcers.wake import poke

    rdir = tmp_path / "run"
    rdir.mkdir()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    live.bind(str(rdir / "jobs-wake-1-live.sock"))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(rdir / "jobs-wake-2-dead.sock"))
    dead.close()  # bound, then its process died: the file stays, nobody reads it
    try:
        assert poke(rdir) == 1
        assert live.recv(8) == b"!"
        assert sorted(p.name for p in rdir.iterdir()) == ["jobs-wake-1-live.sock"]
    finally:
        live.close()


def test_worker_claim_does_not_wait_out_a_locked_file(tmp_path: Path) -> None:
    """A claim while another process holds the write lock fails within the worker's short
    busy timeout (the enforcer backs off) instead of stalling the event loop 10 s."""
    import sqlite3

    db = tmp_path / "nac.db"
    q = JobQueue(db)
    q.enqueue("set_vlan", "sw1", "p1", vlan=20)
    w = q.for_worker()
    assert w is not q and w.owner == q.owner
    other = sqlite3.connect(str(db), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the file
    try:
        t0 = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            w.claim()
        assert time.monotonic() - t0 < 1.0
    finally:
        other.execute("ROLLBACK")
        other.close()
    (job,) = w.claim()
    assert job.state == "claimed" and q.get(job.id).lease_owner == q.owner  # type: ignore[union-attr]
    w.close()
    q.close()


def test_claim_sweeps_expired_leases_at_most_once_a_second(tmp_path: Path) -> None:
    now = [1000.0]
    q = JobQueue(tmp_path / "nac.db", lease=5.0, clock=lambda: now[0])
    sweeps = []
    real = q.requeue_expired

    def counted() -> int:
        sweeps.append(now[0])
        return real()

    q.requeue_expired = counted  # type: ignore[method-assign]
    for _ in range(50):
        q.claim()
    now[0] += 0.5
    q.claim()
    assert sweeps == [1000.0]
    jid = q.enqueue("set_vlan", "sw1", "p1", vlan=20)
    (job,) = q.claim()
    now[0] += 6.0  # the lease ran out (its holder died): the next claim hands it back
    (again,) = q.claim()
    assert again.id == jid and again.attempts == 2
    assert sweeps == [1000.0, 1006.5]
    q.close()
