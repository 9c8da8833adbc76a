"""Evaluating postures against policies: segments, VLANs, reasons, caps, grace, expiry."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nac.posture.evaluate import evaluate
from nac.posture.policy import Policy, load_policy, loads_policy

DATA = Path(__file__).parent / "data"
NOW = 1_800_000_000.0
HOUR = 3600.0


def posture(name: str) -> dict[str, Any] | None:
    return json.loads((DATA / "postures" / f"{name}.json").read_text())


@dataclass(frozen=True)
class FakeFinding:
    """Same fields as nac.prevention.index.Finding."""

    advisory_id: str
    aliases: tuple[str, ...]
    ecosystem: str
    package: str
    installed: str
    fixed: str | None
    severity: str
    summary: str
    source: str
    trust: str


class FakeIndex:
    """Reports the given findings for any posture that has the package installed."""

    def __init__(self, *findings: FakeFinding, epoch: int = 7) -> None:
        self.epoch = epoch
        self._findings = findings
        self.calls = 0

    def findings(self, posture: dict[str, Any]) -> list[FakeFinding]:
        self.calls += 1
        names = {p["name"] for p in posture.get("packages", [])}
        return [f for f in self._findings if f.package in names]


def finding(severity: str = "high", trust: str = "vendor", advisory: str = "DSA-1") -> FakeFinding:
    return FakeFinding(
        advisory, ("CVE-2026-0001",), "Debian:12", "openssl", "3.0.15-1~deb12u1",
        "3.0.16-1~deb12u1", severity, "bad", "debian", trust,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sample() -> Policy:
    return Policy.sample()


@pytest.fixture(scope="module")
def site() -> Policy:
    return load_policy(DATA / "policy" / "site.toml")


SAMPLE_CASES = [
    ("debian12_compliant", "default", "normal", 30),
    ("forwarding_ipv4", "default", "isolated", 20),
    ("forwarding_ipv6", "default", "isolated", 20),
    ("forwarding_unknown", "default", "quarantine", 10),
    ("no_posture", "default", "quarantine", 10),
    ("debian12_compliant", "guest", "quarantine", 10),
    ("forwarding_ipv4", "guest", "isolated", 20),  # a cap never raises a host
    ("old_signatures", "default", "normal", 30),  # the sample has no anti-virus rule
]


@pytest.mark.parametrize(("name", "role", "segment", "vlan"), SAMPLE_CASES)
def test_sample_policy(sample: Policy, name: str, role: str, segment: str, vlan: int) -> None:
    d = evaluate(sample, posture(name), role=role, index=FakeIndex(), now=NOW)
    assert (d.segment, d.vlan) == (segment, vlan)
    assert d.source == "posture"
    assert d.expires == NOW + 3600
    assert d.reasons


SITE_CASES = [
    ("debian12_compliant", "default", "normal", 30, None),
    ("forwarding_ipv4", "default", "isolated", 20, "no-forwarding: forwarding on: IPv4"),
    ("old_signatures", "default", "quarantine", 10, "antivirus: signatures are 200 h old"),
    ("denied_telnetd", "default", "isolated", 20, "denied-software: denied software installed"),
    ("firewall_off", "default", "quarantine", 10, "firewall: host firewall is off"),
    ("debian10_old_os", "default", "isolated", 20, "supported-os: operating system Debian"),
    ("no_posture", "staff", "quarantine", 10, "no posture reported"),
    ("debian12_compliant", "guest", "quarantine", 10, "role 'guest' may reach at most"),
    ("debian12_compliant", "contractor", "restricted", 40, "role 'contractor'"),
]


@pytest.mark.parametrize(("name", "role", "segment", "vlan", "reason"), SITE_CASES)
def test_site_policy(
    site: Policy, name: str, role: str, segment: str, vlan: int, reason: str | None
) -> None:
    d = evaluate(site, posture(name), role=role, index=FakeIndex(), now=NOW)
    assert (d.segment, d.vlan) == (segment, vlan)
    if reason:
        assert any(r.startswith(reason) for r in d.reasons), d.reasons
    if segment in ("isolated", "quarantine") and name != "debian12_compliant":
        assert d.remediation, "a non-compliant host is told what to do"


def test_remediation_names_servers_and_rule_text(site: Policy) -> None:
    d = evaluate(site, posture("forwarding_ipv4"), role="default", index=None, now=NOW)
    assert d.remediation[0].startswith("Turn off IP forwarding")
    assert d.remediation[-1] == "Remediation servers: updates.example.org, av.example.org"
    d = evaluate(site, posture("old_signatures"), role="default", index=None, now=NOW)
    assert d.remediation == ("Update the anti-virus signatures (freshclam).",)


def test_expiry_is_the_segment_interval(site: Policy) -> None:
    assert (
        evaluate(site, posture("forwarding_ipv4"), role="default", index=None, now=NOW).expires
        == NOW + 900
    )
    assert (
        evaluate(site, posture("debian12_compliant"), role="default", index=None, now=NOW).expires
        == NOW + 3600
    )


def test_vlan_overrides_per_switch_group_and_vendor(site: Policy) -> None:
    p = posture("debian12_compliant")
    assert (
        evaluate(site, p, role="default", index=None, now=NOW, nas_group="core-switches").vlan
        == 130
    )
    assert evaluate(site, None, role="default", index=None, now=NOW, vendor="aruba").vlan == 210
    assert evaluate(site, None, role="default", index=None, now=NOW, nas_group="edge").vlan == 10


def test_vulnerable_package_by_severity_and_trust(sample: Policy) -> None:
    p = posture("debian12_compliant")
    d = evaluate(sample, p, role="default", index=FakeIndex(finding("medium")), now=NOW)
    assert (d.segment, d.vlan) == ("isolated", 20)
    assert "openssl 3.0.15-1~deb12u1 (DSA-1, medium, fixed in 3.0.16-1~deb12u1)" in d.reasons[0]
    assert d.extra["feed_epoch"] == "7"
    d = evaluate(sample, p, role="default", index=FakeIndex(finding("low")), now=NOW)
    assert d.segment == "normal"
    # Trust filter and ignore list, on policies derived from the sample.
    vendor_only = loads_policy(
        Policy.sample().to_toml().replace('min_trust = "community"', 'min_trust = "vendor"')
    )
    for trust, segment in [("community", "normal"), ("vendor", "isolated"), ("local", "isolated")]:
        index = FakeIndex(finding(trust=trust))
        assert evaluate(vendor_only, p, role="default", index=index, now=NOW).segment == segment
    accepted = loads_policy(
        Policy.sample().to_toml().replace('min_trust = "community"', 'ignore = ["CVE-2026-0001"]')
    )
    assert evaluate(accepted, p, role="default", index=FakeIndex(finding()), now=NOW).segment == (
        "normal"
    )


def test_no_index_is_said_not_hidden(sample: Policy) -> None:
    d = evaluate(sample, posture("debian12_compliant"), role="default", index=None, now=NOW)
    assert d.segment == "normal"
    assert "no-vulnerable-packages: not checked: no prevention feeds loaded" in d.reasons


def test_grace_tolerates_a_minor_failure_then_expires(site: Policy) -> None:
    p = posture("pending_security")
    d = evaluate(site, p, role="default", index=None, now=NOW)
    assert d.segment == "normal"
    assert "tolerated until" in d.reasons[0]
    first = float(d.extra["first_seen.security-updates"])
    assert first == NOW
    later = NOW + 71 * HOUR
    d = evaluate(
        site, p, role="default", index=None, now=later, first_seen={"security-updates": first}
    )
    assert d.segment == "normal"
    assert d.expires == NOW + 72 * HOUR  # re-inspect right when the grace ends
    d = evaluate(
        site,
        p,
        role="default",
        index=None,
        now=NOW + 73 * HOUR,
        first_seen={"security-updates": first},
    )
    assert (d.segment, d.vlan) == ("restricted", 40)  # the rule's own minor segment


def test_require_posture_false_lets_role_decide(sample: Policy) -> None:
    relaxed = loads_policy(
        Policy.sample().to_toml().replace("require_posture = true", "require_posture = false")
    )
    assert evaluate(relaxed, None, role="default", index=None, now=NOW).segment == "normal"
    assert evaluate(relaxed, None, role="guest", index=None, now=NOW).segment == "quarantine"


def test_unsupported_schema_is_no_posture(sample: Policy) -> None:
    p = copy.deepcopy(posture("debian12_compliant"))
    assert p is not None
    p["schema"] = 99
    d = evaluate(sample, p, role="default", index=None, now=NOW)
    assert d.segment == "quarantine"
    assert "unsupported posture schema 99" in d.reasons[0]


def test_index_consulted_once_per_evaluation(sample: Policy) -> None:
    index = FakeIndex()
    evaluate(sample, posture("debian12_compliant"), role="default", index=index, now=NOW)
    assert index.calls == 1
    no_feeds = loads_policy(
        (DATA / "policy" / "bad" / "duplicate_rule_names.toml")
        .read_text()
        .rsplit("[[rules]]", 1)[0]
    )
    evaluate(no_feeds, posture("debian12_compliant"), role="default", index=index, now=NOW)
    assert index.calls == 1  # a policy without a vulnerabilities rule never asks


def test_evaluation_caches_do_not_change_policy_equality(site: Policy) -> None:
    fresh = load_policy(DATA / "policy" / "site.toml")
    used = load_policy(DATA / "policy" / "site.toml")
    for name in ("debian12_compliant", "denied_telnetd", "debian10_old_os"):
        evaluate(used, posture(name), role="default", index=None, now=NOW)
    assert used == fresh


def test_software_rule_without_purls_and_odd_entries(site: Policy) -> None:
    p = posture("debian12_compliant")
    assert p is not None
    p["packages"] = [
        "garbage",
        {"name": "nmap", "version": "7.93+dfsg1-1", "manager": "dpkg"},  # no purl
    ]
    d = evaluate(site, p, role="default", index=None, now=NOW)
    assert d.segment == "isolated"
    assert "pkg:deb/debian/nmap@7.93+dfsg1-1" in d.reasons[0]


GRACE_POLICY = """
name = "grace"
[roles]
default = "normal"
[segments.isolated]
level = 0
vlan = 20
[segments.quarantine]
level = 10
vlan = 10
[segments.normal]
level = 100
vlan = 30
[[rules]]
name = "no-forwarding"
check = "forwarding"
on_fail = "minor"
grace = "1h"
"""


def test_grace_survives_a_restart_and_expires_on_time(tmp_path: Path) -> None:
    """first_seen lives in STATE/nac.db: a restarted server (a new LivePolicy) and a fleet
    re-evaluation continue the grace the first decision started, and it ends on time."""
    from nac.events import DecisionRecord
    from nac.prevention.fleet import FleetCache
    from nac.reevaluate import reevaluate_fleet
    from nac.runtime import LivePolicy
    from nac.store import open_store

    state = tmp_path / "state"
    state.mkdir()
    (state / "policy.toml").write_text(GRACE_POLICY)
    db = state / "nac.db"
    routing = {"schema": 1, "os": {"family": "linux", "id": "debian", "version_id": "12"},
               "forwarding": {"ipv4": True, "ipv6": False},
               "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:07"}]}

    def decide(live: LivePolicy, p: dict[str, Any], now: float, who: str = "alice") -> Any:
        return live.decide(p, identity=who, role="default", group=None, vendor="generic",
                           now=now)

    d = decide(LivePolicy(state, db), routing, NOW)
    assert d.segment == "normal" and "tolerated until" in d.reasons[0]
    assert float(d.extra["first_seen.no-forwarding"]) == NOW

    restarted = LivePolicy(state, db)  # what `nac serve` builds after a restart
    d = decide(restarted, routing, NOW + 59 * 60)
    assert d.segment == "normal"
    assert float(d.extra["first_seen.no-forwarding"]) == NOW  # not restarted at 59 min
    assert d.expires == NOW + HOUR  # re-inspected when the grace ends
    assert decide(restarted, routing, NOW + HOUR + 1).segment == "quarantine"
    # Another host of the same account has its own grace.
    other = dict(routing, interfaces=[{"name": "eth0", "mac": "02:00:00:00:00:08"}])
    assert decide(restarted, other, NOW + HOUR + 1).segment == "normal"

    # The fleet re-evaluation after a feed or policy change reads the same first_seen.
    store = open_store(None, state)
    store.record_decision(DecisionRecord(
        at=NOW, mac="02:00:00:00:00:07", segment="normal", vlan=30, source="posture",
        identity="alice", role="default", posture=routing))
    store.flush()
    fleet = FleetCache(db)
    try:
        live = LivePolicy(state, db)
        assert reevaluate_fleet(store, live, fleet, source="feed",
                                now=NOW + 30 * 60).changes == []
        (change,) = reevaluate_fleet(store, live, fleet, source="feed",
                                     now=NOW + HOUR + 1).changes
        assert (change.old_segment, change.new_segment) == ("normal", "quarantine")
    finally:
        fleet.close()
        store.close()

    # Compliant again: the grace is over; a new failure starts a new one.
    fixed = dict(routing, forwarding={"ipv4": False, "ipv6": False})
    live = LivePolicy(state, db)
    assert decide(live, fixed, NOW + 2 * HOUR).segment == "normal"
    d = decide(LivePolicy(state, db), routing, NOW + 3 * HOUR)
    assert d.segment == "normal" and float(d.extra["first_seen.no-forwarding"]) == NOW + 3 * HOUR


def test_certificate_holds_says_what_decide_reuses(tmp_path: Path) -> None:
    """The EAP-TNC method asks certificate_holds() before judging a digest-only document
    (a stale certificate then skips the judge): it must agree with decide()'s reuse."""
    from eap_ext.tnc.posture_attrs import digest_only_document
    from nac.app import prepare_state
    from nac.config import embedded
    from nac.posture.digest import posture_digest
    from nac.prevention import cache as feed_cache
    from nac.runtime import LivePolicy

    state = tmp_path / "state"
    prepare_state(embedded(), state)
    live = LivePolicy(state, state / "nac.db")
    doc = {"schema": 1, "os": {"family": "linux", "id": "debian", "version_id": "12"},
           "firewall": "active", "packages": []}
    doc["stated_digest"] = posture_digest(doc)
    issued = live.decide(doc, identity="alice", role="default", group=None, vendor="generic",
                         certify_it=True)
    assert issued.certificate is not None
    digest_only = digest_only_document(dict(doc, certificate={
        "token": issued.certificate.decode(), "posture_digest": doc["stated_digest"]}))
    assert digest_only is not None and digest_only.get("digest_only") is True

    def reused(who: str) -> bool:
        d = live.decide(digest_only, identity=who, role="default", group=None,
                        vendor="generic", certify_it=True)
        return d.source == "certificate" and d.certificate is None

    assert live.certificate_holds(digest_only, "alice") and reused("alice")
    assert not live.certificate_holds(digest_only, "mallory") and not reused("mallory")
    with feed_cache.opened(state / "nac.db") as conn, conn:
        feed_cache.bump_epoch(conn)
    assert "feeds" in live.poll()
    assert not live.certificate_holds(digest_only, "alice") and not reused("alice")
