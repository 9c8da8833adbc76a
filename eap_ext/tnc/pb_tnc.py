"""PB-TNC (RFC 5793) batches and messages, sans-I/O.

Batch header: version 2, D flag (set when the Posture Broker Server sends), batch type in
the low 4 bits of byte 3, and a 32-bit batch length that includes the 8-byte header.
Message header: flags (NOSKIP = 0x80), vendor ID (24 bits), type (32 bits), length (32 bits,
including the 12-byte header).

Decoding is strict: every length must match exactly, and any failure raises
PbTncCodecError carrying the PB-Error code and offset RFC 5793 wants reported; callers turn
it into a PB-Error message with PbError.from_exception().
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import ClassVar

from eap_ext.tnc.errors import PbTncCodecError

PB_TNC_VERSION = 2
IETF_PEN = 0
NOSKIP = 0x80
D_FLAG = 0x80
BATCH_HEADER_LEN = 8
MSG_HEADER_LEN = 12
DEFAULT_MAX_BATCH = 1 << 20
RESERVED_VENDOR = 0xFFFFFF
RESERVED_TYPE = 0xFFFFFFFF


class BatchType(IntEnum):
    CDATA = 1
    SDATA = 2
    RESULT = 3
    CRETRY = 4
    SRETRY = 5
    CLOSE = 6


# Which side may send each batch type (True = server, i.e. D flag set).
_SERVER_BATCHES = {BatchType.SDATA, BatchType.RESULT, BatchType.SRETRY}
_CLIENT_BATCHES = {BatchType.CDATA, BatchType.CRETRY}


class PbMsgType(IntEnum):
    EXPERIMENTAL = 0
    PA = 1
    ASSESSMENT_RESULT = 2
    ACCESS_RECOMMENDATION = 3
    REMEDIATION_PARAMETERS = 4
    ERROR = 5
    LANGUAGE_PREFERENCE = 6
    REASON_STRING = 7


class PbErrorCode(IntEnum):
    UNEXPECTED_BATCH_TYPE = 0
    INVALID_PARAMETER = 1
    LOCAL_ERROR = 2
    UNSUPPORTED_MANDATORY_MESSAGE = 3
    VERSION_NOT_SUPPORTED = 4


class AccessRecommendation(IntEnum):
    ALLOWED = 1
    DENIED = 2
    QUARANTINED = 3


class RemediationType(IntEnum):
    URI = 1
    STRING = 2


def _invalid(offset: int, detail: str) -> PbTncCodecError:
    return PbTncCodecError(PbErrorCode.INVALID_PARAMETER, offset, detail)


def _check(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} out of range for {bits} bits: {value}")


def _utf8(raw: bytes, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(offset, "invalid UTF-8") from exc


class PbMessage:
    """Base of PB-TNC messages. Subclasses give TYPE, the default NOSKIP flag, and a
    value codec; `decode_value(value, offset)` gets the offset of the value in the batch."""

    VENDOR: ClassVar[int] = IETF_PEN
    TYPE: ClassVar[int] = -1
    MIN_LEN: ClassVar[int] = 0          # minimum value length
    EXACT: ClassVar[bool] = False
    RESULT_ONLY: ClassVar[bool] = False  # allowed only inside a RESULT batch
    noskip: bool

    @property
    def vendor_id(self) -> int:
        return self.VENDOR

    @property
    def msg_type(self) -> int:
        return self.TYPE

    def encode_value(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbMessage:
        raise NotImplementedError

    def encode(self) -> bytes:
        value = self.encode_value()
        _check("vendor ID", self.vendor_id, 24)
        _check("message type", self.msg_type, 32)
        return struct.pack("!III", ((NOSKIP if self.noskip else 0) << 24) | self.vendor_id,
                           self.msg_type, MSG_HEADER_LEN + len(value)) + value


@dataclass(frozen=True)
class PbExperimental(PbMessage):
    TYPE: ClassVar[int] = PbMsgType.EXPERIMENTAL
    body: bytes = b""
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return self.body

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbExperimental:
        return cls(value)


@dataclass(frozen=True)
class PbPa(PbMessage):
    """PB-PA: carries one PA message (e.g. PA-TNC) for a posture collector/validator."""

    TYPE: ClassVar[int] = PbMsgType.PA
    MIN_LEN: ClassVar[int] = 12
    pa_vendor: int
    pa_subtype: int
    collector_id: int
    validator_id: int
    body: bytes
    exclusive: bool = False
    noskip: bool = field(default=True, kw_only=True)

    def encode_value(self) -> bytes:
        _check("PA vendor", self.pa_vendor, 24)
        _check("collector", self.collector_id, 16)
        _check("validator", self.validator_id, 16)
        return struct.pack("!IIHH", ((0x80 if self.exclusive else 0) << 24) | self.pa_vendor,
                           self.pa_subtype, self.collector_id, self.validator_id) + self.body

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbPa:
        word, subtype, coll, val = struct.unpack_from("!IIHH", value)
        vendor = word & 0xFFFFFF
        if vendor == RESERVED_VENDOR:
            raise _invalid(offset + 1, "reserved PA vendor ID")
        if subtype == RESERVED_TYPE:
            raise _invalid(offset + 4, "reserved PA subtype")
        return cls(vendor, subtype, coll, val, value[12:], bool(word >> 31))


@dataclass(frozen=True)
class PbAssessmentResult(PbMessage):
    TYPE: ClassVar[int] = PbMsgType.ASSESSMENT_RESULT
    MIN_LEN: ClassVar[int] = 4
    EXACT: ClassVar[bool] = True
    RESULT_ONLY: ClassVar[bool] = True
    result: int
    noskip: bool = field(default=True, kw_only=True)

    def encode_value(self) -> bytes:
        return self.result.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbAssessmentResult:
        result = int.from_bytes(value, "big")
        if result > 4:
            raise _invalid(offset, f"assessment result {result}")
        return cls(result)


@dataclass(frozen=True)
class PbAccessRecommendation(PbMessage):
    TYPE: ClassVar[int] = PbMsgType.ACCESS_RECOMMENDATION
    MIN_LEN: ClassVar[int] = 4
    EXACT: ClassVar[bool] = True
    RESULT_ONLY: ClassVar[bool] = True
    recommendation: int
    noskip: bool = field(default=True, kw_only=True)

    def encode_value(self) -> bytes:
        return struct.pack("!HH", 0, self.recommendation)

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbAccessRecommendation:
        rec = struct.unpack_from("!H", value, 2)[0]
        if rec not in (1, 2, 3):
            raise _invalid(offset + 2, f"access recommendation {rec}")
        return cls(rec)


@dataclass(frozen=True)
class PbRemediationParameters(PbMessage):
    """Remediation parameters: IETF URI (raw) or string (len32, text, len8, lang)."""

    TYPE: ClassVar[int] = PbMsgType.REMEDIATION_PARAMETERS
    MIN_LEN: ClassVar[int] = 8
    RESULT_ONLY: ClassVar[bool] = True
    param_vendor: int
    param_type: int
    params: bytes
    noskip: bool = field(default=True, kw_only=True)

    @classmethod
    def uri(cls, uri: str) -> PbRemediationParameters:
        return cls(IETF_PEN, RemediationType.URI, uri.encode("utf-8"))

    @classmethod
    def string(cls, text: str, lang: str = "en") -> PbRemediationParameters:
        raw, lraw = text.encode("utf-8"), lang.encode("utf-8")
        if len(lraw) > 255:
            raise ValueError("language code longer than 255 bytes")
        return cls(IETF_PEN, RemediationType.STRING,
                   len(raw).to_bytes(4, "big") + raw + bytes([len(lraw)]) + lraw)

    @property
    def text(self) -> str:
        if self.param_vendor == IETF_PEN and self.param_type == RemediationType.STRING:
            return _len_prefixed_text(self.params, 0)[0]
        return self.params.decode("utf-8", "replace")

    def encode_value(self) -> bytes:
        _check("parameter vendor", self.param_vendor, 24)
        return struct.pack("!II", self.param_vendor, self.param_type) + self.params

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbRemediationParameters:
        word, ptype = struct.unpack_from("!II", value)
        params = value[8:]
        vendor = word & 0xFFFFFF
        if vendor == IETF_PEN and ptype == RemediationType.STRING:
            _len_prefixed_text(params, offset + 8)
        elif vendor == IETF_PEN and ptype == RemediationType.URI:
            _utf8(params, offset + 8)
        return cls(vendor, ptype, params)


def _len_prefixed_text(buf: bytes, offset: int) -> tuple[str, str]:
    """(text, lang) from a 32-bit-length string followed by an 8-bit-length language."""
    if len(buf) < 4:
        raise _invalid(offset, "string length truncated")
    n = int.from_bytes(buf[:4], "big")
    if n > len(buf) - 5:
        raise _invalid(offset, f"string length {n} exceeds message")
    text = _utf8(buf[4:4 + n], offset + 4)
    m = buf[4 + n]
    if 5 + n + m != len(buf):
        raise _invalid(offset + 4 + n, "language code length mismatch")
    return text, _utf8(buf[5 + n:], offset + 5 + n)


@dataclass(frozen=True)
class PbError(PbMessage):
    """PB-Error. `parameters` follow the 8-byte fixed part: for INVALID_PARAMETER (and, as
    deployed peers do, the other IETF codes) a 32-bit offset; for VERSION_NOT_SUPPORTED the
    bad, max and min versions and a reserved byte."""

    TYPE: ClassVar[int] = PbMsgType.ERROR
    MIN_LEN: ClassVar[int] = 8
    fatal: bool
    error_vendor: int
    code: int
    parameters: bytes = b""
    noskip: bool = field(default=True, kw_only=True)

    @classmethod
    def with_offset(cls, code: int, offset: int, fatal: bool = True) -> PbError:
        return cls(fatal, IETF_PEN, code, offset.to_bytes(4, "big"))

    @classmethod
    def version_not_supported(cls, bad_version: int) -> PbError:
        return cls(True, IETF_PEN, PbErrorCode.VERSION_NOT_SUPPORTED,
                   bytes([bad_version & 0xFF, PB_TNC_VERSION, PB_TNC_VERSION, 0]))

    @classmethod
    def from_exception(cls, exc: PbTncCodecError) -> PbError:
        if exc.code == PbErrorCode.VERSION_NOT_SUPPORTED:
            return cls.version_not_supported(exc.bad_version or 0)
        return cls.with_offset(exc.code, exc.offset, exc.fatal)

    @property
    def offset(self) -> int | None:
        if self.code != PbErrorCode.VERSION_NOT_SUPPORTED and len(self.parameters) == 4:
            return int.from_bytes(self.parameters, "big")
        return None

    def encode_value(self) -> bytes:
        _check("error vendor", self.error_vendor, 24)
        _check("error code", self.code, 16)
        return struct.pack("!IHH", ((0x80 if self.fatal else 0) << 24) | self.error_vendor,
                           self.code, 0) + self.parameters

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbError:
        word, code, _ = struct.unpack_from("!IHH", value)
        vendor = word & 0xFFFFFF
        params = value[8:]
        if vendor == IETF_PEN and code <= PbErrorCode.VERSION_NOT_SUPPORTED and len(params) != 4:
            raise _invalid(offset + 8, "IETF error parameters must be 4 bytes")
        return cls(bool(word >> 31), vendor, code, params)


@dataclass(frozen=True)
class PbLanguagePreference(PbMessage):
    """Value is an Accept-Language header line, e.g. "Accept-Language: en"."""

    TYPE: ClassVar[int] = PbMsgType.LANGUAGE_PREFERENCE
    text: str = "Accept-Language: en"
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        return self.text.encode("ascii")

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbLanguagePreference:
        if not value.isascii():
            raise _invalid(offset, "language preference not ASCII")
        return cls(value.decode("ascii"))


@dataclass(frozen=True)
class PbReasonString(PbMessage):
    TYPE: ClassVar[int] = PbMsgType.REASON_STRING
    MIN_LEN: ClassVar[int] = 5
    reason: str
    lang: str = "en"
    noskip: bool = field(default=False, kw_only=True)

    def encode_value(self) -> bytes:
        raw, lraw = self.reason.encode("utf-8"), self.lang.encode("utf-8")
        if len(lraw) > 255:
            raise ValueError("language code longer than 255 bytes")
        return len(raw).to_bytes(4, "big") + raw + bytes([len(lraw)]) + lraw

    @classmethod
    def decode_value(cls, value: bytes, offset: int) -> PbReasonString:
        return cls(*_len_prefixed_text(value, offset))


@dataclass(frozen=True)
class PbRawMessage(PbMessage):
    """A skippable message type we do not know (vendor-specific or a future IETF type)."""

    vendor: int
    mtype: int
    body: bytes
    noskip: bool = field(default=False, kw_only=True)

    @property
    def vendor_id(self) -> int:
        return self.vendor

    @property
    def msg_type(self) -> int:
        return self.mtype

    def encode_value(self) -> bytes:
        return self.body


_IETF_MESSAGES: dict[int, type[PbMessage]] = {
    cls.TYPE: cls for cls in (PbExperimental, PbPa, PbAssessmentResult,
                              PbAccessRecommendation, PbRemediationParameters, PbError,
                              PbLanguagePreference, PbReasonString)
}


@dataclass(frozen=True)
class PbBatch:
    batch_type: int
    messages: tuple[PbMessage, ...] = ()
    from_server: bool | None = None  # None: derive the D flag from the batch type

    @property
    def direction_server(self) -> bool:
        if self.from_server is not None:
            return self.from_server
        return self.batch_type in _SERVER_BATCHES

    def encode(self) -> bytes:
        body = b"".join(m.encode() for m in self.messages)
        _check("batch type", self.batch_type, 4)
        return struct.pack("!BBBBI", PB_TNC_VERSION, D_FLAG if self.direction_server else 0,
                           0, self.batch_type, BATCH_HEADER_LEN + len(body)) + body

    @classmethod
    def decode(cls, data: bytes, *, expect_from_server: bool | None = None,
               max_len: int = DEFAULT_MAX_BATCH, max_messages: int = 10000) -> PbBatch:
        return decode_batch(data, expect_from_server=expect_from_server, max_len=max_len,
                            max_messages=max_messages)


def decode_batch(data: bytes, *, expect_from_server: bool | None = None,
                 max_len: int = DEFAULT_MAX_BATCH, max_messages: int = 10000) -> PbBatch:
    """Decode one PB-TNC batch. `expect_from_server` checks the D flag when not None."""
    data = bytes(data)
    if len(data) < BATCH_HEADER_LEN:
        raise _invalid(0, "batch header truncated")
    version, flags, _, btype_byte, length = struct.unpack_from("!BBBBI", data)
    if version != PB_TNC_VERSION:
        raise PbTncCodecError(PbErrorCode.VERSION_NOT_SUPPORTED, 0,
                              f"PB-TNC version {version}", bad_version=version)
    from_server = bool(flags & D_FLAG)
    if expect_from_server is not None and from_server != expect_from_server:
        raise _invalid(1, "wrong directionality")
    btype = btype_byte & 0x0F
    if btype not in BatchType.__members__.values():
        raise _invalid(3, f"unknown batch type {btype}")
    if (from_server and btype in _CLIENT_BATCHES) or (not from_server
                                                      and btype in _SERVER_BATCHES):
        raise PbTncCodecError(PbErrorCode.UNEXPECTED_BATCH_TYPE, 3,
                              "batch type does not match the D flag")
    if length > max_len:
        raise PbTncCodecError(PbErrorCode.LOCAL_ERROR, 4, f"batch of {length} bytes too long")
    if length != len(data):
        raise _invalid(4, f"batch length {length} != {len(data)} bytes received")
    messages: list[PbMessage] = []
    pos = BATCH_HEADER_LEN
    while pos < len(data):
        if len(messages) >= max_messages:
            raise PbTncCodecError(PbErrorCode.LOCAL_ERROR, pos, "too many messages")
        if len(data) - pos < MSG_HEADER_LEN:
            raise _invalid(pos, "message header truncated")
        word, mtype, mlen = struct.unpack_from("!III", data, pos)
        noskip = bool(word >> 31)
        vendor = word & 0xFFFFFF
        if mlen < MSG_HEADER_LEN or mlen > len(data) - pos:
            raise _invalid(pos + 8, f"bad message length {mlen}")
        if vendor == RESERVED_VENDOR:
            raise _invalid(pos + 1, "reserved vendor ID")
        if mtype == RESERVED_TYPE:
            raise _invalid(pos + 4, "reserved message type")
        value = data[pos + MSG_HEADER_LEN:pos + mlen]
        msg_cls = _IETF_MESSAGES.get(mtype) if vendor == IETF_PEN else None
        if msg_cls is None or (msg_cls is PbExperimental and noskip):
            if noskip:
                raise PbTncCodecError(PbErrorCode.UNSUPPORTED_MANDATORY_MESSAGE, pos,
                                      f"unsupported NOSKIP message {vendor}/{mtype}")
            messages.append(PbRawMessage(vendor, mtype, value))
        else:
            if len(value) < msg_cls.MIN_LEN or (msg_cls.EXACT and len(value) != msg_cls.MIN_LEN):
                raise _invalid(pos + 8, f"bad length for message type {mtype}")
            if msg_cls.RESULT_ONLY and btype != BatchType.RESULT:
                raise _invalid(pos, f"message type {mtype} outside a RESULT batch")
            msg = msg_cls.decode_value(value, pos + MSG_HEADER_LEN)
            if msg.noskip != noskip:
                msg = _replace_noskip(msg, noskip)
            messages.append(msg)
        pos += mlen
    return PbBatch(btype, tuple(messages), from_server)


def _replace_noskip(msg: PbMessage, noskip: bool) -> PbMessage:
    return replace(msg, noskip=noskip)  # type: ignore[type-var]
