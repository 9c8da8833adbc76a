"""Benchmark: re-evaluate a fleet against the prevention feeds.

Builds N synthetic OSV advisories (Debian:12), imports them as an all.zip through the real
import path, loads the index, and times VulnIndex.findings() for every node of a synthetic
fleet (default 10,000 nodes x 1,500 packages against 5,000 advisories; target < 5 s on 2 cores).

The fleet is built like a real one: a few base images, each node running its image's packages
at one of a few versions (so whole package lists differ from node to node, while the fleet's
distinct (package, version) pairs stay few). Every run starts from a fresh index, i.e. a cold
verdict cache, as after a feed change.

    python3 bench/feeds.py [--nodes 10000] [--packages 1500] [--advisories 5000] [--workers 2]

With --end-to-end STATE it measures the real path instead: a state dir whose store holds the
fleet's postures (built through the store on first use, ~2 min for 10k nodes, 3.4 GB), then
`nac feed import` of one new critical advisory and of its withdrawal, alternately, as
subprocesses with a switch inventory (so the moved nodes are queued for enforcement):
wall and CPU per command (medians), and the phases of one in-process re-evaluation.
--reference also times the old path (every posture decoded) once.

    python3 bench/feeds.py --end-to-end /var/tmp/fleet10k [--runs 3] [--reference]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nac.prevention.index import VulnIndex, load_index  # noqa: E402
from nac.prevention.packages import CompiledPosture, PackageTable, compile_posture  # noqa: E402
from nac.prevention.sync import import_path  # noqa: E402

UNIVERSE = 4000  # distinct source packages the fleet may run
IMAGES = 12  # base images (package sets) in the fleet
VERSIONS_PER_PACKAGE = 3  # versions of one package seen across the fleet


def pkg_versions(i: int) -> list[str]:
    """Versions of package i in the fleet, oldest first, in real dpkg shapes."""
    epoch = "1:" if i % 17 == 0 else ""
    base = f"{epoch}{i % 9 + 1}.{i % 23}.{i % 7}-{i % 4 + 1}"
    return [f"{base}~deb12u{u}" for u in range(1, VERSIONS_PER_PACKAGE + 1)]


def build_advisories(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """n advisories over ~n/3 packages. As in a real distribution feed most are fixed at or
    below what the fleet runs; some hit the nodes that lag; a few are not fixed yet."""
    pkgs = rng.sample(range(UNIVERSE), k=min(UNIVERSE, max(1, n // 3)))
    out = []
    for k in range(n):
        i = pkgs[k % len(pkgs)]
        versions = pkg_versions(i)
        fixed = rng.choices(versions + ["99:0"], weights=[60, 25, 12, 3])[0]  # 99:0: no fix yet
        events: list[dict[str, str]] = [{"introduced": "0"}, {"fixed": fixed}]
        if fixed == "99:0":
            events = [{"introduced": "0"}]
        out.append(
            {
                "id": f"DSA-{10000 + k}-1",
                "modified": "2026-01-01T00:00:00Z",
                "published": "2026-01-01T00:00:00Z",
                "aliases": [f"CVE-2026-{k:05d}"],
                "summary": f"src{i} - security update",
                "affected": [
                    {
                        "package": {"ecosystem": "Debian:12", "name": f"src{i}"},
                        "ranges": [{"type": "ECOSYSTEM", "events": events}],
                    }
                ],
                "database_specific": {"severity": rng.choice(["HIGH", "MODERATE", "LOW"])},
            }
        )
    return out


def package_pool() -> list[list[tuple[str, str, str]]]:
    """(name, version, source) of each package's fleet versions; two binaries per source in
    real fleets (openssl, libssl3), here every other package is a binary of another name."""
    return [
        [(f"bin{i}" if i % 2 else f"src{i}", v, f"src{i}") for v in pkg_versions(i)]
        for i in range(UNIVERSE)
    ]


@dataclass
class Fleet:
    """Compact fleet: per node its image and one version choice per package (1 byte each).
    Postures are materialised in batches, as a re-evaluation reads them from the store."""

    images: list[list[int]]
    nodes: list[tuple[int, bytes]]
    pool: list[list[tuple[str, str, str]]]

    def posture(self, n: int) -> dict[str, Any]:
        image, choice = self.nodes[n]
        pool = self.pool
        return {
            "schema": 1,
            "os": {"family": "linux", "id": "debian", "version_id": "12"},
            "packages": [
                {
                    "name": name,
                    "version": ver,
                    "arch": "amd64",
                    "source": src,
                    "source_version": ver,
                    "manager": "dpkg",
                }
                for name, ver, src in (
                    pool[i][j] for i, j in zip(self.images[image], choice, strict=True)
                )
            ],
        }


def build_fleet(nodes: int, packages: int, rng: random.Random) -> Fleet:
    images = [rng.sample(range(UNIVERSE), k=min(UNIVERSE, packages)) for _ in range(IMAGES)]
    spec = []
    for _ in range(nodes):
        image = rng.randrange(IMAGES)
        # Most nodes are up to date; some lag one or two updates on some packages.
        choice = rng.choices(range(VERSIONS_PER_PACKAGE), weights=[1, 2, 7], k=len(images[image]))
        spec.append((image, bytes(choice)))
    return Fleet(images, spec, package_pool())


_INDEX: VulnIndex | None = None
_COMPILED: list[CompiledPosture] = []


def _reevaluate(bounds: tuple[int, int]) -> tuple[int, float, float]:
    """Fleet re-evaluation of compiled nodes [lo, hi) on a fresh index (cold verdicts, as right
    after a feed change): (findings, wall s, CPU s)."""
    assert _INDEX is not None
    index = VulnIndex(_INDEX.epoch, _INDEX._by_key, _INDEX.skipped, _INDEX.table)
    t, c = time.perf_counter(), time.process_time()
    n = 0
    for cp in _COMPILED[bounds[0] : bounds[1]]:
        n += len(index.findings_compiled(cp))
    return n, time.perf_counter() - t, time.process_time() - c


def run(nodes: int, packages: int, advisories: int, workers: int, seed: int) -> dict[str, Any]:
    global _INDEX, _COMPILED
    rng = random.Random(seed)
    res: dict[str, Any] = {
        "nodes": nodes,
        "packages_per_node": packages,
        "advisories": advisories,
        "cpus": os.cpu_count(),
        "loadavg_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "all.zip"
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
            for rec in build_advisories(advisories, rng):
                zf.writestr(f"{rec['id']}.json", json.dumps(rec))
        db = Path(tmp) / "nac.db"
        t = time.perf_counter()
        report = import_path(db, zpath, "bench", "vendor")
        res["import_s"] = round(time.perf_counter() - t, 3)
        assert len(report.added) == advisories, report
        t = time.perf_counter()
        _INDEX = load_index(db)
        res["load_index_s"] = round(time.perf_counter() - t, 3)
        fleet = build_fleet(nodes, packages, rng)

        # Intake: each posture is compiled once, when it arrives (timed apart from building it).
        table = PackageTable()
        _INDEX = VulnIndex(_INDEX.epoch, _INDEX._by_key, _INDEX.skipped, table)
        compile_cpu = 0.0
        for k in range(nodes):
            posture = fleet.posture(k)
            c = time.process_time()
            _COMPILED.append(compile_posture(posture, table))
            compile_cpu += time.process_time() - c
        res["intake_compile_cpu_ms_per_node"] = round(compile_cpu / nodes * 1000, 3)
        res["distinct_package_versions"] = len(table)

        # The target: re-evaluate the whole fleet after a feed change.
        total, wall, cpu = _reevaluate((0, nodes))
        res["reeval_1_process_wall_s"] = round(wall, 3)
        res["reeval_1_process_cpu_s"] = round(cpu, 3)
        res["findings_total"] = total
        step = -(-nodes // workers)
        chunks = [(i, min(nodes, i + step)) for i in range(0, nodes, step)]
        ctx = mp.get_context("fork")  # workers inherit index and fleet without pickling
        t = time.perf_counter()
        with ctx.Pool(workers) as pool:
            parts = pool.map(_reevaluate, chunks)
        res[f"reeval_{workers}_processes_wall_s"] = round(time.perf_counter() - t, 3)
        res[f"reeval_{workers}_processes_cpu_s"] = [round(c, 3) for _, _, c in parts]
        assert sum(n for n, _, _ in parts) == total

        # One node at a time from the raw posture document (the authentication path).
        sample = [fleet.posture(k) for k in range(min(nodes, 1000))]
        decoded = [json.loads(json.dumps(p)) for p in sample[:400]]
        fresh = load_index(db)
        check = VulnIndex(_INDEX.epoch, _INDEX._by_key, _INDEX.skipped, table)
        for p, cp in zip(sample[:50], _COMPILED[:50], strict=True):
            assert len(fresh.findings(p)) == len(check.findings_compiled(cp))
        for label, postures in (("dicts", sample), ("json_decoded", decoded)):
            for phase in ("cold", "warm"):
                index = fresh if phase == "warm" else load_index(db)
                c = time.process_time()
                for p in postures:
                    index.findings(p)
                ms = (time.process_time() - c) / len(postures) * 1000
                res[f"findings_{label}_{phase}_cpu_ms_per_node"] = round(ms, 3)
    res["loadavg_at_end"] = round(os.getloadavg()[0], 2)
    return res


# The bench policy: the sample with min_severity "critical", so the synthetic feed (high and
# lower) leaves the fleet in normal and one critical advisory moves the nodes it hits.
def bench_policy() -> str:
    from nac.posture.policy import sample_policy_text

    text = sample_policy_text()
    assert 'min_severity = "medium"' in text
    return text.replace('min_severity = "medium"', 'min_severity = "critical"')


SWITCHES = ('[[switches]]\nname = "sw1"\naddress = "127.0.0.1"\ndriver = "ssh-linux-bridge"\n'
            '[switches.ssh]\nusername = "nac"\npassword = "x"\n')


def build_state(state: Path, nodes: int, packages: int, advisories: int, seed: int) -> Fleet:
    """The fleet's postures in a real store (as `nac serve` records them), feeds imported."""
    from nac.events import DecisionRecord
    from nac.store import open_store

    rng = random.Random(seed)
    records = build_advisories(advisories, rng)
    fleet = build_fleet(nodes, packages, rng)
    if (state / "nac.db").exists():
        return fleet
    state.mkdir(parents=True, exist_ok=True)
    zpath = state / "feed.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for rec in records:
            zf.writestr(f"{rec['id']}.json", json.dumps(rec))
    import_path(state / "nac.db", zpath, "bench", "vendor")
    (state / "policy.toml").write_text(bench_policy())
    store = open_store(None, state)
    for k in range(nodes):
        p = fleet.posture(k)
        for pkg in p["packages"]:  # as the agent reports them
            pkg["purl"] = (f"pkg:deb/debian/{pkg['name']}@{pkg['version']}"
                           "?arch=amd64&distro=debian-12")
        p["forwarding"] = {"ipv4": False, "ipv6": False, "bridges": []}
        store.record_decision(DecisionRecord(
            at=time.time(), mac=node_mac(k), segment="normal", vlan=30, source="posture",
            reasons=("bench",), identity=f"host{k}", role="default", nas="127.0.0.1",
            nas_port=f"Gi1/0/{k % 48}", posture=p))
        if k % 500 == 499:
            store.flush(timeout=600)
    store.flush(timeout=600)
    store.close()
    return fleet


