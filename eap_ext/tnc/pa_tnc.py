"""PA-TNC (RFC 5792) messages and attributes, sans-I/O.

A PA-TNC message is an 8-byte header (version 1, 24 reserved bits, message identifier)
followed by attributes, each with a 12-byte header: flags (NOSKIP = 0x80), vendor ID
(24 bits), attribute type (32 bits) and a length that includes the header.

IETF standard attributes (vendor 0) decode to typed dataclasses. Our own vendor-specific
attributes live under a configurable Private Enterprise Number (default 32473, the
documentation PEN of RFC 5612) and carry compact UTF-8 JSON values (see VendorAttribute):
posture detail changes shape faster than a binary layout should. Attributes nobody here
knows stay RawAttribute when skippable; an unknown attribute with NOSKIP set makes the
whole message unprocessable (RFC 5792 section 4.1), reported as PaTncCodecError with
code ATTRIBUTE_TYPE_NOT_SUPPORTED.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, ClassVar

from eap_ext.tnc import packages_compact
from eap_ext.tnc.errors import PaTncCodecError

PA_TNC_VERSION = 1
IETF_PEN = 0
DEFAULT_VENDOR_ID = 32473
NOSKIP = 0x80
MSG_HEADER_LEN = 8
ATTR_HEADER_LEN = 12
MAX_VENDOR_ID = 0xFFFFFF


class AttrType(IntEnum):
    """IETF standard PA-TNC attribute types (RFC 5792 section 4.2)."""

    TESTING = 0
    ATTRIBUTE_REQUEST = 1
    PRODUCT_INFORMATION = 2
    NUMERIC_VERSION = 3
    STRING_VERSION = 4
    OPERATIONAL_STATUS = 5
    PORT_FILTER = 6
    INSTALLED_PACKAGES = 7
    PA_TNC_ERROR = 8
    ASSESSMENT_RESULT = 9
    REMEDIATION_INSTRUCTIONS = 10
    FORWARDING_ENABLED = 11
    FACTORY_DEFAULT_PASSWORD_ENABLED = 12


class PaSubtype(IntEnum):
    """IETF PA subtypes (component types, RFC 5792 section 7.2)."""

    TESTING = 0
    OPERATING_SYSTEM = 1
    ANTI_VIRUS = 2
    ANTI_SPYWARE = 3
    ANTI_MALWARE = 4
    FIREWALL = 5
    IDPS = 6
    VPN = 7
    NEA_CLIENT = 8


class PaErrorCode(IntEnum):
    RESERVED = 0
    INVALID_PARAMETER = 1
    VERSION_NOT_SUPPORTED = 2
    ATTRIBUTE_TYPE_NOT_SUPPORTED = 3


class AssessmentValue(IntEnum):
    COMPLIANT = 0
    MINOR_NON_COMPLIANCE = 1
    MAJOR_NON_COMPLIANCE = 2
    ERROR = 3
    DONT_KNOW = 4


class ForwardingStatus(IntEnum):
    DISABLED = 0
    ENABLED = 1
    UNKNOWN = 2


class RemediationType(IntEnum):
    URI = 1
    STRING = 2


class VendorAttrType(IntEnum):
    """Our vendor-specific attribute types (under the configured vendor ID)."""

    SECURITY_SOFTWARE = 1   # [{"name", "running", "signature_age_hours"}] | "unknown"
    PENDING_UPDATES = 2     # {"security", "total"} | "unknown"
    FIREWALL = 3            # {"enabled", "backend", "rules"} | "unknown"
    INTERFACES = 4          # [{"name", "mac", "ipv4": [...], "ipv6": [...]}] | "unknown"
    OS_DETAILS = 5          # the posture "os" object | "unknown"
    PACKAGE_EXTRA = 6       # per Installed Packages entry: the package minus name/version
    CERTIFICATE = 7         # {"token": "qc1..." or base64, "posture_digest"?: hex} | null
    FORWARDING_DETAIL = 8   # {"ipv4", "ipv6", "bridges"} | "unknown"
    LISTENING_DETAIL = 9    # [{"proto", "address", "port"}] | "unknown"
    DOCUMENT_META = 10      # {"schema", "collected_at", "rest": {other top-level keys}}
    PACKAGE_EXTRA_Z = 11    # PACKAGE_EXTRA as zlib-deflated JSON (package lists are large)
    PACKAGES_COMPACT = 12   # the whole package list, compact text, deflated (packages_compact)
    POSTURE_DOCUMENT = 0x7E  # the whole posture document in one attribute (agent fallback)


# Kinds whose JSON is deflated; inflating stops at the kind's bound (no zip bombs): a
# message inflating past it is refused whole, so the IMV answers with a PA-TNC Error.
DEFLATED_KINDS = frozenset({VendorAttrType.PACKAGE_EXTRA_Z, VendorAttrType.PACKAGES_COMPACT})
MAX_INFLATED = 16 << 20
# ~30 bytes a package before deflate: 4 MiB is >100,000 packages, and bounds what
# json.loads may be handed.
MAX_INFLATED_COMPACT = 4 << 20


class _Reader:
    """Bounds-checked big-endian reader; failures raise INVALID_PARAMETER at `pos`."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.base = base

    def fail(self, detail: str, *, refuse: bool = False) -> PaTncCodecError:
        return PaTncCodecError(PaErrorCode.INVALID_PARAMETER, self.base + self.pos, detail,
                               refuse=refuse)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("attribute value truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def text(self, n: int) -> str:
        start = self.pos
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, self.base + start,
                                  "invalid UTF-8") from exc

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail("trailing bytes in attribute value")


