"""EAP-TNC / PT-EAP method cores on Type-Data: framing + TNCCS session, sans-I/O.

EapTncServer wraps an ImvSession the way hostapd's eap_server_tnc wraps its TNCS: Start,
fragment acknowledgements both ways, one TNCCS batch per reassembled message, and the end
of the method when the peer acknowledges the last batch (IF-TNCCS 1.1) or answers RESULT
with CLOSE (PB-TNC). EapTncPeer does the same for an ImcSession on the host side.

Both see only Type-Data (after the EAP Type octet); the EAP server owns codes,
identifiers, the tunnel and timers. The outcome of the method is not access: "isolate"
finishes the method with success so the caller can place the host in the isolated
segment; only "none" (and protocol failures) end in failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from eap_ext.tnc.eap_tnc import (
    DEFAULT_FRAGMENT_SIZE,
    DEFAULT_MAX_MESSAGE,
    EAP_TNC_VERSION,
    Fragmenter,
    Reassembler,
    TncFrame,
    ack_frame,
    start_frame,
)
from eap_ext.tnc.errors import TncCodecError
from eap_ext.tnc.session import ImcSession, ImvSession


@dataclass
class MethodStep:
    """What to do next: send `data` as the next Request/Response Type-Data, or finish."""

    kind: Literal["request", "response", "success", "failure"]
    data: bytes = b""
    events: list[Any] = field(default_factory=list)
    reason: str = ""


class EapTncServer:
    """Server side of EAP-TNC (type 38) or PT-EAP (type 54) around an ImvSession."""

    def __init__(self, imv: ImvSession, *, version: int = EAP_TNC_VERSION,
                 max_fragment: int = DEFAULT_FRAGMENT_SIZE,
                 max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.imv = imv
        self.version = version
        self.max_fragment = max_fragment
        self._rx = Reassembler(max_message=max_message, version=version)
        self._tx: Fragmenter | None = None
        self.finished = False

    def start(self) -> bytes:
        return start_frame(self.version)

    def _send(self, batch: bytes, events: list[Any]) -> MethodStep:
        self._tx = Fragmenter(batch, max_fragment=self.max_fragment, version=self.version)
        return MethodStep("request", self._tx.next_frame(), events)

    def _finish(self, events: list[Any]) -> MethodStep:
        self.finished = True
        decision = self.imv.decision
        if self.imv.failed or decision is None:
            return MethodStep("failure", events=events, reason="TNCCS handshake failed")
        if decision.recommendation == "none":
            return MethodStep("failure", events=events, reason="recommendation: none")
        return MethodStep("success", events=events)

    def process(self, type_data: bytes) -> MethodStep:
        if self.finished:
            return MethodStep("failure", reason="method already finished")
        try:
            frame = TncFrame.decode(type_data)
            if frame.start:
                raise TncCodecError("peer used the Start flag")
            if self._tx is not None and not self._tx.done:
                if not frame.is_ack:
                    raise TncCodecError("data while our fragments await acknowledgement")
                return MethodStep("request", self._tx.next_frame())
            if self.imv.done and frame.is_ack and not self._rx.in_progress:
                return self._finish([])  # the peer acknowledged our last batch
            got = self._rx.feed(type_data)
            if got is None:
                return MethodStep("request", ack_frame(self.version))
            out, events = self.imv.receive(got.data)
        except TncCodecError as exc:
            self.finished = True
            return MethodStep("failure", reason=str(exc))
        if out is None:
            return self._finish(events)
        return self._send(out, events)


class EapTncPeer:
    """Peer side of EAP-TNC / PT-EAP around an ImcSession (tests, or hosts without a
    wpa_supplicant TNCC)."""

    def __init__(self, imc: ImcSession, *, version: int = EAP_TNC_VERSION,
                 max_fragment: int = DEFAULT_FRAGMENT_SIZE,
                 max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.imc = imc
        self.version = version
        self.max_fragment = max_fragment
        self._rx = Reassembler(max_message=max_message, version=version)
        self._tx: Fragmenter | None = None
        self._started = False

    def _send(self, batch: bytes, events: list[Any]) -> MethodStep:
        self._tx = Fragmenter(batch, max_fragment=self.max_fragment, version=self.version)
        return MethodStep("response", self._tx.next_frame(), events)

    def process(self, type_data: bytes) -> MethodStep:
        """Handle a Request's Type-Data; the step's data is the Response's Type-Data."""
        try:
            frame = TncFrame.decode(type_data)
            if not self._started:
                if not frame.start:
                    raise TncCodecError("first request without the Start flag")
                self._started = True
                return self._send(self.imc.begin(), [])
            if frame.start:
                raise TncCodecError("server used the Start flag again")
            if self._tx is not None and not self._tx.done:
                if not frame.is_ack:
                    raise TncCodecError("data while our fragments await acknowledgement")
                return MethodStep("response", self._tx.next_frame())
            got = self._rx.feed(type_data)
            if got is None:
                return MethodStep("response", ack_frame(self.version))
            out, events = self.imc.receive(got.data)
        except TncCodecError as exc:
            return MethodStep("failure", reason=str(exc))
        if out is None:
            return MethodStep("response", ack_frame(self.version), events)
        return self._send(out, events)
