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
