"""Importing OSV records and matching posture documents against them."""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from eap_ext.tnc import packages_compact
from nac.prevention import cache
from nac.prevention.index import Finding, VulnIndex, load_index, refresh
from nac.prevention.packages import PackageTable, compile_posture
from nac.prevention.sync import import_path, sync

DATA = Path(__file__).parent / "data" / "osv"


def deb(name: str, version: str, source: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "arch": "amd64",
        "source": source or name,
        "source_version": version,
        "manager": "dpkg",
        "purl": f"pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12",
    }


def posture(packages: list[dict[str, Any]], os_id: str = "debian", ver: str = "12") -> dict:
    return {
        "schema": 1,
        "os": {"family": "linux", "id": os_id, "version_id": ver},
        "packages": packages,
    }


def record(adv_id: str, eco: str, name: str, events: list[dict], **extra: Any) -> dict:
    rec = {
        "id": adv_id,
        "modified": "2024-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": eco, "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }
    rec.update(extra)
    return rec


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "nac.db"
    report = import_path(path, DATA, "osv", "vendor")
    assert sorted(report.added) == ["DSA-5532-1", "GHSA-35jh-r3h4-6jhm", "GHSA-j8r2-6x86-q33q"]
    return path


def ids(findings: list[Finding]) -> list[str]:
    return sorted(f.advisory_id for f in findings)


def test_debian12_vulnerable_openssl_found_fixed_not(db: Path) -> None:
    idx = load_index(db)
    vulnerable = idx.findings(
        posture(
            [
                deb("openssl", "3.0.11-1~deb12u1"),
                deb("libssl3", "3.0.11-1~deb12u1", source="openssl"),
                deb("bash", "5.2.15-2+b2"),
            ]
        )
    )
    # The advisory names the source package: both binaries map to one finding.
    assert len(vulnerable) == 1
    f = vulnerable[0]
    assert (f.advisory_id, f.package, f.installed, f.fixed) == (
        "DSA-5532-1",
        "openssl",
        "3.0.11-1~deb12u1",
        "3.0.11-1~deb12u2",
    )
    assert f.aliases == ("CVE-2023-5363",)
    assert (f.ecosystem, f.source, f.trust) == ("Debian:12", "osv", "vendor")
    assert idx.findings(posture([deb("openssl", "3.0.11-1~deb12u2")])) == []
    assert idx.findings(posture([deb("openssl", "3.0.13-1~deb12u1")])) == []


def test_release_must_match(db: Path) -> None:
    idx = load_index(db)
    old = [deb("openssl", "1.1.1n-0+deb11u5")]
    assert idx.findings(posture(old, "debian", "11")) == []
    assert idx.findings(posture(old, "ubuntu", "22.04")) == []
    assert idx.findings(posture(old, "unknown", "")) == []  # unknown release: no guess


def test_binary_name_alone_does_not_match_another_source(db: Path) -> None:
    # A binary called "openssl" built from some other source is not the openssl source.
    idx = load_index(db)
    assert idx.findings(posture([deb("openssl", "1.0", source="other-src")])) == []


def test_pypi_and_npm(db: Path) -> None:
    idx = load_index(db)
    pkgs = [
        {
            "name": "Requests",
            "version": "2.30.0",
            "manager": "pip",
            "purl": "pkg:pypi/requests@2.30.0",
        },
        {"name": "lodash", "version": "4.17.20", "purl": "pkg:npm/lodash@4.17.20"},
        deb("openssl", "3.0.11-1~deb12u2"),
    ]
    found = {f.advisory_id: f for f in idx.findings(posture(pkgs))}
    assert set(found) == {"GHSA-j8r2-6x86-q33q", "GHSA-35jh-r3h4-6jhm"}
    assert found["GHSA-j8r2-6x86-q33q"].severity == "medium"
    assert found["GHSA-j8r2-6x86-q33q"].fixed == "2.31.0"
    assert found["GHSA-35jh-r3h4-6jhm"].severity == "high"
    fixed = [
        {"name": "requests", "version": "2.31.0", "manager": "pip"},
        {"name": "requests", "version": "2.2.1", "manager": "pip"},  # before "introduced"
        {"name": "lodash", "version": "4.17.21", "purl": "pkg:npm/lodash@4.17.21"},
    ]
    assert idx.findings(posture(fixed)) == []


def test_withdrawn_advisory_retracts(db: Path, tmp_path: Path) -> None:
    assert ids(load_index(db).findings(posture([deb("openssl", "3.0.9-1")]))) == ["DSA-5532-1"]
    rec = json.loads((DATA / "DSA-5532-1.json").read_text())
    rec["withdrawn"] = "2024-02-01T00:00:00Z"
    rec["modified"] = "2024-02-01T00:00:00Z"
    path = tmp_path / "withdrawn.json"
    path.write_text(json.dumps(rec))
    before = cache_epoch(db)
    report = import_path(db, path, "osv")
    assert report.withdrawn == ["DSA-5532-1"]
    assert ("Debian:12", "openssl") in report.changed_packages
    assert report.epoch == before + 1
    idx = load_index(db)
    assert idx.epoch == before + 1
    assert idx.findings(posture([deb("openssl", "3.0.9-1")])) == []
    # An older copy of the record arriving later must not resurrect it.
    again = import_path(db, DATA / "DSA-5532-1.json", "osv")
    assert (again.added, again.updated, again.stale) == ([], [], 1)
    assert load_index(db).findings(posture([deb("openssl", "3.0.9-1")])) == []


def cache_epoch(db: Path) -> int:
    with cache.opened(db) as conn:
        return cache.get_epoch(conn)


def test_reimport_unchanged_keeps_epoch_update_bumps(db: Path, tmp_path: Path) -> None:
    e0 = cache_epoch(db)
    report = import_path(db, DATA, "osv")
    assert (report.added, report.updated, report.unchanged) == ([], [], 3)
    assert cache_epoch(db) == e0
    rec = json.loads((DATA / "DSA-5532-1.json").read_text())
    rec["modified"] = "2024-03-01T00:00:00Z"
    rec["affected"][0]["ranges"][0]["events"][1]["fixed"] = "3.0.13-1~deb12u1"
    (tmp_path / "u.json").write_text(json.dumps(rec))
    report = import_path(db, tmp_path / "u.json", "osv")
    assert report.updated == ["DSA-5532-1"] and report.changed_ids == {"DSA-5532-1"}
    assert cache_epoch(db) == e0 + 1
    f = load_index(db).findings(posture([deb("openssl", "3.0.11-1~deb12u2")]))
    assert [x.fixed for x in f] == ["3.0.13-1~deb12u1"]


def test_ranges_last_affected_versions_and_reintroduced(tmp_path: Path) -> None:
    recs = [
        record("T-1", "Debian:12", "foo", [{"introduced": "1.0"}, {"last_affected": "1.5"}]),
        record(
            "T-2",
            "Debian:12",
            "bar",
            [
                {"introduced": "0"},
                {"fixed": "2.0"},
                {"introduced": "3.0"},
                {"fixed": "3.2"},
            ],
        ),
        {
            "id": "T-3",
            "modified": "2024-01-01T00:00:00Z",
            "affected": [
                {
                    "package": {"ecosystem": "Debian", "name": "baz"},  # every release
                    "ranges": [{"type": "GIT", "repo": "x", "events": [{"introduced": "0"}]}],
                    "versions": ["7.0-1"],
                }
            ],
        },
    ]
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(recs))
    db = tmp_path / "nac.db"
    import_path(db, path)
    idx = load_index(db)

    def hit(name: str, version: str) -> bool:
        return bool(idx.findings(posture([deb(name, version)])))

    assert [hit("foo", v) for v in ("0.9", "1.0", "1.5", "1.5-1", "1:0.1")] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert [hit("bar", v) for v in ("1.0", "2.0", "2.5", "3.1", "3.2")] == [
        True,
        False,
        False,
        True,
        False,
    ]
    assert hit("baz", "7.0-1") and not hit("baz", "7.0-2")
    assert idx.affected_sources(["T-1", "T-3", "nope"]) == {"foo", "baz"}


