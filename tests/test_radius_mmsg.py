"""The listener's recvmmsg/sendmmsg path against its recvfrom/sendto path, on real
loopback sockets: the same replies to the same sources, in both; a send that would
block queues the rest in order; a failing send costs one reply."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from nac.radius import mmsg, server
from nac.radius.codec import MAX_PACKET

pytestmark = pytest.mark.skipif(not mmsg.ENABLED, reason="no recvmmsg/sendmmsg here")


def _answer(data: bytes, host: str, port: int, now: float) -> bytes | None:
    """Echo with the source appended; b"drop" gets no reply, b"boom" raises."""
    if data == b"drop":
        return None
    if data == b"boom":
        raise RuntimeError("a bug")
    return data[::-1] + f"|{host}|{port}".encode()


def _listener(use_mmsg: bool, family: int = socket.AF_INET) -> server.Listener:
    sock = server.bind_udp("127.0.0.1" if family == socket.AF_INET else "::1", 0)
    engine: Any = SimpleNamespace(counters=Counter())
    listener = server.Listener(sock, _answer, engine, {}, server.CommitGate(engine))
    if not use_mmsg:
        listener._mmsg = None
    return listener


def _exchange(listener: server.Listener, payloads: list[bytes],
              senders: list[socket.socket], expect: int) -> list[tuple[bytes, int]]:
    """Send payloads round-robin from `senders`, let the loop serve them, collect replies."""
    async def run() -> list[tuple[bytes, int]]:
        loop = asyncio.get_running_loop()
        listener.start(loop)
        target = listener.sock.getsockname()[:2]
        for i, p in enumerate(payloads):
            senders[i % len(senders)].sendto(p, target)
        got: list[tuple[bytes, int]] = []
        for _ in range(200):
            await asyncio.sleep(0.01)
            for s in senders:
                while True:
                    try:
                        got.append((s.recv(65536), s.getsockname()[1]))
                    except BlockingIOError:
                        break
            if len(got) >= expect:
                break
        await asyncio.sleep(0.05)  # nothing more may come
        for s in senders:
            with pytest.raises(BlockingIOError):
                s.recv(MAX_PACKET)
        listener.close()
        return got

    return asyncio.run(run())


def _senders(n: int, family: int = socket.AF_INET) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        s.setblocking(False)
        out.append(s)
    return out


@pytest.mark.parametrize("use_mmsg", [True, False])
def test_replies_go_to_each_source(use_mmsg: bool) -> None:
    listener = _listener(use_mmsg)
    assert (listener._mmsg is not None) == use_mmsg
    senders = _senders(3)
    # more than a batch, an empty datagram, one dropped, one raising, a 4096-octet one
    payloads = [f"req-{i}".encode() for i in range(150)]
    payloads += [b"", b"drop", b"boom", b"x" * MAX_PACKET]
    got = _exchange(listener, payloads, senders, expect=len(payloads) - 2)
    want = sorted((_answer(p, "127.0.0.1", senders[i % 3].getsockname()[1], 0) or b"",
                   senders[i % 3].getsockname()[1])
                  for i, p in enumerate(payloads) if p not in (b"drop", b"boom"))
    assert sorted(got) == want
    assert listener.engine.counters["drop_internal_error"] == 1
    for s in senders:
        s.close()


def test_oversized_datagram_is_cut_as_recvfrom_cuts_it() -> None:
    results = []
    for use_mmsg in (True, False):
        listener = _listener(use_mmsg)
        senders = _senders(1)
        results.append(_exchange(listener, [b"y" * 5000], senders, expect=1))
        senders[0].close()
    for got in results:  # the first MAX_PACKET octets reach the handler, in both paths
        ((reply, port),) = got
        assert reply == b"y" * MAX_PACKET + b"|127.0.0.1|%d" % port


def test_ipv6_socket_keeps_recvfrom() -> None:
    listener = _listener(True, socket.AF_INET6)
    assert listener._mmsg is None  # sockaddr_in6 and scope ids stay with the socket module
    senders = _senders(1, socket.AF_INET6)
    got = _exchange(listener, [b"v6"], senders, expect=1)
    assert got == [(b"6v|::1|%d" % senders[0].getsockname()[1], senders[0].getsockname()[1])]
    senders[0].close()


def test_send_that_would_block_queues_the_rest_in_order() -> None:
    listener = _listener(True)
    mm = listener._mmsg
    assert mm is not None
    real_send = mm.send
    calls: list[tuple[int, int]] = []

    def send(count: int, start: int = 0) -> int:
        calls.append((count, start))
        if len(calls) == 1:  # the kernel took 2, then its buffer was full
            return real_send(min(count, start + 2), start)
        raise BlockingIOError(11, "full")

    mm.send = send  # type: ignore[method-assign]
    senders = _senders(1)
    payloads = [f"q{i}".encode() for i in range(10)]
    got = _exchange(listener, payloads, senders, expect=10)
    port = senders[0].getsockname()[1]
    # all ten arrive (eight through the backlog and add_writer), in the order sent
    assert [r for r, _ in got] == [_answer(p, "127.0.0.1", port, 0) for p in payloads]
    assert calls[:2] == [(10, 0), (10, 2)]
    senders[0].close()


def test_failing_send_costs_that_reply_only() -> None:
    listener = _listener(True)
    mm = listener._mmsg
    assert mm is not None
    real_send = mm.send
    failed = []

    def send(count: int, start: int = 0) -> int:
        if start == 3 and not failed:
            failed.append(start)
            raise OSError(101, "Network is unreachable")
        return real_send(min(count, start + 3) if start < 3 else count, start)

    mm.send = send  # type: ignore[method-assign]
    senders = _senders(1)
    payloads = [f"f{i}".encode() for i in range(8)]
    got = _exchange(listener, payloads, senders, expect=7)
    port = senders[0].getsockname()[1]
    assert [r for r, _ in got] == [_answer(p, "127.0.0.1", port, 0)
                                   for i, p in enumerate(payloads) if i != 3]
    assert listener.engine.counters["drop_send_error"] == 1
    senders[0].close()


def test_lone_datagrams_take_recvfrom_bunches_take_recvmmsg() -> None:
    listener = _listener(True)
    mm = listener._mmsg
    assert mm is not None
    real_recv = mm.recv
    sizes: list[int] = []

    def recv() -> int:
        sizes.append(real_recv())
        return sizes[-1]

    mm.recv = recv  # type: ignore[method-assign]
    sender = _senders(1)[0]
    port = sender.getsockname()[1]

    async def run() -> list[bytes]:
        listener.start(asyncio.get_running_loop())
        target = listener.sock.getsockname()[:2]
        got: list[bytes] = []

        async def burst(n: int, tag: str) -> None:
            for i in range(n):
                sender.sendto(f"{tag}{i}".encode(), target)
            want = len(got) + n
            for _ in range(200):
                await asyncio.sleep(0.01)
                while True:
                    try:
                        got.append(sender.recv(65536))
                    except BlockingIOError:
                        break
                if len(got) >= want:
                    return

        await burst(1, "a")  # one datagram by recvmmsg: the next wake-up reads by recvfrom
        await burst(1, "b")
        await burst(5, "c")  # recvfrom finds five: back to recvmmsg
        await burst(5, "d")
        listener.close()
        return got

    got = asyncio.run(run())
    want = [f"{t}{i}".encode() for t, n in (("a", 1), ("b", 1), ("c", 5), ("d", 5))
            for i in range(n)]
    assert got == [_answer(w, "127.0.0.1", port, 0) for w in want]
    assert sizes == [1, 5]  # "b" and "c" came through recvfrom
    sender.close()
