"""PgJobQueue and the SQLite JobQueue, driven by the same random operations, end with the
same jobs: the PostgreSQL queue keeps JobQueue's semantics."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from enforcers.queue import JobQueue
from nac.store.migrations import migrate_postgres
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def script(seed: int, steps: int = 250) -> list[tuple[Any, ...]]:
    """Operations as data: both queues replay the very same list."""
    rnd = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    for _ in range(steps):
        r = rnd.random()
        if r < 0.35:
            kind = rnd.choice(["set_vlan", "set_vlan", "bounce", "reauth"])
            port = "" if kind == "reauth" else f"p{rnd.randrange(4)}"
            ops.append(("enqueue", kind, f"sw{rnd.randrange(2)}", port,
                        rnd.choice([10, 20, 30]), rnd.uniform(-30, 0), rnd.choice([2, 3, 8])))
        elif r < 0.6:
            ops.append(("claim", rnd.choice("ab"), rnd.randrange(1, 4)))
        elif r < 0.72:
            ops.append(("complete", rnd.choice("ab")))
        elif r < 0.84:
            ops.append(("fail", rnd.choice("ab"), rnd.random() < 0.8))
        elif r < 0.9:
            ops.append(("extend", rnd.choice("ab")))
        elif r < 0.95:
            ops.append(("retry",))
        else:
            ops.append(("tick", rnd.choice([0.5, 2.0, 11.0])))
    return ops


def replay(ops: list[tuple[Any, ...]], queues: dict[str, Any], clock: Clock) -> list[Any]:
    """Run the script; returns what every call answered (ids, states, booleans)."""
    held: dict[str, list[int]] = {"a": [], "b": []}
    answers: list[Any] = []
    any_q = queues["a"]
    for op in ops:
        clock.t += 0.1
        name = op[0]
        if name == "enqueue":
            _, kind, sw, port, vlan, age, attempts = op
            answers.append(any_q.enqueue(kind, sw, port, vlan=vlan, decided_at=clock.t + age,
                                         max_attempts=attempts))
        elif name == "claim":
            got = queues[op[1]].claim(op[2])
            held[op[1]].extend(j.id for j in got)
            answers.append(sorted(j.id for j in got))
        elif name in ("complete", "fail", "extend"):
            who = op[1]
            if not held[who]:
                continue
            jid = held[who].pop(0) if name != "extend" else held[who][0]
            q = queues[who]
            if name == "complete":
                answers.append(q.complete(jid, "ok"))
            elif name == "fail":
                answers.append(q.fail(jid, "boom", retryable=op[2]))
            else:
                answers.append(q.extend(jid))
        elif name == "retry":
            dead = any_q.list_jobs(("dead",), limit=1)
            if dead:
                answers.append(any_q.retry(dead[0].id))
        else:
            clock.t += op[1]
    answers.append(any_q.counts())
    answers.append(any_q.next_due())
    return answers


def rows(q: Any) -> list[dict[str, Any]]:
    return [j.as_dict() for j in q.list_jobs(limit=10_000)]


@pytest.mark.parametrize("seed", range(4))
def test_same_outcomes_as_sqlite_queue(seed: int, pg_server: PgServer,  # noqa: F811
                                       tmp_path: Path) -> None:
    import psycopg

    from nac.store.pg_jobs import PgJobQueue

    ops = script(seed)
    opts = {"lease": 10.0, "base_delay": 1.0, "max_delay": 8.0}

    c1 = Clock()
    lite = {w: JobQueue(tmp_path / "jobs.db", owner=f"server-{w}", clock=c1, **opts)
            for w in "ab"}
    url = pg_server.create_database()
    with psycopg.connect(url) as conn:
        migrate_postgres(conn)
    c2 = Clock()
    pg = {w: PgJobQueue(url, owner=f"server-{w}", clock=c2, pool_size=2, **opts) for w in "ab"}
    try:
        a1 = replay(ops, lite, c1)
        a2 = replay(ops, pg, c2)
        assert a1 == a2
        assert rows(lite["a"]) == rows(pg["a"])
        assert len(rows(pg["a"])) > 50
    finally:
        for q in (*lite.values(), *pg.values()):
            q.close()
