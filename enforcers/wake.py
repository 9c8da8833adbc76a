"""Cross-process wake-up of the server's enforcer when another process queues a job.

Without it the enforcer finds a job queued by the CLI (`nac feed import`, `nac nodes
reinspect`, ...) only at its next poll; with it the job starts at once. The poll stays as
the fallback: a lost wake-up costs at most one poll interval, never a job.

- PostgreSQL: each enqueue runs ``pg_notify('nac_jobs')`` in its own transaction, so the
  notification is delivered at commit, when the job is visible; the enforcer LISTENs on a
  dedicated connection (reconnecting with backoff while the database is away).
- SQLite: after each enqueue commits, the producer sends a one-byte datagram to every
  ``jobs-wake-PID-NONCE.sock`` in the ``run`` directory beside the database file (STATE/run
  for the default STATE/nac.db); the enforcer binds one such socket and reads it on its
  event loop. A socket nobody reads any more (a killed server) refuses and is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("enforcers.queue")

CHANNEL = "nac_jobs"
PREFIX = "jobs-wake-"
# sun_path holds 108 bytes with its NUL: a longer path cannot be bound; the poll then serves.
MAX_SOCKET_PATH = 107

_send_lock = threading.Lock()
_sender: socket.socket | None = None


def run_dir(db_path: Path) -> Path:
    """Where the wake-up sockets of the SQLite file ``db_path`` live."""
    return db_path.parent / "run"


def _is_pg(queue: Any) -> bool:
    return hasattr(queue, "pool") and hasattr(getattr(queue, "pool", None), "conninfo")


def _sqlite_path(queue: Any) -> Path | None:
    path = getattr(queue, "path", None)
    return Path(path) if path is not None else None


def announce_on(queue: Any) -> None:
    """Make every enqueue on ``queue`` wake the enforcer of another process (idempotent; a
    queue of another kind is left alone)."""
    if getattr(queue, "_wake_announced", False) or not hasattr(queue, "enqueue_hooks"):
        return
    if _is_pg(queue):
        queue.enqueue_hooks.append(_pg_notify)
    else:
        path = _sqlite_path(queue)
        if path is None:
            return
        rdir = run_dir(path)
        queue.enqueued_hooks.append(lambda: poke(rdir))
    queue._wake_announced = True


def _pg_notify(x: Callable[..., Any]) -> None:
    x("SELECT pg_notify(?, '')", (CHANNEL,))


def poke(rdir: Path) -> int:
    """Send a wake-up to every enforcer listening in ``rdir``; how many were sent."""
    global _sender
    try:
        names = [n for n in os.listdir(rdir) if n.startswith(PREFIX) and n.endswith(".sock")]
    except FileNotFoundError:
        return 0
    own = f"{PREFIX}{os.getpid()}-"
    sent = 0
    with _send_lock:
        if _sender is None:
            _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            _sender.setblocking(False)
        for name in names:
            if name.startswith(own):
                continue  # this process's enforcer: Enforcer._notify woke it already
            path = rdir / name
            try:
                _sender.sendto(b"!", str(path))
                sent += 1
            except BlockingIOError:
                sent += 1  # its buffer is full of wake-ups it has not read yet
            except ConnectionRefusedError:
                # Bound by a process that is gone: nobody will read it again.
                with contextlib.suppress(OSError):
                    path.unlink()
            except OSError as exc:  # vanished meanwhile, permissions, ...
                log.debug("wake-up to %s not sent: %s", path, exc)
    return sent


class Listener:
    """The enforcer's end: calls ``wake()`` on the event loop when another process queued a
    job on ``queue``. ``start()`` on the running loop; ``close()`` when the worker stops."""

    def __init__(self, queue: Any, wake: Callable[[], None]) -> None:
        self.queue = queue
        self.wake = wake
        self.sock: socket.socket | None = None
        self.path: Path | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the database LISTENs now (PostgreSQL; tests wait for it)
        self.listening = asyncio.Event()
        #: LISTEN connections made so far (PostgreSQL; tests)
        self.connects = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Jobs this process queued or claimed off the loop wake the enforcer directly.
        wakers = getattr(self.queue, "wakers", None)
        if isinstance(wakers, list):
            wakers.append(self._wake_threadsafe)
        if _is_pg(self.queue):
            self._task = asyncio.create_task(self._pg_listen(self.queue.pool.conninfo))
            return
        path = _sqlite_path(self.queue)
        if path is None:
            return
        sock_path = run_dir(path) / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        if len(os.fsencode(sock_path)) > MAX_SOCKET_PATH:
            log.info("state directory path too long for a wake-up socket: the enforcer "
                     "polls for jobs queued by other processes")
            return
        try:
            sock_path.parent.mkdir(parents=True, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(sock_path))
        except OSError as exc:
            log.warning("no wake-up socket (%s): the enforcer polls for jobs queued by other "
                        "processes", exc)
            return
        self.sock, self.path = sock, sock_path
        self._loop.add_reader(sock.fileno(), self._readable)
        self.listening.set()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.wake)

    def _readable(self) -> None:
        assert self.sock is not None
        while True:  # drain: any number of pokes is one wake-up
            try:
                self.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        self.wake()

    async def _pg_listen(self, conninfo: str) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True,
                                                             connect_timeout=5)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connects += 1
                    self.listening.set()
                    if delay > 0.5:
                        log.info("job wake-ups: listening again")
                        # The database came back: let the queue drop the connections it
                        # lost before the claim this wake-up starts needs one.
                        back = getattr(self.queue, "database_back", None)
                        if back is not None:
                            await asyncio.to_thread(back)
                    delay = 0.5
                    # Jobs queued while nobody listened: look now.
                    self.wake()
                    async for _ in conn.notifies():
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database restarting: poll meanwhile
                self.listening.clear()
                log.warning("job wake-ups: %s: %s; reconnecting in %.1f s (polling meanwhile)",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def close(self) -> None:
        wakers = getattr(self.queue, "wakers", None)
        if isinstance(wakers, list) and self._wake_threadsafe in wakers:
            wakers.remove(self._wake_threadsafe)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None
        self.listening.clear()
