"""TNC harnesses: each codec of eap_ext/tnc may raise only its TncCodecError family, and the
EAP-TNC server (the posture method inside tunnels) must never raise at all."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

from eap_ext.tnc import eap_tnc, pa_tnc, pb_tnc, tnccs11
from eap_ext.tnc.errors import TncCodecError
from fuzz import lab
from fuzz.core import ROOT, Finding, Harness, Target, join_records, records, register
from fuzz.eap import _records_mutate

POSTURES = ROOT / "tests" / "data" / "postures"


def _codec_target(decode: Callable[[bytes], Any], encode: Callable[[Any], bytes]) -> Target:
    """Only TncCodecError may escape the decoder; what it accepts must survive a round trip
    through our own encoder (the agent and the server share these codecs)."""

    def one(data: bytes) -> str | None:
        try:
            value = decode(data)
        except TncCodecError as exc:
            return "error:" + type(exc).__name__ + ":" + str(exc)[:24]
        try:
            again = decode(encode(value))
        except (TncCodecError, ValueError) as exc:
            raise Finding(f"decoded value does not re-encode/decode: {exc}") from None
        if again != value:
            raise Finding("decode(encode(decode(x))) != decode(x)")
        return "ok:" + type(value).__name__
    return one


@functools.cache
def _postures() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(POSTURES.glob("*.json"))][:6]


def _judge(doc: dict[str, Any], identity: str | None) -> tuple[str, int, list[str], None]:
    rec, assess, remediation, _ = lab.judge(doc, SimpleNamespace(role="default", identity=identity))
    return rec, assess, remediation, None


@functools.cache
def _conversations(protocol: str) -> list[tuple[bytes, bytes]]:
    """(client batch, server answer) pairs from a real IMC/IMV exchange, for seeds."""
    from eap_ext.tnc.session import ImcSession, ImvSession

    out = []
    for doc in _postures()[:3]:
        imc = ImcSession(doc, protocol=protocol)
        imv = ImvSession(_judge, identity=lab.USER)
        batch: bytes | None = imc.begin()
        for _ in range(4):
            if batch is None:
                break
            answer, _ev = imv.receive(batch)
            if answer is None:
                break
            out.append((batch, answer))
            batch, _ev = imc.receive(answer)
    return out


def _batches(protocol: str) -> Iterator[bytes]:
    for a, b in _conversations(protocol):
        yield a
        yield b


def _pa_messages() -> Iterator[bytes]:
    from eap_ext.tnc.posture_attrs import posture_to_attributes

    for doc in _postures()[:3]:
        yield pa_tnc.build_message(7, posture_to_attributes(doc))
    for batch in _batches("pb-tnc"):
        for m in pb_tnc.decode_batch(batch).messages:
            if isinstance(m, pb_tnc.PbPa):
                yield m.body


# --- eap_tnc_reassembler ---------------------------------------------------------------------
def _reassembler_target() -> Target:
    def one(data: bytes) -> str | None:
        bound = 64 + (data[0] if data else 0) * 64
        rx = eap_tnc.Reassembler(max_message=bound)
        pending = b""
        label = "none"
        for _flags, frame in records(data[1:], limit=48):
            was = rx.in_progress
            try:
                got = rx.feed(frame)
            except TncCodecError as exc:
                if rx.in_progress:
                    raise Finding("an error left a reassembly in progress") from None
                pending, label = b"", "error:" + str(exc)[:24]
                continue
            body = eap_tnc.TncFrame.decode(frame).data
            pending = pending + body if was else body
            if len(pending) > bound:
                raise Finding(f"holds {len(pending)} octets over the bound {bound}")
            if got is None:
                label = "more"
                continue
            if got.data != pending:
                raise Finding("reassembled message differs from its fragments")
            pending, label = b"", "message"
        return label
    return one


def _reassembler_seeds() -> Iterator[bytes]:
    for batch in list(_batches("tnccs11"))[:2] + list(_batches("pb-tnc"))[:2]:
        for size in (40, 300):
            frames = eap_tnc.fragment(batch, max_fragment=size)
            yield bytes((40,)) + join_records([(0, f) for f in frames])
    yield bytes((0,)) + join_records([(0, eap_tnc.start_frame()), (0, eap_tnc.ack_frame())])


# --- tnc_server ------------------------------------------------------------------------------
# Selector octet: fragment size. Record flags: bit 0 the payload is a whole TNCCS batch,
# framed and fragmented here (acknowledging the server between fragments); else it is one
# raw Type-Data frame.
BATCH = 1
STEP_KINDS = ("request", "success", "failure")


def _frames(data: bytes, size: int) -> Iterator[bytes]:
    """The frames a tnc_server/tnc_peer input sends, in order (records of ``BATCH`` framed
    and fragmented at ``size``)."""
    for flags, payload in records(data, limit=16):
        if flags & BATCH:
            yield from eap_tnc.fragment(payload, max_fragment=size)
        else:
            yield payload


def _step(st: Any, kinds: tuple[str, ...], size: int) -> Any:
    """One method step's invariants on either side: a known kind, frames within bounds."""
    if st.kind not in kinds:
        raise Finding(f"step kind {st.kind!r}")
    if st.kind == kinds[0] and len(st.data) > max(size, 6):
        raise Finding(f"frame of {len(st.data)} over max_fragment {size}")
    return st


