"""RFC 5176 client against hostapd's RADIUS DAS (driver=wired on a lab switch port)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from enforcers.base import DriverError
from enforcers.coa import (
    COA_REQUEST,
    DISCONNECT_ACK,
    DISCONNECT_NAK,
    CoaDriver,
    build_request,
    decode_attrs,
    format_mac,
    parse_reply,
)
from enforcers.inventory import Switch
from tests.lab import start_supplicant
from tests.lab.fixtures import Lab, switch_lab

pytestmark = [pytest.mark.netns, pytest.mark.peer]
SECRET = "das-secret"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with switch_lab(tmp_path_factory.mktemp("coa"), hostapd_port="swp1",
                    das_secret=SECRET) as lab:
        yield lab


def entry(lab: Lab, **coa: object) -> Switch:
    settings: dict[str, object] = {"secret": SECRET, "timeout": 0.3, "retries": 1}
    settings.update(coa)
    return Switch.model_validate({"name": "labsw", "address": lab.switch.mgmt_ip,
                                  "driver": "coa", "coa": settings})


def test_unknown_session_nak_and_vlan_coa_unsupported(lab: Lab) -> None:
    mac = lab.switch.hosts[1].mac  # host 2 has no supplicant: no session on the NAS

    async def scenario() -> None:
        async with CoaDriver(entry(lab)) as drv:
            res = await drv.disconnect(mac=mac)
            assert not res.ok and res.code == DISCONNECT_NAK
            assert (res.error_cause, res.error_cause_name) == (503, "Session-Context-Not-Found")
            res = await drv.change_vlan(20, mac=mac)
            assert not res.ok and res.error_cause == 401  # hostapd: Tunnel-Type unsupported
            assert res.error_cause_name == "Unsupported-Attribute"
            with pytest.raises(DriverError) as exc:
                await drv.set_port_vlan("swp1", 20)
            assert exc.value.retryable is False and exc.value.error_cause == 401

    asyncio.run(scenario())
    log = lab.hostapd.log_text()  # type: ignore[union-attr]
    assert "Unsupported attribute 64 in CoA-Request" in log


def test_live_session_disconnect_ack(lab: Lab) -> None:
    host = lab.switch.hosts[0]  # on swp1, where hostapd runs
    sup = start_supplicant(host.ns, lab.workdir / "wpa1")
    try:
        deadline = time.monotonic() + 10
        while "received EAPOL-Start" not in lab.hostapd.log_text():  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "hostapd never saw the supplicant"
            time.sleep(0.1)

        async def scenario() -> None:
            async with CoaDriver(entry(lab)) as drv:
                res = await drv.reauthenticate(mac=host.mac)  # generic flavour: Disconnect
                assert res.ok and res.code == DISCONNECT_ACK and res.method == "disconnect"
                print(f"Disconnect-ACK in {res.elapsed * 1000:.2f} ms")

        asyncio.run(scenario())
    finally:
        sup.stop()


def test_wrong_secret_is_dropped_and_retryable(lab: Lab) -> None:
    async def scenario() -> None:
        async with CoaDriver(entry(lab, secret="not-the-secret")) as drv:
            with pytest.raises(DriverError) as exc:
                await drv.disconnect(mac=lab.switch.hosts[0].mac)
            assert exc.value.retryable is True

    asyncio.run(scenario())
    assert "Invalid authenticator or Message-Authenticator" in lab.hostapd.log_text()  # type: ignore[union-attr]


@pytest.mark.skipif(not shutil.which("radclient"), reason="radclient (freeradius-utils) missing")
def test_radclient_sees_the_same_naks(lab: Lab) -> None:
    """Third-party client cross-check of the DAS behaviour our driver relies on."""
    mac = format_mac(lab.switch.hosts[1].mac)
    req = (f'Calling-Station-Id = "{mac}"\nEvent-Timestamp = {int(time.time())}\n'
           "Message-Authenticator = 0x00\n")
    out = subprocess.run(
        ["radclient", "-x", "-r", "1", "-t", "1", f"{lab.switch.mgmt_ip}:3799", "disconnect",
         SECRET], input=req, capture_output=True, text=True, timeout=20)
    assert "Disconnect-NAK" in out.stdout, out.stdout + out.stderr
    assert "Session-Context-Not-Found" in out.stdout


def test_codec_roundtrip_and_tamper() -> None:
    secret = b"s3cret"
    req = build_request(COA_REQUEST, 7, secret, [(31, b"02-00-00-00-00-01")])
    attrs = decode_attrs(req[20:])
    assert attrs[0] == (31, b"02-00-00-00-00-01") and attrs[-1][0] == 80
    # A reply signed with the wrong secret or for another request must be refused.
    import hashlib
    import struct

    body = b""
    hdr = struct.pack("!BBH", 44, 7, 20)
    good = hdr + hashlib.md5(hdr + req[4:20] + body + secret).digest()
    assert parse_reply(good, req, secret).is_ack
    with pytest.raises(ValueError):
        parse_reply(good, req, b"other")
    with pytest.raises(ValueError):
        parse_reply(good[:1] + b"\x08" + good[2:], req, secret)
    assert format_mac("02:ab:cd:ef:00:01") == "02-AB-CD-EF-00-01"


def test_cisco_flavour_builds_avpair(lab: Lab) -> None:
    """Cisco reauthenticate goes as a CoA-Request with the AVPair; hostapd NAKs the VSA."""

    async def scenario() -> None:
        async with CoaDriver(entry(lab, flavour="cisco")) as drv:
            res = await drv.reauthenticate(mac=lab.switch.hosts[1].mac)
            assert res.method == "coa-reauthenticate" and not res.ok
            assert res.error_cause in (401, 405)

    asyncio.run(scenario())


def test_pyrad_decodes_and_verifies_our_requests() -> None:
    """Cross-check with pyrad and the project's FreeRADIUS-format dictionaries."""
    from pathlib import Path

    from pyrad.dictionary import Dictionary
    from pyrad.packet import CoAPacket

    from enforcers.coa import attr_cisco_avpair, attr_str, vlan_attrs

    dict_path = Path(__file__).resolve().parents[1] / "radius_dict" / "dictionary"
    if not dict_path.exists():
        pytest.skip("radius_dict/dictionary not present")
    raw = build_request(COA_REQUEST, 9, b"s3cret", [
        attr_str(31, "02-00-00-00-00-01"), *vlan_attrs(20),
        attr_cisco_avpair("subscriber:command=bounce-host-port")])
    pkt = CoAPacket(packet=raw, dict=Dictionary(str(dict_path)), secret=b"s3cret")
    assert pkt.VerifyCoARequest()  # Request Authenticator (RFC 5176 section 3)
    assert pkt.verify_message_authenticator()
    assert pkt["Tunnel-Type"] == ["VLAN"] and pkt["Tunnel-Medium-Type"] == ["IEEE-802"]
    assert pkt["Tunnel-Private-Group-Id"] == ["20"]
    assert pkt["Cisco-AVPair"] == ["subscriber:command=bounce-host-port"]
