"""RADIUS Dynamic Authorization client (RFC 5176): Disconnect-Request and CoA-Request.

Two layers:
- a sans-I/O codec (``build_request``, ``parse_reply``): bytes in, bytes out, no sockets.
  Packets are built by hand here because a DAS request needs few attributes and its
  authenticator rules differ from Access-Request; every request carries a
  Message-Authenticator (RFC 3579 HMAC-MD5, computed with a zero Request Authenticator as
  RFC 5176 section 3 says) and every reply is checked (Response Authenticator and, when
  present, its Message-Authenticator).
- ``DasClient``: asyncio UDP with retransmission, and ``CoaDriver``, the NetworkDriver.

Vendor flavours: "generic" uses RFC 5176 only (re-authentication = Disconnect-Request,
after which the supplicant re-authenticates); "cisco" sends Cisco-AVPair
"subscriber:command=reauthenticate" / "subscriber:command=bounce-host-port" in a
CoA-Request, as Cisco IOS's CoA commands expect.

A NAK is a result, not an exception: ``ReauthResult(ok=False, error_cause=...)`` so the
Enforcer can fall back (e.g. Unsupported-Attribute -> SNMP/SSH VLAN change + bounce).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import re
import struct
import time
from dataclasses import dataclass, field

from enforcers.base import DriverError, NetworkDriver, NotSupportedError, ReauthResult
from enforcers.inventory import Switch

# Codes (RFC 5176 section 2.3)
DISCONNECT_REQUEST, DISCONNECT_ACK, DISCONNECT_NAK = 40, 41, 42
COA_REQUEST, COA_ACK, COA_NAK = 43, 44, 45
CODE_NAMES = {40: "Disconnect-Request", 41: "Disconnect-ACK", 42: "Disconnect-NAK",
              43: "CoA-Request", 44: "CoA-ACK", 45: "CoA-NAK"}

# Attributes used here (RFC 2865, 2866, 2868, 2869, 3162, 3579, 5176)
USER_NAME = 1
NAS_IP_ADDRESS = 4
NAS_PORT = 5
REPLY_MESSAGE = 18
VENDOR_SPECIFIC = 26
CALLING_STATION_ID = 31
NAS_IDENTIFIER = 32
ACCT_SESSION_ID = 44
EVENT_TIMESTAMP = 55
TUNNEL_TYPE = 64
TUNNEL_MEDIUM_TYPE = 65
MESSAGE_AUTHENTICATOR = 80
TUNNEL_PRIVATE_GROUP_ID = 81
NAS_PORT_ID = 87
ERROR_CAUSE = 101

VENDOR_CISCO = 9
CISCO_AVPAIR = 1

# Error-Cause values (RFC 5176 section 3.6)
ERROR_CAUSES = {
    201: "Residual-Session-Context-Removed",
    202: "Invalid-EAP-Packet",
    401: "Unsupported-Attribute",
    402: "Missing-Attribute",
    403: "NAS-Identification-Mismatch",
    404: "Invalid-Request",
    405: "Unsupported-Service",
    406: "Unsupported-Extension",
    407: "Invalid-Attribute-Value",
    501: "Administratively-Prohibited",
    502: "Request-Not-Routable",
    503: "Session-Context-Not-Found",
    504: "Session-Context-Not-Removable",
    505: "Other-Proxy-Processing-Error",
    506: "Resources-Unavailable",
    507: "Request-Initiated",
    508: "Multiple-Session-Selection-Unsupported",
}
# Causes where the same request may succeed later.
RETRYABLE_CAUSES = frozenset({505, 506})

Attr = tuple[int, bytes]


# ----------------------------------------------------------------------------- codec
def attr_int(t: int, v: int) -> Attr:
    return (t, struct.pack("!I", v))


def attr_str(t: int, v: str | bytes) -> Attr:
    return (t, v.encode() if isinstance(v, str) else v)


def attr_tagged_int(t: int, v: int, tag: int = 0) -> Attr:
    """Tunnel-Type / Tunnel-Medium-Type: one tag octet and a 3-octet value (RFC 2868)."""
    return (t, bytes([tag]) + v.to_bytes(3, "big"))


def attr_cisco_avpair(v: str) -> Attr:
    sub = bytes([CISCO_AVPAIR, 2 + len(v)]) + v.encode()
    return (VENDOR_SPECIFIC, struct.pack("!I", VENDOR_CISCO) + sub)


def vlan_attrs(vlan: int) -> list[Attr]:
    """RFC 3580 section 3.31 VLAN assignment: VLAN (13) over IEEE-802 (6), group id = VID."""
    return [attr_tagged_int(TUNNEL_TYPE, 13), attr_tagged_int(TUNNEL_MEDIUM_TYPE, 6),
            attr_str(TUNNEL_PRIVATE_GROUP_ID, str(vlan))]


def format_mac(mac: str) -> str:
    """Calling-Station-Id form of a MAC, RFC 3580 section 3.21: AA-BB-CC-DD-EE-FF."""
    hexdigits = re.sub(r"[^0-9A-Fa-f]", "", mac)
    if len(hexdigits) != 12:
        raise ValueError(f"not a MAC address: {mac!r}")
    return "-".join(hexdigits[i:i + 2] for i in range(0, 12, 2)).upper()


def _encode_attrs(attrs: list[Attr]) -> bytes:
    out = bytearray()
    for t, v in attrs:
        if len(v) > 253:
            raise ValueError(f"attribute {t} too long")
        out += bytes([t, 2 + len(v)]) + v
    return bytes(out)


def build_request(code: int, identifier: int, secret: bytes, attrs: list[Attr]) -> bytes:
    """Encode a Disconnect-/CoA-Request with Message-Authenticator and Request Authenticator."""
    body = _encode_attrs([a for a in attrs if a[0] != MESSAGE_AUTHENTICATOR])
    body += bytes([MESSAGE_AUTHENTICATOR, 18]) + bytes(16)
    length = 20 + len(body)
    if length > 4096:
        raise ValueError("request too long")
    header = struct.pack("!BBH", code, identifier, length)
    # RFC 5176 section 3: the HMAC is taken with a zero Request Authenticator.
    mac = hmac.new(secret, header + bytes(16) + body, hashlib.md5).digest()
    body = body[:-16] + mac
    auth = hashlib.md5(header + bytes(16) + body + secret).digest()
    return header + auth + body


def decode_attrs(data: bytes) -> list[Attr]:
    attrs: list[Attr] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise ValueError("truncated attribute header")
        t, ln = data[i], data[i + 1]
        if ln < 2 or i + ln > len(data):
            raise ValueError("bad attribute length")
        attrs.append((t, data[i + 2:i + ln]))
        i += ln
    return attrs


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    identifier: int
    attrs: list[Attr] = field(default_factory=list)

    def first(self, t: int) -> bytes | None:
        return next((v for a, v in self.attrs if a == t), None)

    @property
    def error_cause(self) -> int | None:
        v = self.first(ERROR_CAUSE)
        return struct.unpack("!I", v)[0] if v is not None and len(v) == 4 else None

    @property
    def is_ack(self) -> bool:
        return self.code in (DISCONNECT_ACK, COA_ACK)


def parse_reply(data: bytes, request: bytes, secret: bytes) -> Reply:
    """Decode and authenticate a reply to ``request``. Raises ValueError if it is not one."""
    if len(data) < 20:
        raise ValueError("short packet")
    code, ident, length = struct.unpack("!BBH", data[:4])
    if length < 20 or length > len(data):
        raise ValueError("bad length")
    data = data[:length]
    if ident != request[1]:
        raise ValueError("identifier mismatch")
    expected_codes = {DISCONNECT_REQUEST: (DISCONNECT_ACK, DISCONNECT_NAK),
                      COA_REQUEST: (COA_ACK, COA_NAK)}[request[0]]
    if code not in expected_codes:
        raise ValueError(f"unexpected code {code}")
    req_auth = request[4:20]
    expect = hashlib.md5(data[:4] + req_auth + data[20:] + secret).digest()
    if not hmac.compare_digest(expect, data[4:20]):
        raise ValueError("bad Response Authenticator (wrong secret?)")
    attrs = decode_attrs(data[20:])
    # If a Message-Authenticator is present it must verify (RFC 3579 section 3.2).
    pos = 20
    for t, v in attrs:
        if t == MESSAGE_AUTHENTICATOR:
            if len(v) != 16:
                raise ValueError("bad Message-Authenticator length")
            zeroed = data[:4] + req_auth + data[20:pos + 2] + bytes(16) + data[pos + 18:]
            mac = hmac.new(secret, zeroed, hashlib.md5).digest()
            if not hmac.compare_digest(mac, v):
                raise ValueError("bad Message-Authenticator")
        pos += 2 + len(v)
    return Reply(code, ident, attrs)


# ----------------------------------------------------------------------------- client
class _Proto(asyncio.DatagramProtocol):
    def __init__(self, client: DasClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        self.client._on_error(exc)


class DasClient:
    """UDP client for one DAS (NAS address + port). One socket, up to 256 requests in flight."""

    def __init__(self, address: str, port: int, secret: bytes, *, timeout: float = 1.0,
                 retries: int = 2) -> None:
        self.address = address
        self.port = port
        self.secret = secret
        self.timeout = timeout
        self.retries = retries
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, tuple[bytes, asyncio.Future[Reply]]] = {}
        self._next_id = int.from_bytes(os.urandom(1), "big")
        self._last_error: Exception | None = None

    async def open(self) -> None:
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        family = 6 if ipaddress.ip_address(self.address).version == 6 else 4
        import socket

        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self), remote_addr=(self.address, self.port),
            family=socket.AF_INET6 if family == 6 else socket.AF_INET)
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for _, fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    def _on_datagram(self, data: bytes) -> None:
        if len(data) < 20:
            return
        entry = self._pending.get(data[1])
        if entry is None:
            return
        request, fut = entry
        try:
            reply = parse_reply(data, request, self.secret)
        except ValueError:
            return  # forged or stale: keep waiting for the real one
        if not fut.done():
            fut.set_result(reply)

    def _on_error(self, exc: Exception) -> None:
        # ICMP port unreachable etc. arrive here on a connected socket.
        self._last_error = exc

    def _alloc_id(self) -> int:
        for _ in range(256):
            ident = self._next_id
            self._next_id = (self._next_id + 1) % 256
            if ident not in self._pending:
                return ident
        raise DriverError("256 DAS requests in flight", retryable=True)

    async def request(self, code: int, attrs: list[Attr]) -> Reply:
        """Send with retransmission; raise DriverError(retryable) on no reply."""
        await self.open()
        assert self._transport is not None
        ident = self._alloc_id()
        packet = build_request(code, ident, self.secret, attrs)
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[ident] = (packet, fut)
        self._last_error = None
        try:
            for _ in range(1 + max(0, self.retries)):
                self._transport.sendto(packet)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                except TimeoutError:
                    continue
            why = f" ({self._last_error})" if self._last_error else ""
            raise DriverError(
                f"no reply from DAS {self.address}:{self.port} to {CODE_NAMES[code]} after "
                f"{1 + self.retries} tries{why}", retryable=True)
        finally:
            self._pending.pop(ident, None)
            if not fut.done():
                fut.cancel()


# ----------------------------------------------------------------------------- driver
class CoaDriver(NetworkDriver):
    """RFC 5176 driver. Session identification: Calling-Station-Id (mac), Acct-Session-Id
    (session); NAS-Port-Id only when neither is given, because some DAS (hostapd) NAK any
    attribute they do not use for matching."""

    name = "coa"

    def __init__(self, switch: Switch) -> None:
        super().__init__(switch)
        if switch.coa is None:
            raise DriverError(f"{switch.name}: no [coa] section", retryable=False,
                              switch=switch.name)
        self.settings = switch.coa
        self.client = DasClient(
            self.settings.address or switch.address, self.settings.port,
            self.settings.secret.get_secret_value().encode(),
            timeout=self.settings.timeout, retries=self.settings.retries)

    async def open(self) -> None:
        try:
            await self.client.open()
        except OSError as exc:
            raise DriverError(f"{self.switch.name}: DAS socket: {exc}", retryable=True,
                              switch=self.switch.name) from exc

    async def close(self) -> None:
        self.client.close()

    def _identity(self, mac: str | None, port: str | None, session: str | None) -> list[Attr]:
        s = self.settings
        attrs: list[Attr] = []
        if s.nas_ip:
            attrs.append((NAS_IP_ADDRESS, ipaddress.IPv4Address(s.nas_ip).packed))
        if s.nas_identifier:
            attrs.append(attr_str(NAS_IDENTIFIER, s.nas_identifier))
        if mac:
            attrs.append(attr_str(CALLING_STATION_ID, format_mac(mac)))
        if session:
            attrs.append(attr_str(ACCT_SESSION_ID, session))
        if port and not (mac or session):
            attrs.append(attr_str(NAS_PORT_ID, port))
        if not (mac or session or port):
            raise DriverError("CoA needs a MAC, a session id or a port", retryable=False,
                              switch=self.switch.name)
        if s.event_timestamp:
            attrs.append(attr_int(EVENT_TIMESTAMP, int(time.time())))
        return attrs

    async def _send(self, code: int, attrs: list[Attr], method: str) -> ReauthResult:
        t0 = time.perf_counter()
        try:
            reply = await self.client.request(code, attrs)
        except DriverError as exc:
            exc.switch = self.switch.name
            raise
        except OSError as exc:
            raise DriverError(f"{self.switch.name}: DAS send: {exc}", retryable=True,
                              switch=self.switch.name) from exc
        elapsed = time.perf_counter() - t0
        cause = reply.error_cause
        grouped: dict[int, list[bytes]] = {}
        for t, v in reply.attrs:
            grouped.setdefault(t, []).append(v)
        name = ERROR_CAUSES.get(cause) if cause is not None else None
        detail = CODE_NAMES.get(reply.code, str(reply.code))
        if cause is not None:
            detail += f" Error-Cause {cause} ({name or 'unknown'})"
        return ReauthResult(ok=reply.is_ack, method=method, code=reply.code,
                            error_cause=cause, error_cause_name=name, detail=detail,
                            elapsed=elapsed, attributes=grouped)

    async def disconnect(self, mac: str | None = None, port: str | None = None,
                         session: str | None = None) -> ReauthResult:
        """Disconnect-Request for the session; ACK means the NAS tore it down."""
        return await self._send(DISCONNECT_REQUEST, self._identity(mac, port, session),
                                "disconnect")

    async def change_vlan(self, vlan: int, mac: str | None = None, port: str | None = None,
                          session: str | None = None) -> ReauthResult:
        """CoA-Request carrying RFC 3580 VLAN attributes for the live session."""
        attrs = self._identity(mac, port, session) + vlan_attrs(vlan)
        return await self._send(COA_REQUEST, attrs, "coa-vlan")

    async def reauthenticate(self, mac: str | None = None, port: str | None = None,
                             session: str | None = None) -> ReauthResult:
        """cisco: CoA "subscriber:command=reauthenticate"; generic: Disconnect-Request."""
        if self.settings.flavour == "cisco":
            attrs = self._identity(mac, port, session)
            attrs.append(attr_cisco_avpair("subscriber:command=reauthenticate"))
            return await self._send(COA_REQUEST, attrs, "coa-reauthenticate")
        return await self.disconnect(mac, port, session)

    async def bounce_port(self, port: str, mac: str | None = None,
                          session: str | None = None) -> None:
        """cisco only: CoA "subscriber:command=bounce-host-port"; raises DriverError on NAK."""
        if self.settings.flavour != "cisco":
            raise NotSupportedError("generic RFC 5176 has no port bounce", switch=self.switch.name)
        attrs = self._identity(mac, port, session)
        attrs.append(attr_cisco_avpair("subscriber:command=bounce-host-port"))
        res = await self._send(COA_REQUEST, attrs, "coa-bounce")
        if not res.ok:
            raise DriverError(f"{self.switch.name}: bounce refused: {res.detail}",
                              retryable=res.error_cause in RETRYABLE_CAUSES,
                              switch=self.switch.name, error_cause=res.error_cause)

    async def set_port_vlan(self, port: str, vlan: int) -> None:
        """CoA-Request with VLAN attributes for the session on NAS-Port-Id ``port``."""
        res = await self.change_vlan(vlan, port=port)
        if not res.ok:
            raise DriverError(f"{self.switch.name}: VLAN change refused: {res.detail}",
                              retryable=res.error_cause in RETRYABLE_CAUSES,
                              switch=self.switch.name, error_cause=res.error_cause)
