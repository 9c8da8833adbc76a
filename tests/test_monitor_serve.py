"""`nac serve` with a [monitor] section: accounting from radclient maps the address, curl
posts a signed alert, and the next MAB authentication of that MAC lands in the isolated
VLAN. Skips until nac/config.py has the `monitor` key (the wiring is the lead's)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nac.config import Config
from nac.monitor.auth import signed_headers
from tests.conftest import radclient, start_server

DATA = Path(__file__).parent / "data" / "eve"
KEY = "kkkkkkkk-shared-secret-of-ids1"
MAC = "02:00:00:99:00:05"

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif("monitor" not in Config.model_fields,
                       reason="nac/config.py has no [monitor] section yet"),
]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_alert_isolates_the_next_mab(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    port = free_tcp_port()
    cfg = tmp_path / "nac.toml"
    cfg.write_text(f"""
[[clients]]
address = "127.0.0.1"
secret = "testing123"

[monitor]
listen = "127.0.0.1"
port = {port}

[[monitor.monitors]]
name = "ids1"
hmac_key = "{KEY}"
""")
    srv = start_server(tmp_path, "--config", str(cfg))
    try:
        acct = radclient(srv.acct_port, "acct", (
            'Acct-Status-Type = Start\nAcct-Session-Id = "s5"\n'
            'Calling-Station-Id = "02-00-00-99-00-05"\nFramed-IP-Address = 10.99.0.5\n'
            'NAS-Port-Id = "swp5"\n'))
        assert acct.code == "Accounting-Response", acct.raw
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime())
        body = (DATA / "alert.json").read_bytes().replace(
            b"2026-11-27T21:14:05.482113+0000", stamp.encode())
        (tmp_path / "alert.json").write_bytes(body)

        def post(attempt: int) -> dict[str, object]:
            cmd = [curl, "-sS", "--noproxy", "*", "--max-time", "20",
                   "--cacert", str(srv.state_dir / "pki" / "ca.pem"),
                   "--resolve", f"nac-radius:{port}:127.0.0.1",
                   "--data-binary", f"@{tmp_path / 'alert.json'}"]
            # Each try is a new request: a new timestamp, so not refused as a replay.
            headers = signed_headers("ids1", KEY.encode(), body, time.time() + attempt)
            for k, v in headers.items():
                cmd += ["-H", f"{k}: {v}"]
            proc = subprocess.run([*cmd, f"https://nac-radius:{port}/v1/alerts"],
                                  capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, proc.stderr + srv.log()
            return json.loads(proc.stdout)

        # The store writes the accounting row in the background: retry briefly.
        for attempt in range(20):
            reply = post(attempt)
            if reply.get("isolated"):
                break
            time.sleep(0.2)
        assert reply["isolated"] == [MAC], (reply, srv.log())
        # The registration reaches the packet path within a poll (0.5 s).
        deadline = time.monotonic() + 5
        while True:
            mab = radclient(srv.auth_port, "auth", (
                'User-Name = "020000990005"\nUser-Password = "020000990005"\n'
                'Calling-Station-Id = "02-00-00-99-00-05"\nService-Type = Call-Check\n'
                "Message-Authenticator = 0x00\n"))
            if mab.attrs.get("Tunnel-Private-Group-Id:1") == ["20"] or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert mab.code == "Access-Accept" and mab.attrs["Tunnel-Private-Group-Id:1"] == ["20"]
        shown = srv.nac("nodes", "show", MAC).stdout
        assert "Registered:   isolated" in shown and "from monitor ids1" in shown
    finally:
        srv.stop()