def _str8(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFF:
        raise ValueError("string longer than 255 bytes")
    return bytes([len(raw)]) + raw


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} out of range for {bits} bits: {value}")


class Attribute:
    """Base of all PA-TNC attributes: subclasses provide vendor/type and the value codec."""

    VENDOR: ClassVar[int] = IETF_PEN
    TYPE: ClassVar[int] = -1
    noskip: bool

    @property
    def vendor_id(self) -> int:
        return self.VENDOR

    @property
    def attr_type(self) -> int:
        return self.TYPE

    def encode_value(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_value(cls, r: _Reader) -> Attribute:
        raise NotImplementedError

    def encode(self) -> bytes:
        value = self.encode_value()
        _check_range("vendor ID", self.vendor_id, 24)
        _check_range("attribute type", self.attr_type, 32)
        header = struct.pack("!BBHII", NOSKIP if self.noskip else 0, self.vendor_id >> 16,
                             self.vendor_id & 0xFFFF, self.attr_type,
                             ATTR_HEADER_LEN + len(value))
        return header + value


@dataclass(frozen=True)
class AttributeRequest(Attribute):
    """Asks the peer for attributes: a list of (vendor ID, attribute type)."""

    TYPE: ClassVar[int] = AttrType.ATTRIBUTE_REQUEST
    entries: tuple[tuple[int, int], ...]
    noskip: bool = field(default=True, kw_only=True)

    def encode_value(self) -> bytes:
        out = bytearray()
        for vendor, atype in self.entries:
            _check_range("vendor ID", vendor, 24)
            _check_range("attribute type", atype, 32)
            out += struct.pack("!II", vendor, atype)
        return bytes(out)

    @classmethod
    def decode_value(cls, r: _Reader) -> AttributeRequest:
        if len(r.data) % 8:
            raise r.fail("attribute request length not a multiple of 8")
        entries = []
        while r.pos < len(r.data):
            word = r.u32()
            entries.append((word & MAX_VENDOR_ID, r.u32()))
        return cls(tuple(entries))


@dataclass(frozen=True)
class ProductInformation(Attribute):
    TYPE: ClassVar[int] = AttrType.PRODUCT_INFORMATION
    product_vendor: int
    product_id: int
    name: str
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        _check_range("product vendor ID", self.product_vendor, 24)
        _check_range("product ID", self.product_id, 16)
        return (self.product_vendor.to_bytes(3, "big") + self.product_id.to_bytes(2, "big")
                + self.name.encode("utf-8"))

    @classmethod
    def decode_value(cls, r: _Reader) -> ProductInformation:
        vendor = r.u24()
        pid = r.u16()
        return cls(vendor, pid, r.text(len(r.data) - r.pos))


@dataclass(frozen=True)
class NumericVersion(Attribute):
    TYPE: ClassVar[int] = AttrType.NUMERIC_VERSION
    major: int
    minor: int
    build: int
    sp_major: int = 0
    sp_minor: int = 0
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return struct.pack("!IIIHH", self.major, self.minor, self.build, self.sp_major,
                           self.sp_minor)

    @classmethod
    def decode_value(cls, r: _Reader) -> NumericVersion:
        if len(r.data) != 16:
            raise r.fail("numeric version must be 16 bytes")
        return cls(r.u32(), r.u32(), r.u32(), r.u16(), r.u16())


@dataclass(frozen=True)
class StringVersion(Attribute):
    TYPE: ClassVar[int] = AttrType.STRING_VERSION
    version: str
    build: str = ""
    config: str = ""
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return _str8(self.version) + _str8(self.build) + _str8(self.config)

    @classmethod
    def decode_value(cls, r: _Reader) -> StringVersion:
        parts = [r.text(r.u8()) for _ in range(3)]
        r.end()
        return cls(*parts)


@dataclass(frozen=True)
class OperationalStatus(Attribute):
    """Status 0 unknown/1 not installed/2 installed/3 operational; result 0-3; last use is
    an RFC 3339 UTC timestamp of exactly 20 characters ("0000-00-00T00:00:00Z" = never)."""

    TYPE: ClassVar[int] = AttrType.OPERATIONAL_STATUS
    NEVER: ClassVar[str] = "0000-00-00T00:00:00Z"
    status: int
    result: int
    last_use: str = NEVER
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        raw = self.last_use.encode("ascii")
        if len(raw) != 20:
            raise ValueError("last_use must be 20 ASCII characters")
        return struct.pack("!BBH", self.status, self.result, 0) + raw

    @classmethod
    def decode_value(cls, r: _Reader) -> OperationalStatus:
        if len(r.data) != 24:
            raise r.fail("operational status must be 24 bytes")
        status, result = r.u8(), r.u8()
        if status > 3:
            raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, r.base, "bad status")
        if result > 3:
            raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, r.base + 1, "bad result")
        r.u16()
        start = r.pos
        raw = r.take(20)
        if not raw.isascii():
            raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, r.base + start,
                                  "last use not ASCII")
        return cls(status, result, raw.decode("ascii"))


