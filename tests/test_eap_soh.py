"""Statement of Health (nac/eap/soh.py) and PEAP's SoH exchange, in process: the codec on
the bytes wpa_supplicant 2.10 really sends, the Windows SHA's health classes, property round
trips and malformed input (only SohError), and PEAP asking for an SoH after the peer NAKs
the posture method. The real peer runs in tests/test_eap_soh_eapol.py."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from nac.eap import packet, soh
from nac.eap.service import EapService, NasInfo
from nac.posture.evaluate import evaluate
from nac.posture.policy import loads_policy
from tests.test_eap_peer import Abandon, Lab, TlsPeer, fake_posture, run_tls

# wpa_supplicant 2.10 (eapol_test, phase1="tnc=soh2"): the type-data of its SoH EAP
# Extensions Method response, as logged ("EAP-PEAP: Encrypting Phase 2 data") against this
# server. Its SoH content is fixed: OS 0.0.0, workstation, "wpa_supplicant@w1.fi".
WPA_SOH_RESPONSE = bytes.fromhex(
    "fe00013700000021000700a0000001370001009800070094000001370002008c0007001e00000137"
    "760830b0a9e3f274f12189294456ec80bb4554b8064882bc010000020004000137000007005e0000"
    "01370311010000000000000000000000000000000000000500157770615f737570706c6963616e74"
    "4077312e66690006760830b0a9e3f274f12189294456ec80bb4554b8064882bc020001ffffffffff"
    "ffffff000100080000000001")
CORRELATION = bytes.fromhex("760830b0a9e3f274f12189294456ec80bb4554b8064882bc")


def test_wpa_supplicant_soh_parses() -> None:
    s = soh.parse_soh(soh.parse_soh_response(WPA_SOH_RESPONSE))
    assert s.inner_type == 2 and s.intent == 1 and s.content_type == 0
    assert s.correlation_id == CORRELATION
    assert s.packet_info == 0x11  # request bit, version 1
    assert s.machine_inventory == soh.MachineInventory(0, 0, 0, 0, 0, 0)
    assert s.product_type == 1
    assert s.machine_name == "wpa_supplicant@w1.fi"
    assert s.quarantine_state is not None and s.quarantine_state.state == 1
    assert s.quarantine_state.url == b"\x00"
    assert s.reports == ()  # no System Health Agent reports


def test_wpa_supplicant_soh_posture() -> None:
    doc = soh.posture_of(soh.parse_soh(soh.parse_soh_response(WPA_SOH_RESPONSE)))
    assert doc["schema"] == 1
    assert doc["os"] == {"family": "windows", "id": "windows", "version_id": "0.0.0",
                         "version": "0.0.0", "pretty_name": "Windows 0.0.0",
                         "product_type": "workstation"}
    info = doc["soh"]
    assert isinstance(info, dict)
    assert info["machine_name"] == "wpa_supplicant@w1.fi"
    assert info["correlation_id"] == CORRELATION.hex()
    # nothing the SoH does not say: no firewall, software, packages or forwarding sections
    assert not {"firewall", "security_software", "packages", "forwarding"} & doc.keys()


def test_request_frame() -> None:
    req = soh.soh_request()
    # expanded type, vendor 0x137, vendor type 0x21; a Microsoft Vendor-Specific TLV with
    # an empty SoH Request TLV (what wpa_supplicant logged as "TNC: SoH Request")
    assert req == bytes.fromhex("fe00013700000021") + bytes.fromhex("000700080000013700020000")
    assert soh.is_soh_method(req)
    with pytest.raises(soh.SohError, match="without an SoH TLV"):
        soh.parse_soh_response(req)


def test_nak_is_not_an_soh() -> None:
    assert soh.is_expanded_nak(bytes.fromhex("fe00000000000003fe00013700000021"))
    assert not soh.is_expanded_nak(soh.soh_request())
    for data in (bytes([packet.NAK, packet.MSCHAPV2]), b"", b"\xfe\x00"):
        with pytest.raises(soh.SohError):
            soh.parse_soh_response(data)


def test_sohr_echoes_the_statement() -> None:
    s = soh.parse_soh(soh.parse_soh_response(WPA_SOH_RESPONSE))
    tlv = soh.parse_tlvs(soh.soh_response_tlv(soh.build_sohr(s)))
    assert [t.type for t in tlv] == [soh.VENDOR_TLV]
    [inner] = soh.parse_tlvs(tlv[0].value[4:])
    assert inner.type == soh.SOH_RESPONSE_TLV
    back = soh.parse_soh(inner.value)  # the SoHR has the SoH's framing
    assert back.correlation_id == CORRELATION and back.inner_type == 2
    assert back.packet_info == 0x01  # response: the request bit clear
    assert back.machine_name is None and back.machine_inventory is None


def _wsha(*classes: tuple[int, int | None, str | None]) -> soh.ShaReport:
    tlvs: list[soh.Tlv] = []
    for health_class, status, product in classes:
        tlvs.append(soh.Tlv(soh.HEALTH_CLASS, bytes([health_class])))
        if product is not None:
            tlvs.append(soh.Tlv(soh.PRODUCT_NAME, product.encode()))
        if status is not None:
            tlvs.append(soh.Tlv(soh.HEALTH_CLASS_STATUS, struct.pack("!I", status)))
    return soh.ShaReport(soh.WSHA_ID, tuple(tlvs))


WINDOWS = soh.Soh(inner_type=2, correlation_id=bytes(range(24)), intent=1, content_type=0,
                  packet_info=0x11, machine_inventory=soh.MachineInventory(10, 0, 19045, 0, 0, 9),
                  product_type=1, machine_name="pc-17.example.org",
                  quarantine_state=soh.QuarantineState(1, 0, b""))


def test_windows_sha_health_classes_map_to_posture_sections() -> None:
    s = replace(WINDOWS, reports=(_wsha((0, 0x1, "Windows Firewall"), (1, 0x3, "Defender"),
                                        (2, 0xC0FF0002, None), (3, 0x1, None),
                                        (4, 0x0, None)),))
    doc = soh.posture_of(soh.parse_soh(soh.build_soh(s)))
    assert doc["os"]["version_id"] == "10.0.19045"  # type: ignore[index]
    assert doc["firewall"] == {"enabled": True, "backend": "windows-sha",
                               "product": "Windows Firewall"}
    # antispyware reported "not installed" (0xC0...): not a product
    assert doc["security_software"] == [{"name": "Defender", "kind": "antivirus",
                                         "running": True, "up_to_date": True}]
    info: Any = doc["soh"]
    assert info["automatic_updates"]["enabled"] is True
    assert info["antispyware"]["status"] == 0xC0FF0002
    assert info["machine_name"] == "pc-17.example.org"

    policy = loads_policy(POLICY.format(version=">=10"))
    d = evaluate(policy, doc, role="default", index=None, now=0.0)
    assert d.segment == "normal", d.reasons
    off = soh.posture_of(soh.Soh(inner_type=1, reports=(_wsha((0, 0x0, None),
                                                              (1, 0x1, "Defender")),)))
    assert off["firewall"]["enabled"] is False  # type: ignore[index]
    d = evaluate(policy, off, role="default", index=None, now=0.0)
    assert d.segment == "isolated"
    assert any("firewall is off" in r for r in d.reasons), d.reasons


POLICY = """
version = 1
name = "soh-test"
require_posture = true
[segments.isolated]
level = 0
vlan = 20
[segments.quarantine]
level = 10
vlan = 10
[segments.normal]
level = 100
vlan = 30
[[rules]]
name = "windows-version"
check = "os"
allow = [{{family = "windows", version = "{version}"}}]
[[rules]]
name = "firewall-on"
check = "firewall"
[[rules]]
name = "antivirus"
check = "security_software"
"""


def test_wpa_supplicant_soh_against_a_policy() -> None:
    doc = soh.posture_of(soh.parse_soh(soh.parse_soh_response(WPA_SOH_RESPONSE)))
    lenient = loads_policy(POLICY.format(version=">=0"))
    d = evaluate(lenient, doc, role="default", index=None, now=0.0)
    # the OS matches; firewall and anti-malware are unknown (no Windows SHA): minor
    assert d.segment == "quarantine"
    assert any("firewall state unknown" in r for r in d.reasons), d.reasons
    strict = loads_policy(POLICY.format(version=">=10"))
    d = evaluate(strict, doc, role="default", index=None, now=0.0)
    assert d.segment == "isolated"
    assert any("Windows 0.0.0 is not allowed" in r for r in d.reasons), d.reasons


# -- properties -------------------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
names = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                max_size=40)
tlvs = st.lists(st.builds(soh.Tlv, st.integers(0, 0x3FFF).filter(
    lambda t: t not in (soh.SYSTEM_HEALTH_ID, soh.HEALTH_CLASS, soh.HEALTH_CLASS_STATUS)),
    st.binary(max_size=30), st.booleans()), max_size=4)
reports = st.lists(st.builds(soh.ShaReport, u32, tlvs.map(tuple)), max_size=3).map(tuple)
statements = st.builds(
    soh.Soh,
    inner_type=st.sampled_from([1, 2]),
    correlation_id=st.none() | st.binary(min_size=24, max_size=24),
    packet_info=st.none() | st.integers(0, 255),
    machine_inventory=st.none() | st.builds(soh.MachineInventory, u32, u32, u32, u16, u16, u16),
    product_type=st.none() | st.integers(0, 255),
    machine_name=st.none() | names,
    quarantine_state=st.none() | st.builds(soh.QuarantineState, u16,
                                           st.integers(0, 2**64 - 1), st.binary(max_size=40)),
    system_ids=st.none() | st.binary(max_size=40),
    reports=reports,
)


@settings(max_examples=300, deadline=None)
@given(statements)
def test_build_parse_round_trip(s: soh.Soh) -> None:
    back = soh.parse_soh(soh.build_soh(s))
    if s.inner_type == 2:  # version 2 carries a mode sub-header (intent, content type)
        assert back.correlation_id == (s.correlation_id or bytes(24))
        assert (back.intent, back.content_type) == (0, 0)
    else:
        assert back.correlation_id == s.correlation_id
    same = ("inner_type", "packet_info", "machine_inventory", "product_type", "machine_name",
            "quarantine_state", "system_ids", "reports")
    assert all(getattr(back, f) == getattr(s, f) for f in same)
    soh.posture_of(back)  # never raises on what parses
    sohr = soh.parse_soh(soh.build_sohr(back))
    assert sohr.correlation_id == back.correlation_id
    assert [r.system_health_id for r in sohr.reports] == [r.system_health_id
                                                          for r in back.reports]


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    cut = st.integers(0, len(data)).map(lambda n: data[:n])
    flip = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
        lambda p: data[:p[0]] + bytes([p[1]]) + data[p[0] + 1:])
    splice = st.tuples(st.integers(0, len(data)), st.binary(max_size=12)).map(
        lambda p: data[:p[0]] + p[1] + data[p[0]:])
    return cut | flip | splice


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300) | _mutations(WPA_SOH_RESPONSE)
       | _mutations(WPA_SOH_RESPONSE[:8] + soh.vendor_tlv([soh.Tlv(soh.SOH_TLV, soh.build_soh(
           replace(WINDOWS, reports=(_wsha((0, 1, "fw"), (1, 3, "av")),))))])))
def test_malformed_input_raises_only_soh_error(data: bytes) -> None:
    try:
        s = soh.parse_soh(soh.parse_soh_response(data))
    except soh.SohError:
        return
    soh.posture_of(s)
    soh.build_sohr(s)


def test_bounds() -> None:
    with pytest.raises(soh.SohError, match="at most"):
        soh.parse_soh(b"\x00" * (soh.MAX_SOH + 1))
    many = b"".join(soh.Tlv(1, b"").encode() for _ in range(soh.MAX_TLVS + 1))
    with pytest.raises(soh.SohError, match="more than"):
        soh.parse_tlvs(many)
    with pytest.raises(soh.SohError, match="says 9 octets"):
        soh.parse_tlvs(b"\x00\x01\x00\x09abc")
    ssoh = soh.build_soh(soh.Soh(inner_type=1, packet_info=0x11))
    with pytest.raises(soh.SohError, match="unknown MS attribute type 99"):
        # an MS attribute type the spec does not define has no length to skip by
        bad = ssoh[:-2] + b"\x63\x11"
        soh.parse_soh(bad)


# -- PEAP asks for the SoH ---------------------------------------------------------------

class _Replay:
    """The peer's TLS connection with one received message put back (SohPeer peeks)."""

    def __init__(self, conn: SSL.Connection) -> None:
        self._conn = conn
        self.pending: bytes | None = None

    def recv(self, n: int) -> bytes:
        if self.pending is not None:
            data, self.pending = self.pending, None
            return data
        return self._conn.recv(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class SohPeer(TlsPeer):
    """A PEAP peer without a posture agent (it NAKs the posture method) that answers the
    SoH request with `answer` (a whole inner EAP Response, as wpa_supplicant sends it)."""

    def __init__(self, lab: Lab, answer: bytes | None, **kw: Any) -> None:
        super().__init__(lab, "peap", **kw)
        self.posture_nak = True
        self.answer = answer
        self.soh_requests: list[bytes] = []
        self.abandon_soh = False
        self.conn = _Replay(self.conn)  # type: ignore[assignment]

    def _app(self) -> bytes:
        try:
            data = self.conn.recv(65536)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return b""
        if soh.is_soh_method(data):
            self.soh_requests.append(data)
            if self.abandon_soh:
                raise Abandon
            return self.answer or b""
        self.conn.pending = data  # type: ignore[attr-defined]
        return super()._app()


def response_packet(type_data: bytes, ident: int = 9) -> bytes:
    return struct.pack("!BBH", packet.RESPONSE, ident, 4 + len(type_data)) + type_data


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("soh-lab"))


