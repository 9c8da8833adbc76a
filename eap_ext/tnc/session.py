"""Sans-I/O TNCCS sessions: ImcSession (host side) and ImvSession (server side).

Both speak either TNCCS protocol, chosen per session: "tnccs11" (IF-TNCCS 1.1 XML, what
wpa_supplicant/hostapd EAP-TNC speak) or "pb-tnc" (PB-TNC, RFC 5793, for PT-EAP). They take
one reassembled inbound batch and return (outbound batch or None, events); the EAP layer
(eap_tnc.Fragmenter/Reassembler) moves the bytes.

IF-TNCCS 1.1 exchange (the TNCC speaks first, after the EAP-TNC Start):
    IMC  batch 1: posture PA-TNC message
    IMV  batch 2: results PA message + TNCCS-Recommendation       (done)
    IMC  no batch: the EAP peer answers with an empty EAP-TNC ack
If batch 1 lacks our posture (a foreign IMC, or none at all), the IMV first sends an
Attribute Request (batch 2), the IMC answers (batch 3), and the results go in batch 4.
Batch IDs count up by one across both directions, as wpa_supplicant's tncc checks.

PB-TNC exchange:
    IMC  CDATA: PB-PA(posture)
    IMV  SDATA: PB-PA(Assessment Result, Remediation Instructions, certificate)
    IMC  CDATA (empty)
    IMV  RESULT: PB-Assessment-Result, PB-Access-Recommendation,
         PB-Remediation-Parameters                                 (done)
    IMC  CLOSE
PB-PA messages stay out of the RESULT batch, and RESULT-only messages out of SDATA, as
RFC 5793 assigns them; that costs the one extra round trip.

Re-inspection (draft 5.3 step 3): an ImcSession whose posture holds a quarantine
certificate opens with a digest-only document (the certificate and the digest of the
current posture, no package inventory); ImvSession(want_full_posture=...) decides whether
to rely on it or to request every posture attribute before calling `evaluate`. Without
want_full_posture a digest-only document is always followed by a request.

A posture message that cannot be decoded is answered with a PA-TNC Error and, once, an
Attribute Request; one that no retry can fix (a deflated attribute that inflates past its
bound, i.e. a zip bomb) is refused at once: PA-TNC Error, assessment "error",
recommendation "none", the session failed and nothing evaluated (quarantine).

All PA-TNC content travels in ONE PA message per batch because wpa_supplicant's TNCC keeps
only the last message an IMC sends per batch.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from eap_ext.tnc import pb_tnc, tnccs11
from eap_ext.tnc.eap_tnc import detect_tnccs
from eap_ext.tnc.errors import PaTncCodecError, PbTncCodecError, TncCodecError
from eap_ext.tnc.pa_tnc import (
    DEFAULT_VENDOR_ID,
    IETF_PEN,
    AssessmentResult,
    Attribute,
    AttributeRequest,
    PaSubtype,
    PaTncError,
    PaTncMessage,
    RemediationInstructions,
    VendorAttribute,
    VendorAttrType,
    decode_message,
)
from eap_ext.tnc.posture_attrs import (
    attributes_for_request,
    attributes_to_posture,
    digest_only_document,
    is_digest_only,
    posture_attribute_types,
    posture_to_attributes,
)

Protocol = Literal["tnccs11", "pb-tnc"]
Recommendation = Literal["allow", "isolate", "none"]
EvaluateFn = Callable[[dict[str, Any], "str | None"],
                      "tuple[str, int, list[str], bytes | None]"]

ANY_VALIDATOR = 0xFFFF
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_PB_REC = {"allow": pb_tnc.AccessRecommendation.ALLOWED,
           "none": pb_tnc.AccessRecommendation.DENIED,
           "isolate": pb_tnc.AccessRecommendation.QUARANTINED}
_PB_REC_NAME = {int(v): k for k, v in _PB_REC.items()}


# -- events ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttributesRequested:
    """IMC: the IMV asked for these (vendor, type) attributes (answered automatically)."""

    types: frozenset[tuple[int, int]]


@dataclass(frozen=True)
class AssessmentReceived:
    result: int


@dataclass(frozen=True)
class RemediationReceived:
    instructions: tuple[str, ...]


@dataclass(frozen=True)
class CertificateReceived:
    token: bytes
    data: dict[str, Any]


@dataclass(frozen=True)
class RecommendationReceived:
    recommendation: str


@dataclass(frozen=True)
class ReasonReceived:
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PostureCollected:
    """IMV: the posture document handed to the evaluate callback."""

    document: dict[str, Any]


@dataclass(frozen=True)
class Evaluated:
    recommendation: str
    assessment: int
    remediation: tuple[str, ...]
    certificate: bytes | None


@dataclass(frozen=True)
class HandshakeDone:
    """The TNCCS handshake is over; `recommendation` is what was sent or received."""

    recommendation: str


@dataclass(frozen=True)
class PeerError:
    """The peer reported an error (TNCCS-Error, PB-Error or a PA-TNC Error attribute)."""

    detail: str


@dataclass(frozen=True)
class ProtocolError:
    """We could not accept the peer's batch; an error batch was (or will be) sent."""

    detail: str


