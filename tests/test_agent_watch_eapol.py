"""`watch`'s re-authentication paths: wpa_cli when the control socket exists, else an
EAPOL-Start of our own, checked on the wire across a veth pair in a private netns."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from eap_ext.agent import eapol
from eap_ext.agent.watch import reauth_runner

REPO = Path(__file__).resolve().parents[1]


def test_eapol_start_frame() -> None:
    pytest.importorskip("scapy")
    raw = eapol.frame("02:00:00:00:00:01")
    # PAE group address, our MAC, EtherType 0x888E, version 2, type 1 (Start), length 0
    assert raw.hex() == "0180c2000003" "020000000001" "888e" "02" "01" "0000"
    assert eapol.frame("02:00:00:00:00:01", eapol.EAPOL_LOGOFF)[15] == 2


def test_runner_uses_wpa_cli_when_socket_exists(tmp_path: Path) -> None:
    (tmp_path / "eth9").touch()  # the supplicant's control socket
    marker = tmp_path / "ran"
    run = reauth_runner("eth9", str(tmp_path))
    assert run(["sh", "-c", f"echo reauth > {marker}"]) == 0
    assert marker.read_text() == "reauth\n"


@pytest.mark.netns
def test_runner_sends_eapol_start_without_supplicant(tmp_path: Path) -> None:
    pytest.importorskip("scapy")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    ns = f"nacagent-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        import socket, sys
        from eap_ext.agent.watch import reauth_runner
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x888E))
        rx.bind(("vb", 0))
        rx.settimeout(5)
        code = reauth_runner("va", {str(tmp_path)!r})(["false"])
        data = rx.recv(2048)
        sys.stdout.write(f"{{code}} {{data[:18].hex()}}")
    """)
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        ipns = ["ip", "-n", ns]
        subprocess.run([*ipns, "link", "add", "va", "address", "02:00:00:00:00:0a", "type",
                        "veth", "peer", "name", "vb"], check=True, capture_output=True)
        for dev in ("va", "vb"):
            subprocess.run([*ipns, "link", "set", dev, "up"], check=True, capture_output=True)
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    code, frame = proc.stdout.split()
    assert code == "0"
    assert frame == "0180c2000003" "02000000000a" "888e" "02" "01" "0000"
