"""EAP packet codec (RFC 3748 section 4): bytes in, values out, nothing else."""

from __future__ import annotations

import struct
from dataclasses import dataclass

REQUEST, RESPONSE, SUCCESS, FAILURE = 1, 2, 3, 4

# Method types (IANA "EAP Method Types").
IDENTITY, NOTIFICATION, NAK, MD5 = 1, 2, 3, 4
TLS, TTLS, PEAP, MSCHAPV2, TLV = 13, 21, 25, 26, 33
EXPANDED = 254

HEADER = struct.Struct("!BBH")


class EapError(ValueError):
    """The bytes are not a well-formed EAP packet."""


@dataclass(slots=True)  # not frozen: one or two per round, and frozen init is slower
class EapPacket:
    code: int
    identifier: int
    type: int | None = None  # only Request/Response carry a type
    data: bytes = b""  # type-data after the type octet

    def encode(self) -> bytes:
        if self.code in (SUCCESS, FAILURE):
            return HEADER.pack(self.code, self.identifier, 4)
        assert self.type is not None
        return (
            HEADER.pack(self.code, self.identifier, 5 + len(self.data))
            + bytes([self.type])
            + self.data
        )


def parse(raw: bytes) -> EapPacket:
    """Decode one packet; octets past Length are padding and ignored (RFC 3748 4.1)."""
    if len(raw) < 4:
        raise EapError("truncated header")
    code, ident, length = HEADER.unpack_from(raw)
    if length < 4 or length > len(raw):
        raise EapError(f"bad length {length} for {len(raw)} octets")
    if code in (SUCCESS, FAILURE):
        if length != 4:
            raise EapError("Success/Failure with data")
        return EapPacket(code, ident)
    if code not in (REQUEST, RESPONSE):
        raise EapError(f"unknown code {code}")
    if length < 5:
        raise EapError("Request/Response without type")
    return EapPacket(code, ident, raw[4], bytes(raw[5:length]))


# The encoders below build the octets straight away: every round sends one, and a frozen
# dataclass instance per packet cost more than the packing.
_REQUEST_HEAD = struct.Struct("!BBHB")


def request(ident: int, type_: int, data: bytes = b"") -> bytes:
    return _REQUEST_HEAD.pack(REQUEST, ident & 0xFF, 5 + len(data), type_) + data


def success(ident: int) -> bytes:
    return HEADER.pack(SUCCESS, ident & 0xFF, 4)


def failure(ident: int) -> bytes:
    return HEADER.pack(FAILURE, ident & 0xFF, 4)
