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


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/metrics"],
                          capture_output=True, text=True, timeout=20, check=True).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_one_metrics_endpoint_sums_the_workers(tmp_path: Path) -> None:
    """--workers 2: the supervisor's /metrics counts every request, whichever worker took
    it; /healthz names each worker."""
    import re
    from concurrent.futures import ThreadPoolExecutor

    need("curl")
    port = free_tcp_port()
    srv = start_server(tmp_path, "--workers", "2", "--metrics", f"127.0.0.1:{port}")
    sent = 40

    def mab(i: int) -> str | None:
        mac = f"02:00:00:00:0d:{i:02x}"
        return radclient(srv.auth_port, "auth",
                         f'User-Name = "{mac.replace(":", "")}", Calling-Station-Id = "{mac}", '
                         "Service-Type = Call-Check, Message-Authenticator = 0x00").code

    try:
        # Each radclient run is a new source port: the kernel spreads them over both.
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = list(pool.map(mab, range(sent)))
        assert codes == ["Access-Accept"] * sent
        samples = scrape(port)
        health = subprocess.run(["curl", "-s", "-w", "\n%{http_code}",
                                 f"http://127.0.0.1:{port}/healthz"],
                                capture_output=True, text=True, timeout=20).stdout
        log = srv.log()
    finally:
        srv.stop()
    # Both workers answered some of them, and the one endpoint counts all.
    per_worker = [len(re.findall(rf"\[w{w}\].*decision mac=", log)) for w in (0, 1)]
    assert min(per_worker) > 0 and sum(per_worker) == sent, per_worker
    assert samples[("nac_worker_up", (("worker", "0"),))] == 1.0
    assert samples[("nac_worker_up", (("worker", "1"),))] == 1.0
    assert samples[("nac_radius_requests_total", (("code", "access_accept"),))] == sent
    assert samples[("nac_decisions_total", (("segment", "quarantine"),))] == sent
    assert samples[("nac_radius_request_seconds_count", ())] == sent
    body, code = health.rsplit("\n", 1)
    checks = json.loads(body)["checks"]
    assert code == "200", body
    assert {k: v for k, v in checks.items() if k in ("worker0", "worker1",
                                                      "worker0.store", "worker1.listeners")} \
        == {"worker0": True, "worker1": True, "worker0.store": True, "worker1.listeners": True}
