"""Posture document <-> PA-TNC messages for the IMC, over eap_ext.tnc's codecs.

The agent's needs are two calls (PostureCodec): the posture as IF-IMC messages, and what a
server message tells us (ServerNews). The PA-TNC work itself belongs to eap_ext/tnc; this
module only adapts it, with a minimal built-in fallback so the agent still speaks when that
package is absent (one vendor attribute carrying the whole document as JSON).

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
    def posture_messages(self, doc: dict[str, Any]) -> list[tuple[int, bytes]]: ...

    def server_message(self, msg_type: int, data: bytes) -> ServerNews: ...


class FallbackCodec:
    """Self-contained PA-TNC: header + one skippable vendor attribute with the JSON document."""

    def __init__(self) -> None:
        self._next_id = 1

    def posture_messages(self, doc: dict[str, Any]) -> list[tuple[int, bytes]]:
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
    news = ServerNews()
    try:
        from eap_ext.tnc import pa_tnc
    except ImportError:
        log.debug("eap_ext.tnc.pa_tnc unavailable: server message not decoded")
        return news
    try:
        msg = pa_tnc.decode_message(data, vendor_id=NAC_PEN)
    except ValueError as exc:
        log.debug("undecodable server message: %s", exc)
        return news
    for attr in msg.attributes:
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


def default_codec() -> PostureCodec:
    return FallbackCodec()