@dataclass(frozen=True)
class PortFilter(Attribute):
    """Entries of (blocked, IP protocol number, port)."""

    TYPE: ClassVar[int] = AttrType.PORT_FILTER
    entries: tuple[tuple[bool, int, int], ...]
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return b"".join(struct.pack("!BBH", 1 if blocked else 0, proto, port)
                        for blocked, proto, port in self.entries)

    @classmethod
    def decode_value(cls, r: _Reader) -> PortFilter:
        if len(r.data) % 4:
            raise r.fail("port filter length not a multiple of 4")
        entries = []
        while r.pos < len(r.data):
            flags = r.u8()
            entries.append((bool(flags & 1), r.u8(), r.u16()))
        return cls(tuple(entries))


@dataclass(frozen=True)
class InstalledPackages(Attribute):
    """(name, version) pairs; each string at most 255 bytes, at most 65535 entries."""

    TYPE: ClassVar[int] = AttrType.INSTALLED_PACKAGES
    packages: tuple[tuple[str, str], ...]
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        if len(self.packages) > 0xFFFF:
            raise ValueError("more than 65535 packages in one attribute")
        out = bytearray(struct.pack("!HH", 0, len(self.packages)))
        for name, version in self.packages:
            out += _str8(name) + _str8(version)
        return bytes(out)

    @classmethod
    def decode_value(cls, r: _Reader) -> InstalledPackages:
        r.u16()
        count = r.u16()
        pkgs = []
        for _ in range(count):
            name = r.text(r.u8())
            pkgs.append((name, r.text(r.u8())))
        r.end()
        return cls(tuple(pkgs))