def _server_target() -> Target:
    from eap_ext.tnc.eap_method import EapTncServer
    from eap_ext.tnc.session import ImvSession

    def one(data: bytes) -> str | None:
        size = 20 + (data[0] if data else 0) * 8
        srv = EapTncServer(ImvSession(_judge, identity=lab.USER), max_fragment=size)
        if not srv.start():
            raise Finding("empty Start")
        label = "none"
        for frame in _frames(data[1:], size):
            st = _step(srv.process(frame), STEP_KINDS, size)
            if st.kind == "request" and not st.data:
                raise Finding("request without Type-Data")
            label = st.kind + ":" + st.reason[:24]
            if st.kind != "request":
                if srv.process(b"\x01").kind != "failure":
                    raise Finding("a finished method took more input")
                return label
        return label
    return one


def _server_seeds() -> Iterator[bytes]:
    for protocol in ("tnccs11", "pb-tnc"):
        convo = _conversations(protocol)
        if convo:
            first = convo[0][0]
            yield bytes((160,)) + join_records([(BATCH, first), (0, eap_tnc.ack_frame())])
            yield bytes((4,)) + join_records([(BATCH, first)] + [(0, eap_tnc.ack_frame())] * 8)
    from fuzz.eap import posture_first_frames

    yield bytes((160,)) + join_records([(0, posture_first_frames()), (0, b"\x01")])


# --- tnc_peer --------------------------------------------------------------------------------
def _peer_target() -> Target:
    """The agent's side (eap_ext ships to hosts): a rogue or broken server must not crash
    it. Same records as tnc_server; the Start frame comes first unless the input says no."""
    from eap_ext.tnc.eap_method import EapTncPeer
    from eap_ext.tnc.session import ImcSession

    doc = _postures()[0]

    def one(data: bytes) -> str | None:
        size = 20 + (data[0] if data else 0) * 8
        peer = EapTncPeer(ImcSession(doc), max_fragment=size)
        label = "none"
        if not (data and data[0] & 1):
            peer.process(eap_tnc.start_frame())
        for frame in _frames(data[1:], size):
            st = _step(peer.process(frame), ("response", "failure"), size)
            label = st.kind + ":" + st.reason[:24]
        return label
    return one


def _peer_seeds() -> Iterator[bytes]:
    for protocol in ("tnccs11", "pb-tnc"):
        answers = [b for _a, b in _conversations(protocol)]
        if answers:
            yield bytes((160,)) + join_records([(BATCH, a) for a in answers])
            yield bytes((4,)) + join_records([(BATCH, answers[0])] + [(0, b"\x01")] * 4)


def _tnccs11_encode(b: tnccs11.Tnccs11Batch) -> bytes:
    return b.encode()


def _pb_encode(b: pb_tnc.PbBatch) -> bytes:
    return b.encode()


def _pa_encode(m: pa_tnc.PaTncMessage) -> bytes:
    return m.encode()


register(Harness("tnccs11", "IF-TNCCS 1.1 XML decode_batch: only TncCodecError; round trip",
                 lambda: _codec_target(tnccs11.decode_batch, _tnccs11_encode),
                 lambda: _batches("tnccs11"), max_len=16384))
register(Harness("pb_tnc", "PB-TNC decode_batch: only TncCodecError; round trip",
                 lambda: _codec_target(pb_tnc.decode_batch, _pb_encode),
                 lambda: _batches("pb-tnc"), max_len=16384))
register(Harness("pa_tnc", "PA-TNC decode_message: only TncCodecError; round trip",
                 lambda: _codec_target(pa_tnc.decode_message, _pa_encode),
                 _pa_messages, max_len=16384))
register(Harness("eap_tnc_reassembler", "EAP-TNC Reassembler: only EapTncFramingError, "
                 "messages equal their fragments, bounded", _reassembler_target,
                 _reassembler_seeds, mutate=_records_mutate, max_len=16384))
register(Harness("tnc_peer", "EapTncPeer.process (the agent's EAP-TNC side) against a rogue "
                 "server: never raises", _peer_target, _peer_seeds, mutate=_records_mutate,
                 max_len=16384))
register(Harness("tnc_server", "EapTncServer.process (posture inside the tunnel) over "
                 "whole exchanges: never raises, frames within bounds", _server_target,
                 _server_seeds, mutate=_records_mutate, max_len=16384))
