"""The enforcement queue on PostgreSQL: JobQueue's semantics, shared by two "servers"."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from nac.store.migrations import SchemaError, migrate_postgres
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def jobs_url(pg_server: PgServer) -> str:  # noqa: F811
    import psycopg

    url = pg_server.create_database()
    with psycopg.connect(url) as conn:
        migrate_postgres(conn)
    return url


@pytest.fixture
def two(jobs_url: str) -> Iterator[tuple[object, object, Clock]]:
    from nac.store.pg_jobs import PgJobQueue

    clock = Clock()
    a = PgJobQueue(jobs_url, owner="server-a", lease=10.0, base_delay=1.0, clock=clock)
    b = PgJobQueue(jobs_url, owner="server-b", lease=10.0, base_delay=1.0, clock=clock)
    yield a, b, clock
    a.close()
    b.close()


def test_needs_migrated_schema(pg_server: PgServer) -> None:  # noqa: F811
    from nac.store.pg_jobs import PgJobQueue

    with pytest.raises(SchemaError, match="nac store migrate"):
        PgJobQueue(pg_server.create_database())


def test_lifecycle(two: tuple) -> None:
    q, _, clock = two
    j1 = q.enqueue("set_vlan", "sw1", "Gi1/0/1", vlan=10, mac="aa", decided_at=990.0,
                   payload={"why": "x"})
    assert q.counts() == {"pending": 1}
    assert q.next_due() == 1000.0
    [job] = q.claim()
    assert (job.id, job.state, job.lease_owner, job.attempts, job.payload) == (
        j1, "claimed", "server-a", 1, {"why": "x"})
    assert q.claim() == []
    clock.t = 1002.0
    assert q.complete(j1, "ok")
    done = q.get(j1)
    assert done.state == "done" and done.latency == pytest.approx(12.0)
    assert not q.complete(j1)  # not held any more

    # Failures back off exponentially, then go dead; retry revives.
    j2 = q.enqueue("reauth", "sw1", mac="bb", max_attempts=2)
    [job] = q.claim()
    assert q.fail(j2, "timeout") == "pending"
    assert q.get(j2).next_attempt_at == pytest.approx(1003.0)
    assert q.claim() == []  # not due yet
    clock.t = 1003.0
    [job] = q.claim()
    assert job.attempts == 2
    assert q.fail(j2, "timeout again") == "dead"
    assert q.get(j2).last_error == "timeout again"
    assert q.retry(j2) and q.get(j2).state == "pending" and q.get(j2).attempts == 0
    [job] = q.claim()
    assert q.fail(j2, "auth refused", retryable=False) == "dead"
    assert [j.id for j in q.list_jobs(("dead",))] == [j2]
    assert [j.id for j in q.list_jobs()] == [j2, j1]


def test_latest_decision_wins(two: tuple) -> None:
    a, b, clock = two
    old = a.enqueue("set_vlan", "sw1", "p1", vlan=10, decided_at=900.0)
    new = b.enqueue("set_vlan", "sw1", "p1", vlan=30, decided_at=950.0)
    assert a.get(old).state == "superseded" and a.get(old).superseded_by == new
    stale = a.enqueue("set_vlan", "sw1", "p1", vlan=20, decided_at=920.0)
    assert a.get(stale).state == "superseded" and a.get(stale).superseded_by == new
    [job] = b.claim(5)
    assert job.id == new
    # A newer decision queued while the job is in flight: its failure is not retried.
    newest = a.enqueue("set_vlan", "sw1", "p1", vlan=20, decided_at=960.0)
    assert a.claim() == []  # the port has a claimed job
    assert b.fail(new, "switch busy") == "superseded"
    [job] = a.claim()
    assert job.id == newest


def test_expired_lease_goes_to_the_other_server(two: tuple) -> None:
    a, b, clock = two
    jid = a.enqueue("set_vlan", "sw1", "p1", vlan=20)
    [job] = a.claim()
    assert b.claim() == []
    clock.t += 8
    assert a.extend(jid)  # renewed: good for another 10 s
    clock.t += 8
    assert b.claim() == []
    # Server A dies: nobody renews. After the lease, B takes the job.
    clock.t += 10.5
    [job] = b.claim()
    assert (job.id, job.lease_owner, job.attempts) == (jid, "server-b", 2)
    assert not a.complete(jid)  # A woke up too late: its lease is gone
    assert not a.extend(jid)
    assert b.complete(jid)
    assert b.get(jid).state == "done"


def test_expired_lease_out_of_attempts_is_dead(two: tuple) -> None:
    a, b, clock = two
    jid = a.enqueue("reauth", "sw1", max_attempts=1)
    a.claim()
    clock.t += 11
    assert b.claim() == []
    assert b.get(jid).state == "dead" and b.get(jid).last_error == "lease expired"


def test_concurrent_claims_never_share_a_job(jobs_url: str) -> None:
    from nac.store.pg_jobs import PgJobQueue

    servers = [PgJobQueue(jobs_url, owner=f"server-{n}", lease=60.0, pool_size=4)
               for n in "ab"]
    try:
        n_jobs = 400
        for i in range(n_jobs):
            # Distinct ports, plus port-less jobs and a few ports with several job kinds.
            if i % 4 == 0:
                servers[0].enqueue("reauth", f"sw{i % 7}", mac=f"m{i}")
            elif i % 4 == 1:
                servers[1].enqueue("probe", "sw0", f"shared{i % 5}")
            else:
                servers[i % 2].enqueue("set_vlan", f"sw{i % 7}", f"p{i}", vlan=10)
        taken: list[tuple[str, int]] = []
        active: Counter[tuple[str, str]] = Counter()
        overlap: list[tuple[str, str]] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def work(q: PgJobQueue) -> None:
            try:
                idle = 0
                while idle < 5:
                    jobs = q.claim(3)
                    if not jobs:
                        idle += 1
                        time.sleep(0.01)
                        continue
                    idle = 0
                    with lock:
                        for j in jobs:
                            taken.append((q.owner, j.id))
                            if j.port:
                                active[(j.switch, j.port)] += 1
                                if active[(j.switch, j.port)] > 1:
                                    overlap.append((j.switch, j.port))
                    time.sleep(0.001)
                    for j in jobs:
                        with lock:
                            if j.port:
                                active[(j.switch, j.port)] -= 1
                        assert q.complete(j.id)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(q,)) for q in servers for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        ids = [i for _, i in taken]
        assert len(ids) == len(set(ids)), "a job was claimed twice"
        assert len(ids) == n_jobs
        assert servers[0].counts() == {"done": n_jobs}
        assert not overlap, f"two claimed jobs on one port at once: {overlap[:3]}"
        by_server = Counter(o for o, _ in taken)
        assert by_server["server-a"] > 0 and by_server["server-b"] > 0
    finally:
        for q in servers:
            q.close()


def test_off_loop_worker_claims_ahead_records_in_order_and_hands_back(jobs_url: str) -> None:
    """for_worker(): claim() never waits for the database (it returns what a background
    claim took, and the queue's wakers say when there is some); outcomes are recorded in
    order before the next claim, so a port's next job follows its finished one; close()
    hands back the jobs it claimed ahead and never gave out, their attempt uncounted."""
    from nac.store.pg_jobs import PgJobQueue

    q = PgJobQueue(jobs_url, owner="server-a")
    woken = threading.Event()
    q.wakers.append(woken.set)
    first = q.enqueue("set_vlan", "sw1", "p1", vlan=20)
    other = q.enqueue("set_vlan", "sw1", "p2", vlan=20)
    w = q.for_worker()
    woken.clear()  # (the enqueues woke it: jobs queued by this process)
    try:
        assert w.claim(2) == []  # the claim runs in the background
        assert woken.wait(5)
        (got,) = w.claim(1)
        assert got.id == first
        assert w.complete(got.id, "ok") is True  # returns before it is recorded
        woken.clear()
        nxt = q.enqueue("set_vlan", "sw1", "p1", vlan=30)
        assert [j.id for j in w.claim(1)] == [other]  # claimed ahead by the first claim
        deadline = time.monotonic() + 5
        while not (ready := w.claim(1)):
            assert time.monotonic() < deadline
            woken.wait(0.1)
        assert [j.id for j in ready] == [nxt]
        assert q.get(first).state == "done"  # type: ignore[union-attr]
        extra = q.enqueue("set_vlan", "sw1", "p3", vlan=20)
        woken.clear()  # (the enqueue's own wake-up)
        assert w.claim(1) == []
        assert woken.wait(5)
    finally:
        w.close()
    back = q.get(extra)
    assert back is not None and (back.state, back.attempts, back.lease_owner) == (
        "pending", 0, None)
    q.close()