@dataclass(frozen=True)
class PaTncError(Attribute):
    """PA-TNC Error attribute; `info` is the error information after the 8-byte header.

    For IETF codes the info starts with the first 8 bytes of the offending message, then:
    INVALID_PARAMETER an offset (32), VERSION_NOT_SUPPORTED max/min version and 16 reserved
    bits, ATTRIBUTE_TYPE_NOT_SUPPORTED the flags/vendor/type of the attribute.
    """

    TYPE: ClassVar[int] = AttrType.PA_TNC_ERROR
    error_vendor: int
    error_code: int
    info: bytes = b""
    noskip: bool = field(default=False, kw_only=True)

    @classmethod
    def invalid_parameter(cls, header: bytes, offset: int) -> PaTncError:
        return cls(IETF_PEN, PaErrorCode.INVALID_PARAMETER,
                   header[:8].ljust(8, b"\0") + offset.to_bytes(4, "big"))

    @classmethod
    def version_not_supported(cls, header: bytes) -> PaTncError:
        return cls(IETF_PEN, PaErrorCode.VERSION_NOT_SUPPORTED,
                   header[:8].ljust(8, b"\0") + bytes([PA_TNC_VERSION, PA_TNC_VERSION, 0, 0]))

    @classmethod
    def attribute_type_not_supported(cls, header: bytes, attr_info: bytes) -> PaTncError:
        return cls(IETF_PEN, PaErrorCode.ATTRIBUTE_TYPE_NOT_SUPPORTED,
                   header[:8].ljust(8, b"\0") + attr_info[:8].ljust(8, b"\0"))

    @classmethod
    def from_exception(cls, exc: PaTncCodecError) -> PaTncError:
        if exc.code == PaErrorCode.VERSION_NOT_SUPPORTED:
            return cls.version_not_supported(exc.header)
        if exc.code == PaErrorCode.ATTRIBUTE_TYPE_NOT_SUPPORTED:
            return cls.attribute_type_not_supported(exc.header, exc.attr_info)
        return cls.invalid_parameter(exc.header, exc.offset)

    @property
    def offset(self) -> int | None:
        if (self.error_vendor == IETF_PEN and self.error_code == PaErrorCode.INVALID_PARAMETER
                and len(self.info) >= 12):
            return int.from_bytes(self.info[8:12], "big")
        return None

    def encode_value(self) -> bytes:
        _check_range("error vendor", self.error_vendor, 24)
        return struct.pack("!II", self.error_vendor, self.error_code) + self.info

    @classmethod
    def decode_value(cls, r: _Reader) -> PaTncError:
        vendor = r.u32() & MAX_VENDOR_ID
        code = r.u32()
        info = r.rest()
        if vendor == IETF_PEN:
            need = {PaErrorCode.INVALID_PARAMETER: 12, PaErrorCode.VERSION_NOT_SUPPORTED: 12,
                    PaErrorCode.ATTRIBUTE_TYPE_NOT_SUPPORTED: 16}.get(code, 8)
            if len(info) < need:
                raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, r.base + 8,
                                      "error information too short")
        return cls(vendor, code, info)


@dataclass(frozen=True)
class AssessmentResult(Attribute):
    TYPE: ClassVar[int] = AttrType.ASSESSMENT_RESULT
    result: int
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return self.result.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, r: _Reader) -> AssessmentResult:
        if len(r.data) != 4:
            raise r.fail("assessment result must be 4 bytes")
        return cls(r.u32())


@dataclass(frozen=True)
class RemediationInstructions(Attribute):
    """Remediation parameters: IETF URI (raw URI) or string (len32, text, len8, lang)."""

    TYPE: ClassVar[int] = AttrType.REMEDIATION_INSTRUCTIONS
    param_vendor: int
    param_type: int
    params: bytes
    noskip: bool = field(default=False, kw_only=True)

    @classmethod
    def uri(cls, uri: str) -> RemediationInstructions:
        return cls(IETF_PEN, RemediationType.URI, uri.encode("utf-8"))

    @classmethod
    def string(cls, text: str, lang: str = "en") -> RemediationInstructions:
        raw = text.encode("utf-8")
        return cls(IETF_PEN, RemediationType.STRING,
                   len(raw).to_bytes(4, "big") + raw + _str8(lang))

    @property
    def text(self) -> str:
        """The URI or the remediation string, whichever this carries."""
        if self.param_vendor == IETF_PEN and self.param_type == RemediationType.STRING:
            return _parse_remediation_string(self.params, 0)[0]
        return self.params.decode("utf-8", "replace")

    def encode_value(self) -> bytes:
        _check_range("parameter vendor", self.param_vendor, 24)
        return struct.pack("!II", self.param_vendor, self.param_type) + self.params

    @classmethod
    def decode_value(cls, r: _Reader) -> RemediationInstructions:
        vendor = r.u32() & MAX_VENDOR_ID
        ptype = r.u32()
        params = r.rest()
        if vendor == IETF_PEN and ptype == RemediationType.STRING:
            _parse_remediation_string(params, r.base + 8)
        elif vendor == IETF_PEN and ptype == RemediationType.URI:
            try:
                params.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, r.base + 8,
                                      "URI not UTF-8") from exc
        return cls(vendor, ptype, params)


def _parse_remediation_string(params: bytes, base: int) -> tuple[str, str]:
    r = _Reader(params, base)
    text = r.text(r.u32())
    lang = r.text(r.u8())
    r.end()
    return text, lang


