"""The lab's IDS: Suricata-style EVE alerts, HMAC-signed, delivered to the quarantine monitor.

When `nac serve` has the monitor wired in (a [monitor] section), alerts go to its HTTPS
endpoint exactly as a sensor posts them. Until then the lab runs the monitor's own intake
(nac.monitor: the same HMAC check, EVE parsing, accounting lookup and enforcement job) in
this process against the lab server's store; the scenario says which path it took.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from nac.lab import topology as topo
from nac.lab.netns import time_scale
from nac.monitor.auth import signed_headers

FORGED_KEY = b"not-the-monitor-key-at-all-000000"


def eve_alert(src_ip: str) -> bytes:
    """One EVE alert line as Suricata writes it (timestamp now, so within the window)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime())
    rec = {"timestamp": stamp, "event_type": "alert", "src_ip": src_ip, "src_port": 49822,
           "dest_ip": "10.99.255.23", "dest_port": 443, "proto": "TCP", "in_iface": "mirror0",
           "alert": {"action": "allowed", "gid": 1, "signature_id": 2999101, "rev": 1,
                     "signature": "LAB MALWARE beacon to a command-and-control host",
                     "category": "A Network Trojan was detected", "severity": 1}}
    return (json.dumps(rec) + "\n").encode()


def headers(body: bytes, *, forged: bool = False) -> dict[str, str]:
    return signed_headers(topo.IDS_NAME, FORGED_KEY if forged else topo.IDS_KEY, body)


SERVER_NAME = "nac-radius"  # the CN of the server certificate in STATE/pki


class _NamedHttps(http.client.HTTPSConnection):
    """Dial the lab address, verify the certificate for the server's name (as
    `curl --resolve nac-radius:PORT:ADDR` does)."""

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=SERVER_NAME)  # type: ignore[attr-defined]


class HttpsMonitor:
    """Posts to `nac serve`'s alert endpoint, verifying its certificate against the lab CA."""

    how = "POST /v1/alerts to nac serve's HTTPS monitor endpoint"

    def __init__(self, lab: topo.Lab) -> None:
        self.lab = lab
        self.ctx = ssl.create_default_context(cafile=str(lab.state_dir / "pki" / "ca.pem"))

    def post(self, body: bytes, hdrs: dict[str, str]) -> str:
        conn = _NamedHttps(self.lab.server_ip, self.lab.monitor_port,
                                           timeout=10 * time_scale(), context=self.ctx)
        try:
            conn.request("POST", "/v1/alerts", body=body,
                         headers={**hdrs, "Content-Type": "application/x-ndjson"})
            resp = conn.getresponse()
            return f"{resp.status} {resp.read().decode(errors='replace').strip()}"
        finally:
            conn.close()

    def close(self) -> None:
        pass


class DirectMonitor:
    """nac.monitor's Authenticator + Intake in this process, on the lab server's store."""

    how = ("the monitor is not wired into `nac serve` yet: the lab runs nac.monitor's intake "
           "(HMAC check, EVE parsing, accounting lookup, enforcement job) directly")

    def __init__(self, lab: topo.Lab, note: Callable[[str], None]) -> None:
        from nac.config import load_config
        from nac.enforcement import load_planner, open_queue
        from nac.monitor.auth import Authenticator, Credential
        from nac.monitor.intake import Intake
        from nac.runtime import LivePolicy
        from nac.store import open_store

        cfg = load_config(lab.config)
        self.store = open_store(cfg.store, lab.state_dir)
        db_path = getattr(self.store, "path", lab.state_dir / "nac.db")
        live = LivePolicy(lab.state_dir, db_path, cfg.policy_file, cfg.segments)
        self.planner = load_planner(cfg.switches, lambda: open_queue(cfg.store, lab.state_dir),
                                    str(lab.config))
        self.auth = Authenticator([Credential(topo.IDS_NAME, hmac_key=topo.IDS_KEY)])
        self.intake = Intake(self.store, lambda: live.policy, self.planner)

        class ToStory(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                note(f"monitor log: {record.getMessage()}")

        self.handler = ToStory(logging.INFO)
        self.log = logging.getLogger("nac.monitor")
        self.log.addHandler(self.handler)
        self.log.propagate = False

    def post(self, body: bytes, hdrs: dict[str, str]) -> str:
        from nac.monitor.auth import AuthError
        from nac.monitor.eve import parse_body

        try:
            cred = self.auth.authenticate({k.lower(): v for k, v in hdrs.items()}, body)
        except AuthError as exc:
            return f"401 {exc.reason}"
        out: Any = self.intake.handle(parse_body(body), cred.name, cred.min_severity)
        return f"202 {json.dumps(out.as_json())}"

    def close(self) -> None:
        self.log.removeHandler(self.handler)
        self.log.propagate = True
        self.store.close()
        if self.planner is not None:
            self.planner.close()


def monitor_for(lab: topo.Lab, note: Callable[[str], None]) -> HttpsMonitor | DirectMonitor:
    return HttpsMonitor(lab) if lab.monitor_port else DirectMonitor(lab, note)