Event = (AttributesRequested | AssessmentReceived | RemediationReceived
         | CertificateReceived | RecommendationReceived | ReasonReceived | PostureCollected
         | Evaluated | HandshakeDone | PeerError | ProtocolError)
Result = tuple[bytes | None, list[Event]]


def certificate_token(cert: bytes) -> str:
    """The CERTIFICATE attribute's "token": our ASCII "qc1." tokens as they are (base64 of
    them cost ~180 bytes, with the result batch's own base64 ~240: a second EAP round for
    every result with a certificate), any other certificate base64-encoded."""
    if cert.startswith(b"qc1.") and cert.isascii() and cert.decode("ascii").isprintable():
        return cert.decode("ascii")
    return base64.b64encode(cert).decode("ascii")


def certificate_bytes(token: object) -> bytes:
    """The certificate a "token" names (either form of certificate_token); b"" if none."""
    if not isinstance(token, str):
        return b""
    if token.startswith("qc1."):
        return token.encode("ascii", "replace")
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _remediation_attr(text: str) -> RemediationInstructions:
    if _URI_RE.match(text):
        return RemediationInstructions.uri(text)
    return RemediationInstructions.string(text)


def _remediation_pb(text: str) -> pb_tnc.PbRemediationParameters:
    if _URI_RE.match(text):
        return pb_tnc.PbRemediationParameters.uri(text)
    return pb_tnc.PbRemediationParameters.string(text)


@dataclass
class _Inbound:
    """One inbound batch, protocol-neutral."""

    pa: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # vendor, subtype,
    #                                                           collector/validator id, body
    recommendation: str | None = None
    assessment: int | None = None
    remediation: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    batch_type: int | None = None  # PB-TNC only


