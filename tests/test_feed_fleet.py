"""Fleet re-evaluation from compiled postures (nac/prevention/fleet.py) decides exactly what
decoding every stored posture decides (the reference path), and decodes only postures stored
since its last run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nac.events import DecisionRecord
from nac.posture.decision import Decision
from nac.posture.policy import sample_policy_text
from nac.prevention.sync import import_path
from nac.reevaluate import after_change, reevaluate
from nac.runtime import LivePolicy
from nac.store import open_store
from tests.pg import pg_server, pg_url  # noqa: F401  (pytest fixtures)

OSV = Path(__file__).parent / "data" / "osv"
POLICY = sample_policy_text() + '''
[[rules]]
name = "no-telnet"
check = "software"
deny = ["pkg:deb/*/telnetd"]
on_fail = "minor"
'''


def deb(name: str, version: str, source: str | None = None) -> dict[str, str]:
    return {"name": name, "version": version, "arch": "amd64", "source": source or name,
            "source_version": version, "manager": "dpkg",
            "purl": f"pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12"}


def posture(k: int) -> dict[str, Any]:
    """Node k's posture: openssl at one of four versions (two vulnerable to DSA-5532-1),
    Python requests before or after its fix, telnetd on some, forwarding on a few."""
    openssl = ["3.0.9-1", "3.0.11-1~deb12u2", "3.0.11-1~deb12u1", "3.0.13-1~deb12u1"][k % 4]
    pkgs: list[dict[str, str]] = [deb("openssl", openssl), deb("libssl3", openssl, "openssl"),
                                  deb("bash", "5.2.15-2+b2")]
    if k % 5 == 0:
        pkgs.append(deb("telnetd", "0.17+2.4-2"))
    if k % 3 == 0:
        version = "2.30.0" if k % 2 else "2.31.0"
        pkgs.append({"name": "requests", "version": version, "manager": "pip",
                     "purl": f"pkg:pypi/requests@{version}"})
    doc: dict[str, Any] = {
        "schema": 1, "collected_at": "2026-11-27T23:30:00Z",
        "os": {"family": "linux", "id": "debian", "version_id": "12"},
        "packages": pkgs,
        "forwarding": {"ipv4": k % 7 == 0, "ipv6": False, "bridges": []},
        "interfaces": [{"name": "eth0", "mac": f"02:00:00:00:01:{k:02x}"}],
    }
    if k == 11:
        del doc["packages"]  # inventory not collected
    return doc


def mac(k: int) -> str:
    return f"02:00:00:00:aa:{k:02x}"


def build(state: Path, nodes: int = 40, store_url: str | None = None) -> None:
    state.mkdir(parents=True)
    (state / "policy.toml").write_text(POLICY)
    if store_url is None:
        store: Any = open_store(None, state)
    else:
        from nac.store.postgres import PostgresStore

        store = PostgresStore(store_url, migrate=True)
    now = time.time()
    for k in range(nodes):
        store.record_decision(DecisionRecord(
            at=now, mac=mac(k), segment="normal", vlan=30, source="posture",
            reasons=("compliant",), identity=f"host{k}", role="guest" if k == 13 else "default",
            nas="127.0.0.1", nas_port=f"Gi1/0/{k}", posture=posture(k)))
    store.flush()
    store.register_node(mac(17), "isolated", "IDS alert")  # a hold outranks the posture
    store.close()


def slow(state: Path, source: str = "feed") -> list[tuple[str, str]]:
    """The reference: every stored posture decoded and evaluated by LivePolicy."""
    store = open_store(None, state)
    live = LivePolicy(state, state / "nac.db")

    def evaluator(p: dict[str, Any], role: str, nas: str | None,
                  identity: str | None) -> Decision:
        return live.evaluate(p, role, None, "generic", identity)

    try:
        report = reevaluate(store, evaluator, source=source,
                            isolated=live.policy.isolated_segment)
    finally:
        store.close()
    return sorted((c.mac, c.new_segment) for c in report.changes)


def segments(state: Path) -> dict[str, tuple[str, int]]:
    store = open_store(None, state)
    try:
        return {n["mac"]: (n["segment"], n["vlan"]) for n in store.list_nodes()}
    finally:
        store.close()


def test_compiled_fleet_decides_like_the_reference(tmp_path: Path) -> None:
    ref, fast = tmp_path / "ref", tmp_path / "fast"
    for state in (ref, fast):
        build(state)
        import_path(state / "nac.db", OSV / "DSA-5532-1.json", "debian", "vendor")

    expected = slow(ref)
    report = after_change(fast, "feed")
    assert sorted((c.mac, c.new_segment) for c in report.changes) == expected
    assert report.decoded == 40 and report.checked == 40
    got = segments(fast)
    assert got == segments(ref)
    assert got[mac(0)] == ("isolated", 20)  # vulnerable openssl 3.0.9-1
    assert got[mac(1)] == ("normal", 30)  # fixed version
    assert got[mac(6)] == ("isolated", 20)  # 3.0.11-1~deb12u1, before the fix
    assert got[mac(5)] == ("quarantine", 10)  # fixed openssl, telnetd: minor
    assert got[mac(13)] == ("quarantine", 10)  # role guest caps it
    assert got[mac(17)] == ("normal", 30)  # held: left alone (the hold applies at auth)
    assert got[mac(21)] == ("isolated", 20)  # forwarding on
    assert got[mac(25)] == ("quarantine", 10)  # fixed openssl, telnetd: minor
    assert len({s for s, _ in got.values()}) == 3

    # A second feed and one new posture: only that posture is read again.
    for state in (ref, fast):
        store = open_store(None, state)
        store.record_decision(DecisionRecord(
            at=time.time(), mac=mac(1), segment="normal", vlan=30, source="posture",
            identity="host1", role="default", nas="127.0.0.1", nas_port="Gi1/0/1",
            posture=posture(0)))
        store.close()
        import_path(state / "nac.db", OSV / "GHSA-j8r2-6x86-q33q.json", "ghsa", "community")
    expected = slow(ref)
    report = after_change(fast, "feed")
    assert report.decoded == 1
    assert sorted((c.mac, c.new_segment) for c in report.changes) == expected
    assert (mac(1), "isolated") in expected and (mac(3), "isolated") in expected
    assert segments(fast) == segments(ref)

    # Nothing changed since: nothing decoded, nothing moves.
    report = after_change(fast, "feed")
    assert (report.decoded, report.checked, report.changes) == (0, 40, [])


def test_policy_change_rechecks_software_rules_from_the_posture(tmp_path: Path) -> None:
    """A new software rule was never judged on the compiled posture: the fast path reads the
    posture once for it, then remembers the outcome."""
    ref, fast = tmp_path / "ref", tmp_path / "fast"
    for state in (ref, fast):
        build(state, nodes=12)
    assert slow(ref) == sorted((c.mac, c.new_segment) for c in after_change(fast, "policy")
                               .changes)
    stricter = POLICY.replace('deny = ["pkg:deb/*/telnetd"]',
                              'deny = ["pkg:deb/*/telnetd", "pkg:deb/*/bash"]')
    for state in (ref, fast):
        (state / "policy.toml").write_text(stricter)
    expected = slow(ref, "policy")
    report = after_change(fast, "policy")
    assert sorted((c.mac, c.new_segment) for c in report.changes) == expected
    assert report.decoded == 0 and len(expected) > 3
    assert segments(fast) == segments(ref)


def test_postures_compiled_at_intake_are_not_decoded_again(tmp_path: Path) -> None:
    """The server hands every recorded posture to LivePolicy.observe: the re-evaluation after
    the next feed change then decodes none of them, and decides as the reference does."""
    ref, fast = tmp_path / "ref", tmp_path / "fast"
    for state in (ref, fast):
        build(state, nodes=16)
        after_change(state, "policy")  # both start from the same evaluated segments
    live = LivePolicy(fast, fast / "nac.db")
    at = time.time()
    for state in (ref, fast):
        store = open_store(None, state)
        for k in range(16):  # every host re-authenticates with a new posture
            rec = DecisionRecord(
                at=at, mac=mac(k), segment="normal", vlan=30, source="posture",
                identity=f"host{k}", role="default", nas="127.0.0.1", nas_port=f"Gi1/0/{k}",
                posture=posture(k + 1))
            store.record_decision(rec)
            if state == fast:
                live.observe(rec)  # what the server's on_decision does
        store.close()
    assert live._intake is not None
    live._intake.flush()
    live.close()
    assert live._intake.written == 16
    for state in (ref, fast):
        import_path(state / "nac.db", OSV / "DSA-5532-1.json", "debian", "vendor")
    expected = slow(ref)
    report = after_change(fast, "feed")
    assert report.decoded == 0 and report.checked == 16
    assert sorted((c.mac, c.new_segment) for c in report.changes) == expected and expected
    assert segments(fast) == segments(ref)


def test_two_writers_agree_on_package_ids(tmp_path: Path) -> None:
    """A CLI re-evaluation and a server's intake compile at the same time: ids each
    interned on its own are renumbered under the write lock, so every stored entry still
    names its own packages."""
    from nac.prevention.fleet import FleetCache

    db = tmp_path / "nac.db"
    a, b = FleetCache(db), FleetCache(db)
    ea = a.compile("m:a", posture(0), 1.0, 1.0)
    eb = b.compile("m:b", posture(3), 2.0, 2.0)  # same ids 0.. for other packages
    a.save([ea])
    b.save([eb])
    for cache in (a, b, FleetCache(db)):
        entries = cache.load()
        for m, k in (("m:a", 0), ("m:b", 3)):
            keys = {cache.table.keys[i] for i in entries[m].compiled.ids}
            versions = {p["name"]: p["source_version"] for p in posture(k)["packages"]
                        if p.get("manager") == "dpkg"}
            assert {(name, ver) for _, _, name, ver in keys if name != "requests"} == {
                (p, v) for p, v in versions.items() if p != "libssl3"}


def test_postgresql_store_decides_like_sqlite(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    """Nodes in PostgreSQL, feeds and compiled postures in the state dir's SQLite file."""
    ref, fast = tmp_path / "ref", tmp_path / "fast"
    build(ref, nodes=12)
    build(fast, nodes=12, store_url=pg_url)
    for state in (ref, fast):
        import_path(state / "nac.db", OSV / "DSA-5532-1.json", "debian", "vendor")
    expected = slow(ref)
    report = after_change(fast, "feed", store_url=pg_url)
    assert sorted((c.mac, c.new_segment) for c in report.changes) == expected and expected
    assert report.decoded == 12
    store = open_store(pg_url, fast)
    try:
        got = {n["mac"]: (n["segment"], n["vlan"]) for n in store.list_nodes()}
    finally:
        store.close()
    assert got == segments(ref)
    assert after_change(fast, "feed", store_url=pg_url).decoded == 0
