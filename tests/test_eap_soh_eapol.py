"""Statement of Health with the real peer: eapol_test (wpa_supplicant 2.10's PEAP and SoH
code, phase1 "tnc=soh2" / "tnc=soh") against `nac serve` with `[eap] peap_soh = true`.

wpa_supplicant NAKs EAP-TNC inside PEAP; the server then sends its SoH request and the
peer answers with its (fixed) statement: Windows 0.0.0, workstation, machine name
"wpa_supplicant@w1.fi", no System Health Agent reports. The policies below are written to
match or miss that content; the Access-Accept's VLAN and the stored decision row say which.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from nac.accounts import hash_password, nt_hash
from tests.conftest import SECRET, NacServer, need, start_server
from tests.test_posture_e2e import rounds, vlan

pytestmark = pytest.mark.peer

PASSWORD = "demo-password"
MAC = "02:00:00:00:5a:01"

# Windows of some version: the OS rule alone decides (nothing else is judged).
POLICY = """
version = 1
name = "soh-e2e"
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
on_fail = "major"
"""


def serve(tmp: Path, *, version: str, soh: bool = True) -> NacServer:
    need("eapol_test")
    state = tmp / "state"
    state.mkdir(parents=True)
    (state / "policy.toml").write_text(POLICY.format(version=version))
    conf = tmp / "nac.toml"
    conf.write_text(textwrap.dedent(f"""\
        [[clients]]
        address = "127.0.0.1"
        secret = "{SECRET}"
        name = "localhost"

        [accounts.demo]
        password_hash = "{hash_password(PASSWORD)}"
        nt_hash = "{nt_hash(PASSWORD).hex()}"

        [eap]
        peap_soh = {"true" if soh else "false"}
        """))
    return start_server(tmp, "--config", str(conf))


def peap(tmp: Path, srv: NacServer, phase1: str) -> str:
    conf = tmp / f"peap-{len(list(tmp.glob('peap-*')))}.conf"
    conf.write_text(textwrap.dedent(f"""\
        network={{
          key_mgmt=IEEE8021X
          eap=PEAP
          identity="demo"
          anonymous_identity="anonymous"
          password="{PASSWORD}"
          ca_cert="{srv.state_dir}/pki/ca.pem"
          phase1="{phase1}"
          phase2="auth=MSCHAPV2"
        }}
        """))
    proc = subprocess.run(["eapol_test", "-c", str(conf), "-a", "127.0.0.1", "-p",
                           str(srv.auth_port), "-s", SECRET, "-t", "20", "-M", MAC],
                          capture_output=True, text=True, timeout=60)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and log.rstrip().endswith("SUCCESS"), log[-3000:]
    assert "MPPE keys OK: 1" in log
    return log


def last_decision(srv: NacServer) -> tuple[dict, dict]:
    shown = json.loads(srv.nac("nodes", "show", MAC, "--json").stdout)
    return shown["node"], shown["decisions"][0]


@pytest.mark.parametrize("phase1", ["tnc=soh2", "tnc=soh"])
def test_soh_meets_the_os_rule_normal(tmp_path: Path, phase1: str) -> None:
    srv = serve(tmp_path, version=">=0")
    try:
        log = peap(tmp_path, srv, phase1)
        assert "TNC: SoH Request TLV received" in log  # the peer took our request
        assert vlan(log) == "30", log[-2000:]
        node, decision = last_decision(srv)
        assert node["segment"] == "normal"
        assert node["posture"]["os"] == {"family": "windows", "id": "windows",
                                         "version_id": "0.0.0", "version": "0.0.0",
                                         "pretty_name": "Windows 0.0.0",
                                         "product_type": "workstation"}
        assert node["posture"]["soh"]["machine_name"] == "wpa_supplicant@w1.fi"
        assert decision["segment"] == "normal"
        assert not any("no posture" in r for r in decision["reasons"]), decision["reasons"]
    finally:
        srv.stop()


def test_soh_below_the_minimum_os_version_isolated(tmp_path: Path) -> None:
    srv = serve(tmp_path, version=">=10")
    try:
        log = peap(tmp_path, srv, "tnc=soh2")
        assert vlan(log) == "20", log[-2000:]
        node, decision = last_decision(srv)
        assert node["segment"] == "isolated" and decision["segment"] == "isolated"
        assert any("operating system Windows 0.0.0 is not allowed" in r
                   for r in decision["reasons"]), decision["reasons"]
        # a peer without SoH NAKs the request: no posture, quarantine, one round trip more
        # than with the request off (below)
        plain = peap(tmp_path, srv, "peapver=0")
        assert "TNC: SoH Request TLV received" not in plain
        assert "Phase 2 Request: Nak type=254" in plain
        assert vlan(plain) == "10"
        node, decision = last_decision(srv)
        assert any("no posture reported" in r for r in decision["reasons"])
        assert "no Statement of Health (the peer NAKed the request)" in srv.log()
    finally:
        srv.stop()
    off = serve(tmp_path / "off", version=">=0", soh=False)
    try:
        log = peap(tmp_path, off, "tnc=soh2")  # SoH-capable, but never asked
        assert "SoH Request" not in log
        assert vlan(log) == "10"
        _, decision = last_decision(off)
        assert any("no posture reported" in r for r in decision["reasons"])
        assert rounds(log) == rounds(plain) - 1, (rounds(log), rounds(plain))
    finally:
        off.stop()