def test_same_advisory_from_two_sources_reports_most_trusted(tmp_path: Path) -> None:
    db = tmp_path / "nac.db"
    import_path(db, DATA / "DSA-5532-1.json", "mirror", "community")
    import_path(db, DATA / "DSA-5532-1.json", "debian", "vendor")
    found = load_index(db).findings(posture([deb("openssl", "3.0.9-1")]))
    assert [(f.advisory_id, f.source, f.trust) for f in found] == [
        ("DSA-5532-1", "debian", "vendor")
    ]


def test_zip_import_all_zip_layout(tmp_path: Path) -> None:
    zpath = tmp_path / "all.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(DATA.glob("*.json")):
            zf.write(f, f.name)  # OSV's all.zip: one <ID>.json per record at the top level
    db = tmp_path / "nac.db"
    report = import_path(db, zpath, "osv-zip", "community")
    assert len(report.added) == 3
    assert ids(load_index(db).findings(posture([deb("openssl", "3.0.9-1")]))) == ["DSA-5532-1"]


def test_invalid_records_are_skipped_not_fatal(tmp_path: Path) -> None:
    d = tmp_path / "feed"
    shutil.copytree(DATA, d)
    (d / "bad.json").write_text(json.dumps({"id": "X-1"}))  # no "modified"
    report = import_path(tmp_path / "nac.db", d)
    assert len(report.added) == 3
    assert len(report.invalid) == 1 and "X-1" in report.invalid[0]


