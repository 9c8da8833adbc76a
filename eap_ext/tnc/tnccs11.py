"""IF-TNCCS 1.1 (TCG XML TNCCS) batches, as spoken by wpa_supplicant/hostapd EAP-TNC.

    <TNCCS-Batch BatchId="1" Recipient="TNCS" xmlns="...IF_TNCCS#">
    <IMC-IMV-Message><Type>00000001</Type><Base64>...</Base64></IMC-IMV-Message>
    <TNCC-TNCS-Message><Type>00000001</Type>
      <XML><TNCCS-Recommendation type="allow"/></XML></TNCC-TNCS-Message>
    </TNCCS-Batch>

IMC-IMV message types are (vendor ID << 8) | subtype. TNCC-TNCS message types: 1
Recommendation, 2 Error, 3 PreferredLanguage, 4 ReasonStrings. Batch IDs count up by one
across both directions (the TNCC sends 1, the TNCS 2, ...); sessions check that, not this
codec.

Parsing uses expat directly, with DOCTYPE and entity declarations refused outright, an
input size bound, a depth bound and an element-count bound, so no document can expand
entities, reach the network or exhaust memory. wpa_supplicant's own parser is a string
scanner; the encoder therefore keeps hostapd's element order and Type spelling (8
upper-case hex digits), but leaves out what only costs bytes (XML declaration, schema
location, newlines): the batches cross the tunnel in ~1 kB EAP pieces.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from xml.parsers import expat

from eap_ext.tnc.errors import Tnccs11CodecError

TNCCS_NS = "http://www.trustedcomputinggroup.org/IWG/TNC/1_0/IF_TNCCS#"
RECIPIENTS = ("TNCS", "TNCC")
RECOMMENDATIONS = ("allow", "isolate", "none")
ERROR_TYPES = ("batch-too-long", "malformed-batch", "invalid-batch-id",
               "invalid-recipient-type", "internal-error", "other")
TYPE_RECOMMENDATION = 1
TYPE_ERROR = 2
TYPE_PREFERRED_LANGUAGE = 3
TYPE_REASON_STRINGS = 4
DEFAULT_MAX_SIZE = 1 << 20
_MAX_DEPTH = 12
_MAX_ELEMENTS = 20000
_B64_RE = re.compile(rb"[A-Za-z0-9+/=\s]*")


def pa_message_type(vendor: int, subtype: int) -> int:
    """IF-TNCCS 1.1 message type for a PA vendor/subtype pair."""
    return ((vendor & 0xFFFFFF) << 8) | (subtype & 0xFF)


@dataclass(frozen=True)
class ImcImvMessage:
    msg_type: int
    body: bytes

    @property
    def vendor(self) -> int:
        return self.msg_type >> 8

    @property
    def subtype(self) -> int:
        return self.msg_type & 0xFF


@dataclass(frozen=True)
class TnccsRecommendation:
    recommendation: str  # allow | isolate | none


@dataclass(frozen=True)
class TnccsError:
    error_type: str
    text: str = ""


@dataclass(frozen=True)
class TnccsPreferredLanguage:
    language: str


@dataclass(frozen=True)
class TnccsReasonStrings:
    reasons: tuple[tuple[str, str], ...]  # (language, text)


@dataclass(frozen=True)
class TnccsOther:
    """A TNCC-TNCS message of a type we do not interpret, kept as Base64 payload or XML."""

    msg_type: int
    body: bytes = b""
    xml: str | None = None


Tnccs11Message = (ImcImvMessage | TnccsRecommendation | TnccsError | TnccsPreferredLanguage
                  | TnccsReasonStrings | TnccsOther)


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _esc(text: str, attr: bool = False) -> str:
    if _XML_BAD.search(text):
        raise ValueError("text holds characters XML 1.0 cannot carry")
    # \r (and tab/newline inside attributes) would be normalised away by any parser
    out = (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
           .replace("\r", "&#13;"))
    if attr:
        out = out.replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;")
    return out


def _tnccs(msg_type: int, inner: str) -> str:
    return f"<TNCC-TNCS-Message><Type>{msg_type:08X}</Type>{inner}</TNCC-TNCS-Message>"


def _encode_message(msg: Tnccs11Message) -> str:
    if isinstance(msg, ImcImvMessage):
        b64 = base64.b64encode(msg.body).decode("ascii")
        return (f"<IMC-IMV-Message><Type>{msg.msg_type:08X}</Type>"
                f"<Base64>{b64}</Base64></IMC-IMV-Message>")
    if isinstance(msg, TnccsRecommendation):
        if msg.recommendation not in RECOMMENDATIONS:
            raise ValueError(f"bad recommendation {msg.recommendation!r}")
        # empty element: wpa_supplicant's tncc.c reads the value up to its closing quote
        return _tnccs(TYPE_RECOMMENDATION, f'<XML><TNCCS-Recommendation type="'
                      f'{msg.recommendation}"/></XML>')
    if isinstance(msg, TnccsError):
        if msg.error_type not in ERROR_TYPES:
            raise ValueError(f"bad error type {msg.error_type!r}")
        return _tnccs(TYPE_ERROR, f'<XML><TNCCS-Error type="{msg.error_type}">'
                      f"{_esc(msg.text)}</TNCCS-Error></XML>")
    if isinstance(msg, TnccsPreferredLanguage):
        return _tnccs(TYPE_PREFERRED_LANGUAGE, "<XML><TNCCS-PreferredLanguage>"
                      f"{_esc(msg.language)}</TNCCS-PreferredLanguage></XML>")
    if isinstance(msg, TnccsReasonStrings):
        inner = "".join(f'<ReasonString xml:lang="{_esc(lang, True)}">{_esc(text)}'
                        "</ReasonString>" for lang, text in msg.reasons)
        return _tnccs(TYPE_REASON_STRINGS,
                      f"<XML><TNCCS-ReasonStrings>{inner}</TNCCS-ReasonStrings></XML>")
    if isinstance(msg, TnccsOther):
        if msg.xml is not None:
            return _tnccs(msg.msg_type, f"<XML>{msg.xml}</XML>")
        return _tnccs(msg.msg_type,
                      f"<Base64>{base64.b64encode(msg.body).decode('ascii')}</Base64>")
    raise TypeError(f"not an IF-TNCCS 1.1 message: {msg!r}")


@dataclass(frozen=True)
class Tnccs11Batch:
    batch_id: int
    recipient: str  # "TNCS" (sent by the client) or "TNCC" (sent by the server)
    messages: tuple[Tnccs11Message, ...] = ()

    def encode(self) -> bytes:
        if self.recipient not in RECIPIENTS:
            raise ValueError(f"bad recipient {self.recipient!r}")
        if not 0 <= self.batch_id < 1 << 31:
            raise ValueError("batch id out of range")
        # No XML declaration, xmlns:xsi, xsi:schemaLocation or newlines (hostapd writes them;
        # no parser needs them): ~200 bytes that pushed the result batch with a certificate
        # into a second EAP round trip.
        head = (f'<TNCCS-Batch BatchId="{self.batch_id}" Recipient="{self.recipient}" '
                f'xmlns="{TNCCS_NS}">')
        body = "".join(_encode_message(m) for m in self.messages)
        return (head + body + "</TNCCS-Batch>").encode("utf-8")

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Tnccs11Batch:
        return decode_batch(data, max_size=max_size)


class _Node:
    __slots__ = ("tag", "attrib", "text", "children")

    def __init__(self, tag: str, attrib: dict[str, str]) -> None:
        self.tag = tag
        self.attrib = attrib
        self.text: list[str] = []
        self.children: list[_Node] = []

    @property
    def content(self) -> str:
        return "".join(self.text)

    def serialize(self) -> str:
        attrs = "".join(f' {k}="{_esc(v, True)}"' for k, v in self.attrib.items())
        inner = _esc(self.content) + "".join(c.serialize() for c in self.children)
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>"


def _local(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def _refuse(*_args: object) -> None:
    raise Tnccs11CodecError("DTDs, entities and external references are not accepted")


def parse_xml(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> _Node:
    """Parse bounded, DTD-free XML into a small tree; any problem is Tnccs11CodecError."""
    if len(data) > max_size:
        raise Tnccs11CodecError(f"batch of {len(data)} bytes too long", "batch-too-long")
    parser = expat.ParserCreate(encoding="UTF-8")
    stack: list[_Node] = []
    root: list[_Node] = []
    count = 0

    def start(tag: str, attrib: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > _MAX_ELEMENTS or len(stack) >= _MAX_DEPTH:
            raise Tnccs11CodecError("XML too deep or too many elements")
        node = _Node(tag, attrib)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(text: str) -> None:
        if stack:
            stack[-1].text.append(text)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise Tnccs11CodecError(f"malformed XML: {exc}") from exc
    except RecursionError as exc:  # pragma: no cover - depth bound comes first
        raise Tnccs11CodecError("XML too deep") from exc
    if len(root) != 1:
        raise Tnccs11CodecError("no root element")
    return root[0]


def _child(node: _Node, name: str) -> _Node | None:
    found = [c for c in node.children if _local(c.tag) == name]
    if len(found) > 1:
        raise Tnccs11CodecError(f"duplicate <{name}>")
    return found[0] if found else None


def _type_of(node: _Node) -> int:
    t = _child(node, "Type")
    text = t.content.strip() if t is not None else ""
    if not re.fullmatch(r"[0-9A-Fa-f]{1,8}", text):
        raise Tnccs11CodecError(f"bad <Type> {text[:20]!r}")
    return int(text, 16)


def _b64(node: _Node) -> bytes:
    raw = node.content.encode("ascii", "replace")
    if not _B64_RE.fullmatch(raw):
        raise Tnccs11CodecError("bad Base64")
    try:
        return base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Tnccs11CodecError("bad Base64") from exc


def _decode_tnccs(node: _Node) -> Tnccs11Message:
    mtype = _type_of(node)
    xml = _child(node, "XML")
    if xml is None:
        b = _child(node, "Base64")
        if b is None:
            raise Tnccs11CodecError("TNCC-TNCS-Message without XML or Base64")
        return TnccsOther(mtype, _b64(b))
    if len(xml.children) != 1:
        raise Tnccs11CodecError("<XML> must hold exactly one element")
    inner = xml.children[0]
    name = _local(inner.tag)
    if mtype == TYPE_RECOMMENDATION and name == "TNCCS-Recommendation":
        rec = inner.attrib.get("type", "")
        if rec not in RECOMMENDATIONS:
            raise Tnccs11CodecError(f"bad recommendation {rec[:20]!r}")
        return TnccsRecommendation(rec)
    if mtype == TYPE_ERROR and name == "TNCCS-Error":
        etype = inner.attrib.get("type", "")
        if etype not in ERROR_TYPES:
            raise Tnccs11CodecError(f"bad error type {etype[:20]!r}")
        return TnccsError(etype, inner.content)
    if mtype == TYPE_PREFERRED_LANGUAGE and name == "TNCCS-PreferredLanguage":
        return TnccsPreferredLanguage(inner.content.strip())
    if mtype == TYPE_REASON_STRINGS and name == "TNCCS-ReasonStrings":
        reasons = []
        for rs in inner.children:
            if _local(rs.tag) != "ReasonString":
                raise Tnccs11CodecError("unexpected element in TNCCS-ReasonStrings")
            reasons.append((rs.attrib.get("xml:lang", ""), rs.content))
        return TnccsReasonStrings(tuple(reasons))
    if mtype in (TYPE_RECOMMENDATION, TYPE_ERROR, TYPE_PREFERRED_LANGUAGE,
                 TYPE_REASON_STRINGS):
        raise Tnccs11CodecError(f"type {mtype} does not match <{name}>")
    return TnccsOther(mtype, b"", inner.serialize())


def decode_batch(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Tnccs11Batch:
    root = parse_xml(bytes(data), max_size=max_size)
    if _local(root.tag) != "TNCCS-Batch":
        raise Tnccs11CodecError("root element is not TNCCS-Batch")
    bid = root.attrib.get("BatchId", "")
    if not re.fullmatch(r"[0-9]{1,10}", bid) or int(bid) >= 1 << 31:
        raise Tnccs11CodecError(f"bad BatchId {bid[:20]!r}", "invalid-batch-id")
    recipient = root.attrib.get("Recipient", "")
    if recipient not in RECIPIENTS:
        raise Tnccs11CodecError(f"bad Recipient {recipient[:20]!r}", "invalid-recipient-type")
    messages: list[Tnccs11Message] = []
    for node in root.children:
        name = _local(node.tag)
        if name == "IMC-IMV-Message":
            b = _child(node, "Base64")
            if b is None:
                raise Tnccs11CodecError("IMC-IMV-Message without Base64")
            messages.append(ImcImvMessage(_type_of(node), _b64(b)))
        elif name == "TNCC-TNCS-Message":
            messages.append(_decode_tnccs(node))
        else:
            raise Tnccs11CodecError(f"unexpected element <{name[:40]}>")
    return Tnccs11Batch(int(bid), recipient, tuple(messages))
