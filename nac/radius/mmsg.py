"""recvmmsg(2)/sendmmsg(2) for one IPv4 UDP socket, over buffers allocated once.

Python's socket module has neither: a datagram costs a recvfrom and a sendto, each a
syscall plus the building of an address tuple. Here one ctypes call reads up to `batch`
datagrams and one sends the replies staged for them. Every buffer (datagram slots, source
addresses, iovecs, message headers) is a bytearray made once and reused; Python reads and
writes them through memoryviews, so a datagram costs a slice, not a ctypes object.

A reply goes back to the address its request came from: its send header points straight
at the receive slot's sockaddr, so no address is copied or rebuilt.

Linux only (the headers' layout below is checked against ctypes at import); `open_mmsg`
returns None wherever it is unavailable and the caller keeps recvfrom/sendto.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys

# struct mmsghdr on 64-bit Linux: struct msghdr (56 octets) then msg_len, padded to 64.
_HDR = 64
_IOV = 16
_NAME = 16  # struct sockaddr_in
MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def _layout_ok() -> bool:
    """The memoryview indexes below assume this layout (x86_64, aarch64, ...)."""
    return (ctypes.sizeof(_Mmsghdr) == _HDR and ctypes.sizeof(_Iovec) == _IOV
            and _Msghdr.namelen.offset == 8 and _Msghdr.iov.offset == 16
            and _Msghdr.iovlen.offset == 24 and _Mmsghdr.len.offset == 56)


def _libc() -> tuple[object, object] | None:
    if not sys.platform.startswith("linux") or not _layout_ok():
        return None
    try:
        # PyDLL: the calls keep the GIL. They never block (non-blocking sockets), and a
        # CDLL call's release and re-take of the GIL hands it to the store feeder or a
        # timer thread in between, a switch per batch on the packet path.
        libc = ctypes.PyDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                     ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return recv, send


_FUNCS = _libc()
# NAC_RADIUS_MMSG=0 keeps recvfrom/sendto (to compare, or if a kernel misbehaves).
ENABLED = _FUNCS is not None and os.environ.get("NAC_RADIUS_MMSG", "1") != "0"


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


class Mmsg:
    """Buffers and calls for one socket. Attributes are read by the listener's loop:

    after `n = recv()`, datagram i is `data[i * size : i * size + lens[i * 16 + 14]]`
    and its source is `names_q[i * 2]` (family, port and address as one integer key);
    `stage(j, i, reply)` puts reply j for datagram i, then `send(k, start)` sends."""

    def __init__(self, fd: int, batch: int, size: int) -> None:
        assert _FUNCS is not None
        self._recvmmsg, self._sendmmsg = _FUNCS
        self.fd = fd
        self.batch = batch
        self.size = size
        self.data = memoryview(bytearray(batch * size))
        self._rbuf = self.data.obj
        names = bytearray(batch * _NAME)
        self.names = memoryview(names)
        self.names_q = self.names.cast("Q")
        self.names_at = _address(names)
        self._sbuf = bytearray(batch * size)
        self._rhdr = bytearray(batch * _HDR)
        self._shdr = bytearray(batch * _HDR)
        self.lens = memoryview(self._rhdr).cast("I")  # msg_len of entry i at [i * 16 + 14]
        self.shdr_q = memoryview(self._shdr).cast("Q")
        self._siov = bytearray(batch * _IOV)
        self.siov_q = memoryview(self._siov).cast("Q")
        riov = bytearray(batch * _IOV)
        self._riov = riov
        rbuf_at, sbuf_at = _address(self._rbuf), _address(self._sbuf)
        riov_at, siov_at = _address(riov), _address(self._siov)
        riov_q = memoryview(riov).cast("Q")
        rq, ri = memoryview(self._rhdr).cast("Q"), memoryview(self._rhdr).cast("I")
        sq, si = self.shdr_q, memoryview(self._shdr).cast("I")
        for i in range(batch):
            riov_q[i * 2], riov_q[i * 2 + 1] = rbuf_at + i * size, size
            self.siov_q[i * 2] = sbuf_at + i * size
            rq[i * 8], ri[i * 16 + 2] = self.names_at + i * _NAME, _NAME
            rq[i * 8 + 2], rq[i * 8 + 3] = riov_at + i * _IOV, 1
            si[i * 16 + 2] = _NAME  # the name pointer is set per reply
            sq[i * 8 + 2], sq[i * 8 + 3] = siov_at + i * _IOV, 1
        self._rhdr_at, self._shdr_at = _address(self._rhdr), _address(self._shdr)
        self.sbuf = memoryview(self._sbuf)  # the send slots

    def recv(self) -> int:
        """Datagrams now waiting, up to the batch; OSError (BlockingIOError if none)."""
        n: int = self._recvmmsg(self.fd, self._rhdr_at, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))  # the errno's subclass, e.g. BlockingIOError
        return n

    def stage(self, j: int, i: int, reply: bytes) -> None:
        """Reply j of the next send: `reply` to the source of datagram i. (The listener's
        batch loop does the same inline, through sbuf, siov_q, shdr_q and names_at.)"""
        off = j * self.size
        self.sbuf[off:off + len(reply)] = reply
        self.siov_q[j * 2 + 1] = len(reply)
        self.shdr_q[j * 8] = self.names_at + i * _NAME

    def send(self, count: int, start: int = 0) -> int:
        """Send staged replies start..count-1; how many went (OSError if the first failed)."""
        n: int = self._sendmmsg(self.fd, self._shdr_at + start * _HDR, count - start,
                                MSG_DONTWAIT)
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))  # the errno's subclass, e.g. BlockingIOError
        return n

    def source(self, i: int) -> tuple[str, int]:
        """(host, port) of datagram i, as recvfrom gives it for AF_INET."""
        off = i * _NAME
        return (socket.inet_ntop(socket.AF_INET, self.names[off + 4:off + 8]),
                int.from_bytes(self.names[off + 2:off + 4], "big"))


def open_mmsg(sock: socket.socket, batch: int, size: int) -> Mmsg | None:
    """An Mmsg for `sock` if it is IPv4 UDP and the calls exist; else None."""
    if not ENABLED or sock.family != socket.AF_INET or sock.type != socket.SOCK_DGRAM:
        return None
    return Mmsg(sock.fileno(), batch, size)