@dataclass(frozen=True)
class ForwardingEnabled(Attribute):
    TYPE: ClassVar[int] = AttrType.FORWARDING_ENABLED
    status: int
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return self.status.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, r: _Reader) -> ForwardingEnabled:
        if len(r.data) != 4:
            raise r.fail("forwarding enabled must be 4 bytes")
        return cls(r.u32())


@dataclass(frozen=True)
class FactoryDefaultPasswordEnabled(Attribute):
    TYPE: ClassVar[int] = AttrType.FACTORY_DEFAULT_PASSWORD_ENABLED
    enabled: int
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return self.enabled.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, r: _Reader) -> FactoryDefaultPasswordEnabled:
        if len(r.data) != 4:
            raise r.fail("factory default password enabled must be 4 bytes")
        return cls(r.u32())


@dataclass(frozen=True)
class RawAttribute(Attribute):
    """An attribute kept as bytes: unknown to us, or built by a caller."""

    vendor: int
    atype: int
    value: bytes
    noskip: bool = field(default=False, kw_only=True)

    @property
    def vendor_id(self) -> int:
        return self.vendor

    @property
    def attr_type(self) -> int:
        return self.atype

    def encode_value(self) -> bytes:
        return self.value


@dataclass(frozen=True)
class VendorAttribute(Attribute):
    """One of our vendor-specific attributes; the value is UTF-8 JSON (compact, sorted
    keys, no NaN), zlib-deflated for the kinds in DEFLATED_KINDS. `data` is any JSON
    value; the vendor ID is a parameter. For PACKAGES_COMPACT `data` is the package list
    itself; the wire carries packages_compact's text encoding of it, deflated."""

    kind: int
    data: Any
    vendor: int = DEFAULT_VENDOR_ID
    noskip: bool = field(default=False, kw_only=True)
    # PACKAGES_COMPACT as received: the deflated value, ~7 bytes a package where `data` holds
    # ~600 in Python objects. A server may keep it to rebuild the inventory later
    # (from_wire) instead of asking the host to send it again.
    wire: bytes | None = field(default=None, kw_only=True, compare=False, repr=False)

    @property
    def vendor_id(self) -> int:
        return self.vendor

    @property
    def attr_type(self) -> int:
        return self.kind

    @classmethod
    def from_wire(cls, kind: int, value: bytes,
                  vendor: int = DEFAULT_VENDOR_ID) -> VendorAttribute:
        """Decode a value kept from `wire` again (the same bounds and checks)."""
        return cls.decode_json(kind, vendor, _Reader(value))

    def encode_value(self) -> bytes:
        if self.kind == VendorAttrType.PACKAGES_COMPACT:
            raw = packages_compact.encode(self.data)
        else:
            raw = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False,
                             sort_keys=True, allow_nan=False).encode("utf-8")
        return zlib.compress(raw, 9) if self.kind in DEFLATED_KINDS else raw

    @classmethod
    def decode_json(cls, kind: int, vendor: int, r: _Reader) -> VendorAttribute:
        raw = r.data
        if kind in DEFLATED_KINDS:
            inflater = zlib.decompressobj()
            bound = (MAX_INFLATED_COMPACT if kind == VendorAttrType.PACKAGES_COMPACT
                     else MAX_INFLATED)
            try:
                raw = inflater.decompress(raw, bound)
            except zlib.error as exc:
                raise r.fail(f"vendor attribute {kind}: bad deflate data", refuse=True) \
                    from exc
            if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
                raise r.fail(f"vendor attribute {kind}: truncated, inflates past "
                             f"{bound} bytes, or trailing data", refuse=True)
        if kind == VendorAttrType.PACKAGES_COMPACT:
            try:
                packages = packages_compact.decode(raw)
                wire = bytes(r.data)
                if isinstance(packages, packages_compact.PackageList):
                    packages.wire = wire  # the list remembers its deflated form
                elif isinstance(packages, list):
                    packages = packages_compact.PackageList(packages, wire)
                return cls(kind, packages, vendor, wire=wire)
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
                raise r.fail(f"vendor attribute {kind}: {exc}") from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise r.fail(f"vendor attribute {kind}: bad JSON") from exc
        return cls(kind, data, vendor)


