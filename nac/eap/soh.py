"""Statement of Health (SoH) for PEAP clients, sans-I/O: what travels, what it says.

The frames ([MS-PEAP] 2.2.5, 2.2.8): the server's SoH EAP Extensions Method request is an
expanded EAP type (254, vendor 0x137, vendor type 0x21) whose data is a Microsoft
Vendor-Specific TLV (type 7, vendor 311) holding an empty SoH Request TLV (vendor TLV 2).
The peer answers in the same method with an SoH TLV (vendor TLV 1) holding its SoH
message; the server's SoH Response (SoHR, vendor TLV 3) rides in the EAP-TLV packet that
carries the Result TLV.

The SoH message ([TNC-IF-TNCCS-SOH] 3.5, [MS-SOH]): a Vendor-Specific TLV (vendor 311) with
an inner type and length; for version 2 a mode sub-header (correlation ID, intent, content
type); then the SSoH, the NAP agent's own statement (System-Health-ID 0x013700 followed by
a Microsoft Vendor-Specific TLV of MS-* attributes: packet info, machine inventory, machine
name, correlation ID, quarantine state, ...), then one SoH report per System Health Agent,
each a System-Health-ID TLV followed by that agent's TLVs (the Windows SHA, 0x013780,
reports health classes with their client status codes, [MS-WSH] 2.2).

Every length is checked against the bytes that carry it; anything a peer sends either
parses or raises SohError, never another exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MS_VENDOR = 0x137  # 311, Microsoft
EXPANDED = 254
SOH_METHOD = 0x21  # vendor type of the SoH EAP Extensions Method
VENDOR_TLV = 7
SOH_TLV, SOH_REQUEST_TLV, SOH_RESPONSE_TLV = 1, 2, 3

# SoH-level TLV types ([MS-SOH] 2.2.4 / TNC-IF-TNCCS-SOH attribute types)
SYSTEM_HEALTH_ID = 2
COMPLIANCE_RESULT_CODES = 4
HEALTH_CLASS = 8
SOFTWARE_VERSION = 9
PRODUCT_NAME = 10
HEALTH_CLASS_STATUS = 11
FAILURE_CATEGORY = 14

SSOH_ID = MS_VENDOR << 8  # the NAP agent's own statement
WSHA_ID = (MS_VENDOR << 8) | 0x80  # the Windows Security Health Agent ([MS-WSH] 2.2.4)

# MS-* attributes inside the SSoH's Vendor-Specific TLV: a one-octet type, then a layout
# fixed by the type ([MS-SOH] 2.2.5).
MS_MACHINE_INVENTORY = 1
MS_QUARANTINE_STATE = 2
MS_PACKET_INFO = 3
MS_SYSTEM_GENERATED_IDS = 4
MS_MACHINE_NAME = 5
MS_CORRELATION_ID = 6
MS_INSTALLED_SHVS = 7
MS_MACHINE_INVENTORY_EX = 8

# Health classes of the Windows SHA ([MS-WSH] 2.2.7).
HEALTH_CLASSES = {0: "firewall", 1: "antivirus", 2: "antispyware", 3: "automatic_updates",
                  4: "security_updates"}

MAX_SOH = 16 * 1024  # an SoH is a few hundred octets; refuse anything absurd up front
MAX_TLVS = 256
CORRELATION_LEN = 24

_TLV = struct.Struct("!HH")
_U32 = struct.Struct("!I")


class SohError(ValueError):
    """Malformed SoH framing or message (the text says where)."""


@dataclass(frozen=True, slots=True)
class Tlv:
    type: int  # 14 bits
    value: bytes
    mandatory: bool = False

    def encode(self) -> bytes:
        if len(self.value) > 0xFFFF:
            raise SohError(f"TLV {self.type}: value of {len(self.value)} octets")
        head = (0x8000 if self.mandatory else 0) | (self.type & 0x3FFF)
        return _TLV.pack(head, len(self.value)) + self.value


def parse_tlvs(data: bytes, where: str = "SoH") -> list[Tlv]:
    """A run of TLVs that fills `data` exactly."""
    out: list[Tlv] = []
    pos = 0
    while pos < len(data):
        if len(out) >= MAX_TLVS:
            raise SohError(f"{where}: more than {MAX_TLVS} TLVs")
        if pos + 4 > len(data):
            raise SohError(f"{where}: {len(data) - pos} stray octets after the last TLV")
        head, length = _TLV.unpack_from(data, pos)
        end = pos + 4 + length
        if end > len(data):
            raise SohError(f"{where}: TLV {head & 0x3FFF} says {length} octets, "
                           f"{len(data) - pos - 4} left")
        out.append(Tlv(head & 0x3FFF, data[pos + 4:end], bool(head & 0x8000)))
        pos = end
    return out


def vendor_tlv(tlvs: list[Tlv], vendor: int = MS_VENDOR) -> bytes:
    """A Vendor-Specific TLV (type 7) carrying `tlvs` under `vendor`."""
    return Tlv(VENDOR_TLV, _U32.pack(vendor) + b"".join(t.encode() for t in tlvs)).encode()


def _vendor_value(tlv: Tlv, where: str) -> bytes:
    if tlv.type != VENDOR_TLV or len(tlv.value) < 4:
        raise SohError(f"{where}: expected a Vendor-Specific TLV, got type {tlv.type}")
    vendor = _U32.unpack_from(tlv.value)[0]
    if vendor != MS_VENDOR:
        raise SohError(f"{where}: vendor {vendor}, expected Microsoft ({MS_VENDOR})")
    return tlv.value[4:]


# -- the PEAP frames --------------------------------------------------------------------

def soh_request() -> bytes:
    """Type-data of the server's SoH EAP Extensions Method request (type octet included)."""
    return (bytes([EXPANDED]) + MS_VENDOR.to_bytes(3, "big") + _U32.pack(SOH_METHOD)
            + vendor_tlv([Tlv(SOH_REQUEST_TLV, b"")]))


