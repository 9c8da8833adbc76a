"""`nac serve` against the real FreeRADIUS client tools (radclient) on loopback.

Packets that radclient cannot make on purpose (exact retransmissions, a foreign source
address, malformed datagrams) are built with pyrad, a third-party RADIUS library.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pyrad.dictionary import Dictionary
from pyrad.packet import AuthPacket, Packet

from tests.conftest import ROOT, SECRET, NacServer, nac_cmd, radclient, start_server

pytestmark = pytest.mark.peer

MAB = (
    'User-Name = "{mac}", User-Password = "{mac}", Calling-Station-Id = "{dashed}", '
    "Service-Type = Call-Check, NAS-Port = 7, NAS-Port-Id = \"Gi1/0/7\", "
    "Message-Authenticator = 0x00"
)


def mab(mac: str) -> str:
    plain = mac.replace(":", "")
    return MAB.format(mac=plain, dashed=mac.replace(":", "-").upper())


@pytest.fixture(scope="module")
def dictionary() -> Dictionary:
    return Dictionary(str(ROOT / "radius_dict" / "dictionary"))


def pyrad_mab(d: Dictionary, mac: str, ident: int = 9, secret: str = SECRET) -> AuthPacket:
    p = AuthPacket(code=1, id=ident, secret=secret.encode(), dict=d)
    p["User-Name"] = mac.replace(":", "")
    p["Calling-Station-Id"] = mac
    p["Service-Type"] = "Call-Check"
    p.add_message_authenticator()
    return p


def send_raw(data: bytes, port: int, *, source: str = "127.0.0.1",
             sock: socket.socket | None = None, wait: float = 1.0) -> bytes | None:
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
    sock.settimeout(wait)
    try:
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None
    finally:
        if own:
            sock.close()


def test_mab_unknown_mac_gets_quarantine_vlan(nac_server: NacServer) -> None:
    r = radclient(nac_server.auth_port, "auth", mab("02:00:00:00:00:01"))
    assert r.code == "Access-Accept", r.raw
    assert r.attrs["Tunnel-Type:1"] == ["VLAN"]
    assert r.attrs["Tunnel-Medium-Type:1"] == ["IEEE-802"]
    assert r.attrs["Tunnel-Private-Group-Id:1"] == ["10"]
    assert r.attrs["Session-Timeout"] == ["3600"]
    assert r.attrs["Termination-Action"] == ["RADIUS-Request"]
    # radclient verified the Message-Authenticator; it must come first (BlastRADIUS advice).
    first = r.raw.split("Received Access-Accept")[1].splitlines()[1].strip()
    assert first.startswith("Message-Authenticator")


def test_mab_by_username_equal_to_calling_station(nac_server: NacServer) -> None:
    attrs = ('User-Name = "02-00-00-00-00-0a", User-Password = "x", '
             'Calling-Station-Id = "0200.0000.000a", Message-Authenticator = 0x00')
    r = radclient(nac_server.auth_port, "auth", attrs)
    assert r.code == "Access-Accept"
    assert r.attrs["Tunnel-Private-Group-Id:1"] == ["10"]


def test_registered_mac_gets_its_segment(nac_server: NacServer) -> None:
    nac_server.nac("nodes", "set", "02:00:00:00:00:02", "normal")
    deadline = time.monotonic() + 5
    vlan = None
    while time.monotonic() < deadline:
        r = radclient(nac_server.auth_port, "auth", mab("02:00:00:00:00:02"))
        vlan = r.attrs.get("Tunnel-Private-Group-Id:1")
        if vlan == ["30"]:
            break
        time.sleep(0.3)
    assert vlan == ["30"]
    out = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:00:02", "--json").stdout)
    assert out["node"]["registered_segment"] == "normal"
    assert out["decisions"][0]["segment"] == "normal"


def test_pap_accept_and_reject(nac_server: NacServer) -> None:
    ok = radclient(nac_server.auth_port, "auth",
                   'User-Name = "demo", User-Password = "demo-password", '
                   "Message-Authenticator = 0x00")
    assert ok.code == "Access-Accept", ok.raw
    # No posture from PAP: the sample policy keeps the host in quarantine.
    assert ok.attrs["Tunnel-Private-Group-Id:1"] == ["10"]
    bad = radclient(nac_server.auth_port, "auth",
                    'User-Name = "demo", User-Password = "nope", Message-Authenticator = 0x00')
    assert bad.code == "Access-Reject"
    assert bad.attrs["Reply-Message"] == ["Authentication failed"]
    unknown = radclient(nac_server.auth_port, "auth",
                        'User-Name = "mallory", User-Password = "x", '
                        "Message-Authenticator = 0x00")
    assert unknown.code == "Access-Reject"
    log = nac_server.log()
    assert "demo-password" not in log and "nope" not in log and SECRET not in log


def test_ipv6_listener(nac_server: NacServer) -> None:
    r = radclient(nac_server.auth_port, "auth", mab("02:00:00:00:00:06"), host="::1")
    assert r.code == "Access-Accept"


def test_accounting_start_stop_visible_in_nodes_show(nac_server: NacServer) -> None:
    mac = "02:00:00:00:00:03"
    common = (f'Acct-Session-Id = "S-1", Calling-Station-Id = "{mac}", User-Name = "demo", '
              'NAS-IP-Address = 127.0.0.1, NAS-Port = 3, NAS-Port-Id = "Gi1/0/3", '
              'Framed-IP-Address = 192.0.2.33, Framed-IPv6-Prefix = 2001:db8:1::/64')
    radclient(nac_server.auth_port, "auth", mab(mac))
    r1 = radclient(nac_server.acct_port, "acct", f"Acct-Status-Type = Start, {common}")
    assert r1.code == "Accounting-Response", r1.raw
    r2 = radclient(nac_server.acct_port, "acct",
                   f"Acct-Status-Type = Stop, {common}, Acct-Session-Time = 60, "
                   "Acct-Input-Octets = 1000, Acct-Output-Octets = 2000, "
                   "Acct-Terminate-Cause = User-Request")
    assert r2.code == "Accounting-Response"
    time.sleep(0.3)
    out = json.loads(nac_server.nac("nodes", "show", mac, "--json").stdout)
    (s,) = out["sessions"]
    assert s["acct_session_id"] == "S-1"
    assert s["framed_ip"] == "192.0.2.33"
    assert s["framed_ipv6_prefix"] == "2001:db8:1::/64"
    assert s["nas_port_id"] == "Gi1/0/3"
    assert s["input_octets"] == 1000 and s["output_octets"] == 2000
    assert s["started_at"] and s["stopped_at"]


def test_no_message_authenticator_gets_no_reply(nac_server: NacServer) -> None:
    r = radclient(nac_server.auth_port, "auth",
                  'User-Name = "demo", User-Password = "demo-password"', timeout=0.5)
    assert r.code is None


def test_wrong_secret_gets_no_reply(nac_server: NacServer) -> None:
    r = radclient(nac_server.auth_port, "auth", mab("02:00:00:00:00:04"), secret="wrong",
                  timeout=0.5)
    assert r.code is None


def test_proxy_state_echoed(nac_server: NacServer) -> None:
    r = radclient(nac_server.auth_port, "auth", mab("02:00:00:00:00:05") +
                  ", Proxy-State = 0x6869")
    assert r.code == "Access-Accept"
    assert r.attrs["Proxy-State"] == ["0x6869"]


def test_retransmission_answered_from_cache_once(nac_server: NacServer,
                                                 dictionary: Dictionary) -> None:
    mac = "02:00:00:00:00:07"
    pkt = pyrad_mab(dictionary, mac)
    raw = pkt.RequestPacket()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        first = send_raw(raw, nac_server.auth_port, sock=sock)
        second = send_raw(raw, nac_server.auth_port, sock=sock)
    finally:
        sock.close()
    assert first is not None and first == second
    reply = Packet(packet=first, dict=dictionary, secret=SECRET.encode())
    assert reply.code == 2
    assert pkt.VerifyReply(reply, first)
    time.sleep(0.3)
    out = json.loads(nac_server.nac("nodes", "show", mac, "--json").stdout)
    assert len(out["decisions"]) == 1


def test_unknown_nas_dropped_and_logged_once(nac_server: NacServer,
                                             dictionary: Dictionary) -> None:
    for i in range(3):
        raw = pyrad_mab(dictionary, "02:00:00:00:00:08", ident=i).RequestPacket()
        assert send_raw(raw, nac_server.auth_port, source="127.0.0.2", wait=0.3) is None
    assert nac_server.log().count("unknown NAS 127.0.0.2") == 1


def test_malformed_burst_then_good_request_answered(nac_server: NacServer,
                                                    dictionary: Dictionary) -> None:
    good = pyrad_mab(dictionary, "02:00:00:00:00:09").RequestPacket()
    bad = [
        b"",
        b"\x01",
        good[:19],
        good[:4] + good[4:20],  # header only with a longer declared length
        good[:2] + b"\x00\x13" + good[4:],  # length below the header size
        good[:2] + b"\x10\x01" + good[4:],  # length above 4096
        good[:20] + b"\x01\x00",  # zero-length attribute
        good[:20] + b"\x01\x01abc",  # attribute length 1
        good[:20] + b"\x01\xffab",  # attribute overruns the packet
        bytes([99]) + good[1:],  # unknown code
        bytes([255]) * 4096,
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(50):
            for b in bad:
                if b:
                    sock.sendto(b, ("127.0.0.1", nac_server.auth_port))
                    sock.sendto(b, ("127.0.0.1", nac_server.acct_port))
    finally:
        sock.close()
    r = radclient(nac_server.auth_port, "auth", mab("02:00:00:00:00:09"))
    assert r.code == "Access-Accept"
    assert nac_server.proc.poll() is None


def test_config_file_vendor_profiles_and_group_override(tmp_path: Path) -> None:
    policy_dir = tmp_path / "cfg"
    policy_dir.mkdir()
    cfg = policy_dir / "nac.toml"
    cfg.write_text(
        '[[clients]]\naddress = "127.0.0.1"\nsecret = "s3cret"\nvendor = "aruba"\n'
        'group = "lab"\nname = "aruba-sw"\n\n'
        '[[clients]]\naddress = "::1/128"\nsecret = "legacy"\nvendor = "cisco"\n'
        "require_message_authenticator = false\n\n"
        '[segments.quarantine]\nvlan = 110\nvlan_name = "QUARANTINE"\n'
        "reinspect_interval = 600\nvlan_overrides = { lab = 210 }\n"
    )
    srv = start_server(tmp_path, "--config", str(cfg))
    try:
        r = radclient(srv.auth_port, "auth", mab("02:00:00:00:00:0b"), secret="s3cret")
        assert r.code == "Access-Accept"
        # Aruba: VLAN by number (the client's group override) and the role as Aruba-User-Role.
        assert r.attrs["Tunnel-Private-Group-Id:1"] == ["210"]
        assert r.attrs["Aruba-User-Role"] == ["quarantine"]
        assert r.attrs["Session-Timeout"] == ["600"]
        legacy = radclient(srv.auth_port, "auth", 'User-Name = "02000000000c", '
                           'Calling-Station-Id = "02:00:00:00:00:0c", Service-Type = Call-Check',
                           host="::1", secret="legacy")
        assert legacy.code == "Access-Accept"
        # Cisco: the VLAN by name where the segment has one.
        assert legacy.attrs["Tunnel-Private-Group-Id:1"] == ["QUARANTINE"]
        assert "BlastRADIUS" in srv.log()
        assert "s3cret" not in srv.log() and "legacy" not in srv.log().replace(
            "legacy gear", "")
    finally:
        srv.stop()


def test_config_check_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('auth_port = 0\n[[clients]]\naddress = "nope"\nsecret = "x"\n'
                   'vendor = "acme"\n')
    r = subprocess.run([*nac_cmd(), "config", "check", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert f"{bad}: auth_port:" in r.stderr
    assert f"{bad}: clients[0].address:" in r.stderr
    assert f"{bad}: clients[0].vendor:" in r.stderr and "aruba" in r.stderr


def test_json_logs_carry_decision_fields(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--log-format", "json")
    try:
        r = radclient(srv.auth_port, "auth", mab("02:00:00:00:00:0d"))
        assert r.code == "Access-Accept"
        time.sleep(0.2)
        records = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    finally:
        srv.stop()
    assert records and all("ts" in r and "level" in r for r in records)
    (d,) = [r for r in records if r.get("mac") == "02:00:00:00:00:0d"]
    assert d["segment"] == "quarantine" and d["vlan"] == 10 and d["method"] == "mab"
    assert d["reasons"] and d["correlation_id"].startswith("127.0.0.1/")