IETF_ATTRIBUTES: dict[int, type[Attribute]] = {
    cls.TYPE: cls for cls in (
        AttributeRequest, ProductInformation, NumericVersion, StringVersion,
        OperationalStatus, PortFilter, InstalledPackages, PaTncError, AssessmentResult,
        RemediationInstructions, ForwardingEnabled, FactoryDefaultPasswordEnabled)
}
VENDOR_KINDS = frozenset(int(k) for k in VendorAttrType)


@dataclass(frozen=True)
class PaTncMessage:
    identifier: int
    attributes: tuple[Attribute, ...] = ()

    def encode(self) -> bytes:
        _check_range("message identifier", self.identifier, 32)
        return (struct.pack("!BBHI", PA_TNC_VERSION, 0, 0, self.identifier)
                + b"".join(a.encode() for a in self.attributes))

    @classmethod
    def decode(cls, data: bytes, *, vendor_id: int = DEFAULT_VENDOR_ID,
               max_attributes: int = 10000) -> PaTncMessage:
        return decode_message(data, vendor_id=vendor_id, max_attributes=max_attributes)


def build_message(identifier: int, attributes: Iterable[Attribute]) -> bytes:
    return PaTncMessage(identifier, tuple(attributes)).encode()


def decode_message(data: bytes, *, vendor_id: int = DEFAULT_VENDOR_ID,
                   max_attributes: int = 10000) -> PaTncMessage:
    """Decode one PA-TNC message; raise PaTncCodecError with the code to report back."""
    header = bytes(data[:MSG_HEADER_LEN])
    if len(data) < MSG_HEADER_LEN:
        raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, 0, "message header truncated",
                              header=header)
    version, _, _, ident = struct.unpack_from("!BBHI", data)
    if version != PA_TNC_VERSION:
        raise PaTncCodecError(PaErrorCode.VERSION_NOT_SUPPORTED, 0,
                              f"PA-TNC version {version}", header=header)
    attrs: list[Attribute] = []
    pos = MSG_HEADER_LEN
    while pos < len(data):
        if len(attrs) >= max_attributes:
            raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, pos, "too many attributes",
                                  header=header)
        if len(data) - pos < ATTR_HEADER_LEN:
            raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, pos,
                                  "attribute header truncated", header=header)
        flags, vhi, vlo, atype, length = struct.unpack_from("!BBHII", data, pos)
        vendor = (vhi << 16) | vlo
        if length < ATTR_HEADER_LEN or length > len(data) - pos:
            raise PaTncCodecError(PaErrorCode.INVALID_PARAMETER, pos + 8,
                                  f"bad attribute length {length}", header=header)
        value = bytes(data[pos + ATTR_HEADER_LEN:pos + length])
        noskip = bool(flags & NOSKIP)
        reader = _Reader(value, pos + ATTR_HEADER_LEN)
        try:
            attr = _decode_attribute(vendor, atype, noskip, reader, vendor_id)
        except PaTncCodecError as exc:
            exc.header = header
            raise
        if attr is None:
            if noskip:
                raise PaTncCodecError(PaErrorCode.ATTRIBUTE_TYPE_NOT_SUPPORTED, pos,
                                      f"unsupported NOSKIP attribute {vendor}/{atype}",
                                      header=header, attr_info=bytes(data[pos:pos + 8]))
            attr = RawAttribute(vendor, atype, value, noskip=False)
        attrs.append(attr)
        pos += length
    return PaTncMessage(ident, tuple(attrs))


def _decode_attribute(vendor: int, atype: int, noskip: bool, r: _Reader,
                      our_vendor: int) -> Attribute | None:
    if vendor == IETF_PEN and atype in IETF_ATTRIBUTES:
        attr = IETF_ATTRIBUTES[atype].decode_value(r)
        return _with_noskip(attr, noskip)
    if vendor == our_vendor and vendor != IETF_PEN and atype in VENDOR_KINDS:
        return _with_noskip(VendorAttribute.decode_json(atype, vendor, r), noskip)
    return None


def _with_noskip(attr: Attribute, noskip: bool) -> Attribute:
    if attr.noskip == noskip:
        return attr
    return replace(attr, noskip=noskip)  # type: ignore[type-var]


def requested_types(attrs: Sequence[Attribute]) -> set[tuple[int, int]]:
    """All (vendor, type) pairs asked for by Attribute Request attributes in `attrs`."""
    out: set[tuple[int, int]] = set()
    for a in attrs:
        if isinstance(a, AttributeRequest):
            out.update(a.entries)
    return out