def is_soh_method(type_data: bytes) -> bool:
    """Whether inner type-data (type octet first) is the SoH EAP Extensions Method."""
    return (len(type_data) >= 8 and type_data[0] == EXPANDED
            and int.from_bytes(type_data[1:4], "big") == MS_VENDOR
            and _U32.unpack_from(type_data, 4)[0] == SOH_METHOD)


def is_expanded_nak(type_data: bytes) -> bool:
    """An expanded NAK (RFC 3748 5.3.2: type 254, vendor 0, vendor type 3)."""
    return (len(type_data) >= 8 and type_data[0] == EXPANDED and type_data[1:4] == bytes(3)
            and _U32.unpack_from(type_data, 4)[0] == 3)


def parse_soh_response(type_data: bytes) -> bytes:
    """The SoH message from the peer's SoH EAP Extensions Method response (type octet
    first). SohError when it is not that method or carries no SoH TLV."""
    if len(type_data) > MAX_SOH + 64:
        raise SohError(f"SoH response of {len(type_data)} octets")
    if not is_soh_method(type_data):
        raise SohError("not an SoH EAP Extensions Method response")
    outer = parse_tlvs(type_data[8:], "SoH response")
    for tlv in outer:
        if tlv.type != VENDOR_TLV:
            continue
        for inner in parse_tlvs(_vendor_value(tlv, "SoH response"), "SoH response vendor TLV"):
            if inner.type == SOH_TLV:
                return inner.value
    raise SohError("SoH response without an SoH TLV")


def soh_response_tlv(sohr: bytes) -> bytes:
    """The SoH Response TLV (inside a Microsoft Vendor-Specific TLV) for the EAP-TLV packet
    that carries the Result TLV."""
    return vendor_tlv([Tlv(SOH_RESPONSE_TLV, sohr)])


# -- the SoH message --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MachineInventory:
    os_major: int
    os_minor: int
    os_build: int
    sp_major: int
    sp_minor: int
    arch: int  # processor architecture ([MS-SOH]: 0 x86, 9 x64, ...)


