"""The quarantine monitor end to end: curl posts EVE alerts over HTTPS to the endpoint on
loopback; the store (decision rows, registrations) and the job queue show what changed."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enforcers.inventory import Switch
from nac.enforcement import Planner
from nac.events import AccountingRecord
from nac.monitor.auth import signed_headers
from nac.monitor.config import MonitorConfig
from nac.monitor.server import MonitorHandle, start_monitor
from nac.pki import PkiPaths, ensure_pki, issue_client
from nac.posture.policy import Policy
from nac.store.sqlite import SqliteStore

DATA = Path(__file__).parent / "data" / "eve"
KEY = "k" * 8 + "-shared-secret-of-ids1"
MAC = "02:00:00:99:00:05"
NAS = "192.0.2.10"  # TEST-NET-1: in the inventory, never contacted (no enforcer runs)
ALERT_AT = 1795814045  # the timestamp in tests/data/eve/alert.json
POLICY = Policy.sample()


@dataclass
class Env:
    tmp: Path
    state: Path
    store: SqliteStore
    handle: MonitorHandle
    loop: asyncio.AbstractEventLoop
    planner: Planner | None

    @property
    def pki(self) -> PkiPaths:
        return PkiPaths.under(self.state)

    def post(self, body: bytes, headers: dict[str, str] | None = None, *,
             cert: tuple[Path, Path] | None = None, method: str = "POST",
             path: str = "/v1/alerts", check: bool = True) -> tuple[int, dict[str, Any]]:
        """POST with the real curl: server verified against the CA, name pinned to loopback.
        With check=False a failed transfer returns (-curl's exit code, {})."""
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed")
        port = self.handle.port
        body_file = self.tmp / f"body-{time.monotonic_ns()}"
        body_file.write_bytes(body)
        cmd = [curl, "-sS", "--noproxy", "*", "--max-time", "20",
               "--cacert", str(self.pki.ca_cert),
               "--resolve", f"nac-radius:{port}:127.0.0.1",
               "-H", "Content-Type: application/x-ndjson",
               "-o", "-", "-w", "\n%{http_code}", "-X", method]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        if cert is not None:
            cmd += ["--cert", str(cert[0]), "--key", str(cert[1])]
        if method == "POST":
            cmd += ["--data-binary", f"@{body_file}"]
        cmd.append(f"https://nac-radius:{port}{path}")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if not check and proc.returncode != 0:
            return -proc.returncode, {}
        assert proc.returncode == 0, proc.stderr
        text, _, code = proc.stdout.rpartition("\n")
        return int(code), json.loads(text) if text.strip() else {}

    def signed(self, body: bytes, *, name: str = "ids1", key: str = KEY,
               now: float | None = None) -> tuple[int, dict[str, Any]]:
        return self.post(body, signed_headers(name, key.encode(), body, now))

    def decisions(self) -> list[dict[str, Any]]:
        self.store.flush()
        return self.store.decisions_for(MAC)


def add_session(store: SqliteStore, ip: str = "10.99.0.5", mac: str = MAC,
                at: float = ALERT_AT - 600, stopped: bool = False, sid: str = "s5") -> None:
    store.record_accounting(AccountingRecord(
        at=at, nas=NAS, status=2 if stopped else 1, session_id=sid, mac=mac,
        user_name="host5", nas_port=5, nas_port_id="swp5", framed_ip=ip))
    store.flush()


def switch() -> Switch:
    return Switch.model_validate({
        "name": "edge1", "address": NAS, "driver": "ssh-linux-bridge", "vendor": "linux",
        "ssh": {"username": "nac", "password": "unused", "timeout": 1}})


@pytest.fixture(params=["asyncio", "uvloop"])
def make_env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Builds the monitor in a loop thread: the stdlib loop and uvloop (what `nac serve`
    installs) both, since TLS peer details come from the loop's transport."""
    made: list[Env] = []
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def make(with_planner: bool = False, **cfg_over: Any) -> Env:
        state = tmp_path / "state"
        ensure_pki(state)
        store = SqliteStore(state / "nac.db")
        add_session(store)
        planner = Planner([switch()], store.path, set()) if with_planner else None
        data: dict[str, Any] = {
            "listen": "127.0.0.1", "port": 0,
            "monitors": [{"name": "ids1", "hmac_key": KEY, "min_severity": 2}],
        }
        data.update(cfg_over)
        cfg = MonitorConfig.model_validate(data)
        handle = asyncio.run_coroutine_threadsafe(
            start_monitor(cfg, store, lambda: POLICY, planner, state_dir=state), loop
        ).result(20)
        env = Env(tmp_path, state, store, handle, loop, planner)
        made.append(env)
        return env

    yield make
    for env in made:
        asyncio.run_coroutine_threadsafe(env.handle.close(), loop).result(20)
        if env.planner is not None:
            env.planner.close()
        env.store.close()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_signed_alert_isolates_and_holds(make_env: Any) -> None:
    env = make_env()
    status, body = env.signed((DATA / "alert.json").read_bytes())
    assert status == 202, body
    assert body["accepted"] == 1 and body["ignored"] == 0 and body["isolated"] == [MAC]
    (d,) = env.decisions()
    assert (d["source"], d["segment"], d["vlan"], d["nas"], d["nas_port"]) == (
        "ids", "isolated", 20, NAS, "swp5")
    assert d["reasons"][0] == ("IDS alert sid 2999101 'LOCAL MALWARE Beacon to known "
                               "command-and-control host' from monitor ids1 at "
                               "2026-11-27T21:14:05.482113+0000")
    assert "held in segment 'isolated' by a registration" in d["reasons"][1]
    node = env.store.get_node(MAC)
    assert node is not None and node["registered_segment"] == "isolated"
    assert node["segment"] == "isolated"
    seq, regs = env.store.registrations_since(0)
    assert (MAC, "isolated") in regs


def test_burst_isolates_once(make_env: Any) -> None:
    env = make_env()
    status, body = env.signed((DATA / "mixed.json").read_bytes())
    assert status == 202, body
    assert body["isolated"] == [MAC]
    assert (body["accepted"], body["ignored"]) == (6, 5)
    assert body["ignored_reasons"] == {
        "not an alert": 3, "node already isolated": 1,
        "severity below the monitor's threshold": 1}
    # A later request (a new signature) for the same node: nothing more happens...
    status, body = env.signed((DATA / "alert.json").read_bytes(), now=time.time() + 1)
    assert status == 202 and body["isolated"] == []
    assert body["ignored_reasons"] == {"node already isolated": 1}
    assert len(env.decisions()) == 1
    # ...until an administrator releases it: then a new alert isolates it again.
    env.store.register_node(MAC, None, "released by administrator")
    status, body = env.signed((DATA / "alert.json").read_bytes(), now=time.time() + 2)
    assert status == 202 and body["isolated"] == [MAC]
    assert len(env.decisions()) == 2


def _forgeries() -> list[tuple[str, Any]]:
    body = (DATA / "alert.json").read_bytes()

    def wrong_key() -> tuple[bytes, dict[str, str]]:
        return body, signed_headers("ids1", b"not-the-key-of-ids1!", body)

    def missing_signature() -> tuple[bytes, dict[str, str]]:
        h = signed_headers("ids1", KEY.encode(), body)
        del h["X-NAC-Signature"]
        return body, h

    def stale() -> tuple[bytes, dict[str, str]]:
        return body, signed_headers("ids1", KEY.encode(), body, time.time() - 301)

    def tampered() -> tuple[bytes, dict[str, str]]:
        h = signed_headers("ids1", KEY.encode(), body)
        return body.replace(b"10.99.0.5", b"10.99.0.6"), h

    def unknown_monitor() -> tuple[bytes, dict[str, str]]:
        return body, signed_headers("ids9", KEY.encode(), body)

    def no_headers() -> tuple[bytes, dict[str, str]]:
        return body, {}

    return [(f.__name__, f) for f in (wrong_key, missing_signature, stale, tampered,
                                      unknown_monitor, no_headers)]


@pytest.mark.parametrize(("name", "forge"), _forgeries(), ids=[n for n, _ in _forgeries()])
def test_forged_alerts_are_refused(make_env: Any, name: str, forge: Any,
                                   caplog: pytest.LogCaptureFixture) -> None:
    env = make_env()
    body, headers = forge()
    with caplog.at_level("WARNING", logger="nac.monitor"):
        status, reply = env.post(body, headers)
    assert status == 401 and reply == {"error": "unauthorized"}
    assert env.decisions() == [] and env.store.get_node(MAC) is None
    assert "refused" in caplog.text and "127.0.0.1" in caplog.text


def test_replayed_request_is_refused(make_env: Any) -> None:
    env = make_env()
    body = (DATA / "unknown_ip.json").read_bytes()
    headers = signed_headers("ids1", KEY.encode(), body)
    assert env.post(body, headers)[0] == 202
    assert env.post(body, headers)[0] == 401


@pytest.mark.parametrize("body", [
    b"{this is not json}\n",
    (DATA / "malformed.json").read_bytes(),
    # One good line does not carry a bad one: the whole body is refused.
    (DATA / "alert.json").read_bytes() + b'{"event_type": "alert"}\n',
    b"[" * 100 + b"]" * 100,
])
def test_malformed_bodies_get_400_and_change_nothing(make_env: Any, body: bytes) -> None:
    env = make_env()
    status, reply = env.signed(body)
    assert status == 400 and reply["error"].startswith("malformed: line ")
    assert env.decisions() == [] and env.store.get_node(MAC) is None


def test_unknown_address_is_accepted_and_ignored(make_env: Any) -> None:
    env = make_env()
    status, body = env.signed((DATA / "unknown_ip.json").read_bytes())
    assert status == 202
    assert body == {"accepted": 1, "ignored": 1, "isolated": [],
                    "ignored_reasons": {"no session for the address": 1}}
    assert env.store.list_nodes() == [] and env.store.count_decisions() == 0


def test_too_big_and_wrong_requests(make_env: Any) -> None:
    env = make_env(max_body=4096)
    status, reply = env.signed(b"\n" * 5000)
    assert status == 413 and "4096" in reply["error"]
    assert env.post(b"", method="GET")[0] == 405
    assert env.signed(b'{"event_type": "flow"}')[0] == 202  # accepted, ignored
    status, _ = env.post(b"", headers={}, path="/v1/other", method="GET")
    assert status == 404


def test_client_certificate_monitor(make_env: Any, tmp_path: Path) -> None:
    env = make_env(monitors=[{"name": "ids-dmz", "cert_cn": "ids-dmz"},
                             {"name": "ids1", "hmac_key": KEY}])
    cert, key, _ = issue_client(env.state, "ids-dmz", tmp_path / "client")
    other, other_key, _ = issue_client(env.state, "laptop", tmp_path / "client")
    body = (DATA / "alert.json").read_bytes()
    # The certificate of someone who is not a monitor, or none at all: refused.
    assert env.post(body, cert=(other, other_key))[0] == 401
    assert env.post(body, {"X-NAC-Monitor": "ids-dmz"})[0] == 401
    # ids1's HMAC with the ids-dmz certificate claims two identities: refused.
    assert env.post(body, signed_headers("ids1", KEY.encode(), body),
                    cert=(cert, key))[0] == 401
    assert env.decisions() == []
    status, reply = env.post(body, cert=(cert, key))
    assert status == 202 and reply["isolated"] == [MAC]
    assert "from monitor ids-dmz" in env.decisions()[0]["reasons"][0]


def test_planner_queues_the_port_job(make_env: Any) -> None:
    env = make_env(with_planner=True)
    status, body = env.signed((DATA / "alert.json").read_bytes())
    assert status == 202 and body["isolated"] == [MAC]
    (job,) = env.planner.queue.list_jobs()
    assert (job.kind, job.switch, job.port, job.vlan, job.mac, job.session_id, job.state) == (
        "set_vlan", "edge1", "swp5", 20, MAC, "s5", "pending")
    assert "IDS alert sid 2999101" in job.payload["reason"]


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_eve_file_is_followed_across_rotation(make_env: Any, tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    old = (DATA / "alert.json").read_bytes()
    eve.write_bytes(old)  # present at start: not replayed
    add_session_b = ("10.99.0.6", "02:00:00:99:00:06")
    env = make_env(eve_file=str(eve), poll_interval=0.02)
    add_session(env.store, *add_session_b, sid="s6")
    time.sleep(0.1)
    assert env.store.count_decisions() == 0
    with eve.open("ab") as f:  # Suricata appends; the line arrives in two writes
        f.write(old[:100])
        f.flush()
        time.sleep(0.1)
        f.write(old[100:])
    wait_for(lambda: env.store.get_node(MAC) is not None)
    # logrotate: move away, Suricata writes a last line to the old file, then a new one.
    eve.rename(tmp_path / "eve.json.1")
    second = old.replace(b"10.99.0.5", b"10.99.0.6")
    eve.write_bytes(b'{"event_type":"stats","stats":{}}\n' + second)
    wait_for(lambda: env.store.get_node("02:00:00:99:00:06") is not None)
    env.store.flush()
    assert env.store.decisions_for("02:00:00:99:00:06")[0]["source"] == "ids"
    assert "from monitor local-ids" in env.store.decisions_for(MAC)[0]["reasons"][0]


def test_eve_socket(make_env: Any, tmp_path: Path) -> None:
    path = tmp_path / "eve.sock"
    env = make_env(eve_socket=str(path))
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(b"garbage line\n" + (DATA / "mixed.json").read_bytes())
    wait_for(lambda: env.store.get_node(MAC) is not None)
    env.store.flush()
    assert [d["source"] for d in env.store.decisions_for(MAC)] == ["ids"]


def test_bad_clients_do_not_disturb_the_endpoint(make_env: Any) -> None:
    env = make_env()
    port = env.handle.port
    ctx = ssl.create_default_context(cafile=str(env.pki.ca_cert))
    ctx.check_hostname = False
    # Plain text to the TLS port (the handshake fails) and a body cut short.
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(b"POST /v1/alerts HTTP/1.1\r\n\r\n")
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as s:
        s.sendall(b"POST /v1/alerts HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc")
    # A TLS client that never sends a request stays open while others are served.
    idle = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    try:
        for junk, want in ((b"\x00\xff" * 50 + b"\r\n\r\n", b"400"),
                           (b"GET /v1/alerts HTTP/1.1\r\n\r\n", b"405")):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as s:
                s.settimeout(15)
                s.sendall(junk)
                assert s.recv(4096).split(b" ", 2)[1] == want
        status, body = env.signed((DATA / "alert.json").read_bytes())
        assert status == 202 and body["isolated"] == [MAC]
    finally:
        idle.close()


def test_monitor_script_signs_with_openssl(make_env: Any, tmp_path: Path) -> None:
    """What a monitor-side shell script does (nac/monitor/README.md): openssl signs, curl
    posts. Nothing of ours runs on the sending side."""
    for tool in ("openssl", "curl", "sh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    env = make_env()
    script = tmp_path / "post-alerts.sh"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        ["sh", str(script), str(DATA / "alert.json")], capture_output=True, text=True,
        timeout=30, env={"PATH": "/usr/bin:/bin", "NAC_MONITOR": "ids1", "NAC_KEY": KEY,
                         "NAC_CA": str(env.pki.ca_cert),
                         "NAC_URL": f"https://nac-radius:{env.handle.port}/v1/alerts",
                         "NAC_RESOLVE": f"nac-radius:{env.handle.port}:127.0.0.1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["isolated"] == [MAC]
    assert env.decisions()[0]["source"] == "ids"


SCRIPT = r"""#!/bin/sh
# post-alerts.sh FILE: send EVE lines to the NAC server, signed with the monitor's key.
set -eu
body=$1
ts=$(date +%s)
sig=$( (printf '%s.' "$ts"; cat "$body") | openssl dgst -sha256 -hmac "$NAC_KEY" -r | cut -d' ' -f1)
exec curl -sS --fail-with-body --noproxy '*' --cacert "$NAC_CA" --resolve "$NAC_RESOLVE" \
    -H "X-NAC-Monitor: $NAC_MONITOR" -H "X-NAC-Timestamp: $ts" \
    -H "X-NAC-Signature: sha256=$sig" -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$body" "$NAC_URL"
"""


def test_revoked_monitor_certificate_fails_the_handshake(make_env: Any, tmp_path: Path) -> None:
    from nac.pki import revoke

    state = tmp_path / "state"
    ensure_pki(state)
    cert, key, _ = issue_client(state, "ids-dmz", tmp_path / "client")
    revoke(state, "ids-dmz")  # the CRL is read when the endpoint starts
    env = make_env(monitors=[{"name": "ids-dmz", "cert_cn": "ids-dmz"}])
    status, _ = env.post((DATA / "alert.json").read_bytes(), cert=(cert, key), check=False)
    assert status < 0  # curl: the server ended the TLS session (certificate revoked)
    assert env.decisions() == []
