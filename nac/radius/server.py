"""The UDP layer: sockets in, engine calls, sockets out. Nothing else.

Each listening socket is read straight from the event loop (`loop.add_reader` and
`socket.recvfrom` until the socket is empty, up to a batch), not through an asyncio
DatagramProtocol: that costs a transport and a protocol callback per datagram, measured
at about a fifth of the whole per-request CPU of a MAB request. On Linux an IPv4 socket
is read with one recvmmsg per batch and the batch's replies leave with one sendmmsg
(nac/radius/mmsg.py): measured, the event-loop worker's CPU per MAB request 20-21.5 ->
17 us, and the load generator's too (one wake-up per batch of replies instead of one per
reply). IPv6 sockets, and any platform without the calls, keep recvfrom/sendto.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

from nac.metrics import Histogram
from nac.radius.codec import MAX_PACKET
from nac.radius.engine import AfterCommit, Deferred, Engine
from nac.radius.mmsg import Mmsg, open_mmsg

log = logging.getLogger("nac.radius")

# Datagrams handled per readiness callback before the loop runs its other callbacks
# (finished Deferreds, commit releases, timers): bounds their latency under a flood.
BATCH = 64
# Replies held while the kernel's send buffer is full, per socket; beyond, dropped (the
# NAS retransmits and gets the reply from the duplicate cache).
MAX_BACKLOG = 4096


class CommitGate:
    """Holds replies until the store has committed their records (group commit): the
    store reports progress (from a thread, or on the loop), the loop releases every reply
    it covers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[tuple[AfterCommit, Listener, tuple]] = deque()  # type: ignore[type-arg]
        self._committed = 0

    def wait(self, job: AfterCommit, ep: Listener, addr: tuple) -> None:  # type: ignore[type-arg]
        if job.ticket <= self._committed:
            ep.send(self.engine.committed(job, time.time()), addr)
            return
        self._waiting.append((job, ep, addr))

    def progress(self, committed: int) -> None:
        """From a store's thread."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.release, committed)

    def release(self, committed: int) -> None:
        """On the loop: send every reply whose record is now committed."""
        self._committed = max(self._committed, committed)
        now = time.time()
        while self._waiting and self._waiting[0][0].ticket <= self._committed:
            job, ep, addr = self._waiting.popleft()
            ep.send(self.engine.committed(job, now), addr)


class Listener:
    """One bound UDP socket, read from the event loop; quacks like a transport for what
    the server needs (close, is_closing)."""

    def __init__(self, sock: socket.socket, handler: Callable[[bytes, str, int, float], object],
                 engine: Engine, lanes: dict[str, Executor], commits: CommitGate,
                 latency: Histogram | None = None) -> None:
        self.sock = sock
        self.handler = handler
        self.engine = engine
        self.lanes = lanes
        self.commits = commits
        self.latency = latency
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._backlog: deque[tuple[bytes, tuple]] = deque()  # type: ignore[type-arg]
        # IPv4 sockets on Linux: a batch is one recvmmsg and its replies one sendmmsg.
        self._mmsg: Mmsg | None = open_mmsg(sock, BATCH, MAX_PACKET)
        self._lone = False  # the last wake-up found one datagram: recvfrom it
        # source sockaddr (family, port, address as one integer) -> (host, port)
        self._sources: dict[int, tuple[str, int]] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(),
                        self._readable if self._mmsg is None else self._readable_either)

    def _readable_either(self) -> None:
        """recvmmsg while datagrams come in bunches; recvfrom while they come one per
        wake-up (one request in flight: recvmmsg's ctypes call measured ~4 us more a
        request, medians of 6 on a noisy machine), until a wake-up finds several."""
        if self._lone:
            self._lone = self._readable() <= 1
        else:
            self._readable_mmsg()

    def _readable_mmsg(self) -> None:
        """_readable with one recvmmsg for the batch and one sendmmsg for its replies:
        the same outcomes, two syscalls (and one wake-up of the peers) a batch."""
        mm = self._mmsg
        assert mm is not None
        try:
            n = mm.recv()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. an ICMP error queued on the socket
            log.debug("socket error: %s", exc)
            return
        self._lone = n == 1
        handler = self.handler
        sources = self._sources
        data_view, size, lens, names_q = mm.data, mm.size, mm.lens, mm.names_q
        # Mmsg.stage inlined (a call per reply): the reply's octets into its send slot,
        # its length into its iovec, its request's sockaddr into its header.
        sbuf, siov_q, shdr_q, names_at = mm.sbuf, mm.siov_q, mm.shdr_q, mm.names_at
        # Replies wait behind those already queued; the queue cannot grow during the batch
        # but through this loop, so one look decides where every reply goes.
        queued = bool(self._backlog)
        staged: list[tuple[bytes, tuple]] = []  # type: ignore[type-arg]
        now = time.time()  # one clock read per batch: the batch takes well under a second
        t0 = time.perf_counter()
        for i in range(n):
            off = i * size
            data = bytes(data_view[off:off + lens[i * 16 + 14]])
            addr = sources.get(names_q[i * 2])
            if addr is None:
                if len(sources) >= 65536:  # NAS addresses and ports: bounded anyway
                    sources.clear()
                addr = sources[names_q[i * 2]] = mm.source(i)
            try:
                out = handler(data, addr[0], addr[1], now)
            except Exception:  # a bug must cost one request, never the server
                self._internal_error(addr[0])
                continue
            if out is None:
                continue
            if out.__class__ is bytes:
                if queued:
                    self._queue(out, addr)  # type: ignore[arg-type]
                elif len(out) > size:  # not from the engine (it caps replies): no slot fits
                    self.send(out, addr)  # type: ignore[arg-type]
                else:
                    j = len(staged)
                    sbuf[j * size:j * size + len(out)] = out  # type: ignore[arg-type]
                    siov_q[j * 2 + 1] = len(out)  # type: ignore[arg-type]
                    shdr_q[j * 8] = names_at + i * 16
                    staged.append((out, addr))  # type: ignore[arg-type]
            else:
                self._later(out, addr)
        if staged:
            self._send_staged(mm, staged, t0)

    def _send_staged(self, mm: Mmsg, staged: list[tuple[bytes, tuple]],  # type: ignore[type-arg]
                     t0: float) -> None:
        count = len(staged)
        done = 0
        if count == 1:  # a lone reply (low load): sendto costs less than a ctypes call
            self.send(*staged[0])
            done = count
        while done < count:
            try:
                done += mm.send(count, done)
            except (BlockingIOError, InterruptedError):
                for data, addr in staged[done:]:  # the kernel's buffer is full: wait
                    self._queue(data, addr)
                break
            except OSError as exc:  # unreachable peer, bad scope id: that reply is lost
                self.engine.counters["drop_send_error"] += 1
                log.debug("send to %s failed: %s", staged[done][1][0], exc)
                done += 1
        if self.latency is not None:  # as _readable: queued replies too
            self.latency.observe_many(time.perf_counter() - t0, count)

    def _readable(self) -> int:
        """Datagrams read (and answered) until the socket was empty, up to a batch."""
        recv = self.sock.recvfrom
        sendto = self.sock.sendto
        backlog = self._backlog  # the same deque for the listener's life
        handler = self.handler
        latency = self.latency
        clock = time.perf_counter
        now = time.time()  # one clock read per batch: the batch takes well under a second
        t0 = clock()
        for got in range(BATCH):
            try:
                data, addr = recv(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return got
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("socket error: %s", exc)
                return got
            try:
                out = handler(data, addr[0], addr[1], now)
            except Exception:  # a bug must cost one request, never the server
                self._internal_error(addr[0])
                continue
            if out is None:
                continue
            if out.__class__ is bytes:
                # send() inlined for the common case (nothing waiting): a call per request.
                if backlog:
                    self._queue(out, addr)  # type: ignore[arg-type]
                else:
                    try:
                        sendto(out, addr)
                    except (BlockingIOError, InterruptedError):
                        self._queue(out, addr)  # type: ignore[arg-type]
                    except OSError as exc:  # unreachable peer, bad scope id: reply lost
                        self.engine.counters["drop_send_error"] += 1
                        log.debug("send to %s failed: %s", addr[0], exc)
                if latency is not None:
                    latency.observe(clock() - t0)
            else:
                self._later(out, addr)
        return BATCH

    def _internal_error(self, host: str) -> None:
        """A bug in handling one request costs that request, never the server."""
        self.engine.counters["drop_internal_error"] += 1
        log.exception("internal error on a request from %s", host)

    def _later(self, out: object, addr: tuple) -> None:  # type: ignore[type-arg]
        """A reply not ready yet: slow work to finish off the loop (Deferred), or a record
        to be committed first (AfterCommit). Both read loops hand these here."""
        if isinstance(out, Deferred):
            asyncio.ensure_future(self._deferred(out, addr))
        elif isinstance(out, AfterCommit):
            self.commits.wait(out, self, addr)

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
        if out is not None and not self._closed:
            self.send(out, addr)
            if self.latency is not None:
                self.latency.observe(time.perf_counter() - t0)

    def send(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        if self._closed:
            return
        if self._backlog:  # keep replies in order behind those already waiting
            self._queue(data, addr)
            return
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._queue(data, addr)
        except OSError as exc:  # unreachable peer, bad scope id: that reply is lost
            self.engine.counters["drop_send_error"] += 1
            log.debug("send to %s failed: %s", addr[0], exc)

    def _queue(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        if len(self._backlog) >= MAX_BACKLOG:
            self.engine.counters["drop_send_backlog"] += 1
            return
        if not self._backlog and self.loop is not None:
            self.loop.add_writer(self.sock.fileno(), self._writable)
        self._backlog.append((data, addr))

    def _writable(self) -> None:
        while self._backlog:
            data, addr = self._backlog[0]
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.engine.counters["drop_send_error"] += 1
                log.debug("send to %s failed: %s", addr[0], exc)
            self._backlog.popleft()
        if self.loop is not None:
            self.loop.remove_writer(self.sock.fileno())

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
            if self._backlog:
                self.loop.remove_writer(self.sock.fileno())
        self._backlog.clear()
        self.sock.close()


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


LISTEN_FDS = "NAC_LISTEN_FDS"  # "address|port|fd,..." : sockets a supervisor bound for us


def inherited_sockets() -> dict[tuple[str, int], socket.socket]:
    """The UDP sockets our supervisor bound for this worker and passed down (nac.workers):
    a worker that restarts takes over its predecessor's socket, so the kernel's
    SO_REUSEPORT spread of NAS flows over the workers never changes."""
    out: dict[tuple[str, int], socket.socket] = {}
    for item in filter(None, os.environ.pop(LISTEN_FDS, "").split(",")):
        address, port, fd = item.rsplit("|", 2)
        out[(address, int(port))] = socket.socket(fileno=int(fd))
    return out


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
) -> list[Listener]:
    loop = asyncio.get_running_loop()
    commits = commits or CommitGate(engine)
    commits.loop = loop
    listeners = []
    inherited = inherited_sockets()
    for address in addresses:
        for port, handler in ((auth_port, engine.handle_auth), (acct_port, engine.handle_acct)):
            sock = inherited.pop((address, port), None) or bind_udp(address, port,
                                                                     reuse_port=reuse_port)
            listener = Listener(sock, handler, engine, lanes or {}, commits, latency)
            listener.start(loop)
            listeners.append(listener)
            log.info("listening on %s udp/%d (%s)", address, port,
                     "authentication" if port == auth_port else "accounting")
    return listeners
