"""MAB throughput with the PostgreSQL store against the SQLite store (and FreeRADIUS as the
yardstick), same load, same run, rounds alternating.

    python3 bench/store.py [--requests N] [--rounds R] [--window W] [--workers K]
                           [--pg-durable | --pg-test-settings]

Each round runs every server once in turn on the same signed Access-Requests
(bench/packets.py, replayed by bench/radload.c): `nac serve` on SQLite (the default store
in its state dir), `nac serve --store postgresql://...` on a throwaway PostgreSQL cluster
(initdb in a temp dir, loopback port, stopped at the end), and FreeRADIUS. For each run:
requests per second and server CPU per request (utime+stime of the server's process tree
from /proc; for PostgreSQL also the database's own processes, reported apart). Prints
each run, the medians and one JSON summary line (last line).

The target of issue #8: PostgreSQL within 20% of SQLite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import freeradius  # noqa: E402
import mab  # noqa: E402
import packets  # noqa: E402
import probe  # noqa: E402

SECRET = mab.SECRET


@contextlib.contextmanager
def postgres(tmp: Path, durable: bool) -> Iterator[tuple[str, int]]:
    """A throwaway cluster with a migrated database: yields (URL, postmaster pid)."""
    from tests.pg import PgServer, start_pg, stop_pg

    srv: PgServer = start_pg()
    try:
        if durable:
            # The PostgreSQL defaults (fsync, synchronous_commit on): every batch the store
            # commits waits for its WAL flush, as a production site would run it.
            srv.stop()
            opts = (f"-p {srv.port} -k {srv.root} -c listen_addresses=127.0.0.1 "
                    "-c max_connections=200")
            srv._run(srv.bindir / "pg_ctl", "-D", str(srv.datadir), "-l",
                     str(srv.root / "pg.log"), "-o", opts, "-w", "-t", "60", "start")
        url = srv.create_database(migrate=True)
        pid = int((srv.datadir / "postmaster.pid").read_text().split()[0])
        yield url, pid
    finally:
        stop_pg(srv)


def decisions_in(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()
    return int(row[0]) if row else 0


def run_nac(exe: Path, args: argparse.Namespace, tmp: Path, name: str, extra: list[str],
            db_pid: int | None = None) -> dict:
    with mab.nac_server(tmp / name, tmp / f"{name}.log", args.workers, extra) as (pid, auth):
        warm = mab.warm_up(exe, auth, args.window, args)
        db0 = probe.tree_cpu_seconds(db_pid) if db_pid else 0.0
        r = mab.measure(pid, partial(mab.run_radload, exe, args.pkt_file, auth, args.window,
                                     args.timeout_ms, 0, args.sockets,
                                     args.per_socket_window), warm)
        if db_pid:
            r["db_cpu_s"] = round(probe.tree_cpu_seconds(db_pid) - db0, 3)
    return r


def run_freeradius(exe: Path, args: argparse.Namespace, tmp: Path, n: int) -> dict:
    (port,) = probe.free_udp_ports(1)
    with freeradius.FreeRadius(tmp / f"freeradius-{n}", port, args.threads) as fr:
        return mab.measure(fr.pid, partial(mab.run_radload, exe, args.pkt_file, port,
                                           args.window, args.timeout_ms, 0, args.sockets,
                                           args.per_socket_window),
                           mab.warm_up(exe, port, args.window, args))


def per_request_us(r: dict, key: str = "server_cpu_s") -> float:
    return 1e6 * r[key] / max(1, r["received"])


def line(name: str, r: dict) -> str:
    db = f"  + database {per_request_us(r, 'db_cpu_s'):.1f} us" if "db_cpu_s" in r else ""
    return (f"{name:<10} {r['rps']:>8.0f} req/s  accepts {r['accepts']}/{r['sent']}  "
            f"timeouts {r['timeouts']}  server CPU {per_request_us(r):.1f} us/request{db}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="nac serve --workers")
    ap.add_argument("--threads", type=int, default=2, help="FreeRADIUS worker threads")
    ap.add_argument("--timeout-ms", type=int, default=2000)
    ap.add_argument("--sockets", type=int, default=16)
    ap.add_argument("--per-socket-window", action="store_true",
                    help="as bench/mab.py: each radload socket keeps its share of the window")
    ap.add_argument("--warmup", type=int, default=5000)
    ap.add_argument("--pg-test-settings", dest="durable", action="store_false",
                    help="PostgreSQL with fsync off (as the tests run it); default: durable")
    args = ap.parse_args()

    exe = mab.build_radload()
    runs: dict[str, list[dict]] = {"sqlite": [], "postgresql": [], "freeradius": []}
    with tempfile.TemporaryDirectory(prefix="nac-bench-store-") as t:
        tmp = Path(t)
        args.pkt_file = tmp / "mab.bin"
        packets.write(args.pkt_file, packets.build("mab", args.requests, SECRET))
        args.warmup_file = tmp / "mab-warmup.bin"
        packets.write(args.warmup_file, packets.build("mab", args.warmup, SECRET, first=2**31))
        with postgres(tmp, args.durable) as (url, db_pid):
            for n in range(args.rounds):
                # Alternate the order: whoever runs first in a round does not always get
                # the quieter moment of a shared machine.
                order = ["sqlite", "postgresql", "freeradius"]
                if n % 2:
                    order.reverse()
                for which in order:
                    if which == "sqlite":
                        r = run_nac(exe, args, tmp, f"sqlite-{n}", [])
                    elif which == "postgresql":
                        before = decisions_in(url)
                        r = run_nac(exe, args, tmp, f"pg-{n}", ["--store", url], db_pid)
                        # Stopped cleanly, the server committed every decision it took.
                        r["decisions_committed"] = decisions_in(url) - before
                    elif freeradius.binary() is not None:
                        r = run_freeradius(exe, args, tmp, n)
                    else:
                        continue
                    runs[which].append(r)
                    print(f"round {n}: {line(which, r)}", file=sys.stderr)
                    time.sleep(0.5)

    med: dict[str, dict[str, float]] = {}
    for which, rs in runs.items():
        if not rs:
            continue
        med[which] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "cpu_us_per_request": statistics.median(per_request_us(r) for r in rs),
        }
        if which == "postgresql":
            med[which]["db_cpu_us_per_request"] = statistics.median(
                per_request_us(r, "db_cpu_s") for r in rs)
        print(f"median {which:<10} {med[which]['rps']:>8.0f} req/s  "
              f"{med[which]['cpu_us_per_request']:.1f} us server CPU/request"
              + (f" (+ {med[which]['db_cpu_us_per_request']:.1f} us in PostgreSQL)"
                 if which == "postgresql" else ""))
    ratio = {}
    if "sqlite" in med and "postgresql" in med:
        s, p = med["sqlite"], med["postgresql"]
        # SQLite's writer is a process of nac's tree; PostgreSQL's work is the database's:
        # the whole cost of a request with PostgreSQL is both.
        total = statistics.median(per_request_us(r) + per_request_us(r, "db_cpu_s")
                                  for r in runs["postgresql"])
        ratio = {"rps_pg_over_sqlite": round(p["rps"] / s["rps"], 3),
                 "cpu_pg_over_sqlite": round(p["cpu_us_per_request"]
                                             / s["cpu_us_per_request"], 3),
                 "total_cpu_pg_over_sqlite": round(total / s["cpu_us_per_request"], 3)}
        print(f"PostgreSQL/SQLite: throughput {ratio['rps_pg_over_sqlite']:.3f}, server CPU "
              f"per request {ratio['cpu_pg_over_sqlite']:.3f}, with the database's "
              f"{ratio['total_cpu_pg_over_sqlite']:.3f} (target: throughput within 20%)")
    print(json.dumps({"requests": args.requests, "window": args.window,
                      "workers": args.workers, "pg_durable": args.durable, "median": med,
                      "ratio": ratio, "runs": runs}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