@dataclass(frozen=True, slots=True)
class QuarantineState:
    flags: int  # low bits: the quarantine state (1 not restricted, 2 probation, 3 restricted)
    probation_time: int  # FILETIME
    url: bytes

    @property
    def state(self) -> int:
        return self.flags & 0x3


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """One health class of the Windows SHA with its client status code ([MS-WSH] 2.2.9)."""

    health_class: int
    status: int | None  # None: the class was reported without a status
    product: str | None = None

    @property
    def name(self) -> str:
        return HEALTH_CLASSES.get(self.health_class, f"class-{self.health_class}")

    @property
    def error(self) -> bool:  # 0xC0......: the SHA could not tell (e.g. product not installed)
        return self.status is None or (self.status >> 24) == 0xC0

    @property
    def enabled(self) -> bool:
        return not self.error and bool(self.status and self.status & 0x1)

    @property
    def up_to_date(self) -> bool:
        return not self.error and bool(self.status and self.status & 0x2)


@dataclass(frozen=True, slots=True)
class ShaReport:
    system_health_id: int
    tlvs: tuple[Tlv, ...]

    def health(self) -> list[HealthStatus]:
        """Health classes with their status, for the Windows SHA's layout: a Health-Class
        TLV, then (optionally) product name and Health-Class-Status TLVs of that class."""
        out: list[HealthStatus] = []
        current: int | None = None
        status: int | None = None
        product: str | None = None
        for tlv in self.tlvs:
            if tlv.type == HEALTH_CLASS:
                if current is not None:
                    out.append(HealthStatus(current, status, product))
                if len(tlv.value) != 1:
                    raise SohError(f"Health-Class TLV of {len(tlv.value)} octets")
                current, status, product = tlv.value[0], None, None
            elif current is not None and tlv.type == HEALTH_CLASS_STATUS:
                if len(tlv.value) != 4:
                    raise SohError(f"Health-Class-Status TLV of {len(tlv.value)} octets")
                status = _U32.unpack(tlv.value)[0]
            elif current is not None and tlv.type == PRODUCT_NAME:
                product = _text(tlv.value)
        if current is not None:
            out.append(HealthStatus(current, status, product))
        return out


@dataclass(frozen=True, slots=True)
class Soh:
    inner_type: int  # 1 or 2 (wpa_supplicant's tnc=soh1 / soh2)
    correlation_id: bytes | None = None  # mode sub-header's, else MS-CorrelationId's
    intent: int | None = None
    content_type: int | None = None
    packet_info: int | None = None
    machine_inventory: MachineInventory | None = None
    product_type: int | None = None  # MS-Machine-Inventory-Ex: 1 workstation, 2 DC, 3 server
    machine_name: str | None = None
    quarantine_state: QuarantineState | None = None
    system_ids: bytes | None = None
    reports: tuple[ShaReport, ...] = field(default_factory=tuple)


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _need(data: bytes, pos: int, n: int, what: str) -> int:
    if pos + n > len(data):
        raise SohError(f"SSoH {what}: needs {n} octets, {len(data) - pos} left")
    return pos + n


