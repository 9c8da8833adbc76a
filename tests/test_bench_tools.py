"""bench/: the packets are valid RADIUS (pyrad and a real FreeRADIUS agree),
radload builds and counts replies, and bench/mab.py runs end to end."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pyrad import packet
from pyrad.dictionary import Dictionary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import freeradius  # noqa: E402
import packets  # noqa: E402
import probe  # noqa: E402

SECRET = b"testing123"
GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc is not installed")
needs_freeradius = pytest.mark.skipif(
    freeradius.binary() is None, reason="freeradius is not installed"
)


@pytest.fixture(scope="module")
def rdict() -> Dictionary:
    return Dictionary(str(ROOT / "radius_dict" / "dictionary"))


def test_mab_packets_decode_and_verify(rdict: Dictionary) -> None:
    built = packets.build("mab", 300, SECRET)
    assert len({p[4:20] for p in built}) == 300  # distinct authenticators
    for i, raw in enumerate(built):
        p = packet.AuthPacket(packet=raw, secret=SECRET, dict=rdict)
        assert p.code == packet.AccessRequest and p.id == i % 256
        assert p.verify_message_authenticator()
        mac = packets.mac_address(i)
        assert p["User-Name"] == [mac] and p["Calling-Station-Id"] == [mac]
        assert p["Service-Type"] == ["Call-Check"]
        assert p["NAS-Port-Type"] == ["Ethernet"]
        assert p["NAS-IP-Address"] == ["127.0.0.1"]
    assert packets.mac_address(0x0A0B0C0D) == "02-00-0a-0b-0c-0d"
    later = packet.AuthPacket(packet=packets.build("mab", 1, SECRET, first=300)[0],
                              secret=SECRET, dict=rdict)
    assert later["User-Name"] == [packets.mac_address(300)] and later.id == 300 % 256


def test_pap_packets_decode_and_verify(rdict: Dictionary) -> None:
    for raw in packets.build("pap", 20, SECRET):
        p = packet.AuthPacket(packet=raw, secret=SECRET, dict=rdict)
        assert p.verify_message_authenticator()
        assert p["User-Name"] == ["demo"]
        assert p.PwDecrypt(p["User-Password"][0]) == "demo-password"


@pytest.mark.parametrize("password", [b"", b"x", b"16-octets-long!!", b"a" * 17, b"b" * 128])
def test_password_hiding_matches_pyrad(rdict: Dictionary, password: bytes) -> None:
    auth = bytes(range(16))
    p = packet.AuthPacket(secret=SECRET, authenticator=auth, dict=rdict)
    assert packets.hide_password(password, SECRET, auth) == p.PwCrypt(password)


def test_packet_file_round_trip(tmp_path: Path) -> None:
    built = packets.build("pap", 5, SECRET)
    packets.write(tmp_path / "p.bin", built)
    assert list(packets.read(tmp_path / "p.bin")) == built


def test_tree_cpu_seconds_counts_this_process() -> None:
    sum(i * i for i in range(200_000))
    assert probe.tree_cpu_seconds(__import__("os").getpid()) > 0


@pytest.fixture(scope="module")
def radload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GCC is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path_factory.mktemp("radload") / "radload"
    subprocess.run(
        [GCC, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(ROOT / "bench/radload.c")],
        check=True,
    )
    return exe


def _load(exe: Path, pkts: list[bytes], port: int, tmp: Path, *opts: str) -> dict:
    f = tmp / f"load-{port}-{len(pkts)}.bin"
    packets.write(f, pkts)
    out = subprocess.run(
        [str(exe), "-f", str(f), "-h", "127.0.0.1", "-p", str(port), *opts],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return json.loads(out)


@needs_gcc
def test_radload_counts_timeouts_without_server(radload: Path, tmp_path: Path) -> None:
    (port,) = probe.free_udp_ports(1)  # nobody listens there
    r = _load(radload, packets.build("mab", 10, SECRET), port, tmp_path, "-t", "100")
    assert (r["sent"], r["received"], r["timeouts"]) == (10, 0, 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    if freeradius.binary() is None:
        pytest.skip("freeradius is not installed")
    (port,) = probe.free_udp_ports(1)
    fr = freeradius.FreeRadius(tmp_path_factory.mktemp("freeradius"), port)
    with fr:  # started: it answered a request
        yield fr


@needs_gcc
@needs_freeradius
@pytest.mark.peer
@pytest.mark.parametrize("window", [8, 300])
def test_freeradius_accepts_mab(radload: Path, server, tmp_path: Path, window: int) -> None:
    # 300 outstanding needs a second socket for the repeated identifiers
    r = _load(radload, packets.build("mab", 400, SECRET), server.port, tmp_path,
              "-w", str(window))
    assert (r["sent"], r["accepts"], r["rejects"], r["timeouts"]) == (400, 400, 0, 0), r
    assert r["sockets"] >= 2 and r["rps"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0


@needs_gcc
@needs_freeradius
@pytest.mark.peer
def test_freeradius_accepts_pap(radload: Path, server, tmp_path: Path) -> None:
    r = _load(radload, packets.build("pap", 200, SECRET), server.port, tmp_path, "-w", "32")
    assert (r["accepts"], r["rejects"], r["timeouts"]) == (200, 0, 0), r


@needs_gcc
@needs_freeradius
@pytest.mark.peer
def test_freeradius_rejects_wrong_password(radload: Path, server, tmp_path: Path) -> None:
    auth = bytes(16)
    body = (
        packets.attr(packets.USER_NAME, b"demo")
        + packets.attr(packets.USER_PASSWORD, packets.hide_password(b"wrong", SECRET, auth))
    )
    r = _load(radload, [packets.access_request(7, body, SECRET, auth)], server.port, tmp_path)
    assert (r["received"], r["rejects"]) == (1, 1), r


@needs_gcc
@needs_freeradius
@pytest.mark.peer
def test_freeradius_drops_badly_signed(radload: Path, server, tmp_path: Path) -> None:
    # require_message_authenticator: a wrong secret means silence, not a reject
    r = _load(radload, packets.build("mab", 5, b"not-the-secret"), server.port, tmp_path,
              "-t", "300")
    assert (r["received"], r["timeouts"]) == (0, 5), r


@needs_gcc
@needs_freeradius
@pytest.mark.peer
def test_mab_script_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/mab.py"), "--requests", "300", "--window", "16",
         "--warmup", "50", "--only", "freeradius"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    fr = summary["freeradius"]["16"]
    assert fr["accepts"] == 300 and fr["timeouts"] == 0
    assert fr["server_cpu_s"] >= 0 and summary["mode"] == "mab"


@needs_freeradius
@pytest.mark.peer
@pytest.mark.parametrize("mode", ["mab", "pap"])
def test_freeradius_reply_carries_the_vlan(rdict: Dictionary, server, mode: str) -> None:
    # the yardstick answers what nac must answer: a signed Accept with the VLAN
    raw = packets.build(mode, 1, SECRET)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(raw, ("127.0.0.1", server.port))
        data = s.recv(4096)
    req = packet.AuthPacket(packet=raw, secret=SECRET, dict=rdict)
    reply = req.CreateReply(packet=data)
    assert req.VerifyReply(reply, data, enforce_ma=True)
    assert reply.code == packet.AccessAccept
    assert reply["Tunnel-Type:1"] == ["VLAN"]
    assert reply["Tunnel-Medium-Type:1"] == ["IEEE-802"]
    assert reply["Tunnel-Private-Group-Id:1"] == ["10"]
    assert reply["Session-Timeout"] == [3600]
    assert reply["Termination-Action"] == ["RADIUS-Request"]


@needs_gcc
@needs_freeradius
@pytest.mark.peer
def test_radload_reuses_packets_and_stops_on_time(radload: Path, server, tmp_path: Path) -> None:
    pkts = packets.build("mab", 50, SECRET)
    # -n beyond the file replays it, each round from another source socket
    r = _load(radload, pkts, server.port, tmp_path, "-n", "150", "-w", "16")
    assert (r["sent"], r["accepts"], r["timeouts"]) == (150, 150, 0), r
    assert r["sockets"] == 3
    # -T stops sending early; whatever was sent is answered
    r = _load(radload, pkts, server.port, tmp_path, "-n", "100000000", "-T", "0.3")
    assert 0 < r["sent"] < 100000000 and r["accepts"] == r["sent"], r
    assert r["seconds"] < 2


def test_udp_listeners_counts_reuseport_sockets() -> None:
    (port,) = probe.free_udp_ports(1)
    socks = []
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", port))
            socks.append(s)
            assert probe.udp_listeners(port) == len(socks)
        assert probe.wait_listeners(port, 3, timeout=1) == 3
        assert probe.wait_listeners(port, None, timeout=3, settle=0.2) == 3
    finally:
        for s in socks:
            s.close()
    assert probe.udp_listeners(port) == 0


@needs_freeradius
@pytest.mark.peer
@pytest.mark.skipif(shutil.which("eapol_test") is None, reason="eapol_test is not installed")
def test_eap_bench_against_freeradius() -> None:
    # the EAP yardstick works: FreeRADIUS with nac's PKI, every eapol_test PEAP run succeeds
    # with matching MPPE keys (exit 0), and the server CPU per conversation is measured
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/eap.py"), "--only", "freeradius", "-n", "6",
         "-p", "2", "--rounds", "1", "--tls", "1.2", "--methods", "peap-mschapv2"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    fr = out["summary"][0]["freeradius"]
    assert fr["failed"] == 0 and fr["cpu_ms_per_conv"] is not None, fr
    assert [r["ok"] for r in out["runs"]] == [6], out["runs"]
