"""Frames between the C shim and `nac-agent imc`: type u32 | length u32 | payload (big-endian).

Types below 0xFFFFFF00 are IF-IMC message types ((vendor << 8) | subtype) carrying a PA-TNC
message; vendor 0xFFFFFF (TNC_VENDORID_ANY) is never a real message's, so it marks control
frames. Every event from the shim is answered by zero or more message frames, then END.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

END = 0xFFFFFF00
BEGIN = 0xFFFFFF01          # payload: connection id u32
BATCH_ENDING = 0xFFFFFF02   # payload: connection id u32
STATE = 0xFFFFFF03          # payload: connection id u32, new state u32
CONTROL_MIN = END
MAX_PAYLOAD = 16 * 1024 * 1024
_HEADER = struct.Struct("!II")


class FramingError(ValueError):
    pass


def message_type(vendor: int, subtype: int) -> int:
    """IF-IMC message type of a PA-TNC message for (PA vendor, PA subtype)."""
    return ((vendor & 0xFFFFFF) << 8) | (subtype & 0xFF)


def encode(ftype: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(ftype, len(payload)) + payload


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            if left == n:
                return None
            raise FramingError("stream ended inside a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> tuple[int, bytes] | None:
    """The next frame, or None at a clean end of stream."""
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    ftype, length = _HEADER.unpack(header)
    if length > MAX_PAYLOAD:
        raise FramingError(f"frame of {length} bytes")
    payload = _read_exact(stream, length) if length else b""
    if payload is None:
        raise FramingError("stream ended inside a frame")
    return ftype, payload


def write_frame(stream: BinaryIO, ftype: int, payload: bytes = b"") -> None:
    stream.write(encode(ftype, payload))