def _ms_attributes(data: bytes) -> dict[str, object]:
    """The MS-* attributes of the SSoH ([MS-SOH] 2.2.5), each a type octet and a layout the
    type fixes. An unknown type has no length to skip by: SohError."""
    out: dict[str, object] = {}
    pos = 0
    while pos < len(data):
        kind = data[pos]
        pos += 1
        if kind == MS_PACKET_INFO:
            end = _need(data, pos, 1, "MS-Packet-Info")
            out["packet_info"] = data[pos]
        elif kind == MS_MACHINE_INVENTORY:
            end = _need(data, pos, 18, "MS-Machine-Inventory")
            out["machine_inventory"] = MachineInventory(*struct.unpack_from("!IIIHHH", data, pos))
        elif kind == MS_MACHINE_INVENTORY_EX:
            end = _need(data, pos, 5, "MS-Machine-Inventory-Ex")
            out["product_type"] = data[pos + 4]
        elif kind == MS_CORRELATION_ID:
            end = _need(data, pos, CORRELATION_LEN, "MS-CorrelationId")
            out["correlation_id"] = data[pos:end]
        elif kind == MS_QUARANTINE_STATE:
            fixed = _need(data, pos, 12, "MS-Quarantine-State")
            flags, prob, url_len = struct.unpack_from("!HQH", data, pos)
            end = _need(data, fixed, url_len, "MS-Quarantine-State URL")
            out["quarantine_state"] = QuarantineState(flags, prob, data[fixed:end])
        elif kind in (MS_MACHINE_NAME, MS_SYSTEM_GENERATED_IDS, MS_INSTALLED_SHVS):
            start = _need(data, pos, 2, f"MS attribute {kind}")
            (size,) = struct.unpack_from("!H", data, pos)
            end = _need(data, start, size, f"MS attribute {kind}")
            if kind == MS_MACHINE_NAME:
                out["machine_name"] = _text(data[start:end])
            elif kind == MS_SYSTEM_GENERATED_IDS:
                out["system_ids"] = data[start:end]
        else:
            raise SohError(f"SSoH: unknown MS attribute type {kind} at octet {pos - 1}")
        pos = end
    return out


def parse_soh(data: bytes) -> Soh:
    """An SoH message (the SoH TLV's value)."""
    if len(data) > MAX_SOH:
        raise SohError(f"SoH of {len(data)} octets (at most {MAX_SOH})")
    top = parse_tlvs(data, "SoH")
    if len(top) != 1:
        raise SohError(f"SoH: {len(top)} top-level TLVs, expected one Vendor-Specific TLV")
    body = _vendor_value(top[0], "SoH")
    if len(body) < 4:
        raise SohError("SoH: no inner type and length")
    inner_type, inner_len = _TLV.unpack_from(body)
    if inner_len != len(body) - 4:
        raise SohError(f"SoH: inner length {inner_len}, {len(body) - 4} octets follow")
    tlvs = parse_tlvs(body[4:], "SoH body")
    correlation = intent = content = None
    if tlvs and tlvs[0].type == VENDOR_TLV:  # the mode sub-header (SoH version 2)
        mode = _vendor_value(tlvs[0], "SoH mode sub-header")
        if len(mode) != CORRELATION_LEN + 2:
            raise SohError(f"SoH mode sub-header of {len(mode)} octets, expected 26")
        correlation, intent, content = mode[:CORRELATION_LEN], mode[24], mode[25]
        tlvs = tlvs[1:]
    if not tlvs or tlvs[0].type != SYSTEM_HEALTH_ID:
        raise SohError("SoH: the SSoH does not start with a System-Health-ID TLV")
    groups: list[tuple[int, list[Tlv]]] = []
    for tlv in tlvs:
        if tlv.type == SYSTEM_HEALTH_ID:
            if len(tlv.value) != 4:
                raise SohError(f"System-Health-ID TLV of {len(tlv.value)} octets")
            groups.append((_U32.unpack(tlv.value)[0], []))
        else:
            groups[-1][1].append(tlv)
    ssoh_id, ssoh = groups[0]
    if ssoh_id != SSOH_ID:
        raise SohError(f"SoH: first System-Health-ID is {ssoh_id:#x}, expected {SSOH_ID:#x}")
    attrs: dict[str, object] = {}
    for tlv in ssoh:
        if tlv.type == VENDOR_TLV:
            attrs.update(_ms_attributes(_vendor_value(tlv, "SSoH")))
    reports = tuple(ShaReport(sid, tuple(ts)) for sid, ts in groups[1:])
    for report in reports:  # malformed health classes fail here, not in a later reader
        report.health()
    return Soh(
        inner_type=inner_type,
        correlation_id=correlation or attrs.get("correlation_id"),  # type: ignore[arg-type]
        intent=intent,
        content_type=content,
        packet_info=attrs.get("packet_info"),  # type: ignore[arg-type]
        machine_inventory=attrs.get("machine_inventory"),  # type: ignore[arg-type]
        product_type=attrs.get("product_type"),  # type: ignore[arg-type]
        machine_name=attrs.get("machine_name"),  # type: ignore[arg-type]
        quarantine_state=attrs.get("quarantine_state"),  # type: ignore[arg-type]
        system_ids=attrs.get("system_ids"),  # type: ignore[arg-type]
        reports=reports,
    )


