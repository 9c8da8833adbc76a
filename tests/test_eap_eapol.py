"""EAP interop with the real peer: eapol_test (wpa_supplicant 2.10's EAP code) against
`nac serve` on loopback, for every method over TLS 1.2 and 1.3, checking the MSK it derives
against the MS-MPPE keys ("MPPE keys OK") and the VLAN attributes of the Access-Accept."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyrad.dictionary import Dictionary
from pyrad.packet import AuthPacket, Packet

from nac.accounts import SecretBox, hash_password, nt_hash
from tests.conftest import ROOT, SECRET, NacServer, nac_cmd, need, start_server

pytestmark = pytest.mark.peer

PASSWORD = "demo-password"
QUARANTINE_VLAN = 10  # the sample policy: no posture reported yet -> quarantine
TLS13 = "tls_disable_tlsv1_0=1 tls_disable_tlsv1_1=1 tls_disable_tlsv1_2=1 tls_disable_tlsv1_3=0"
# wpa_supplicant 2.10 keeps TLS 1.3 off unless asked: "tls_disable_tlsv1_2=1" alone would
# fall back to TLS 1.1 (which the server refuses), so 1.3 is enabled explicitly.
PHASE1 = {"1.2": "tls_disable_tlsv1_3=1", "1.3": TLS13}


@dataclass
class Lab:
    srv: NacServer
    tmp: Path
    certs: Path

    @property
    def ca(self) -> Path:
        return self.srv.state_dir / "pki" / "ca.pem"


@dataclass
class Run:
    rc: int
    out: str

    def accept_attrs(self) -> dict[int, list[str]]:
        m = re.search(r"RADIUS message: code=2 \(Access-Accept\).*\n"
                      r"((?:\s+Attribute.*\n\s+Value.*\n)+)", self.out)
        assert m, "no Access-Accept"
        attrs: dict[int, list[str]] = {}
        for num, value in re.findall(r"Attribute (\d+) \([^)]*\) length=\d+\n\s+Value: (.*)",
                                     m.group(1)):
            attrs.setdefault(int(num), []).append(value.strip())
        return attrs

    def vlan(self) -> int:
        attrs = self.accept_attrs()
        assert attrs[64] == ["0100000d"]  # Tunnel-Type VLAN (13), tag 1
        assert attrs[65] == ["01000006"]  # Tunnel-Medium-Type IEEE-802 (6)
        raw = bytes.fromhex(attrs[81][0])
        return int(raw[1:].decode())  # tag octet, then the VLAN ID as text

    def server_packet_sizes(self) -> list[int]:
        return [int(n) for n in re.findall(r"decapsulated EAP packet \(code=\d id=\d+ len=(\d+)\)",
                                           self.out)]


def conf(lab: Lab, eap: str, *, tls: str = "1.2", phase2: str | None = None,
         identity: str = "demo", password: str = PASSWORD, cert: str | None = None,
         fragment: int | None = None) -> str:
    lines = ["network={", "  key_mgmt=IEEE8021X", f"  eap={eap}", f'  identity="{identity}"']
    if cert:
        lines += [f'  client_cert="{lab.certs / cert}.pem"',
                  f'  private_key="{lab.certs / cert}.key"']
    else:
        lines.append(f'  password="{password}"')
    if eap != "MD5":
        lines += ['  anonymous_identity="anonymous"', f'  ca_cert="{lab.ca}"',
                  f'  phase1="{PHASE1[tls]}"']
    if phase2:
        lines.append(f'  phase2="{phase2}"')
    if fragment:
        lines.append(f"  fragment_size={fragment}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_conf(lab: Lab, text: str) -> Path:
    path = lab.tmp / f"{uuid.uuid4().hex}.conf"
    path.write_text(text)
    return path


def eapol_cmd(port: int, conf_path: Path, *, no_keys: bool, timeout: int) -> list[str]:
    cmd = ["eapol_test", "-c", str(conf_path), "-a127.0.0.1", f"-p{port}", f"-s{SECRET}",
           f"-t{timeout}"]
    return cmd + (["-n"] if no_keys else [])


def eapol(lab: Lab, text: str, *, no_keys: bool = False, port: int | None = None,
          timeout: int = 15, reauths: int = 0, mac: str | None = None) -> Run:
    cmd = eapol_cmd(port or lab.srv.auth_port, write_conf(lab, text), no_keys=no_keys,
                    timeout=timeout) + ([f"-r{reauths}"] if reauths else [])
    cmd += [f"-M{mac}"] if mac else []
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 15)
    return Run(p.returncode, p.stdout + p.stderr)


def pki(state: Path, *args: str) -> None:
    subprocess.run([*nac_cmd(), "pki", *args, "--state-dir", str(state)], check=True,
                   capture_output=True, timeout=60)


def prepare_pki(tmp: Path) -> Path:
    """CA and certificates before the server starts: demo (good) and mallory (revoked)."""
    state, certs = tmp / "state", tmp / "certs"
    pki(state, "init")
    pki(state, "client", "demo", "--out", str(certs))
    pki(state, "client", "mallory", "--out", str(certs))
    pki(state, "revoke", "mallory")
    return certs


# Without /etc/tnc_config, wpa_supplicant's TTLS cannot start EAP-TNC and fails on the spot
# instead of NAKing it; the server then authenticates that station without posture.
TNC_REFUSED = "failed to initialize Phase 2 EAP method 0:38"


def ttls_without_agent(lab: Lab, mac: str | None = None) -> tuple[Run, Run | None]:
    """A TTLS conversation from a host with no posture agent; if the server offered EAP-TNC,
    the host's retry (the fallback) too."""
    text = conf(lab, "TTLS", phase2="auth=PAP")
    first = eapol(lab, text, mac=mac)
    if first.rc == 0:
        return first, None
    assert TNC_REFUSED in first.out, first.out[-3000:]
    return first, eapol(lab, text, mac=mac)


