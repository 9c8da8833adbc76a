"""Monitor pieces without sockets: authentication, intake rules, the file tail, the HTTP head
parser and the config section."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nac.events import AccountingRecord
from nac.monitor.auth import Authenticator, AuthError, Credential, signature, signed_headers
from nac.monitor.config import MonitorConfig
from nac.monitor.eve import parse_body
from nac.monitor.http import HttpError, parse_head
from nac.monitor.intake import Intake
from nac.monitor.server import FileTail, LocalFeed, peer_cn, tls_context
from nac.posture.policy import Policy
from nac.store.sqlite import SqliteStore

DATA = Path(__file__).parent / "data" / "eve"
NOW = 1_800_000_000.0
KEY = b"0123456789abcdef-ids1"
MAC = "02:00:00:99:00:05"
ALERT_AT = 1795814045


def lower(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


# ---- authentication -------------------------------------------------------------------

def auth(**kw: Any) -> Authenticator:
    return Authenticator([Credential("ids1", KEY), Credential("dmz", None, "dmz-cn"),
                          Credential("both", KEY + b"2", "both-cn")], clock=lambda: NOW, **kw)


def test_hmac_accepts_once_within_the_window() -> None:
    a = auth()
    body = b'{"event_type":"flow"}\n'
    h = lower(signed_headers("ids1", KEY, body, NOW - 299))
    assert a.authenticate(h, body).name == "ids1"
    with pytest.raises(AuthError, match="replayed"):
        a.authenticate(h, body)
    with pytest.raises(AuthError, match="window"):
        a.authenticate(lower(signed_headers("ids1", KEY, body, NOW + 301)), body)


@pytest.mark.parametrize(("headers", "reason"), [
    ({"x-nac-monitor": "ids1"}, "are required"),
    ({"x-nac-monitor": "ids1", "x-nac-timestamp": "-5", "x-nac-signature": "sha256=00"},
     "Unix seconds"),
    ({"x-nac-monitor": "ids1", "x-nac-timestamp": str(int(NOW)), "x-nac-signature": "00"},
     "bad signature"),
    ({"x-nac-monitor": "nobody"}, "unknown monitor"),
    ({}, "no credentials"),
    ({"x-nac-monitor": "dmz"}, "client certificate"),
])
def test_refusals_say_why(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        auth().authenticate(headers, b"")


def test_signature_is_case_insensitive_hex_and_covers_timestamp() -> None:
    a = auth()
    ts = str(int(NOW))
    sig = signature(KEY, ts, b"x")
    h = {"x-nac-monitor": "ids1", "x-nac-timestamp": ts, "x-nac-signature": sig.upper()}
    with pytest.raises(AuthError):  # "SHA256=" prefix upper-cased: lower() fixes it
        a.authenticate({**h, "x-nac-timestamp": str(int(NOW) + 1)}, b"x")
    assert a.authenticate(h, b"x").name == "ids1"


def test_certificate_monitors() -> None:
    a = auth()
    assert a.authenticate({}, b"", peer_cn="dmz-cn").name == "dmz"
    with pytest.raises(AuthError, match="no configured monitor"):
        a.authenticate({}, b"", peer_cn="laptop")
    with pytest.raises(AuthError, match="belongs to monitor 'dmz'"):
        a.authenticate(lower(signed_headers("ids1", KEY, b"", NOW)), b"", peer_cn="dmz-cn")
    # A monitor with both credentials needs both.
    with pytest.raises(AuthError, match="are required"):
        a.authenticate({}, b"", peer_cn="both-cn")
    with pytest.raises(AuthError, match="client certificate"):
        a.authenticate(lower(signed_headers("both", KEY + b"2", b"", NOW)), b"")
    h = lower(signed_headers("both", KEY + b"2", b"", NOW))
    assert a.authenticate(h, b"", peer_cn="both-cn").name == "both"


def test_replay_cache_is_bounded() -> None:
    a = auth(replay_cache_max=2)
    for i in range(2):
        a.authenticate(lower(signed_headers("ids1", KEY, b"%d" % i, NOW)), b"%d" % i)
    with pytest.raises(AuthError, match="too many"):
        a.authenticate(lower(signed_headers("ids1", KEY, b"2", NOW)), b"2")
    a.clock = lambda: NOW + 400  # the old signatures left the window: room again
    assert a.authenticate(lower(signed_headers("ids1", KEY, b"3", NOW + 400)), b"3")


def test_peer_cn() -> None:
    cert = {"subject": ((("countryName", "JP"),), (("commonName", "ids-dmz"),))}
    assert peer_cn(cert) == "ids-dmz"
    assert peer_cn({}) is None and peer_cn(None) is None


# ---- intake ---------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "nac.db")
    yield s
    s.close()


def session(store: SqliteStore, *, at: float = ALERT_AT - 600, status: int = 1,
            ip: str = "10.99.0.5", mac: str = MAC, sid: str = "s5") -> None:
    store.record_accounting(AccountingRecord(at=at, nas="192.0.2.10", status=status,
                                             session_id=sid, mac=mac, framed_ip=ip,
                                             nas_port_id="swp5"))
    store.flush()


def run(store: SqliteStore, name: str, **kw: Any) -> Any:
    policy = Policy.sample()
    intake = Intake(store, lambda: policy, clock=lambda: NOW, **kw)
    return intake.handle(parse_body((DATA / name).read_bytes()), "ids1", 2)


def test_session_stopped_before_the_alert_is_not_the_owner(store: SqliteStore) -> None:
    session(store, status=2, at=ALERT_AT - 301)
    out = run(store, "alert.json")
    assert out.isolated == [] and out.why_ignored == {"no session for the address": 1}
    assert store.get_node(MAC) is None


def test_session_started_after_the_alert_is_not_the_owner(store: SqliteStore) -> None:
    session(store, at=ALERT_AT + 3600)
    assert run(store, "alert.json").isolated == []


def test_destination_only_when_configured(store: SqliteStore) -> None:
    session(store)
    assert run(store, "inbound.json").isolated == []
    out = run(store, "inbound.json", match_destination=True)
    assert out.isolated == [MAC]


def test_ipv6_sources_are_not_mapped_without_a_prefix_lookup(store: SqliteStore) -> None:
    out = run(store, "icmp_ipv6.json")
    assert out.ignored == 1 and out.why_ignored == {"no session for the address": 1}


class V6Store(SqliteStore):
    """The lookup intake uses when a store offers it (see nac/monitor/intake.py)."""

    def live_ipv6_sessions(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM sessions WHERE framed_ipv6_prefix IS NOT NULL "
                           "AND stopped_at IS NULL")


def test_ipv6_source_within_a_session_prefix(tmp_path: Path) -> None:
    store = V6Store(tmp_path / "nac.db")
    try:
        for sid, mac, prefix in (("a", "02:00:00:00:00:0a", "2001:db8:98::/64"),
                                 ("b", MAC, "2001:db8:99::/64")):
            store.record_accounting(AccountingRecord(
                at=ALERT_AT - 600, nas="192.0.2.10", status=1, session_id=sid, mac=mac,
                framed_ipv6_prefix=prefix))
        store.flush()
        assert run(store, "icmp_ipv6.json").isolated == [MAC]  # 2001:db8:99::5
    finally:
        store.close()


def test_vlan_override_by_nas_profile(store: SqliteStore) -> None:
    session(store)
    policy = Policy.sample()
    iso = policy.segments["isolated"].model_copy(update={"vlan_overrides": {"edge": 920}})
    policy = policy.model_copy(update={"segments": {**policy.segments, "isolated": iso}})
    intake = Intake(store, lambda: policy, nas_profile=lambda nas: ("edge", "generic"))
    intake.handle(parse_body((DATA / "alert.json").read_bytes()), "ids1", 1)
    store.flush()
    assert store.decisions_for(MAC)[0]["vlan"] == 920


# ---- file tail ------------------------------------------------------------------------

class Sink:
    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def lines(self, lines: list[bytes]) -> None:
        self.seen.extend(lines)


def test_tail_rotation_truncation_and_late_creation(tmp_path: Path) -> None:
    path = tmp_path / "eve.json"
    sink = Sink()
    tail = FileTail(path, sink, 1024)  # type: ignore[arg-type]
    tail._open(at_end=True)  # no file yet
    tail.poll()
    path.write_bytes(b"a\nb")  # created after start: read from its start
    tail.poll()
    assert sink.seen == [b"a"]
    with path.open("ab") as f:
        f.write(b"c\n")
    tail.poll()
    assert sink.seen == [b"a", b"bc"]
    with path.open("ab") as f:
        f.write(b"last-of-old\n")
    path.rename(tmp_path / "eve.json.1")
    tail.poll()  # the new file is not there yet: the old one is drained
    assert sink.seen[-1] == b"last-of-old"
    path.write_bytes(b"new-1\n")
    tail.poll()
    assert sink.seen[-1] == b"new-1"
    path.write_bytes(b"x\n")  # truncated and rewritten shorter (copytruncate)
    tail.poll()
    assert sink.seen[-1] == b"x"
    tail.close()


def test_local_feed_skips_bad_lines(store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    session(store)
    feed = LocalFeed(Intake(store, Policy.sample), "local-ids", 1, 65536, "eve.json")
    good = (DATA / "alert.json").read_bytes().strip()
    feed.lines([b"{oops", good])
    assert feed.bad == 1 and feed.isolated == [MAC]
    assert "eve.json: malformed EVE line skipped" in caplog.text


# ---- HTTP head ------------------------------------------------------------------------

def test_http_head() -> None:
    req = parse_head(b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n"
                     b"X-NAC-Monitor: ids1\r\nExpect: 100-continue\r\n\r\n", 100)
    assert (req.method, req.path, req.content_length, req.expect_continue) == (
        "POST", "/v1/alerts", 12, True)
    assert req.headers["x-nac-monitor"] == "ids1"


@pytest.mark.parametrize(("head", "status"), [
    (b"POST /v1/alerts HTTP/1.1\r\n\r\n", 411),
    (b"POST /v1/alerts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    (b"POST /v1/alerts HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
    (b"POST /v1/alerts HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
    (b"POST /v1/alerts HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n\xff: x\r\n\r\n", 400),
])
def test_http_head_refusals(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as exc:
        parse_head(head, 100)
    assert exc.value.status == status


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_http_head_only_raises_http_error(data: bytes) -> None:
    try:
        parse_head(data, 1000)
    except HttpError:
        pass


# ---- config ---------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "reason"), [
    ({"monitors": [{"name": "a"}]}, "needs hmac_key, cert_cn or both"),
    ({"monitors": [{"name": "a", "hmac_key": "short"}]}, "at least 16"),
    ({"monitors": [{"name": "a", "cert_cn": "x"}, {"name": "a", "cert_cn": "y"}]},
     "names must differ"),
    ({}, "needs at least one"),
    ({"https": False}, "nothing to monitor"),
    ({"listen": "localhost", "monitors": [{"name": "a", "cert_cn": "a"}]}, "not an IP"),
    ({"monitors": [{"name": "a", "cert_cn": "a"}], "bogus": 1}, "Extra inputs"),
])
def test_config_errors(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        MonitorConfig.model_validate(data)


def test_tls_defaults_come_from_state_pki(tmp_path: Path) -> None:
    cfg = MonitorConfig.model_validate({"monitors": [{"name": "a", "cert_cn": "a"}]})
    cert, key, ca, crl = cfg.tls_paths(tmp_path)
    assert cert == tmp_path / "pki" / "server.pem" and ca == tmp_path / "pki" / "ca.pem"
    assert crl == tmp_path / "pki" / "crl.pem" and cert.exists()
    ctx = tls_context(cfg, tmp_path)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    hmac_only = MonitorConfig.model_validate({"monitors": [{"name": "a", "hmac_key": "x" * 16}]})
    assert hmac_only.tls_paths(tmp_path)[2] is None
    assert tls_context(hmac_only, tmp_path).verify_mode == ssl.CERT_NONE
    assert json.dumps(hmac_only.model_dump(mode="json")).count("x" * 16) == 0  # secret hidden


def test_isolation_limit_per_monitor(store: SqliteStore) -> None:
    macs = [f"02:00:00:99:01:{i:02x}" for i in range(3)]
    for i, mac in enumerate(macs):
        session(store, ip=f"10.99.1.{i}", mac=mac, sid=f"s{i}")
    clock = [NOW]
    intake = Intake(store, Policy.sample, max_per_hour=2, clock=lambda: clock[0])
    alert = (DATA / "alert.json").read_bytes()
    body = b"".join(alert.replace(b"10.99.0.5", f"10.99.1.{i}".encode()) for i in range(3))
    out = intake.handle(parse_body(body), "ids1", 1)
    assert out.isolated == macs[:2]
    assert out.why_ignored == {"monitor over its isolation limit": 1}
    assert intake.handle(parse_body(body), "other-ids", 1).isolated == macs[2:]
    clock[0] += 3601
    store.register_node(macs[0], None, "released")
    assert intake.handle(parse_body(body), "ids1", 1).isolated == macs[:1]
