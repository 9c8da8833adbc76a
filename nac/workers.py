"""`nac serve --workers N`: N processes on the same ports (SO_REUSEPORT), one supervisor.

The kernel hashes each datagram's 4-tuple to one socket, so every packet of a NAS flow
(one source address and port, as switches and eapol_test use) reaches the same worker and
an EAP conversation's state stays where it was made. The supervisor binds every worker's
sockets itself and hands them down: a socket that closed with a dead worker would reshuffle
the reuseport group (the kernel moves the last socket into the freed slot), and every
conversation in flight on the *surviving* workers would land on a stranger. So a worker's
sockets outlive it; what arrives while it restarts waits in the socket for its successor.

The supervisor prepares shared state once (store schema, PKI), starts the workers,
restarts one that dies, and stops them all on SIGTERM/SIGINT. With --metrics it serves the
one /metrics and /healthz of the pool: each worker serves its own on a Unix socket in
STATE/run, and a scrape of the supervisor sums them (nac.metrics.PoolMetrics).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("nac.workers")

RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # seconds up after which a worker's death is not part of a crash loop

class SharedWriter:
    """The pool's one SQLite writer process (nac.store.sqlite._serve_pool). SQLite takes
    one writer at a time anyway; one process per worker cost each worker its own Python,
    page cache (re-read after every other writer's commit) and commit per batch: two
    workers recording 20,000 decisions/s each, the whole CPU per decision was 13.8 us with
    a writer each, 13.2 shared (medians of 5 alternating runs). Its listening socket is
    bound here and kept, so a restarted writer takes over the workers' reconnections."""

    def __init__(self, path: Path) -> None:
        from nac.store.sqlite import shared_writer_socket

        self.path = path
        self.listener = shared_writer_socket(path)
        # "@name" for the abstract address "\0name": a NUL cannot travel in the environment
        name = self.listener.getsockname()
        self.address = "@" + (name.decode() if isinstance(name, bytes) else name)[1:]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restart_at: float | None = None
        self.start()

    def start(self) -> None:
        from nac.store.sqlite import start_shared_writer

        self.proc = start_shared_writer(self.path, self.listener)
        self.started = time.monotonic()
        log.info("store writer started (pid %d)", self.proc.pid)

    def check(self) -> None:
        """Restart the writer if it died (the workers resend what it had not committed):
        at once, or after 2 s if it died within 5 s of its start (no tight crash loop)."""
        if self.proc is None or self.proc.poll() is None:
            return
        now = time.monotonic()
        if self.restart_at is None:
            log.error("store writer (pid %d) exited with %s; restarting", self.proc.pid,
                      self.proc.returncode)
            self.restart_at = now + (2.0 if now - self.started < 5.0 else 0.0)
        if now >= self.restart_at:
            self.restart_at = None
            self.start()

    def stop(self, timeout: float = 30.0) -> None:
        """After the workers: the writer commits what it has and exits."""
        if self.proc is not None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.listener.close()


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def bind_pool(listen: list[tuple[str, int]], count: int) -> list[list[tuple[str, int,
                                                                           socket.socket]]]:
    """Every worker's UDP sockets, bound before any worker starts (a taken port fails here)."""
    from nac.radius.server import bind_udp

    return [[(address, port, bind_udp(address, port, reuse_port=True))
             for address, port in listen] for _ in range(count)]


def supervise(worker_argv: list[str], count: int, state_dir: Path,
              metrics: str | None = None, listen: list[tuple[str, int]] | None = None,
              shared_sqlite: Path | None = None) -> int:
    """Run `count` workers with `worker_argv` (each gets --worker-id I); returns exit code.
    metrics: ADDR:PORT of the pool's /metrics and /healthz. listen: (address, port) of
    every UDP listener, bound here once per worker and passed down. shared_sqlite: the
    SQLite file the workers write; the supervisor runs one store writer process for all of
    them (NAC_STORE_WRITERS=each in the environment: one per worker instead)."""
    from nac.radius.server import LISTEN_FDS

    pool = bind_pool(listen or [], count)
    writer = None
    if shared_sqlite is not None and count > 1 and os.environ.get("NAC_STORE_WRITERS") != "each":
        writer = SharedWriter(shared_sqlite)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    failures: dict[int, int] = {}
    next_start: dict[int, float] = {}

    started: dict[int, float] = {}

    def start(i: int) -> None:
        from nac.store.sqlite import WRITER_ENV

        fds = ",".join(f"{a}|{p}|{sock.fileno()}" for a, p, sock in pool[i])
        env = {**os.environ, LISTEN_FDS: fds}
        if writer is not None:
            env[WRITER_ENV] = writer.address
        procs[i] = subprocess.Popen([*worker_argv, "--worker-id", str(i)],
                                    pass_fds=[sock.fileno() for _, _, sock in pool[i]],
                                    env=env)
        started[i] = time.monotonic()
        log.info("worker %d started (pid %d)", i, procs[i].pid)

    pool_metrics = None
    if metrics:
        from nac.app import metrics_socket
        from nac.metrics import PoolMetrics, parse_address

        host, port = parse_address(metrics)
        # Bound before any worker starts: a taken port fails the start, not a scrape later.
        pool_metrics = PoolMetrics(
            host, port, sockets=lambda: {i: metrics_socket(state_dir, i) for i in range(count)},
            alive=lambda: {i: p.poll() is None for i, p in list(procs.items())})
    for i in range(count):
        start(i)
    while not stopping:
        time.sleep(0.2)
        if writer is not None and not stopping:
            writer.check()
        for i, p in list(procs.items()):
            rc = p.poll()
            if rc is None or stopping:
                continue
            now = time.monotonic()
            if i not in next_start:
                # Once per death: a worker that ran a while starts the backoff afresh, one
                # that keeps dying at start waits longer each time (no tight crash loop).
                if now - started.get(i, now) > STABLE_AFTER:
                    failures[i] = 0
                failures[i] = failures.get(i, 0) + 1
                delay = min(RESTART_BACKOFF_MAX, 0.5 * 2 ** (failures[i] - 1))
                log.error("worker %d (pid %d) exited with %d; restarting in %.1fs", i, p.pid,
                          rc, delay)
                next_start[i] = now + delay
            elif now >= next_start[i]:
                del next_start[i]
                start(i)
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    if writer is not None:
        writer.stop()
    if pool_metrics is not None:
        pool_metrics.close()
    for socks in pool:
        for _, _, sock in socks:
            sock.close()
    log.info("all workers stopped")
    return 0


def worker_argv(argv: list[str]) -> list[str]:
    """This command line as a single-process worker: --workers 1, sockets shared."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--workers":
            skip = True
            continue
        if a.startswith("--workers="):
            continue
        out.append(a)
    return [sys.executable, "-m", "nac.cli.main", *out, "--workers", "1", "--reuse-port"]
