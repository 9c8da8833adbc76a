"""`nac serve --metrics`: Prometheus /metrics and /healthz of a running server, read with
curl and parsed with prometheus_client's own parser, after real radclient traffic."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import need, radclient, start_server

pytestmark = pytest.mark.peer


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_and_health(tmp_path: Path) -> None:
    need("curl")
    port = free_tcp_port()
    srv = start_server(tmp_path, "--metrics", f"127.0.0.1:{port}")
    try:
        r = radclient(srv.auth_port, "auth",
                      'User-Name = "020000000c01", Calling-Station-Id = "02:00:00:00:0c:01", '
                      "Service-Type = Call-Check, Message-Authenticator = 0x00")
        assert r.code == "Access-Accept"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x01\x01\x00\x05junk", ("127.0.0.1", srv.auth_port))
        radclient(srv.auth_port, "auth", 'User-Name = "x"', timeout=0.3)  # no MA: dropped
        text = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/metrics"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
        health = subprocess.run(["curl", "-s", "-w", "\n%{http_code}",
                                 f"http://127.0.0.1:{port}/healthz"],
                                capture_output=True, text=True, timeout=20).stdout
    finally:
        srv.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("nac_radius_requests_total", (("code", "access_accept"),))] >= 1
    assert samples[("nac_decisions_total", (("segment", "quarantine"),))] >= 1
    drops = {k[1]: v for k, v in samples.items() if k[0] == "nac_radius_drops_total"}
    assert drops[(("reason", "malformed_short"),)] >= 1
    assert drops[(("reason", "missing_message_authenticator"),)] >= 1
    assert samples[("nac_radius_request_seconds_count", ())] >= 1
    assert ("nac_eap_conversations", ()) in samples
    body, code = health.rsplit("\n", 1)
    assert code == "200" and json.loads(body)["checks"] == {"store": True, "listeners": True}