class _Base:
    def __init__(self, protocol: Protocol | None, vendor_id: int, pa_vendor: int,
                 pa_subtype: int, max_batch: int) -> None:
        if protocol not in (None, "tnccs11", "pb-tnc"):
            raise ValueError(f"unknown TNCCS protocol {protocol!r}")
        self.protocol: Protocol | None = protocol
        self.vendor_id = vendor_id
        self.pa_vendor = pa_vendor
        self.pa_subtype = pa_subtype
        self.max_batch = max_batch
        self.last_batch_id = 0
        self.done = False
        self.failed = False
        self.refused = False  # a PA-TNC message was refused outright (PaTncCodecError.refuse)
        self._msg_id = 0

    # PA-TNC messages
    def _pa(self, attrs: Sequence[Attribute]) -> bytes:
        self._msg_id += 1
        return PaTncMessage(self._msg_id, tuple(attrs)).encode()

    def _decode_pa(self, body: bytes, events: list[Any]) -> tuple[list[Attribute],
                                                                  PaTncError | None]:
        try:
            return list(decode_message(body, vendor_id=self.vendor_id).attributes), None
        except PaTncCodecError as exc:
            events.append(ProtocolError(f"PA-TNC: {exc}"))
            self.refused = self.refused or exc.refuse
            return [], PaTncError.from_exception(exc)

    # TNCCS parsing
    def _parse(self, data: bytes, from_server: bool) -> _Inbound:
        if self.protocol is None:
            self.protocol = detect_tnccs(data)
        if self.protocol == "tnccs11":
            return self._parse_11(data)
        return self._parse_pb(data, from_server)

    def _parse_11(self, data: bytes) -> _Inbound:
        batch = tnccs11.decode_batch(data, max_size=self.max_batch)
        if batch.batch_id != self.last_batch_id + 1:
            raise TncCodecError(f"BatchId {batch.batch_id}, expected {self.last_batch_id + 1}")
        self.last_batch_id = batch.batch_id
        inb = _Inbound()
        for m in batch.messages:
            if isinstance(m, tnccs11.ImcImvMessage):
                inb.pa.append((m.vendor, m.subtype, 0, m.body))
            elif isinstance(m, tnccs11.TnccsRecommendation):
                inb.recommendation = m.recommendation
            elif isinstance(m, tnccs11.TnccsError):
                inb.errors.append(f"TNCCS-Error {m.error_type}: {m.text}")
            elif isinstance(m, tnccs11.TnccsReasonStrings):
                inb.reasons.extend(text for _, text in m.reasons)
        return inb

    def _parse_pb(self, data: bytes, from_server: bool) -> _Inbound:
        batch = pb_tnc.decode_batch(data, expect_from_server=from_server,
                                    max_len=self.max_batch)
        inb = _Inbound(batch_type=batch.batch_type)
        for m in batch.messages:
            if isinstance(m, pb_tnc.PbPa):
                ident = m.validator_id if from_server else m.collector_id
                inb.pa.append((m.pa_vendor, m.pa_subtype, ident, m.body))
            elif isinstance(m, pb_tnc.PbAccessRecommendation):
                inb.recommendation = _PB_REC_NAME.get(m.recommendation, "none")
            elif isinstance(m, pb_tnc.PbAssessmentResult):
                inb.assessment = m.result
            elif isinstance(m, pb_tnc.PbRemediationParameters):
                inb.remediation.append(m.text)
            elif isinstance(m, pb_tnc.PbReasonString):
                inb.reasons.append(m.reason)
            elif isinstance(m, pb_tnc.PbError):
                inb.errors.append(f"PB-Error code {m.code} (fatal={m.fatal})")
        return inb

    def _ours(self, vendor: int, subtype: int) -> bool:
        return vendor == self.pa_vendor and subtype == self.pa_subtype

    # TNCCS building
    def _batch_11(self, recipient: str, messages: Sequence[tnccs11.Tnccs11Message]) -> bytes:
        self.last_batch_id += 1
        # TNCC-TNCS messages (the recommendation) go first: wpa_supplicant 2.10's tncc.c cuts
        # its buffer at each </IMC-IMV-Message> it reads and never restores it, so a
        # recommendation after an IMC-IMV message is never seen (found with eapol_test
        # against nac serve: "EAP-TNC: No TNCCS-Recommendation received").
        ordered = [m for m in messages if not isinstance(m, tnccs11.ImcImvMessage)] + [
            m for m in messages if isinstance(m, tnccs11.ImcImvMessage)]
        return tnccs11.Tnccs11Batch(self.last_batch_id, recipient, tuple(ordered)).encode()

    def _tnccs_error(self, exc: TncCodecError, server: bool) -> bytes:
        """The error batch answering an unacceptable inbound batch."""
        if self.protocol == "pb-tnc":
            err = (pb_tnc.PbError.from_exception(exc) if isinstance(exc, PbTncCodecError)
                   else pb_tnc.PbError.with_offset(pb_tnc.PbErrorCode.LOCAL_ERROR, 0))
            return pb_tnc.PbBatch(pb_tnc.BatchType.CLOSE, (err,), from_server=server).encode()
        etype = getattr(exc, "error_type", "malformed-batch")
        msgs: list[tnccs11.Tnccs11Message] = [tnccs11.TnccsError(etype, str(exc)[:200])]
        if server:
            msgs.append(tnccs11.TnccsRecommendation("none"))
        return self._batch_11("TNCC" if server else "TNCS", msgs)


