"""Posture inside the tunnel, end to end: eapol_test (wpa_supplicant's EAP and TNC code)
loads our IMC plug-in from /etc/tnc_config and authenticates by EAP-TTLS/MSCHAPv2 against
`nac serve`; EAP-TNC then carries the host's posture, and the Access-Accept's VLAN is the
segment the sample policy gives it.

eapol_test reads the fixed path /etc/tnc_config, so it runs in a private mount namespace
where /etc is an overlay with a temp upper layer: the real /etc is never written.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eap_ext.agent.imc.install import build_library, imc_line
from nac.posture.stored import PACKED
from tests.conftest import ROOT, SECRET, NacServer, nac_cmd, need
from tests.test_agent_fixtures import build_debian_root

pytestmark = [pytest.mark.peer, pytest.mark.netns]


def _check() -> None:
    for prog in ("eapol_test", "gcc", "unshare", "mount"):
        need(prog)
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")


def run_eapol(tmp: Path, srv: NacServer, host_root: Path | None, *, eap: str = "TTLS",
              phase2: str = "autheap=MSCHAPV2",
              agent_state: Path | None = None) -> tuple[int, str, Path]:
    """One eapol_test run; host_root None means no IMC plug-in is configured."""
    run = tmp / f"run-{time.monotonic_ns()}"
    for d in ("upper", "work", "agent-state"):
        (run / d).mkdir(parents=True)
    if agent_state is not None:  # the same host again: its agent keeps its certificate
        (run / "agent-state").rmdir()
        (run / "agent-state").symlink_to(agent_state)
    tnc_line = ""
    if host_root is not None:
        lib = build_library(tmp / "nac_imc.so",
                            command=f"PYTHONPATH={ROOT} exec {sys.executable} -m eap_ext.agent imc")
        tnc_line = imc_line(lib)
    conf = run / "eapol.conf"
    conf.write_text(textwrap.dedent(f"""\
        network={{
          key_mgmt=IEEE8021X
          eap={eap}
          identity="demo"
          anonymous_identity="anonymous"
          password="demo-password"
          ca_cert="{srv.state_dir}/pki/ca.pem"
          phase2="{phase2}"
        }}
        """))
    log = run / "eapol.log"
    script = run / "run.sh"
    script.write_text(textwrap.dedent(f"""\
        set -e
        mount -t overlay overlay -o lowerdir=/etc,upperdir={run}/upper,workdir={run}/work /etc
        echo '{tnc_line}' > /etc/tnc_config
        set +e
        eapol_test -c {conf} -a 127.0.0.1 -p {srv.auth_port} -s {SECRET} -t 30 \\
          -M 02:00:00:00:aa:01 > {log} 2>&1
        """))
    env = {**os.environ, "NAC_AGENT_STATE_DIR": str(run / "agent-state")}
    if host_root is not None:
        env["NAC_AGENT_ROOT"] = str(host_root)
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", str(script)],
                          env=env, capture_output=True, text=True, timeout=120)
    text = log.read_text(errors="replace") if log.exists() else ""
    assert proc.returncode == 0, proc.stderr
    # eapol_test's last line is SUCCESS or FAILURE.
    return (0 if text.rstrip().endswith("SUCCESS") else 1), text, run


def vlan(log: str) -> str | None:
    m = re.search(r"Attribute 81 \(Tunnel-Private-Group-Id\) length=\d+\s*\n\s*Value: ([0-9a-f]+)",
                  log)
    if m is None:
        return None
    raw = bytes.fromhex(m.group(1))
    return raw[1:].decode()  # first octet is the tag


def rounds(log: str) -> int:
    """EAP round trips of the conversation: one RADIUS Access-Request each."""
    return log.count("Sending RADIUS message to authentication server")


def tnc_messages(log: str) -> list[int]:
    """Sizes of the whole EAP-TNC messages (IF-TNCCS batches) the peer sent."""
    return [int(n) for n in re.findall(r"EAP-TNC: Response - hexdump_ascii\(len=(\d+)\)", log)]


REAL_PACKAGES = ROOT / "tests/data/packages/debian12_installed.tsv"


def add_packages(root: Path, count: int) -> Path:
    """Give a fixture host `count` more installed packages, named after a real Debian 12
    machine's (a suffix keeps them clear of the advisories in tests/data/osv)."""
    real = [ln.split("\t") for ln in REAL_PACKAGES.read_text().splitlines()
            if not ln.startswith("#")]
    stanzas = []
    for i in range(count):
        name, version, arch, source, source_version = real[i % len(real)]
        tag = f"-n{i // len(real)}"
        src = f"{source}{tag}" + (f" ({source_version})" if source_version != version else "")
        stanzas.append(f"Package: {name}{tag}\nStatus: install ok installed\n"
                       f"Architecture: {arch}\nSource: {src}\nVersion: {version}\n"
                       f"Description: package {i}\n")
    status = root / "var/lib/dpkg/status"
    status.write_text(status.read_text().rstrip("\n") + "\n\n" + "\n".join(stanzas))
    return root


