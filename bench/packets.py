"""Pre-built RADIUS Access-Requests for radload.

Two kinds, each request distinct (own authenticator, own identifier in
sequence) so that no server mistakes one for a retransmission:

- mab: MAC authentication bypass as a switch sends it: User-Name and
  Calling-Station-Id the MAC (aa-bb-cc-dd-ee-ff), Service-Type Call-Check,
  NAS-Port-Type Ethernet, NAS-IP-Address 127.0.0.1, NAS-Port.
- pap: User-Name demo, User-Password demo-password hidden per RFC 2865 5.2.

Both carry a Message-Authenticator (RFC 3579 3.2), first, as BlastRADIUS
(CVE-2024-3596) guidance recommends. Output file: each packet prefixed by
its length in two octets, network order.

    python3 bench/packets.py --mode mab -n 100000 -o /tmp/mab.bin
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import struct
from collections.abc import Iterator
from pathlib import Path

ACCESS_REQUEST = 1
USER_NAME = 1
USER_PASSWORD = 2
NAS_IP_ADDRESS = 4
NAS_PORT = 5
SERVICE_TYPE = 6
CALLING_STATION_ID = 31
NAS_PORT_TYPE = 61
MESSAGE_AUTHENTICATOR = 80
CALL_CHECK = 10
ETHERNET = 15

PAP_USER = "demo"
PAP_PASSWORD = "demo-password"
DEFAULT_SECRET = b"testing123"


def attr(code: int, value: bytes) -> bytes:
    if not 0 < len(value) <= 253:
        raise ValueError(f"attribute {code}: value of {len(value)} octets")
    return struct.pack("!BB", code, 2 + len(value)) + value


def u32(code: int, value: int) -> bytes:
    return attr(code, struct.pack("!I", value))


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 5.2: pad to 16 octets, XOR each block with
    MD5(secret + previous ciphertext block, the authenticator first)."""
    if len(password) > 128:
        raise ValueError("password longer than 128 octets")
    padded = password.ljust(max(16, (len(password) + 15) // 16 * 16), b"\0")
    out = bytearray()
    prev = authenticator
    for i in range(0, len(padded), 16):
        key = hashlib.md5(secret + prev).digest()
        # XOR as 128-bit integers: far faster than per-octet in Python
        plain = int.from_bytes(padded[i : i + 16], "big")
        block = (plain ^ int.from_bytes(key, "big")).to_bytes(16, "big")
        out += block
        prev = block
    return bytes(out)


def access_request(ident: int, attrs: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """An Access-Request whose first attribute is a Message-Authenticator,
    computed over the packet with that attribute zeroed (RFC 3579 3.2)."""
    body = attr(MESSAGE_AUTHENTICATOR, b"\0" * 16) + attrs
    header = struct.pack("!BBH", ACCESS_REQUEST, ident, 20 + len(body)) + authenticator
    mac = hmac.new(secret, header + body, hashlib.md5).digest()
    return header + body[:2] + mac + body[18:]


def mac_address(i: int) -> str:
    """The i-th test MAC: locally administered (02-...), unique for i < 2**32."""
    return (b"\x02\x00" + struct.pack("!I", i)).hex("-")


def mab_request(i: int, secret: bytes, authenticator: bytes) -> bytes:
    mac = mac_address(i).encode()
    attrs = (
        attr(USER_NAME, mac)
        + attr(CALLING_STATION_ID, mac)
        + u32(SERVICE_TYPE, CALL_CHECK)
        + attr(NAS_IP_ADDRESS, bytes([127, 0, 0, 1]))
        + u32(NAS_PORT, i % 48 + 1)
        + u32(NAS_PORT_TYPE, ETHERNET)
    )
    return access_request(i % 256, attrs, secret, authenticator)


def pap_request(i: int, secret: bytes, authenticator: bytes) -> bytes:
    attrs = (
        attr(USER_NAME, PAP_USER.encode())
        + attr(USER_PASSWORD, hide_password(PAP_PASSWORD.encode(), secret, authenticator))
        + attr(NAS_IP_ADDRESS, bytes([127, 0, 0, 1]))
        + u32(NAS_PORT, i % 48 + 1)
    )
    return access_request(i % 256, attrs, secret, authenticator)


BUILDERS = {"mab": mab_request, "pap": pap_request}


def build(mode: str, count: int, secret: bytes = DEFAULT_SECRET, first: int = 0) -> list[bytes]:
    """Requests number first .. first+count-1 (the number picks the MAC,
    the NAS-Port and, mod 256, the identifier)."""
    make = BUILDERS[mode]
    # one urandom call: fresh, unpredictable authenticators, built fast
    randomness = os.urandom(16 * count)
    return [make(first + i, secret, randomness[16 * i : 16 * i + 16]) for i in range(count)]


def write(path: Path, packets: list[bytes]) -> None:
    with path.open("wb") as f:
        for p in packets:
            f.write(struct.pack("!H", len(p)) + p)


def read(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("!H", data, pos)
        yield data[pos + 2 : pos + 2 + length]
        pos += 2 + length


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(BUILDERS), default="mab")
    ap.add_argument("-n", "--count", type=int, default=10000)
    ap.add_argument("--secret", default=DEFAULT_SECRET.decode())
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    write(args.output, build(args.mode, args.count, args.secret.encode()))


if __name__ == "__main__":
    main()
