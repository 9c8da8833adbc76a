"""Fleet intake (nac/prevention/fleet.py): a host that reports the posture it reported last
(same stated digest, as after a feed change voided its certificate) gets its compiled entry
re-dated, not compiled again; anything else is compiled as before."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from nac.prevention.fleet import FleetCache, FleetIntake


def deb(name: str, version: str) -> dict[str, str]:
    return {"name": name, "version": version, "arch": "amd64", "source": name,
            "source_version": version, "manager": "dpkg",
            "purl": f"pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12"}


def posture(openssl: str, digest: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": 1, "os": {"id": "debian", "version_id": "12"},
                           "packages": [deb("openssl", openssl), deb("bash", "5.2.15-2")]}
    if digest is not None:
        doc["stated_digest"] = digest
    return doc


def row(db: Path, mac: str) -> tuple[float, bytes, str | None]:
    conn = sqlite3.connect(db)
    try:
        at, ids, rest = conn.execute("SELECT posture_at, ids, rest FROM fleet_postures "
                                     "WHERE mac = ?", (mac,)).fetchone()
    finally:
        conn.close()
    return at, ids, json.loads(rest).get("stated_digest")


def feed(intake: FleetIntake, *items: tuple[str, dict[str, Any], float]) -> None:
    for mac, doc, at in items:
        intake.observe(mac, doc, at)
    intake.flush()


def test_unchanged_posture_is_re_dated_not_compiled(tmp_path: Path) -> None:
    db = tmp_path / "nac.db"
    intake = FleetIntake(db, interval=0.01)
    a, b = "a" * 64, "b" * 64
    try:
        feed(intake, ("m1", posture("3.0.9-1", a), 100.0), ("m2", posture("3.0.9-1", None), 100.0))
        assert (intake.written, intake.touched) == (2, 0)
        at, ids, digest = row(db, "m1")
        assert (at, digest) == (100.0, a)
        # the same postures again: m1 states its digest (re-dated), m2 does not (compiled)
        feed(intake, ("m1", posture("3.0.9-1", a), 200.0), ("m2", posture("3.0.9-1", None), 200.0))
        assert (intake.written, intake.touched) == (3, 1)
        assert row(db, "m1") == (200.0, ids, a) and row(db, "m2")[0] == 200.0
        # another writer (a second worker) replaced m1's entry with another posture: the
        # re-dating misses, and m1's own posture is compiled again
        other = FleetCache(db)
        try:
            other.save([other.compile("m1", posture("3.0.13-1", b), 250.0, 250.0)])
        finally:
            other.close()
        assert row(db, "m1")[2] == b
        feed(intake, ("m1", posture("3.0.9-1", a), 300.0))
        assert (intake.written, intake.touched) == (4, 1)
        assert row(db, "m1") == (300.0, ids, a)
        # a changed posture is compiled, of course
        feed(intake, ("m1", posture("3.0.13-1", b), 400.0))
        assert intake.written == 5 and row(db, "m1")[1] != ids
    finally:
        intake.close()


def test_rules_that_read_packages_changed_means_compile(tmp_path: Path) -> None:
    """Outcomes of package-reading rules are stored with the entry: new rules, new entry."""

    class Rule:
        def check(self, doc: dict[str, Any], _findings: Any) -> Any:
            class Outcome:
                status, reason = "compliant", "ok"
            return Outcome()

    db = tmp_path / "nac.db"
    intake = FleetIntake(db, interval=0.01)
    try:
        intake.observe("m1", posture("3.0.9-1", "c" * 64), 1.0, [("r1", Rule())])
        intake.flush()
        intake.observe("m1", posture("3.0.9-1", "c" * 64), 2.0, [("r2", Rule())])
        intake.flush()
        assert (intake.written, intake.touched) == (2, 0)
        conn = sqlite3.connect(db)
        soft = json.loads(conn.execute("SELECT soft FROM fleet_postures").fetchone()[0])
        conn.close()
        assert set(soft) == {"r2"}
    finally:
        intake.close()
