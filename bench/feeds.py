"""Benchmark: re-evaluate a fleet against the prevention feeds.

Builds N synthetic OSV advisories (Debian:12), imports them as an all.zip through the real
import path, loads the index, and times VulnIndex.findings() for every node of a synthetic
fleet (default 10,000 nodes x 1,500 packages against 5,000 advisories; target < 5 s on 2 cores).

The fleet is built like a real one: a few base images, each node running its image's packages
at one of a few versions (so whole package lists differ from node to node, while the fleet's
distinct (package, version) pairs stay few). Every run starts from a fresh index, i.e. a cold
verdict cache, as after a feed change.

    python3 bench/feeds.py [--nodes 10000] [--packages 1500] [--advisories 5000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nac.prevention.index import VulnIndex, load_index  # noqa: E402
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


BATCH = 250
_INDEX: VulnIndex | None = None
_FLEET: Fleet | None = None


def _work(bounds: tuple[int, int]) -> tuple[int, float, float]:
    """findings() for nodes [lo, hi): (findings, wall s, CPU s), timing findings() only."""
    assert _INDEX is not None and _FLEET is not None
    n = 0
    wall = cpu = 0.0
    for lo in range(bounds[0], bounds[1], BATCH):
        batch = [_FLEET.posture(k) for k in range(lo, min(bounds[1], lo + BATCH))]
        t, c = time.perf_counter(), time.process_time()
        for posture in batch:
            n += len(_INDEX.findings(posture))
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
    return n, wall, cpu


def run(nodes: int, packages: int, advisories: int, workers: int, seed: int) -> dict[str, Any]:
    global _INDEX, _FLEET
    rng = random.Random(seed)
    res: dict[str, Any] = {
        "nodes": nodes,
        "packages_per_node": packages,
        "advisories": advisories,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0],
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
        index = load_index(db)
        res["load_index_s"] = round(time.perf_counter() - t, 3)
        _FLEET = build_fleet(nodes, packages, rng)

        # One process, fresh index (cold verdict cache, as right after a feed change), then warm.
        _INDEX = index
        total, wall, cpu = _work((0, nodes))
        res["one_process_cold_s"] = round(wall, 3)
        res["one_process_cold_cpu_s"] = round(cpu, 3)
        res["findings_total"] = total
        res["verdicts_cached"] = sum(len(v) for v in index._host_verdicts.values())
        _, wall, cpu = _work((0, nodes))
        res["one_process_warm_s"] = round(wall, 3)
        res["one_process_warm_cpu_s"] = round(cpu, 3)

        # `workers` processes, each with its own fresh (cold) index, splitting the fleet.
        _INDEX = load_index(db)
        step = -(-nodes // workers)
        chunks = [(i, min(nodes, i + step)) for i in range(0, nodes, step)]
        ctx = mp.get_context("fork")  # workers inherit index and fleet without pickling
        t = time.perf_counter()
        with ctx.Pool(workers) as pool:
            parts = pool.map(_work, chunks)
        res[f"{workers}_processes_wall_incl_materialise_s"] = round(time.perf_counter() - t, 3)
        res[f"{workers}_processes_findings_wall_s"] = round(max(w for _, w, _ in parts), 3)
        res[f"{workers}_processes_findings_cpu_s"] = [round(c, 3) for _, _, c in parts]
        assert sum(n for n, _, _ in parts) == total

        # Postures exactly as they arrive: JSON-decoded (fresh strings need hashing).
        sample = [json.loads(json.dumps(_FLEET.posture(k))) for k in range(min(nodes, 400))]
        fresh = load_index(db)
        for label in ("cold", "warm"):
            t = time.perf_counter()
            for p in sample:
                fresh.findings(p)
            ms = (time.perf_counter() - t) / len(sample) * 1000
            res[f"json_decoded_{label}_ms_per_node"] = round(ms, 3)
    res["loadavg_at_end"] = os.getloadavg()[0]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--packages", type=int, default=1_500)
    ap.add_argument("--advisories", type=int, default=5_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    res = run(args.nodes, args.packages, args.advisories, args.workers, args.seed)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