def agent_status(run: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "eap_ext.agent", "status", "--json"],
                         env={**os.environ, "NAC_AGENT_STATE_DIR": str(run / "agent-state")},
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compliant_host_gets_normal(nac_server: NacServer, tmp_path: Path) -> None:
    _check()
    root = build_debian_root(tmp_path / "host")
    ok, log, run = run_eapol(tmp_path, nac_server, root)
    assert ok == 0, log[-3000:]
    assert "MPPE keys OK" in log
    assert vlan(log) == "30", log[-2000:]
    assert agent_status(run)["recommendation"] == "allow"
    node = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:aa:01", "--json").stdout)
    assert node["node"]["segment"] == "normal"
    assert node["node"]["posture"]["os"]["id"] == "debian"
    # The store keeps the package list as the deflated bytes the agent sent
    # (nac/posture/stored.py); the CLI shows the packages themselves.
    shown = {(p["name"], p["version"]) for p in node["node"]["posture"]["packages"]}
    assert ("openssl", "3.0.11-1~deb12u2") in shown
    with sqlite3.connect(nac_server.state_dir / "nac.db") as db:
        [(raw,)] = db.execute("SELECT posture FROM node_postures WHERE mac = ?",
                              ("02:00:00:00:aa:01",)).fetchall()
    stored = json.loads(raw)
    assert PACKED in stored and "packages" not in stored


def test_ttls_mschapv2_avps_start_posture_with_ms_chap2_success(nac_server: NacServer,
                                                                tmp_path: Path) -> None:
    """TTLS's own MS-CHAP-V2: the server sends EAP-TNC's Start with MS-CHAP2-Success, and
    wpa_supplicant takes both from that one message."""
    _check()
    root = build_debian_root(tmp_path / "host")
    ok, log, run = run_eapol(tmp_path, nac_server, root, phase2="auth=MSCHAPV2")
    assert ok == 0, log[-3000:]
    assert vlan(log) == "30", log[-2000:]
    assert agent_status(run)["recommendation"] == "allow"
    # EAP-TNC started from the message that carried MS-CHAP2-Success, not after an ack
    head = log[:log.index("EAP-TTLS: Phase 2 MSCHAPV2 authentication succeeded")]
    tail = log[len(head):log.index("EAP-TTLS: Processing TNC")]
    assert "Start TNC after completed non-EAP method" in tail
    assert "Sending RADIUS message" not in tail


def test_forwarding_host_is_isolated_and_told_why(nac_server: NacServer,
                                                   tmp_path: Path) -> None:
    _check()
    root = build_debian_root(tmp_path / "host", ip_forward=True)
    ok, log, run = run_eapol(tmp_path, nac_server, root)
    assert ok == 0, log[-3000:]
    assert vlan(log) == "20"
    status = agent_status(run)
    assert status["recommendation"] == "isolate"
    assert any("forwarding" in r for r in status["remediation"])  # type: ignore[union-attr]


