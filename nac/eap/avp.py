"""Diameter-style AVPs carried inside the EAP-TTLS tunnel (RFC 5281 10.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

FLAG_VENDOR, FLAG_MANDATORY = 0x80, 0x40
MICROSOFT = 311

USER_NAME, USER_PASSWORD, EAP_MESSAGE = 1, 2, 79
MS_CHAP_CHALLENGE, MS_CHAP2_RESPONSE, MS_CHAP2_SUCCESS, MS_CHAP_ERROR = 11, 25, 26, 2


class AvpError(ValueError):
    pass


@dataclass(slots=True)  # not frozen: a few per TTLS round, and frozen init is slower
class Avp:
    code: int
    value: bytes
    vendor: int = 0
    mandatory: bool = True

    def encode(self) -> bytes:
        flags = (FLAG_VENDOR if self.vendor else 0) | (FLAG_MANDATORY if self.mandatory else 0)
        head = 12 if self.vendor else 8
        length = head + len(self.value)
        out = struct.pack("!IB", self.code, flags) + length.to_bytes(3, "big")
        if self.vendor:
            out += struct.pack("!I", self.vendor)
        return out + self.value + b"\x00" * (-length % 4)


def parse(data: bytes) -> list[Avp]:
    avps: list[Avp] = []
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise AvpError("truncated AVP header")
        code, flags = struct.unpack_from("!IB", data, pos)
        length = int.from_bytes(data[pos + 5 : pos + 8], "big")
        head = 12 if flags & FLAG_VENDOR else 8
        if length < head or pos + length > len(data):
            raise AvpError(f"bad AVP length {length}")
        vendor = struct.unpack_from("!I", data, pos + 8)[0] if flags & FLAG_VENDOR else 0
        avps.append(
            Avp(code, bytes(data[pos + head : pos + length]), vendor, bool(flags & FLAG_MANDATORY))
        )
        pos += length + (-length % 4)
    return avps


def find(avps: list[Avp], code: int, vendor: int = 0) -> bytes | None:
    for a in avps:
        if a.code == code and a.vendor == vendor:
            return a.value
    return None
