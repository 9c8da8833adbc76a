"""EAP-TNC (EAP type 38) and PT-EAP (RFC 7171, type 54) framing, sans-I/O.

Both put one flags octet before the data: L (0x80, a 4-byte total Message Length follows),
M (0x40, more fragments follow), S (0x20, Start), and the version in the low 3 bits
(1 for EAP-TNC and for PT-EAP). A fragment is acknowledged by a frame that holds only the
flags octet. This module works on the EAP Type-Data (everything after the EAP Type octet);
build_eap()/parse_eap() add and strip the EAP header for callers that want whole packets.

The first bytes of a reassembled message tell which TNCCS protocol it carries:
IF-TNCCS 1.1 is XML (starts with '<'), PB-TNC starts with its version byte 2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from eap_ext.tnc.errors import EapTncFramingError, TncCodecError

EAP_TYPE_TNC = 38
EAP_TYPE_PT_EAP = 54
EAP_TNC_VERSION = 1
PT_EAP_VERSION = 1
FLAG_L = 0x80
FLAG_M = 0x40
FLAG_S = 0x20
VERSION_MASK = 0x07
DEFAULT_FRAGMENT_SIZE = 1300      # Type-Data bytes per frame, flags octet included
DEFAULT_MAX_MESSAGE = 1 << 20     # bound on one reassembled message

EAP_REQUEST = 1
EAP_RESPONSE = 2


@dataclass(frozen=True)
class TncFrame:
    """One EAP-TNC/PT-EAP Type-Data frame."""

    flags: int                       # L/M/S bits only
    version: int = EAP_TNC_VERSION
    message_length: int | None = None
    data: bytes = b""

    @property
    def start(self) -> bool:
        return bool(self.flags & FLAG_S)

    @property
    def more(self) -> bool:
        return bool(self.flags & FLAG_M)

    @property
    def is_ack(self) -> bool:
        return not self.data and not self.flags & (FLAG_M | FLAG_S | FLAG_L)

    def encode(self) -> bytes:
        flags = (self.flags & (FLAG_M | FLAG_S)) | (self.version & VERSION_MASK)
        if self.message_length is not None:
            return (bytes([flags | FLAG_L]) + struct.pack("!I", self.message_length)
                    + self.data)
        return bytes([flags]) + self.data

    @classmethod
    def decode(cls, type_data: bytes) -> TncFrame:
        """Parse Type-Data; an empty payload is an acknowledgement (wpa_supplicant's form)."""
        if not type_data:
            return cls(0, EAP_TNC_VERSION)
        flags = type_data[0]
        if flags & 0x18:
            raise EapTncFramingError(f"reserved flag bits set: {flags:#04x}")
        if flags & FLAG_L:
            if len(type_data) < 5:
                raise EapTncFramingError("L flag without a 4-byte message length")
            length = struct.unpack_from("!I", type_data, 1)[0]
            return cls(flags & (FLAG_M | FLAG_S | FLAG_L), flags & VERSION_MASK, length,
                       bytes(type_data[5:]))
        return cls(flags & (FLAG_M | FLAG_S), flags & VERSION_MASK, None, bytes(type_data[1:]))


def start_frame(version: int = EAP_TNC_VERSION) -> bytes:
    """Type-Data of the server's first request (S flag, no data)."""
    return TncFrame(FLAG_S, version).encode()


def ack_frame(version: int = EAP_TNC_VERSION) -> bytes:
    """Type-Data acknowledging a fragment (flags octet only)."""
    return bytes([version & VERSION_MASK])


class Fragmenter:
    """Splits one outbound message into Type-Data frames of at most `max_fragment` bytes.

    The first fragment of a split message carries L and the total length; every fragment
    but the last carries M. Call next_frame() once per EAP round trip (after the peer's
    acknowledgement); `done` turns true once the last frame has been handed out.
    """

    def __init__(self, message: bytes, *, max_fragment: int = DEFAULT_FRAGMENT_SIZE,
                 version: int = EAP_TNC_VERSION, start: bool = False) -> None:
        if max_fragment < 6:
            raise ValueError("max_fragment must leave room for flags, length and data")
        self._msg = bytes(message)
        self._max = max_fragment
        self._version = version
        self._start = start
        self._pos = 0
        self._sent_any = False

    @property
    def done(self) -> bool:
        return self._sent_any and self._pos >= len(self._msg)

    def next_frame(self) -> bytes:
        if self.done:
            raise EapTncFramingError("message already sent completely")
        flags = FLAG_S if self._start and not self._sent_any else 0
        remaining = len(self._msg) - self._pos
        length: int | None = None
        if 1 + remaining <= self._max:
            chunk = self._msg[self._pos:]
        else:
            room = self._max - 1
            if self._pos == 0:
                length = len(self._msg)
                room -= 4
            chunk = self._msg[self._pos:self._pos + room]
            flags |= FLAG_M
        self._pos += len(chunk)
        self._sent_any = True
        return TncFrame(flags, self._version, length, chunk).encode()


def fragment(message: bytes, *, max_fragment: int = DEFAULT_FRAGMENT_SIZE,
             version: int = EAP_TNC_VERSION) -> list[bytes]:
    """All frames for `message` at once (for tests and simple callers)."""
    f = Fragmenter(message, max_fragment=max_fragment, version=version)
    out = [f.next_frame()]
    while not f.done:
        out.append(f.next_frame())
    return out


@dataclass(frozen=True)
class Reassembled:
    data: bytes
    start: bool


class Reassembler:
    """Collects inbound frames into whole messages, bounded by `max_message` bytes.

    feed() returns None while more fragments are expected (answer with ack_frame()), or
    the complete message. Any violation raises EapTncFramingError and resets the state.
    """

    def __init__(self, *, max_message: int = DEFAULT_MAX_MESSAGE,
                 version: int | None = EAP_TNC_VERSION) -> None:
        self._max = max_message
        self._version = version
        self._buf: bytearray | None = None
        self._expected = 0
        self._start = False

    @property
    def in_progress(self) -> bool:
        return self._buf is not None

    def _fail(self, detail: str) -> EapTncFramingError:
        self._buf = None
        return EapTncFramingError(detail)

    def feed(self, type_data: bytes) -> Reassembled | None:
        try:
            frame = TncFrame.decode(type_data)
        except EapTncFramingError as exc:  # a bad frame mid-message ends that message too
            raise self._fail(str(exc)) from None
        if type_data and self._version is not None and frame.version != self._version:
            raise self._fail(f"unsupported version {frame.version}")
        if frame.message_length is not None:
            if self._buf is not None:
                raise self._fail("L flag in a continuation fragment")
            if frame.message_length > self._max:
                raise self._fail(f"declared length {frame.message_length} over bound")
            if len(frame.data) > frame.message_length:
                raise self._fail("fragment longer than the declared message length")
        if self._buf is None:
            if frame.more:
                if frame.message_length is None:
                    raise self._fail("first fragment without a message length")
                self._buf = bytearray(frame.data)
                self._expected = frame.message_length
                self._start = frame.start
                return None
            if len(frame.data) > self._max:
                raise self._fail("message over bound")
            if frame.message_length is not None and frame.message_length != len(frame.data):
                raise self._fail("message length does not match the data")
            return Reassembled(frame.data, frame.start)
        if frame.start:
            raise self._fail("S flag inside a fragmented message")
        if len(self._buf) + len(frame.data) > self._expected:
            raise self._fail("fragments exceed the declared message length")
        self._buf += frame.data
        if frame.more:
            if len(self._buf) == self._expected:
                raise self._fail("M flag set but the message is complete")
            return None
        if len(self._buf) != self._expected:
            raise self._fail("last fragment leaves the message short")
        out = Reassembled(bytes(self._buf), self._start)
        self._buf = None
        return out


def detect_tnccs(data: bytes) -> Literal["tnccs11", "pb-tnc"]:
    """'tnccs11' for IF-TNCCS 1.1 XML, 'pb-tnc' for a PB-TNC batch; else TncCodecError."""
    head = bytes(data[:64])
    if head[:1] == b"\x02":
        return "pb-tnc"
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if stripped[:1] == b"<":
        return "tnccs11"
    raise TncCodecError("neither IF-TNCCS 1.1 XML nor a PB-TNC batch")


def build_eap(code: int, identifier: int, eap_type: int, type_data: bytes) -> bytes:
    """A whole EAP Request/Response packet around Type-Data."""
    return struct.pack("!BBHB", code, identifier & 0xFF, 5 + len(type_data),
                       eap_type) + type_data


def parse_eap(packet: bytes) -> tuple[int, int, int, bytes]:
    """(code, identifier, type, Type-Data) of an EAP Request/Response packet."""
    if len(packet) < 5:
        raise EapTncFramingError("EAP packet shorter than its header")
    code, ident, length, etype = struct.unpack_from("!BBHB", packet)
    if length != len(packet):
        raise EapTncFramingError(f"EAP length {length} != {len(packet)}")
    if code not in (EAP_REQUEST, EAP_RESPONSE):
        raise EapTncFramingError(f"EAP code {code} carries no type data")
    return code, ident, etype, bytes(packet[5:])