def test_vulnerable_package_is_isolated_fixed_one_is_not(nac_server: NacServer,
                                                         tmp_path: Path) -> None:
    _check()
    import_feed(nac_server)
    root = build_debian_root(tmp_path / "host")
    status_file = root / "var/lib/dpkg/status"
    status_file.write_text(status_file.read_text().replace("3.0.11-1~deb12u2", "3.0.9-1"))
    ok, log, run = run_eapol(tmp_path, nac_server, root)
    assert ok == 0, log[-3000:]
    assert vlan(log) == "20"
    status = agent_status(run)
    assert status["recommendation"] == "isolate"
    assert any("security updates" in r for r in status["remediation"])  # type: ignore[union-attr]
    node = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:aa:01", "--json").stdout)
    assert "DSA-5532-1" in " ".join(node["decisions"][0]["reasons"])
    fixed = build_debian_root(tmp_path / "fixed")
    ok, log, _ = run_eapol(tmp_path, nac_server, fixed)
    assert ok == 0 and vlan(log) == "30"


def import_feed(srv: NacServer) -> None:
    imp = subprocess.run([*nac_cmd(), "feed", "import", str(ROOT / "tests/data/osv"),
                          "--state-dir", str(srv.state_dir)],
                         capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    time.sleep(2.5)  # the server notices the new feed epoch within a second or two


# Round trips of TTLS + MSCHAPv2 + EAP-TNC: ~9 for the tunnel, inner authentication and
# the TNC start/result, then 2 per EAP-TNC fragment from the peer (its 1,398-byte TNC
# fragment does not fit its 1,398-byte TTLS fragment once inside TLS). wpa_supplicant
# gives up at 100. Installed Packages uncompressed made 1,500 packages ~130 rounds.
@pytest.mark.parametrize("count,max_rounds", [(1500, 45), (3000, 65)])
def test_large_inventory_vulnerable_isolated_then_fixed_normal(
        nac_server: NacServer, tmp_path: Path, count: int, max_rounds: int) -> None:
    _check()
    import_feed(nac_server)
    root = add_packages(build_debian_root(tmp_path / "host"), count)
    status_file = root / "var/lib/dpkg/status"
    fixed_text = status_file.read_text()
    status_file.write_text(fixed_text.replace("3.0.11-1~deb12u2", "3.0.9-1"))
    ok, log, run = run_eapol(tmp_path, nac_server, root)
    assert ok == 0, log[-3000:]
    assert vlan(log) == "20"
    node = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:aa:01", "--json").stdout)
    assert count < len(node["node"]["posture"]["packages"]) < count + 10
    assert "DSA-5532-1" in " ".join(node["decisions"][0]["reasons"])
    assert agent_status(run)["recommendation"] == "isolate"
    assert rounds(log) <= max_rounds, (rounds(log), tnc_messages(log))

    status_file.write_text(fixed_text)  # the host is patched
    ok, log, _ = run_eapol(tmp_path, nac_server, root)
    assert ok == 0 and vlan(log) == "30", log[-2000:]
    assert rounds(log) <= max_rounds


def test_no_plugin_and_peap_stay_in_quarantine(nac_server: NacServer, tmp_path: Path) -> None:
    _check()
    ok, log, _ = run_eapol(tmp_path, nac_server, None)
    assert ok == 0, log[-3000:]
    assert vlan(log) == "10"
    root = build_debian_root(tmp_path / "host")
    ok, log, _ = run_eapol(tmp_path, nac_server, root, eap="PEAP", phase2="auth=MSCHAPV2")
    assert ok == 0, log[-3000:]
    assert vlan(log) == "10"
    node = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:aa:01", "--json").stdout)
    assert any("no posture reported" in r for r in node["decisions"][0]["reasons"])


def test_certificate_fast_path_and_refusal_after_feed_change(nac_server: NacServer,
                                                             tmp_path: Path) -> None:
    """Re-inspection with a quarantine certificate (draft 5.3 step 3). Where the server's
    certificates say digest_first, the agent leads with certificate + digest and the
    inventory does not cross the tunnel; otherwise it goes along with the certificate.
    Either way the decision is reused, and a feed change voids it."""
    _check()
    root = add_packages(build_debian_root(tmp_path / "host"), 1500)
    agent = tmp_path / "agent"
    agent.mkdir()
    ok, log, _ = run_eapol(tmp_path, nac_server, root, agent_state=agent)
    assert ok == 0 and vlan(log) == "30", log[-2000:]
    cert = agent_status_dir(agent).get("certificate")
    assert isinstance(cert, dict) and cert.get("token"), "the agent kept no certificate"
    full = tnc_messages(log)
    assert len(full) == 1 and full[0] > 10_000  # no certificate yet: the whole posture
    full_rounds = rounds(log)
    digest_first = cert.get("digest_first") is True
    assert digest_first, "the server's default ([eap] posture_digest_first) is the fast path"

    ok, log, _ = run_eapol(tmp_path, nac_server, root, agent_state=agent)
    assert ok == 0 and vlan(log) == "30"
    last = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:aa:01", "--json").stdout)
    assert "inspection reused" in " ".join(last["decisions"][0]["reasons"])
    again = tnc_messages(log)
    if digest_first:  # one EAP-TNC fragment that fits one TTLS fragment, no inventory
        assert len(again) == 1 and again[0] < 1390, again
        assert rounds(log) <= 9 and rounds(log) < full_rounds - 20, (rounds(log), full_rounds)
    else:  # the inventory again
        assert len(again) == 1 and again[0] > 10_000, again
        assert rounds(log) <= full_rounds + 2  # the certificate rides along
    # either way the node keeps the whole posture for re-evaluation after a feed change
    assert 1500 < len(last["node"]["posture"]["packages"]) < 1510

    # a feed change voids the certificate: a fresh evaluation under the new feeds, of the
    # posture the server remembers for this identity and digest (no inventory again)
    import_feed(nac_server)
    ok, log, _ = run_eapol(tmp_path, nac_server, root, agent_state=agent)
    assert ok == 0 and vlan(log) == "30"
    last = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:aa:01", "--json").stdout)
    reasons = " ".join(last["decisions"][0]["reasons"])
    assert "inspection reused" not in reasons and "compliant" in reasons
    assert "prevention feeds changed" in nac_server.log()
    asked = tnc_messages(log)
    if digest_first:
        assert len(asked) == 1 and asked[0] < 1390, asked
        # the answer carries a new certificate: it may take one more TTLS fragment
        assert rounds(log) <= 10 and rounds(log) < full_rounds - 15, (rounds(log), full_rounds)
    else:
        assert len(asked) == 1 and asked[0] > 10_000, asked
    assert 1500 < len(last["node"]["posture"]["packages"]) < 1510
    cert2 = agent_status_dir(agent).get("certificate")
    assert isinstance(cert2, dict) and cert2.get("token") != cert.get("token")  # a new one

    # a changed host (one more package): its digest is one the server does not know, so it
    # asks, and the agent sends its inventory
    status = root / "var/lib/dpkg/status"
    status.write_text(status.read_text().rstrip("\n") + "\n\nPackage: e2e-extra\nStatus: "
                      "install ok installed\nArchitecture: all\nVersion: 1.0-1\n"
                      "Description: one more\n")
    import_feed(nac_server)  # and the certificate is stale again, as above
    ok, log, _ = run_eapol(tmp_path, nac_server, root, agent_state=agent)
    assert ok == 0 and vlan(log) == "30"
    asked = tnc_messages(log)
    if digest_first:
        assert len(asked) == 2 and asked[0] < 1390 and asked[1] > 10_000, asked
    else:
        assert len(asked) == 1 and asked[0] > 10_000, asked
    last = json.loads(nac_server.nac("nodes", "show", "02:00:00:00:aa:01", "--json").stdout)
    assert "e2e-extra" in {p["name"] for p in last["node"]["posture"]["packages"]}


def agent_status_dir(state_dir: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "eap_ext.agent", "status", "--json"],
                         env={**os.environ, "NAC_AGENT_STATE_DIR": str(state_dir)},
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
