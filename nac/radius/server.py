"""The asyncio UDP layer: sockets in, engine calls, sockets out. Nothing else."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

from nac.metrics import Histogram
from nac.radius.engine import AfterCommit, Deferred, Engine

log = logging.getLogger("nac.radius")


class CommitGate:
    """Holds replies until the store has committed their records (group commit): the
    writer thread reports progress, the loop releases every reply it covers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[tuple[AfterCommit, _Endpoint, tuple]] = deque()  # type: ignore[type-arg]
        self._committed = 0

    def wait(self, job: AfterCommit, ep: _Endpoint, addr: tuple) -> None:  # type: ignore[type-arg]
        if job.ticket <= self._committed:
            ep.send(self.engine.committed(job, time.time()), addr)
            return
        self._waiting.append((job, ep, addr))

    def progress(self, committed: int) -> None:
        """From the writer thread."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._release, committed)

    def _release(self, committed: int) -> None:
        self._committed = max(self._committed, committed)
        now = time.time()
        while self._waiting and self._waiting[0][0].ticket <= self._committed:
            job, ep, addr = self._waiting.popleft()
            ep.send(self.engine.committed(job, now), addr)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[bytes, str, int, float], object], engine: Engine,
                 lanes: dict[str, Executor], commits: CommitGate) -> None:
        self.handler = handler
        self.engine = engine
        self.lanes = lanes
        self.commits = commits
        self.latency: Histogram | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple) -> None:  # type: ignore[override]
        host, port = addr[0], addr[1]
        t0 = time.perf_counter()
        try:
            out = self.handler(data, host, port, time.time())
        except Exception:  # a bug must cost one request, never the server
            self.engine.counters["drop_internal_error"] += 1
            log.exception("internal error on a request from %s", host)
            return
        if out is None:
            return
        if isinstance(out, Deferred):
            asyncio.ensure_future(self._deferred(out, addr))
            return
        if isinstance(out, AfterCommit):
            self.commits.wait(out, self, addr)
            return
        self.transport.sendto(out, addr)  # type: ignore[union-attr,arg-type]
        if self.latency is not None:
            self.latency.observe(time.perf_counter() - t0)

    async def _deferred(self, job: Deferred, addr: tuple) -> None:  # type: ignore[type-arg]
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            if job.wait is not None:
                result = await asyncio.wrap_future(job.wait)
            else:
                result = await loop.run_in_executor(self.lanes.get(job.lane), job.work)
            out = job.finish(result, time.time())
        except Exception:
            self.engine.counters["drop_internal_error"] += 1
            log.exception("internal error finishing a request")
            return
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)
            if self.latency is not None:
                self.latency.observe(time.perf_counter() - t0)

    def send(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error: %s", exc)


def bind_udp(address: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:
            pass
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


async def serve_udp(
    engine: Engine,
    addresses: list[str],
    auth_port: int,
    acct_port: int,
    *,
    lanes: dict[str, Executor] | None = None,
    reuse_port: bool = False,
    commits: CommitGate | None = None,
    latency: Histogram | None = None,
) -> list[asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    commits = commits or CommitGate(engine)
    commits.loop = loop
    transports = []
    for address in addresses:
        for port, handler in ((auth_port, engine.handle_auth), (acct_port, engine.handle_acct)):
            sock = bind_udp(address, port, reuse_port=reuse_port)
            transport, endpoint = await loop.create_datagram_endpoint(
                lambda h=handler: _Endpoint(h, engine, lanes or {}, commits),  # type: ignore[misc]
                sock=sock,
            )
            endpoint.latency = latency
            transports.append(transport)
            log.info("listening on %s udp/%d (%s)", address, port,
                     "authentication" if port == auth_port else "accounting")
    return transports