def test_odd_postures_do_not_crash(db: Path) -> None:
    idx = load_index(db)
    assert idx.findings({}) == []
    assert idx.findings({"packages": "unknown", "os": "unknown"}) == []
    weird = posture(
        [
            "junk",
            {"name": "openssl"},
            {"name": ["list"], "version": "1"},
            {"name": "openssl", "version": ["1"], "manager": "dpkg"},
            deb("openssl", "3.0.9-1"),
        ]
    )
    assert ids(idx.findings(weird)) == ["DSA-5532-1"]


def test_fast_path_agrees_with_general_path(tmp_path: Path) -> None:
    """Debian hosts take a C-level hot path; a pip package forces the general path. Both must
    report the same findings for random package lists."""
    rng = random.Random(1)
    recs = []
    for k in range(60):
        fixed = f"{rng.randint(1, 3)}.{rng.randint(0, 3)}-{rng.randint(1, 2)}~deb12u1"
        recs.append(
            record(f"T-{k}", "Debian:12", f"s{k % 20}", [{"introduced": "0"}, {"fixed": fixed}])
        )
    (tmp_path / "f.json").write_text(json.dumps(recs))
    db = tmp_path / "nac.db"
    import_path(db, tmp_path / "f.json")
    pip = {"name": "nothing-here", "version": "1.0", "manager": "pip"}
    total = 0
    for _ in range(30):
        pkgs = []
        for i in rng.sample(range(25), 12):
            upstream = f"{rng.randint(1, 3)}.{rng.randint(0, 3)}-{rng.randint(1, 2)}"
            v = f"{upstream}~deb12u{rng.randint(0, 2)}"
            pkgs.append(deb(f"b{i}", v, source=f"s{i}"))
            pkgs.append(deb(f"lib{i}", v, source=f"s{i}"))
        fast = load_index(db)
        general = load_index(db)
        a = {(f.advisory_id, f.installed, f.fixed) for f in fast.findings(posture(pkgs))}
        b = {(f.advisory_id, f.installed, f.fixed) for f in general.findings(posture(pkgs + [pip]))}
        assert a == b
        assert len(fast.findings(posture(pkgs))) == len(a)  # one finding per source version
        compiled = load_index(db).findings_compiled(compile_posture(posture(pkgs)))
        assert {(f.advisory_id, f.installed, f.fixed) for f in compiled} == a
        assert len(compiled) == len(a)
        # What the agent's compact inventory decodes to: the same packages, matched and
        # compiled from the decoder's source columns instead of the dicts (some binNMUs:
        # a source version apart from the binary's).
        for k, p in enumerate(pkgs):
            if k % 5 == 0:
                pkgs[k] = {**deb(p["name"], p["version"] + "b1", p["source"]),
                           "source_version": p["source_version"]}
        decoded = packages_compact.decode(packages_compact.encode(pkgs))
        assert decoded == pkgs and decoded.columns is not None
        a = {(f.advisory_id, f.installed, f.fixed) for f in load_index(db).findings(posture(pkgs))}
        from_columns = load_index(db).findings(posture(decoded))
        assert {(f.advisory_id, f.installed, f.fixed) for f in from_columns} == a
        assert len(from_columns) == len(a)
        table = PackageTable()
        assert (compile_posture(posture(decoded), table).ids
                == compile_posture(posture(list(pkgs)), table).ids)
        total += len(a)
    assert total > 30  # the comparison was not vacuous


