"""Integration: wpa_supplicant's own TNCC (eapol_test) loads our IF-IMC plug-in from
/etc/tnc_config and its message reaches hostapd's TNCS inside EAP-TTLS.

eapol_test and hostapd read the fixed path /etc/tnc_config, so both run inside a private
mount namespace (unshare -m) where /etc is an overlay whose upper layer is a temp dir: the
real /etc is never written. hostapd is the EAP server (driver=none, eap_server=1, tnc=1) with
a RADIUS server on loopback; the server certificate is made here with openssl.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eap_ext.agent import state
from eap_ext.agent.imc.install import build_library, imc_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_fixtures import build_debian_root  # noqa: E402
from test_agent_imc import decode_posture  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECRET = "testing123"
PROGRAMS = ("hostapd", "eapol_test", "gcc", "openssl", "unshare", "mount")

pytestmark = pytest.mark.peer


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_certs(d: Path) -> None:
    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=nac-agent test CA")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2")


def _hexdump_after(log: str, title: str) -> bytes:
    """Bytes of a wpa_hexdump_ascii block whose header line contains `title`."""
    lines = log.splitlines()
    start = next(i for i, ln in enumerate(lines) if title in ln)
    data = bytearray()
    for line in lines[start + 1:]:
        if not line.startswith("     "):
            break
        data += bytes(int(tok, 16) for tok in line[5:5 + 48].split())
    return bytes(data)


def _check_environment() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"missing programs: {', '.join(missing)}")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace: {probe.stderr.decode().strip()}")


def test_eapol_test_loads_imc_and_hostapd_tncs_receives_posture(tmp_path: Path) -> None:
    _check_environment()
    etc_before = Path("/etc/tnc_config").exists()
    _make_certs(tmp_path)
    lib = build_library(tmp_path / "nac_imc.so",
                        command=f"PYTHONPATH={REPO} exec {sys.executable} -m eap_ext.agent -v imc")
    root = build_debian_root(tmp_path / "host")
    port = _free_udp_port()
    (tmp_path / "clients").write_text(f"127.0.0.1/32 {SECRET}\n")
    # Phase 1 for any (anonymous) identity, then EAP-MSCHAPv2 inside the tunnel; tnc=1
    # makes hostapd run EAP-TNC after the inner method succeeds.
    (tmp_path / "eap_user").write_text('* TTLS\n"host1" MSCHAPV2 "secret-pw" [2]\n')
    (tmp_path / "hostapd.conf").write_text(textwrap.dedent(f"""\
        driver=none
        interface=as0
        logger_stdout=-1
        logger_stdout_level=0
        eap_server=1
        eap_user_file={tmp_path}/eap_user
        ca_cert={tmp_path}/ca.pem
        server_cert={tmp_path}/server.pem
        private_key={tmp_path}/server.key
        tnc=1
        radius_server_clients={tmp_path}/clients
        radius_server_auth_port={port}
        """))
    (tmp_path / "eapol.conf").write_text(textwrap.dedent(f"""\
        network={{
          ssid="nac"
          key_mgmt=WPA-EAP
          eap=TTLS
          identity="host1"
          anonymous_identity="anonymous"
          password="secret-pw"
          ca_cert="{tmp_path}/ca.pem"
          phase2="autheap=MSCHAPV2"
        }}
        """))
    for d in ("upper", "work"):
        (tmp_path / d).mkdir()
    script = tmp_path / "run.sh"
    script.write_text(textwrap.dedent(f"""\
        set -e
        mount -t overlay overlay \
          -o lowerdir=/etc,upperdir={tmp_path}/upper,workdir={tmp_path}/work /etc
        echo '{imc_line(lib)}' > /etc/tnc_config
        hostapd -dd {tmp_path}/hostapd.conf > {tmp_path}/hostapd.log 2>&1 &
        hp=$!
        i=0
        until grep -q AP-ENABLED {tmp_path}/hostapd.log; do
          i=$((i+1)); [ $i -lt 100 ] || {{ kill $hp; exit 90; }}; sleep 0.05
        done
        set +e
        eapol_test -c {tmp_path}/eapol.conf -a 127.0.0.1 -p {port} -s {SECRET} -t 20 \\
          > {tmp_path}/eapol.log 2>&1
        rc=$?
        kill $hp; wait $hp
        exit $rc
        """))
    env = {**os.environ, "NAC_AGENT_ROOT": str(root),
           "NAC_AGENT_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", str(script)],
                          env=env, capture_output=True, text=True, timeout=90, check=False)
    eapol_log = (tmp_path / "eapol.log").read_text(errors="replace") \
        if (tmp_path / "eapol.log").exists() else ""
    hostapd_log = (tmp_path / "hostapd.log").read_text(errors="replace")
    assert proc.returncode == 0, (proc.stderr, eapol_log[-3000:], hostapd_log[-3000:])

    # The supplicant side: our IMC was loaded, initialized and sent one message of type 1.
    assert "TNC: TNC_IMC_Initialize: res=0 imc_ver=1" in eapol_log
    assert "TNC: TNC_IMC_BeginHandshake: 0" in eapol_log
    assert "TNC_TNCC_SendMessage(imcID=0 connectionID=0 messageType=1)" in eapol_log
    # The server side: hostapd's TNCS got the IMC-IMV message with our PA-TNC bytes.
    assert "TNC: IMC-IMV-Message Type 0x1" in hostapd_log
    received = _hexdump_after(hostapd_log, "TNC: Message to IMV(s)")
    sent = _hexdump_after(eapol_log, "TNC: TNC_TNCC_SendMessage - hexdump")
    assert received == sent
    assert received[0] == 1  # PA-TNC version 1
    doc = decode_posture(received)
    assert doc["os"]["id"] == "debian"
    assert any(p["name"] == "openssl" and p["version"] == "3.0.11-1~deb12u2"
               for p in doc["packages"])
    # hostapd (no IMV loaded) recommends "allow"; the agent recorded it for `status`.
    assert "TNC: TNCCS-Recommendation: 'allow'" in eapol_log
    assert state.load(tmp_path / "state" / "last.json")["recommendation"] == "allow"
    assert Path("/etc/tnc_config").exists() == etc_before


@pytest.mark.netns
def test_watch_reauthenticates_wpa_supplicant_over_a_wired_port(tmp_path: Path) -> None:
    """Draft 4.5.1 end to end: wpa_supplicant (driver=wired, our IMC) authenticates to hostapd
    (driver=wired, internal EAP server, tnc=1) over a veth pair between two netns; then
    `nac-agent watch` sees dpkg change and `wpa_cli reauthenticate` reruns the posture check.

    fast_reauth=0: with it on, wpa_supplicant 2.10 keeps EAP-TNC as the TTLS phase-2 method
    on re-authentication and Naks the inner MSCHAPv2, so the check would fail.
    """
    _check_environment()
    if shutil.which("wpa_supplicant") is None or shutil.which("wpa_cli") is None:
        pytest.skip("wpa_supplicant/wpa_cli not installed")
    _make_certs(tmp_path)
    lib = build_library(tmp_path / "nac_imc.so",
                        command=f"PYTHONPATH={REPO} exec {sys.executable} -m eap_ext.agent imc")
    root = build_debian_root(tmp_path / "host")
    tag = os.urandom(3).hex()
    sw_ns, host_ns = f"nacsw-{tag}", f"nachost-{tag}"
    ctrl = tmp_path / "ctrl"
    (tmp_path / "eap_user").write_text('* TTLS\n"host1" MSCHAPV2 "secret-pw" [2]\n')
    (tmp_path / "hostapd.conf").write_text(textwrap.dedent(f"""\
        interface=vb
        driver=wired
        logger_stdout=-1
        logger_stdout_level=0
        ieee8021x=1
        eapol_version=2
        eap_server=1
        eap_user_file={tmp_path}/eap_user
        ca_cert={tmp_path}/ca.pem
        server_cert={tmp_path}/server.pem
        private_key={tmp_path}/server.key
        tnc=1
        """))
    (tmp_path / "wpas.conf").write_text(textwrap.dedent(f"""\
        ctrl_interface={ctrl}
        ap_scan=0
        fast_reauth=0
        network={{
          key_mgmt=IEEE8021X
          eap=TTLS
          identity="host1"
          anonymous_identity="anonymous"
          password="secret-pw"
          ca_cert="{tmp_path}/ca.pem"
          phase2="autheap=MSCHAPV2"
          eapol_flags=0
        }}
        """))
    for d in ("upper", "work"):
        (tmp_path / d).mkdir()
    hostapd_log, wpas_log = tmp_path / "hostapd.log", tmp_path / "wpas.log"
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    script = tmp_path / "lab.sh"
    script.write_text(textwrap.dedent(f"""\
        set -e
        hp=; wp=
        cleanup() {{
          set +e
          [ -n "$hp$wp" ] && kill $hp $wp 2>/dev/null && wait $hp $wp 2>/dev/null
          ip netns del {sw_ns} 2>/dev/null; ip netns del {host_ns} 2>/dev/null
        }}
        trap cleanup EXIT
        mount -t overlay overlay \\
          -o lowerdir=/etc,upperdir={tmp_path}/upper,workdir={tmp_path}/work /etc
        echo '{imc_line(lib)}' > /etc/tnc_config
        ip netns add {sw_ns}
        ip netns add {host_ns}
        ip link add va netns {host_ns} type veth peer name vb netns {sw_ns}
        ip -n {host_ns} link set va up
        ip -n {sw_ns} link set vb up
        until ip -n {host_ns} link show va | grep -q LOWER_UP; do sleep 0.05; done
        ip netns exec {sw_ns} hostapd -dd {tmp_path}/hostapd.conf > {hostapd_log} 2>&1 &
        hp=$!
        until grep -q AP-ENABLED {hostapd_log}; do sleep 0.05; done
        ip netns exec {host_ns} wpa_supplicant -dd -D wired -i va -c {tmp_path}/wpas.conf \\
          > {wpas_log} 2>&1 &
        wp=$!
        until grep -q EAP-SUCCESS {wpas_log}; do sleep 0.1; done
        touch {ready}
        until [ -e {stop} ]; do sleep 0.1; done
        """))
    env = {**os.environ, "NAC_AGENT_ROOT": str(root),
           "NAC_AGENT_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    lab = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", str(script)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        _wait_for(lambda: ready.exists() or lab.poll() is not None, 30)
        assert ready.exists(), _tail(lab, wpas_log, hostapd_log)
        assert wpas_log.read_text(errors="replace").count("TNC_IMC_BeginHandshake: 0") == 1

        watch = subprocess.Popen(
            [sys.executable, "-m", "eap_ext.agent", "-v", "watch", "-i", "va", "-p", str(ctrl),
             "--interval", "0.2", "--max-checks", "15"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert watch.stderr is not None
        for line in watch.stderr:  # the first snapshot is taken: now change the host
            if "watching for posture changes" in line:
                break
        status = root / "var/lib/dpkg/status"
        os.utime(status, ns=(0, status.stat().st_mtime_ns + 10**9))  # "dpkg -i" happened
        out, _ = watch.communicate(timeout=30)
        assert "re-authentication requested (exit 0)" in out
        assert "1 re-authentication(s) requested" in out
        _wait_for(lambda: wpas_log.read_text(errors="replace").count("EAP-SUCCESS") >= 2, 30)
    finally:
        stop.touch()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:  # our own session: the lab and its daemons
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()
    wpas = wpas_log.read_text(errors="replace")
    assert wpas.count("CTRL-EVENT-EAP-SUCCESS") == 2, _tail(lab, wpas_log, hostapd_log)
    assert wpas.count("TNC_IMC_BeginHandshake: 0") == 2  # the posture check ran again
    assert hostapd_log.read_text(errors="replace").count("IMC-IMV-Message Type 0x1") == 2
    assert state.load(tmp_path / "state" / "last.json")["recommendation"] == "allow"


def _wait_for(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.1)


def _tail(proc: subprocess.Popen[bytes], *logs: Path) -> str:
    parts = [f"lab exit {proc.poll()}"]
    parts += [f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in logs
              if p.exists()]
    return "\n".join(parts)