def node_mac(k: int) -> str:
    return "02:00:" + ":".join(f"{(k >> s) & 255:02x}" for s in (24, 16, 8, 0))


def critical_advisory(fleet: Fleet, n: int, wide: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new critical advisory fixed in the newest version (nodes that lag are hit) on the
    fleet's most common package (wide) or one only one image has (narrow); and its withdrawal."""
    count = Counter(i for image in fleet.images for i in image)
    i = count.most_common(1)[0][0] if wide else min(count, key=lambda j: (count[j], j))
    versions = pkg_versions(i)
    rec = {
        "id": f"DSA-BENCH-{n}", "modified": f"2026-01-02T00:00:{n % 60:02d}Z",
        "published": "2026-01-02T00:00:00Z", "aliases": [], "summary": f"src{i} - critical",
        "affected": [{"package": {"ecosystem": "Debian:12", "name": f"src{i}"},
                      "ranges": [{"type": "ECOSYSTEM",
                                  "events": [{"introduced": "0"}, {"fixed": versions[-1]}]}]}],
        "database_specific": {"severity": "CRITICAL"},
    }
    withdrawn = dict(rec, withdrawn="2026-01-03T00:00:00Z",
                     modified=f"2026-01-03T00:00:{n % 60:02d}Z")
    return rec, withdrawn


def _cli(args: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout) of one `nac` command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "nac.cli.main", *args], capture_output=True,
                         text=True, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def end_to_end(state: Path, nodes: int, packages: int, advisories: int, seed: int, runs: int,
               reference: bool) -> dict[str, Any]:
    from nac.reevaluate import after_change

    res: dict[str, Any] = {"nodes": nodes, "packages_per_node": packages,
                           "advisories": advisories, "cpus": os.cpu_count(),
                           "loadavg_at_start": round(os.getloadavg()[0], 2)}
    t = time.perf_counter()
    fleet = build_state(state, nodes, packages, advisories, seed)
    res["build_state_s"] = round(time.perf_counter() - t, 1)
    res["store_bytes"] = (state / "nac.db").stat().st_size
    config = state / "bench.toml"
    config.write_text(SWITCHES)
    common = ["--state-dir", str(state), "--config", str(config)]
    # First re-evaluation: every posture decoded and compiled once (what a fresh install or
    # an upgrade pays); later ones read only postures stored since.
    wall, cpu, out = _cli(["policy", "apply", str(state / "policy.toml"), "--wait", "0",
                           *common])
    res["first_reevaluation"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                 "summary": out.strip().splitlines()[-1][:200]}
    if reference:
        from nac.reevaluate import reevaluate
        from nac.runtime import LivePolicy
        from nac.store import open_store

        store = open_store(None, state)
        live = LivePolicy(state, state / "nac.db")
        c, t = time.process_time(), time.perf_counter()
        report = reevaluate(store, lambda p, r, n, i: live.evaluate(p, r, None, "generic", i),
                            source="bench")
        res["reference_decode_every_posture"] = {
            "wall_s": round(time.perf_counter() - t, 2),
            "cpu_s": round(time.process_time() - c, 2), "changed": len(report.changes)}
        store.close()
    n = int(time.time()) % 100_000
    for label, wide in (("wide", True), ("narrow", False)):
        walls, cpus, moved = [], [], []
        for run in range(runs):
            for doc in critical_advisory(fleet, n * 10 + run + (0 if wide else 5), wide):
                path = state / "advisory.json"
                path.write_text(json.dumps(doc))
                wall, cpu, out = _cli(["feed", "import", str(path), *common])
                walls.append(wall)
                cpus.append(cpu)
                moved.append(out.strip().splitlines()[1][:120])
        res[f"feed_import_{label}"] = {
            "runs": len(walls), "wall_s_median": round(statistics.median(walls), 2),
            "cpu_s_median": round(statistics.median(cpus), 2),
            "wall_s": [round(w, 2) for w in walls], "reevaluation": sorted(set(moved))}
    # Phases of one re-evaluation, in process (nothing changed since: the steady state).
    report = after_change(state, "bench", config_path=config)
    res["phases_s_nothing_changed"] = report.seconds
    res["loadavg_at_end"] = round(os.getloadavg()[0], 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--packages", type=int, default=1_500)
    ap.add_argument("--advisories", type=int, default=5_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--end-to-end", type=Path, metavar="STATE",
                    help="Measure `nac feed import` on a state dir holding the fleet.")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reference", action="store_true",
                    help="With --end-to-end: also time the old decode-every-posture path.")
    args = ap.parse_args()
    if args.end_to_end is not None:
        res = end_to_end(args.end_to_end, args.nodes, args.packages, args.advisories,
                         args.seed, args.runs, args.reference)
    else:
        res = run(args.nodes, args.packages, args.advisories, args.workers, args.seed)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