def _service(lab: Lab, **kw: object) -> EapService:
    return EapService(lab.config(**{"peap_soh": True, **kw}), lab.accounts.get, lab.box,
                      posture=fake_posture)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("framing", ["header", "bare"])
def test_peap_soh_becomes_the_posture(lab: Lab, version: str, framing: str) -> None:
    answer = response_packet(WPA_SOH_RESPONSE) if framing == "header" else WPA_SOH_RESPONSE
    peer = SohPeer(lab, answer, version=version)
    res, conv = run_tls(lab, _service(lab), peer)
    assert res.action == "accept", res.reason
    assert res.identity == "demo" and res.method == "peap/mschapv2"
    assert res.posture is not None and res.posture["os"]["family"] == "windows"
    assert res.posture["soh"]["machine_name"] == "wpa_supplicant@w1.fi"
    assert len(peer.soh_requests) == 1
    # the Result TLV carries our SoH Response, with the peer's correlation ID
    result = next(d for d in reversed(peer.app_seen) if d[:1] == bytes([packet.REQUEST]))
    assert result[4] == packet.TLV and CORRELATION in result


@pytest.mark.parametrize("answer", [
    response_packet(bytes([packet.NAK, packet.MSCHAPV2])),  # the peer has no SoH
    bytes([packet.NAK, packet.MSCHAPV2]),
    response_packet(bytes.fromhex("fe00000000000003fe00013700000021")),  # expanded NAK
    None,  # says nothing (acknowledges the TLS record)
    response_packet(WPA_SOH_RESPONSE[:-7]),  # truncated SoH
    response_packet(WPA_SOH_RESPONSE[:31] + b"\x8d" + WPA_SOH_RESPONSE[32:]),  # inner length
    response_packet(bytes([packet.MSCHAPV2, 3])),  # something else altogether
])
def test_peap_without_a_usable_soh_has_unknown_posture(lab: Lab, answer: bytes | None) -> None:
    peer = SohPeer(lab, answer)
    res, _ = run_tls(lab, _service(lab), peer)
    assert res.action == "accept", res.reason
    assert res.posture is None
    assert len(peer.soh_requests) == 1