def started(tmp: Path, *args: str) -> Lab:
    # One worker: per-station state (the posture fallback, TLS tickets) lives per process,
    # and each eapol_test run comes from a new source port that SO_REUSEPORT may send to
    # another worker; a switch keeps its port, so it sticks to one.
    srv = start_server(tmp, "--workers", "1", *args)
    lab = Lab(srv, tmp, tmp / "certs")
    ttls_without_agent(lab)  # the default station (eapol_test's MAC) has no agent
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need("eapol_test")
    tmp = tmp_path_factory.mktemp("eapol")
    prepare_pki(tmp)
    lab = started(tmp)  # the embedded default: demo account, MD5 allowed for it
    yield lab
    lab.srv.stop()


METHODS = {
    "peap-mschapv2": dict(eap="PEAP", phase2="auth=MSCHAPV2"),
    "ttls-pap": dict(eap="TTLS", phase2="auth=PAP"),
    "ttls-mschapv2": dict(eap="TTLS", phase2="auth=MSCHAPV2"),
    "ttls-eap-mschapv2": dict(eap="TTLS", phase2="autheap=MSCHAPV2"),
    "tls": dict(eap="TLS", cert="demo"),
}


def test_md5(lab: Lab) -> None:
    r = eapol(lab, conf(lab, "MD5"), no_keys=True)
    assert r.rc == 0, r.out[-3000:]
    assert r.vlan() == QUARANTINE_VLAN


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("method", list(METHODS))
def test_method_accepts_with_keys_and_vlan(lab: Lab, method: str, tls: str) -> None:
    r = eapol(lab, conf(lab, tls=tls, **METHODS[method]))  # type: ignore[arg-type]
    assert r.rc == 0, r.out[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in r.out
    assert f"Using TLS version TLSv{tls}" in r.out
    assert r.vlan() == QUARANTINE_VLAN
    assert r.accept_attrs()[1] == ["'demo'"]  # User-Name: the inner identity
    if method == "peap-mschapv2" and tls == "1.2":
        # The inner Identity request rides with the server's Finished (peap_fast_start),
        # saving the round trip in which the peer only acknowledges Finished.
        assert "Application Data in Finished message" in r.out
        assert "EAP-PEAP: received Phase 2: code=1 identifier=1 length=5" in r.out


@pytest.mark.parametrize("method", ["tls", "peap-mschapv2", "ttls-pap", "ttls-mschapv2",
                                    "ttls-eap-mschapv2"])
def test_tls13_resumption_on_reauthentication(lab: Lab, method: str) -> None:
    # wpa_supplicant 2.10 resumes only TLS 1.3 sessions; a TTLS peer then skips phase 2
    # (RFC 5281 8), so the server must remember who authenticated in that session.
    r = eapol(lab, conf(lab, tls="1.3", **METHODS[method]), reauths=2)  # type: ignore[arg-type]
    assert r.rc == 0, r.out[-3000:]
    assert "MPPE keys OK: 3  mismatch: 0" in r.out
    assert r.out.count("Handshake finished - resumed=1") >= 2
    # One TLS 1.3 ticket per handshake (OpenSSL's default is two): all a peer resumes with.
    assert r.out.count("new session ticket") == 3
    if method.startswith("ttls"):
        assert r.out.count("Session resumption - skip phase 2") == 2
    if method == "peap-mschapv2":  # fast reconnect: the resumed ones skip MSCHAPv2
        assert r.out.count("EAP-MSCHAPV2: Received challenge") == 1
        assert r.out.count("EAP-TLV: TLV Result - Success") == 3


@pytest.mark.parametrize(("name", "text"), [
    ("md5 wrong password", dict(eap="MD5", password="wrong")),
    ("peap wrong password", dict(eap="PEAP", phase2="auth=MSCHAPV2", password="wrong")),
    ("ttls/pap wrong password 1.3", dict(eap="TTLS", phase2="auth=PAP", password="wrong",
                                         tls="1.3")),
    ("ttls/mschapv2 unknown user", dict(eap="TTLS", phase2="auth=MSCHAPV2",
                                        identity="nobody")),
    ("peap unknown user", dict(eap="PEAP", phase2="auth=MSCHAPV2", identity="nobody")),
    ("tls revoked certificate", dict(eap="TLS", cert="mallory", identity="mallory")),
    ("tls revoked certificate 1.3", dict(eap="TLS", cert="mallory", identity="mallory",
                                         tls="1.3")),
])
def test_rejects(lab: Lab, name: str, text: dict[str, str]) -> None:
    # -n: without it eapol_test reports the missing keys (252) instead of the reject (253).
    r = eapol(lab, conf(lab, **text), no_keys=True)  # type: ignore[arg-type]
    assert r.rc == 253, f"{name}: {r.out[-3000:]}"
    assert "Access-Reject" in r.out


def test_agentless_ttls_host_is_accepted_into_quarantine(lab: Lab) -> None:
    first, retry = ttls_without_agent(lab, mac="02:00:00:00:00:42")
    final = retry or first
    assert final.rc == 0, final.out[-3000:]
    assert final.vlan() == QUARANTINE_VLAN


def test_200_conversations_in_flight(lab: Lab) -> None:
    text = conf(lab, "PEAP", phase2="auth=MSCHAPV2")
    path = write_conf(lab, text)
    started = time.monotonic()
    # 200 hosts: each its own MAC (Calling-Station-Id), all in flight at once.
    procs = [subprocess.Popen([*eapol_cmd(lab.srv.auth_port, path, no_keys=False, timeout=60),
                               f"-M02:00:00:01:{i // 256:02x}:{i % 256:02x}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(200)]
    outs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    elapsed = time.monotonic() - started
    failed = [o[-1500:] for p, o in zip(procs, outs, strict=True) if p.returncode != 0]
    assert not failed, f"{len(failed)} of 200 failed; first:\n{failed[0]}"
    assert all("MPPE keys OK: 1" in o for o in outs)
    print(f"200 parallel PEAP-MSCHAPv2 conversations in {elapsed:.1f}s")


# fragment_size=300 and the idle timeout need a configured server -----------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need("eapol_test")
    tmp = tmp_path_factory.mktemp("eapol-small")
    prepare_pki(tmp)
    box = SecretBox(tmp / "state" / "keys" / "accounts.key")
    (tmp / "nac.toml").write_text(f"""
[[clients]]
address = "127.0.0.1"
secret = "{SECRET}"

[accounts.demo]
password_hash = "{hash_password(PASSWORD)}"
nt_hash = "{nt_hash(PASSWORD).hex()}"
md5_secret = "{box.seal(PASSWORD)}"

[eap]
fragment_size = 300
idle_timeout = 1.5
""")
    lab = started(tmp, "--config", str(tmp / "nac.toml"))
    yield lab
    lab.srv.stop()


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("method", ["peap-mschapv2", "ttls-pap", "tls"])
def test_fragment_size_300_both_ways(small: Lab, method: str, tls: str) -> None:
    r = eapol(small, conf(small, tls=tls, fragment=300, **METHODS[method]))  # type: ignore[arg-type]
    assert r.rc == 0, r.out[-3000:]
    assert "MPPE keys OK: 1" in r.out
    sizes = r.server_packet_sizes()
    assert max(sizes) <= 300 and len(sizes) > 6, sizes
    assert re.search(r"SSL: Received packet\(len=\d+\) - Flags 0xc0", r.out)  # L+M from us


def test_abandoned_conversation_is_purged(small: Lab) -> None:
    d = Dictionary(str(ROOT / "radius_dict" / "dictionary"))

    def access_request(eap: bytes, state: bytes | None, ident: int) -> bytes:
        p = AuthPacket(code=1, id=ident, secret=SECRET.encode(), dict=d)
        p["User-Name"] = "demo"
        p["Calling-Station-Id"] = "02-00-00-00-00-99"
        p["EAP-Message"] = eap
        if state:
            p["State"] = state
        p.add_message_authenticator()
        return p.RequestPacket()

    time.sleep(2)  # let earlier conversations (the agentless primer) expire first
    before = len(small.srv.log())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(access_request(b"\x02\x05\x00\x09\x01demo", None, 1),
                 ("127.0.0.1", small.srv.auth_port))
        reply = Packet(packet=s.recv(4096), dict=d)
        assert reply.code == 11  # Access-Challenge
        state = reply["State"][0]
        eap_req = reply["EAP-Message"][0]
        deadline = time.monotonic() + 10
        while not re.search(r"purged \d+ idle EAP conversation", small.srv.log()[before:]):
            assert time.monotonic() < deadline, small.srv.log()[-2000:]
            time.sleep(0.2)
        nak = bytes([2, eap_req[1], 0, 6, 3, 4])  # NAK -> MD5, too late
        s.sendto(access_request(nak, state, 2), ("127.0.0.1", small.srv.auth_port))
        late = Packet(packet=s.recv(4096), dict=d)
        assert late.code == 3  # Access-Reject: the conversation is gone