def build_soh(soh: Soh) -> bytes:
    """The SoH message for `soh` (what a peer sends; for tests and labs)."""
    body: list[Tlv] = []
    if soh.inner_type == 2 or soh.intent is not None:
        corr = (soh.correlation_id or bytes(CORRELATION_LEN)).ljust(CORRELATION_LEN, b"\0")
        body.append(Tlv(VENDOR_TLV, _U32.pack(MS_VENDOR) + corr[:CORRELATION_LEN]
                        + bytes([soh.intent or 0, soh.content_type or 0])))
    body.append(Tlv(SYSTEM_HEALTH_ID, _U32.pack(SSOH_ID)))
    ms = b""
    if soh.packet_info is not None:
        ms += bytes([MS_PACKET_INFO, soh.packet_info])
    if soh.machine_inventory is not None:
        m = soh.machine_inventory
        ms += bytes([MS_MACHINE_INVENTORY]) + struct.pack(
            "!IIIHHH", m.os_major, m.os_minor, m.os_build, m.sp_major, m.sp_minor, m.arch)
    if soh.machine_name is not None:
        name = soh.machine_name.encode() + b"\0"
        ms += bytes([MS_MACHINE_NAME]) + struct.pack("!H", len(name)) + name
    if soh.correlation_id is not None and soh.inner_type != 2:
        ms += bytes([MS_CORRELATION_ID]) + soh.correlation_id.ljust(24, b"\0")[:24]
    if soh.quarantine_state is not None:
        q = soh.quarantine_state
        ms += bytes([MS_QUARANTINE_STATE]) + struct.pack("!HQH", q.flags, q.probation_time,
                                                         len(q.url)) + q.url
    if soh.system_ids is not None:
        ms += bytes([MS_SYSTEM_GENERATED_IDS]) + struct.pack("!H", len(soh.system_ids)) \
            + soh.system_ids
    if soh.product_type is not None:
        ms += bytes([MS_MACHINE_INVENTORY_EX]) + bytes(4) + bytes([soh.product_type])
    if ms:
        body.append(Tlv(VENDOR_TLV, _U32.pack(MS_VENDOR) + ms))
    for report in soh.reports:
        body.append(Tlv(SYSTEM_HEALTH_ID, _U32.pack(report.system_health_id)))
        body.extend(report.tlvs)
    inner = b"".join(t.encode() for t in body)
    return Tlv(VENDOR_TLV, _U32.pack(MS_VENDOR) + _TLV.pack(soh.inner_type, len(inner))
               + inner).encode()


