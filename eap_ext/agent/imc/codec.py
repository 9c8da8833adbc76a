"""Posture document <-> PA-TNC messages for the IMC, over eap_ext.tnc's codecs.

The agent's needs are two calls (PostureCodec): the posture as IF-IMC messages, and what a
server message tells us (ServerNews). The PA-TNC work itself belongs to eap_ext/tnc
(pa_tnc + posture_attrs: one attribute per section, IETF attributes where they exist); this
module only adapts it. FallbackCodec, used only when those modules cannot be imported, sends
one vendor attribute of type POSTURE_DOCUMENT (0x7E) with the whole document as JSON, which
posture_attrs also reads.

Message type: everything goes in ONE PA-TNC message of type (IETF << 8) | 1 (PA subtype
"Operating System", RFC 5792 7.2), because wpa_supplicant's TNCC keeps only the last
message an IMC sends per batch, and the OS component is what our attributes describe.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from .framing import message_type

log = logging.getLogger(__name__)

IETF_PEN = 0
SUBTYPE_OPERATING_SYSTEM = 1
POSTURE_MESSAGE_TYPE = message_type(IETF_PEN, SUBTYPE_OPERATING_SYSTEM)
NAC_PEN = 32473          # RFC 5612 documentation PEN, as eap_ext.tnc.pa_tnc's default
FALLBACK_DOCUMENT_TYPE = 0x7E  # fallback only: the whole posture document as JSON

ASSESSMENT_NAMES = {0: "compliant", 1: "minor-non-compliance", 2: "major-non-compliance",
                    3: "error", 4: "dont-know"}


@dataclass
class ServerNews:
    """What the server told us in one message; None/empty = not in this message."""

    assessment: str | None = None
    remediation: list[str] = field(default_factory=list)
    recommendation: str | None = None
    segment: str | None = None
    certificate: dict[str, Any] | None = None
    replies: list[tuple[int, bytes]] = field(default_factory=list)

    def state_changes(self) -> dict[str, Any]:
        changes: dict[str, Any] = {"assessment": self.assessment,
                                   "recommendation": self.recommendation,
                                   "segment": self.segment, "certificate": self.certificate}
        if self.remediation:
            changes["remediation"] = self.remediation
        return {k: v for k, v in changes.items() if v is not None}


class PostureCodec(Protocol):
    def posture_messages(self, doc: dict[str, Any], *,
                         digest_first: bool = False) -> list[tuple[int, bytes]]: ...

    def server_message(self, msg_type: int, data: bytes) -> ServerNews: ...


class FallbackCodec:
    """Self-contained PA-TNC: header + one skippable vendor attribute with the JSON document."""

    def __init__(self) -> None:
        self._next_id = 1

    def posture_messages(self, doc: dict[str, Any], *,
                         digest_first: bool = False) -> list[tuple[int, bytes]]:
        value = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
        attr = struct.pack("!BBHII", 0, NAC_PEN >> 16, NAC_PEN & 0xFFFF,
                           FALLBACK_DOCUMENT_TYPE, 12 + len(value)) + value
        msg = struct.pack("!BBHI", 1, 0, 0, self._next_id) + attr
        self._next_id += 1
        return [(POSTURE_MESSAGE_TYPE, msg)]

    def server_message(self, msg_type: int, data: bytes) -> ServerNews:
        return news_from_pa_tnc(data)


def news_from_pa_tnc(data: bytes) -> ServerNews:
    """Read assessment, remediation, certificate and segment from a server PA-TNC message."""
    try:
        from eap_ext.tnc import pa_tnc
    except ImportError:
        log.debug("eap_ext.tnc.pa_tnc unavailable: server message not decoded")
        return ServerNews()
    try:
        msg = pa_tnc.decode_message(data, vendor_id=NAC_PEN)
    except ValueError as exc:
        log.debug("undecodable server message: %s", exc)
        return ServerNews()
    return news_from_attributes(msg.attributes)


def news_from_attributes(attributes: Any) -> ServerNews:
    from eap_ext.tnc import pa_tnc

    news = ServerNews()
    for attr in attributes:
        if isinstance(attr, pa_tnc.AssessmentResult):
            news.assessment = ASSESSMENT_NAMES.get(attr.result, str(attr.result))
        elif isinstance(attr, pa_tnc.RemediationInstructions):
            news.remediation.append(attr.text)
        elif isinstance(attr, pa_tnc.VendorAttribute):
            if attr.kind == pa_tnc.VendorAttrType.CERTIFICATE and isinstance(attr.data, dict):
                news.certificate = attr.data
            elif isinstance(attr.data, dict) and "segment" in attr.data:
                news.segment = str(attr.data["segment"])
    return news


class TncCodec:
    """eap_ext.tnc's mapping: per-section attributes, the package list compact (IETF
    Installed Packages only when an IMV asks for that alone), the quarantine certificate
    first, Attribute Requests answered, PA-TNC errors reported back for messages we cannot
    parse (RFC 5792 4.2.8)."""

    def __init__(self) -> None:
        from eap_ext.tnc import pa_tnc, posture_attrs

        self._pa = pa_tnc
        self._attrs = posture_attrs
        self._next_id = 1
        self._last_doc: dict[str, Any] | None = None

    def _message(self, attributes: list[Any]) -> tuple[int, bytes]:
        msg = self._pa.build_message(self._next_id, attributes)
        self._next_id += 1
        return POSTURE_MESSAGE_TYPE, msg

    def posture_messages(self, doc: dict[str, Any], *,
                         digest_first: bool = False) -> list[tuple[int, bytes]]:
        """The first message: with digest_first (the server's certificate said it takes
        that) and a certificate, only the certificate and the posture digest (the server
        asks for the rest if it will not rely on them); else the whole posture with the
        compact package list and its digest (stated_digest)."""
        from ..collectors import posture_digest

        # the digest goes along so the server need not recompute it (nac/posture/digest.py)
        self._last_doc = {**doc, "stated_digest": posture_digest(doc)}
        lead = self._attrs.digest_only_document(doc) if digest_first else None
        first = lead or self._last_doc
        return [self._message(self._attrs.posture_to_attributes(first, vendor_id=NAC_PEN))]

    def server_message(self, msg_type: int, data: bytes) -> ServerNews:
        try:
            msg = self._pa.decode_message(data, vendor_id=NAC_PEN)
        except self._pa.PaTncCodecError as exc:
            log.debug("server message rejected: %s", exc)
            return ServerNews(replies=[self._message([self._pa.PaTncError.from_exception(exc)])])
        news = news_from_attributes(msg.attributes)
        requested = self._pa.requested_types(msg.attributes)
        if requested and self._last_doc is not None:
            chosen = self._attrs.attributes_for_request(self._last_doc, requested,
                                                        vendor_id=NAC_PEN)
            if chosen:
                news.replies.append(self._message(chosen))
        return news


def default_codec() -> PostureCodec:
    try:
        return TncCodec()
    except ImportError as exc:
        log.debug("eap_ext.tnc codecs unavailable (%s): JSON fallback", exc)
        return FallbackCodec()
