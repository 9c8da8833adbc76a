"""Small helpers shared by the bench scripts: free loopback ports, waiting
until a RADIUS server answers, and the CPU time a process tree used."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import packets

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_udp_ports(count: int) -> list[int]:
    """Distinct loopback UDP ports that are free right now (the kernel
    picks them), so a bench never talks to some other server."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_answers(port: int, secret: bytes, timeout: float = 20.0,
                 alive: subprocess.Popen | None = None, flows: int = 8) -> float:
    """Send signed MAB Access-Requests to 127.0.0.1:port from `flows` source ports until
    each has a reply to its latest request; return the seconds waited. Several flows,
    because a worker pool spreads them over its workers' sockets (bound before the
    workers start): every worker must be answering. Gives up early when the server
    process `alive` has exited."""
    start = time.monotonic()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    try:
        for s in socks:
            s.settimeout(0.2)
        waiting = list(socks)
        i = 0
        while time.monotonic() - start < timeout:
            if alive is not None and alive.poll() is not None:
                raise RuntimeError(f"the server exited with {alive.returncode} before answering")
            for s in list(waiting):
                req = packets.mab_request(i % 65536, secret, os.urandom(16))
                i += 1
                try:
                    s.sendto(req, ("127.0.0.1", port))
                    # Replies to earlier probes may come first (they waited in the socket
                    # for a worker that started late): read past them.
                    while True:
                        data = s.recv(4096)
                        if len(data) >= 20 and data[1] == req[1]:
                            waiting.remove(s)
                            break
                except (TimeoutError, ConnectionRefusedError):
                    pass
            if not waiting:
                return time.monotonic() - start
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()
    raise TimeoutError(f"no RADIUS answer on 127.0.0.1:{port} within {timeout:.0f} s")


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def tree_pids(pid: int) -> list[int]:
    """The process and its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (all threads), from
    /proc/PID/stat, in seconds."""
    total = 0
    for p in tree_pids(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised command name; utime, stime are 14, 15
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def tree_cpu_ns(pid: int) -> int:
    """CPU ns of a process tree's live threads (schedstat: ns, not 10 ms ticks; a thread
    that exits takes its time along, so only for spans in which none does, like idle)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{p}/task/{tid}/schedstat").read_text().split()[0])
    return total


@dataclass(frozen=True)
class CpuMark:
    """A process tree's CPU at one moment, read both ways (see cpu_between)."""

    ticks_s: float
    ns: int
    procs: int


def cpu_mark(pid: int) -> CpuMark:
    return CpuMark(tree_cpu_seconds(pid), tree_cpu_ns(pid), len(tree_pids(pid)))


def cpu_between(a: CpuMark, b: CpuMark) -> tuple[float, str]:
    """CPU seconds spent between two marks, and how they were read. 400 conversations of
    ~1.5 ms are 60 clock ticks of 10 ms (+-2%, more for the parts); the live threads' ns are
    exact unless a thread exited in between (its time left with it): then the two readings
    disagree by more than a tick or two per process, and the ticks stand."""
    ticks, ns = b.ticks_s - a.ticks_s, (b.ns - a.ns) / 1e9
    if abs(ns - ticks) <= 2 * max(a.procs, b.procs) / CLK_TCK:
        return ns, "schedstat ns"
    return ticks, "clock ticks"


def udp_rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full socket receive
    buffer (all sockets of this network namespace)."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def udp_listeners(port: int) -> int:
    """How many IPv4 UDP sockets are bound to `port`: with SO_REUSEPORT,
    one per worker process that is up."""
    count = 0
    for ln in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local = ln.split()[1]  # hex address:port
        if int(local.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def wait_listeners(port: int, count: int | None, timeout: float = 60.0,
                   alive: subprocess.Popen | None = None, settle: float = 2.0) -> int:
    """Wait until `count` sockets are bound to `port` (all workers up), or,
    with count None, until their number held still for `settle` seconds.
    Returns the number bound."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        n = udp_listeners(port)
        if n != last:
            last, since = n, time.monotonic()
        if (count is not None and n >= count) or (
                count is None and n > 0 and time.monotonic() - since >= settle):
            return n
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the server exited with {alive.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} of {count} workers bound port {port}")
        time.sleep(0.1)