def build_sohr(soh: Soh) -> bytes:
    """The server's SoH Response to `soh` ([TNC-IF-TNCCS-SOH] 3.6): the same framing, the
    peer's mode sub-header echoed (correlation ID, intent, content type; without one, the
    correlation ID as MS-CorrelationId), and an SSoHR that says only that this is a
    response (MS-Packet-Info with the request bit clear), plus an
    empty compliance result per reporting agent. No quarantine state is claimed: the
    segment is decided when the tunnel ends (the Access-Accept's VLAN enforces it), after
    this message has gone."""
    body: list[Tlv] = []
    if soh.inner_type == 2 or soh.intent is not None:
        corr = (soh.correlation_id or bytes(CORRELATION_LEN)).ljust(CORRELATION_LEN, b"\0")
        body.append(Tlv(VENDOR_TLV, _U32.pack(MS_VENDOR) + corr[:CORRELATION_LEN]
                        + bytes([soh.intent or 0, soh.content_type or 0])))
    body.append(Tlv(SYSTEM_HEALTH_ID, _U32.pack(SSOH_ID)))
    version = (soh.packet_info if soh.packet_info is not None else 0x01) & 0x0F
    ms = bytes([MS_PACKET_INFO, version])
    if soh.correlation_id is not None and not (soh.inner_type == 2 or soh.intent is not None):
        ms += bytes([MS_CORRELATION_ID]) + soh.correlation_id  # no mode sub-header to echo it
    body.append(Tlv(VENDOR_TLV, _U32.pack(MS_VENDOR) + ms))
    for report in soh.reports:
        body.append(Tlv(SYSTEM_HEALTH_ID, _U32.pack(report.system_health_id)))
        body.append(Tlv(COMPLIANCE_RESULT_CODES, _U32.pack(0)))
    inner = b"".join(t.encode() for t in body)
    return Tlv(VENDOR_TLV, _U32.pack(MS_VENDOR) + _TLV.pack(soh.inner_type, len(inner))
               + inner).encode()


# -- what the policy reads --------------------------------------------------------------

_PRODUCT = {1: "workstation", 2: "domain_controller", 3: "server"}


def posture_of(soh: Soh) -> dict[str, object]:
    """The posture document (eap_ext/POSTURE_SCHEMA.md, schema 1) an SoH amounts to.

    os: family "windows", id "windows", version_id "MAJOR.MINOR.BUILD" from
    MS-Machine-Inventory (service pack in `version`). firewall: the Windows SHA's firewall
    class (enabled bit, backend "windows-sha"). security_software: its antivirus and
    antispyware classes (product name, running = enabled bit; signature age unknown, only
    an up-to-date bit, kept as `up_to_date`). pending_updates is not derivable (the SHA
    reports states, not counts); packages, forwarding, listening ports and interfaces are
    not in an SoH: those sections are absent, so rules over them count as their
    `on_unknown`. The `soh` section keeps what no rule judges: machine name, automatic and
    security update states, the quarantine state the client believes, correlation ID."""
    doc: dict[str, object] = {"schema": 1}
    inv = soh.machine_inventory
    if inv is not None:
        version = f"{inv.os_major}.{inv.os_minor}.{inv.os_build}"
        sp = f" SP{inv.sp_major}.{inv.sp_minor}" if inv.sp_major or inv.sp_minor else ""
        doc["os"] = {"family": "windows", "id": "windows", "version_id": version,
                     "version": version + sp,
                     "pretty_name": f"Windows {version}{sp}",
                     "product_type": _PRODUCT.get(soh.product_type or 0, "unknown")}
    info: dict[str, object] = {"inner_type": soh.inner_type}
    if soh.machine_name is not None:
        info["machine_name"] = soh.machine_name
    if soh.correlation_id is not None:
        info["correlation_id"] = soh.correlation_id.hex()
    if soh.quarantine_state is not None:
        info["quarantine_state"] = soh.quarantine_state.state
    info["agents"] = [f"{r.system_health_id:#08x}" for r in soh.reports]
    software: list[dict[str, object]] = []
    for report in soh.reports:
        if report.system_health_id != WSHA_ID:
            continue  # other agents' TLVs have no published meaning to map
        for h in report.health():
            info[h.name] = {"status": h.status, "enabled": h.enabled,
                            "up_to_date": h.up_to_date, "product": h.product}
            if h.health_class == 0:
                doc["firewall"] = {"enabled": h.enabled, "backend": "windows-sha",
                                   "product": h.product}
            elif h.health_class in (1, 2) and not h.error:
                software.append({"name": h.product or h.name, "kind": h.name,
                                 "running": h.enabled, "up_to_date": h.up_to_date})
    if any(r.system_health_id == WSHA_ID for r in soh.reports):
        doc["security_software"] = software
    doc["soh"] = info
    return doc