class ImcSession(_Base):
    """Host side. Holds the collected posture; answers the IMV; records what it says."""

    def __init__(self, posture: dict[str, Any], *, protocol: Protocol = "tnccs11",
                 vendor_id: int = DEFAULT_VENDOR_ID, pa_vendor: int = IETF_PEN,
                 pa_subtype: int = PaSubtype.OPERATING_SYSTEM, collector_id: int = 1,
                 certificate_only: bool = False, max_batch: int = 1 << 20) -> None:
        super().__init__(protocol, vendor_id, pa_vendor, pa_subtype, max_batch)
        self.posture = posture
        self.collector_id = collector_id
        self.certificate_only = certificate_only
        self.attributes = posture_to_attributes(posture, vendor_id=vendor_id)
        self.sent_inventory = False  # whether any batch carried the package list
        self.recommendation: str | None = None
        self.assessment: int | None = None
        self.remediation: list[str] = []
        self.certificate: bytes | None = None
        self.certificate_data: dict[str, Any] | None = None
        self.reasons: list[str] = []

    def _outbound(self, pa_bodies: Sequence[bytes], validator: int = ANY_VALIDATOR) -> bytes:
        if self.protocol == "tnccs11":
            mtype = tnccs11.pa_message_type(self.pa_vendor, self.pa_subtype)
            return self._batch_11("TNCS", [tnccs11.ImcImvMessage(mtype, b) for b in pa_bodies])
        return pb_tnc.PbBatch(pb_tnc.BatchType.CDATA, tuple(
            pb_tnc.PbPa(self.pa_vendor, self.pa_subtype, self.collector_id, validator, b)
            for b in pa_bodies)).encode()

    def begin(self) -> bytes:
        """The first batch (sent right after the EAP-TNC/PT-EAP Start): the posture, or
        with certificate_only=True and a certificate at hand, just that certificate (draft
        5.3 step 3); the IMV then asks for the rest if it will not rely on it."""
        self.last_batch_id = 0
        return self._outbound([self._pa(self._first_attributes())])

    def _first_attributes(self) -> list[Attribute]:
        digest_only = digest_only_document(self.posture) if self.certificate_only else None
        if digest_only is None:
            return self._sent(self.attributes)
        return posture_to_attributes(digest_only, vendor_id=self.vendor_id)

    def _sent(self, attrs: list[Attribute]) -> list[Attribute]:
        if any(a.vendor_id == self.vendor_id and a.attr_type
               == VendorAttrType.PACKAGES_COMPACT for a in attrs):
            self.sent_inventory = True
        return attrs

    def receive(self, data: bytes) -> Result:
        events: list[Any] = []
        if self.done:
            return None, events
        try:
            inb = self._parse(data, from_server=True)
        except TncCodecError as exc:
            events.append(ProtocolError(str(exc)))
            self.done = self.failed = True
            return self._tnccs_error(exc, server=False), events
        events.extend(PeerError(e) for e in inb.errors)
        reply: list[Attribute] = []
        validator = ANY_VALIDATOR
        for vendor, subtype, ident, body in inb.pa:
            if not self._ours(vendor, subtype):
                continue
            attrs, err = self._decode_pa(body, events)
            if err is not None:
                reply.append(err)
                continue
            if self.protocol == "pb-tnc":
                validator = ident
            reply.extend(x for x in self._server_attributes(attrs, events) if x not in reply)
        replies = [self._pa(reply)] if reply else []
        if inb.assessment is not None:
            self.assessment = inb.assessment
            events.append(AssessmentReceived(inb.assessment))
        self._add_remediation(inb.remediation, events)
        if inb.reasons:
            self.reasons.extend(inb.reasons)
            events.append(ReasonReceived(tuple(inb.reasons)))
        if self.protocol == "pb-tnc":
            return self._after_pb(inb, replies, validator, events)
        if inb.recommendation is not None:
            self._finish(inb.recommendation, events)
            return None, events  # EAP-TNC peers answer the last batch with a bare ack
        return self._outbound(replies), events

    def _after_pb(self, inb: _Inbound, replies: list[bytes], validator: int,
                  events: list[Any]) -> Result:
        if inb.batch_type == pb_tnc.BatchType.RESULT:
            self._finish(inb.recommendation or "none", events)
            return pb_tnc.PbBatch(pb_tnc.BatchType.CLOSE).encode(), events
        if inb.batch_type == pb_tnc.BatchType.CLOSE:
            if self.recommendation is None:
                self.failed = True
            self.done = True
            return None, events
        if inb.batch_type == pb_tnc.BatchType.SRETRY:
            return self._outbound([self._pa(self._first_attributes())]), events
        return self._outbound(replies, validator), events

    def _finish(self, recommendation: str, events: list[Any]) -> None:
        self.recommendation = recommendation
        self.done = True
        events.append(RecommendationReceived(recommendation))
        events.append(HandshakeDone(recommendation))

    def _server_attributes(self, attrs: list[Attribute], events: list[Any]) -> list[Attribute]:
        """Record what the IMV says; return the attributes to send back."""
        reply: list[Attribute] = []
        remediation: list[str] = []
        for a in attrs:
            if isinstance(a, AttributeRequest):
                wanted = frozenset(a.entries)
                events.append(AttributesRequested(wanted))
                reply.extend(self._sent(attributes_for_request(
                    self.posture, wanted, vendor_id=self.vendor_id)))
            elif isinstance(a, AssessmentResult):
                self.assessment = a.result
                events.append(AssessmentReceived(a.result))
            elif isinstance(a, RemediationInstructions):
                remediation.append(a.text)
            elif isinstance(a, PaTncError):
                events.append(PeerError(f"PA-TNC Error code {a.error_code}"))
            elif (isinstance(a, VendorAttribute) and a.kind == VendorAttrType.CERTIFICATE
                  and isinstance(a.data, dict)):
                raw = certificate_bytes(a.data.get("token"))
                self.certificate, self.certificate_data = raw, dict(a.data)
                events.append(CertificateReceived(raw, dict(a.data)))
        self._add_remediation(remediation, events)
        return reply

    def _add_remediation(self, items: list[str], events: list[Any]) -> None:
        # PB-TNC repeats the PA-level instructions as PB-Remediation-Parameters
        new = [r for r in items if r not in self.remediation]
        if new:
            self.remediation.extend(new)
            events.append(RemediationReceived(tuple(new)))


