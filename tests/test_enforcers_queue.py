"""Durable job queue: supersede, per-port ordering, backoff, dead letter, lease expiry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from enforcers.queue import TABLE, JobQueue


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nac.db"


def make(db: Path, clock: Clock, **kw: object) -> JobQueue:
    kw.setdefault("base_delay", 1.0)
    kw.setdefault("max_delay", 8.0)
    kw.setdefault("max_attempts", 4)
    kw.setdefault("lease", 10.0)
    return JobQueue(db, clock=clock, **kw)  # type: ignore[arg-type]


def test_schema_is_idempotent_and_on_shared_connection(db: Path) -> None:
    conn = sqlite3.connect(db)
    JobQueue.ensure_schema(conn)
    JobQueue.ensure_schema(conn)
    assert conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone() == (0,)


def test_newer_decision_supersedes_queued_older(db: Path, clock: Clock) -> None:
    q = make(db, clock)
    a = q.enqueue("set_vlan", "sw1", "p1", vlan=10)
    clock.t += 1
    b = q.enqueue("set_vlan", "sw1", "p1", vlan=20)
    other = q.enqueue("set_vlan", "sw1", "p2", vlan=30)
    assert q.get(a).state == "superseded" and q.get(a).superseded_by == b
    jobs = q.claim(10)
    assert sorted(j.id for j in jobs) == [b, other]
    assert {j.vlan for j in jobs} == {20, 30}


def test_late_arriving_older_decision_loses(db: Path, clock: Clock) -> None:
    q = make(db, clock)
    newer = q.enqueue("set_vlan", "sw1", "p1", vlan=20, decided_at=clock.t)
    older = q.enqueue("set_vlan", "sw1", "p1", vlan=10, decided_at=clock.t - 5)
    assert q.get(older).state == "superseded"
    assert q.get(newer).state == "pending"


def test_one_claim_per_port_keeps_order(db: Path, clock: Clock) -> None:
    q = make(db, clock)
    first = q.enqueue("set_vlan", "sw1", "p1", vlan=10)
    (job,) = q.claim(5)
    assert job.id == first
    # A newer decision arrives while the first is in flight: it must wait, not overtake.
    second = q.enqueue("set_vlan", "sw1", "p1", vlan=20)
    assert q.get(first).state == "claimed"  # in-flight jobs are never superseded
    assert q.claim(5) == []
    q.complete(first)
    (job2,) = q.claim(5)
    assert job2.id == second


def test_retry_backoff_then_dead_letter(db: Path, clock: Clock) -> None:
    q = make(db, clock, max_attempts=4)
    jid = q.enqueue("set_vlan", "sw1", "p1", vlan=10)
    delays = []
    for attempt in range(1, 5):
        (job,) = q.claim()
        assert job.attempts == attempt
        state = q.fail(jid, f"timeout {attempt}", retryable=True)
        if attempt < 4:
            assert state == "pending"
            due = q.get(jid).next_attempt_at
            delays.append(due - clock.t)
            assert q.claim() == []  # not due yet
            clock.t = due
        else:
            assert state == "dead"
    assert delays == [1.0, 2.0, 4.0]
    assert q.get(jid).last_error == "timeout 4"
    assert q.claim() == []
    # The operator revives it.
    assert q.retry(jid)
    (job,) = q.claim()
    assert job.attempts == 1


def test_backoff_is_capped(db: Path, clock: Clock) -> None:
    q = make(db, clock, max_delay=8.0)
    assert [q.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_non_retryable_goes_dead_at_once(db: Path, clock: Clock) -> None:
    q = make(db, clock)
    jid = q.enqueue("set_vlan", "sw1", "p1", vlan=10)
    q.claim()
    assert q.fail(jid, "bad port", retryable=False) == "dead"


def test_restart_resumes_expired_lease(db: Path, clock: Clock) -> None:
    q1 = make(db, clock, owner="worker-a")
    jid = q1.enqueue("set_vlan", "sw1", "p1", vlan=10, decided_at=clock.t)
    q1.claim()
    q1.close()  # worker-a "crashes" holding the job
    q2 = make(db, clock, owner="worker-b")
    assert q2.claim() == []  # lease still valid
    clock.t += 11
    (job,) = q2.claim()
    assert job.id == jid and job.lease_owner == "worker-b" and job.attempts == 2
    clock.t += 0.5
    assert q2.complete(jid, "applied")
    done = q2.get(jid)
    assert done.state == "done" and done.latency == pytest.approx(11.5)


def test_lost_lease_cannot_complete(db: Path, clock: Clock) -> None:
    q1 = make(db, clock, owner="a")
    q2 = make(db, clock, owner="b")
    jid = q1.enqueue("set_vlan", "sw1", "p1", vlan=10)
    q1.claim()
    clock.t += 11
    q2.claim()
    assert not q1.complete(jid)
    assert q2.get(jid).lease_owner == "b"


def test_two_workers_never_claim_the_same_job(db: Path, clock: Clock) -> None:
    q1 = make(db, clock, owner="a")
    q2 = make(db, clock, owner="b")
    for i in range(20):
        q1.enqueue("set_vlan", "sw1", f"p{i}", vlan=10)
    got1 = q1.claim(7)
    got2 = q2.claim(20)
    ids = [j.id for j in got1] + [j.id for j in got2]
    assert len(ids) == len(set(ids)) == 20


def test_reauth_jobs_are_not_superseded(db: Path, clock: Clock) -> None:
    q = make(db, clock)
    a = q.enqueue("reauth", "sw1", mac="02:00:00:00:00:01")
    b = q.enqueue("reauth", "sw1", mac="02:00:00:00:00:02")
    assert len(q.claim(5)) == 2
    assert {q.get(a).state, q.get(b).state} == {"claimed"}


def test_failed_in_flight_job_is_superseded_by_newer(db: Path, clock: Clock) -> None:
    q = make(db, clock)
    old = q.enqueue("set_vlan", "sw1", "p1", vlan=10)
    q.claim()
    clock.t += 1
    new = q.enqueue("set_vlan", "sw1", "p1", vlan=20)
    assert q.fail(old, "timeout", retryable=True) == "superseded"
    (job,) = q.claim()
    assert job.id == new


def test_expired_in_flight_job_is_superseded_by_newer(db: Path, clock: Clock) -> None:
    q = make(db, clock, owner="a")
    old = q.enqueue("set_vlan", "sw1", "p1", vlan=10)
    q.claim()
    clock.t += 1
    new = q.enqueue("set_vlan", "sw1", "p1", vlan=20)
    clock.t += 20
    (job,) = make(db, clock, owner="b").claim(5)
    assert job.id == new and q.get(old).state == "superseded"


def test_restart_releases_claims_of_dead_local_processes(db: Path) -> None:
    import socket
    import subprocess
    import sys

    # A real process that claimed a job and died (its pid is gone), on this host.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    q_dead = JobQueue(db, owner=f"{socket.gethostname()}:{dead_pid}:x", lease=30.0)
    job = q_dead.enqueue("set_vlan", "sw1", "swp1", vlan=20)
    assert [j.id for j in q_dead.claim()] == [job]
    other_host = JobQueue(db, owner="elsewhere:1:y", lease=30.0)
    other = other_host.enqueue("set_vlan", "sw1", "swp2", vlan=20)
    assert [j.id for j in other_host.claim()] == [other]

    restarted = JobQueue(db, lease=30.0)
    assert restarted.claim() == []  # both leases still run
    assert restarted.release_dead_local_claims() == 1  # only the local, dead one
    assert [j.id for j in restarted.claim()] == [job]