def test_peap_soh_off_asks_nothing(lab: Lab) -> None:
    peer = SohPeer(lab, response_packet(WPA_SOH_RESPONSE))
    on, conv_on = run_tls(lab, _service(lab), SohPeer(lab, response_packet(bytes([3, 26]))))
    res, conv = run_tls(lab, _service(lab, peap_soh=False), peer)
    assert res.action == "accept" and res.posture is None
    assert peer.soh_requests == []
    assert conv.rounds == conv_on.rounds - 1  # the SoH request's round trip
    # without a posture method (eap.posture off) no SoH is asked either
    peer = SohPeer(lab, response_packet(WPA_SOH_RESPONSE))
    res, _ = run_tls(lab, EapService(lab.config(peap_soh=True), lab.accounts.get, lab.box),
                     peer)
    assert res.action == "accept" and res.posture is None and peer.soh_requests == []


def test_a_posture_agent_answer_asks_no_soh(lab: Lab) -> None:
    peer = SohPeer(lab, response_packet(WPA_SOH_RESPONSE))
    peer.posture_nak = False  # the fake posture method gets its report
    res, _ = run_tls(lab, _service(lab), peer)
    assert res.posture == {"report": "firewall=on"} and peer.soh_requests == []


def test_station_that_abandons_at_the_soh_request_falls_back(lab: Lab) -> None:
    service = _service(lab, posture_fallback_seconds=600)
    host = NasInfo("10.0.0.2", None, "generic", "02-00-00-00-00-31", None)
    peer = SohPeer(lab, None)
    peer.abandon_soh = True
    with pytest.raises(Abandon):
        run_tls(lab, service, peer, nas=host, now=1000.0)
    # its retry: no posture method, no SoH request (as after abandoning EAP-TNC)
    peer = SohPeer(lab, response_packet(WPA_SOH_RESPONSE))
    res, _ = run_tls(lab, service, peer, nas=host, now=1010.0)
    assert res.action == "accept" and res.posture is None and peer.soh_requests == []

