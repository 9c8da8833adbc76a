"""`nac serve --workers 2`: both processes answer on one port, and EAP conversations
(many rounds, one State) complete because each NAS flow stays on one worker."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SECRET, need, radclient, start_server

pytestmark = pytest.mark.peer


def test_two_workers_share_the_port_and_keep_eap_flows(tmp_path: Path) -> None:
    need("eapol_test")
    srv = start_server(tmp_path, "--workers", "2")
    try:
        # Each radclient run is a new source port: the kernel spreads them over both.
        for i in range(24):
            mac = f"02:00:00:00:01:{i:02x}"
            r = radclient(srv.auth_port, "auth",
                          f'User-Name = "{mac}", Calling-Station-Id = "{mac}", '
                          "Service-Type = Call-Check, Message-Authenticator = 0x00")
            assert r.code == "Access-Accept"
        log = srv.log()
        assert re.search(r"\[w0\].*decision", log) and re.search(r"\[w1\].*decision", log)

        conf = tmp_path / "peap.conf"
        conf.write_text(
            'network={\n key_mgmt=IEEE8021X\n eap=PEAP\n identity="demo"\n'
            ' password="demo-password"\n'
            f' ca_cert="{srv.state_dir}/pki/ca.pem"\n phase2="auth=MSCHAPV2"\n}}\n')

        def peap(_: int) -> int:
            return subprocess.run(
                ["eapol_test", "-c", str(conf), "-a", "127.0.0.1", "-p", str(srv.auth_port),
                 "-s", SECRET, "-t", "20"], capture_output=True, timeout=60).returncode

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(peap, range(16)))
        assert codes == [0] * 16
    finally:
        srv.stop()
    assert "all workers stopped" in srv.log()


def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    """SIGKILL one worker of two: the supervisor says so once and starts it again after
    its backoff; the port answers throughout."""
    import os
    import signal
    import time

    srv = start_server(tmp_path, "--workers", "2")
    mab = ('User-Name = "020000000e01", Calling-Station-Id = "02:00:00:00:0e:01", '
           "Service-Type = Call-Check, Message-Authenticator = 0x00")
    try:
        pids = dict(re.findall(r"worker (\d) started \(pid (\d+)\)", srv.log()))
        assert set(pids) == {"0", "1"}, srv.log()
        os.kill(int(pids["1"]), signal.SIGKILL)
        deadline = time.monotonic() + 15
        again: list[str] = []
        while time.monotonic() < deadline:
            again = re.findall(r"worker 1 started \(pid (\d+)\)", srv.log())
            if len(again) == 2 and re.search(r"\[w1\].*ready: ", srv.log().split(
                    f"worker 1 started (pid {again[1]})")[1]):
                break
            assert radclient(srv.auth_port, "auth", mab).code == "Access-Accept"
            time.sleep(0.2)
        assert len(again) == 2, srv.log()
        os.kill(int(again[1]), 0)  # the new worker runs
        assert srv.log().count("worker 1 (pid") == 1  # its death reported once
        assert radclient(srv.auth_port, "auth", mab).code == "Access-Accept"
    finally:
        srv.stop()