def test_compiled_postures_match_findings(db: Path) -> None:
    table = PackageTable()
    rows = posture(
        [
            deb("openssl", "3.0.9-1"),
            deb("libssl3", "3.0.9-1", source="openssl"),
            deb("bash", "5.2.15-2+b2"),
            {"name": "requests", "version": "2.30.0", "manager": "pip"},
            {"name": "lodash", "version": "4.17.20", "purl": "pkg:npm/lodash@4.17.20"},
        ]
    )
    debian_only = posture([deb("openssl", "3.0.9-1"), deb("libssl3", "3.0.9-1", "openssl")])
    fixed = posture([deb("openssl", "3.0.11-1~deb12u2")])
    rpm = posture(
        [{"name": "openssl-libs", "version": "1:3.0.7-24.el9", "manager": "rpm"}], "rocky", "9.3"
    )
    compiled = [compile_posture(p, table) for p in (rows, debian_only, fixed, rpm)]
    # Binaries of one source version collapse into one id at intake.
    assert len(compiled[1].ids) == 1
    for idx in (
        index_from_rows_with(db, table),
        index_from_rows_with(db, table),
    ):
        for p, c in zip((rows, debian_only, fixed, rpm), compiled, strict=True):
            assert ids(idx.findings_compiled(c)) == ids(load_index(db).findings(p))
    assert ids(index_from_rows_with(db, table).findings_compiled(compiled[0])) == [
        "DSA-5532-1",
        "GHSA-35jh-r3h4-6jhm",
        "GHSA-j8r2-6x86-q33q",
    ]
    with pytest.raises(ValueError, match="another PackageTable"):
        load_index(db).findings_compiled(compiled[0])
    # Ids interned after the index was built are decided on first use.
    idx = index_from_rows_with(db, table)
    later = compile_posture(posture([deb("openssl", "3.0.8-1")]), table)
    assert ids(idx.findings_compiled(later)) == ["DSA-5532-1"]


def index_from_rows_with(db: Path, table: PackageTable) -> VulnIndex:
    base = load_index(db)
    return VulnIndex(base.epoch, base._by_key, base.skipped, table)


def test_each_changed_source_bumps_the_epoch(tmp_path: Path) -> None:
    db = tmp_path / "nac.db"
    with cache.opened(db) as conn:
        for name in ("a", "b"):
            cache.add_source(
                conn,
                cache.FeedSource(name, None, str(DATA), "vendor", None, None, None, None, None),
            )
    report = sync(db)
    # Same advisories in both sources: each source's transaction moves the epoch, so an
    # index loaded between the two never carries the final epoch with partial data.
    assert report.epoch == 2 and len(report.added) == 6
    assert sync(db).epoch == 2


def test_refresh_reloads_only_when_epoch_moves(db: Path, tmp_path: Path) -> None:
    idx = refresh(None, db)
    assert refresh(idx, db) is idx
    rec = json.loads((DATA / "DSA-5532-1.json").read_text())
    rec["withdrawn"] = rec["modified"] = "2024-02-01T00:00:00Z"
    (tmp_path / "w.json").write_text(json.dumps(rec))
    import_path(db, tmp_path / "w.json", "osv")
    newer = refresh(idx, db)
    assert newer is not idx and newer.epoch == idx.epoch + 1
    assert newer.findings(posture([deb("openssl", "3.0.9-1")])) == []