class ImvSession(_Base):
    """Server side: collects the posture, calls `evaluate(document, identity)` once, and
    sends assessment, remediation, certificate and recommendation.

    `evaluate` returns (recommendation 'allow'|'isolate'|'none', assessment result 0-4,
    remediation strings (URIs are sent as URIs), certificate bytes or None). With
    protocol=None the protocol is detected from the first inbound batch.

    `want_full_posture(document)`, if given, is asked once before evaluating: returning
    True makes the IMV request every posture attribute first, e.g. when a host sent only
    its quarantine certificate and the server will not rely on it. When the peer sends an
    attribute type again, the newer copy replaces the older one.

    `digest_first` is said in every certificate sent ({"digest_first": true}): the agent
    may lead with a digest-only document next time. Leave it off where the server cannot
    take one (it stores the posture it decides on, and needs the inventory for that).
    """

    def __init__(self, evaluate: EvaluateFn, *, identity: str | None = None,
                 protocol: Protocol | None = None, vendor_id: int = DEFAULT_VENDOR_ID,
                 pa_vendor: int = IETF_PEN, pa_subtype: int = PaSubtype.OPERATING_SYSTEM,
                 validator_id: int = 1,
                 want_full_posture: Callable[[dict[str, Any]], bool] | None = None,
                 digest_first: bool = False, max_batch: int = 1 << 20) -> None:
        super().__init__(protocol, vendor_id, pa_vendor, pa_subtype, max_batch)
        self.evaluate = evaluate
        self.identity = identity
        self.validator_id = validator_id
        self.want_full_posture = want_full_posture
        self.digest_first = digest_first
        self.collector_id = ANY_VALIDATOR
        self._by_type: dict[tuple[int, int], list[Attribute]] = {}
        self.requested = False
        self.document: dict[str, Any] | None = None
        self.decision: Evaluated | None = None
        self._result_pending = False  # PB-TNC: SDATA sent, RESULT still to send

    @property
    def attributes(self) -> list[Attribute]:
        """The posture attributes collected so far (latest copy of each type)."""
        return [a for group in self._by_type.values() for a in group]

    def _collect(self, attrs: Sequence[Attribute]) -> None:
        fresh: dict[tuple[int, int], list[Attribute]] = {}
        for a in attrs:
            if not isinstance(a, AttributeRequest | PaTncError):
                fresh.setdefault((a.vendor_id, a.attr_type), []).append(a)
        self._by_type.update(fresh)

    def _complete(self) -> bool:
        return any((self.vendor_id, k) in self._by_type
                   for k in (VendorAttrType.DOCUMENT_META, VendorAttrType.POSTURE_DOCUMENT))

    def _request(self, errors: Sequence[Attribute]) -> bytes:
        self.requested = True
        req = AttributeRequest(posture_attribute_types(self.vendor_id))
        return self._outbound([self._pa([*errors, req])], [])

    def receive(self, data: bytes) -> Result:
        events: list[Any] = []
        if self.done:
            return None, events  # the peer's CLOSE (PB-TNC) or stray traffic
        try:
            inb = self._parse(data, from_server=False)
        except TncCodecError as exc:
            events.append(ProtocolError(str(exc)))
            self.done = self.failed = True
            return self._tnccs_error(exc, server=True), events
        events.extend(PeerError(e) for e in inb.errors)
        if self.protocol == "pb-tnc" and inb.batch_type == pb_tnc.BatchType.CLOSE:
            self.done = self.failed = True
            return None, events
        if self._result_pending:
            return self._send_result(events), events
        errors: list[Attribute] = []
        for vendor, subtype, ident, body in inb.pa:
            if not self._ours(vendor, subtype):
                continue
            attrs, err = self._decode_pa(body, events)
            if err is not None:
                errors.append(err)
            if self.protocol == "pb-tnc":
                self.collector_id = ident
            events.extend(PeerError(f"PA-TNC Error code {a.error_code}")
                          for a in attrs if isinstance(a, PaTncError))
            self._collect(attrs)
        if self.refused:
            return self._refuse(events, errors), events
        if not self.requested:
            if not self._complete():
                return self._request(errors), events
            doc = attributes_to_posture(self.attributes, vendor_id=self.vendor_id)
            want = self.want_full_posture
            if (want(doc) if want is not None else is_digest_only(doc)):
                return self._request(errors), events
        return self._decide(events, errors), events

    def _refuse(self, events: list[Any], errors: Sequence[Attribute]) -> bytes:
        """End the handshake without evaluating: the host stays in quarantine."""
        self.failed = True
        self.decision = Evaluated("none", 3, (), None)
        events.append(self.decision)
        body = self._pa([*errors, AssessmentResult(3)])
        if self.protocol == "tnccs11":
            self.done = True
            events.append(HandshakeDone("none"))
            return self._outbound([body], [tnccs11.TnccsRecommendation("none")])
        self._result_pending = True
        return self._outbound([body], [])

    def _decide(self, events: list[Any], errors: Sequence[Attribute] = ()) -> bytes:
        doc = attributes_to_posture(self.attributes, vendor_id=self.vendor_id)
        self.document = doc
        events.append(PostureCollected(doc))
        rec, assessment, remediation, cert = self.evaluate(doc, self.identity)
        if rec not in ("allow", "isolate", "none"):
            raise ValueError(f"evaluate returned recommendation {rec!r}")
        self.decision = Evaluated(rec, int(assessment), tuple(remediation), cert)
        events.append(self.decision)
        results: list[Attribute] = [*errors, AssessmentResult(int(assessment))]
        results.extend(_remediation_attr(r) for r in remediation)
        if cert is not None:
            results.append(VendorAttribute(
                VendorAttrType.CERTIFICATE,
                {"token": certificate_token(cert),
                 **({"digest_first": True} if self.digest_first else {})},
                self.vendor_id))
        body = self._pa(results)
        if self.protocol == "tnccs11":
            out = self._outbound([body], [tnccs11.TnccsRecommendation(rec)])
            self.done = True
            events.append(HandshakeDone(rec))
            return out
        self._result_pending = True
        return self._outbound([body], [])

    def _send_result(self, events: list[Any]) -> bytes:
        assert self.decision is not None
        d = self.decision
        msgs: list[pb_tnc.PbMessage] = [pb_tnc.PbAssessmentResult(min(d.assessment, 4)),
                                        pb_tnc.PbAccessRecommendation(_PB_REC[d.recommendation])]
        msgs.extend(_remediation_pb(r) for r in d.remediation)
        self._result_pending = False
        self.done = True
        events.append(HandshakeDone(d.recommendation))
        return pb_tnc.PbBatch(pb_tnc.BatchType.RESULT, tuple(msgs)).encode()

    def _outbound(self, pa_bodies: Sequence[bytes],
                  extra: Sequence[tnccs11.Tnccs11Message]) -> bytes:
        if self.protocol == "tnccs11":
            mtype = tnccs11.pa_message_type(self.pa_vendor, self.pa_subtype)
            msgs: list[tnccs11.Tnccs11Message] = [tnccs11.ImcImvMessage(mtype, b)
                                                  for b in pa_bodies[-1:]]
            return self._batch_11("TNCC", [*msgs, *extra])
        return pb_tnc.PbBatch(pb_tnc.BatchType.SDATA, tuple(
            pb_tnc.PbPa(self.pa_vendor, self.pa_subtype, self.collector_id, self.validator_id,
                        b, exclusive=self.collector_id != ANY_VALIDATOR)
            for b in pa_bodies)).encode()
