#!/usr/bin/env python3
"""Run the fuzz harnesses: `python3 bench/fuzz/run.py [--harness NAME|all] [--runs N]
[--seconds S] [--engine builtin|atheris]`.

Prints, per harness, the inputs run, inputs/s and crashes; exits 1 when any harness
crashed. Crashing inputs are written to --crash-dir (bench/out/fuzz-crashes by default);
copy the ones worth keeping to tests/data/fuzz/crashes/ with a regression test.

builtin: deterministic mutation of the seed corpus (tests/data/fuzz/<harness>/), no extra
dependency; what the CI smoke runs. atheris: coverage-guided libFuzzer, one subprocess per
harness (libFuzzer owns the process); needs `pip install atheris`.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

HARNESS_MODULES = ("radius", "eap", "tnc", "eve")


def load() -> dict:
    import importlib

    from fuzz.core import REGISTRY

    for mod in HARNESS_MODULES:
        importlib.import_module(f"fuzz.{mod}")
    return REGISTRY


def write_seeds(names: list[str]) -> None:
    """Regenerate tests/data/fuzz/<harness>/ from the seed generators."""
    from fuzz.core import CORPUS_DIR

    registry = load()
    for name in names:
        h = registry[name]
        d = CORPUS_DIR / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        for i, seed in enumerate(h.seeds()):
            (d / f"seed-{i:03d}").write_bytes(seed)
        print(f"{name}: {i + 1} seeds in {d.relative_to(ROOT)}")


def run_builtin(names: list[str], args: argparse.Namespace) -> int:
    from fuzz.core import run_builtin as run
    from fuzz.core import save_crash

    registry = load()
    failed = 0
    print(f"{'harness':22} {'inputs':>9} {'seconds':>8} {'inputs/s':>9} {'cpu in/s':>9} "
          f"{'outcomes':>8}  crashes")
    for name in names:
        h = registry[name]
        t0 = time.perf_counter()
        h.target()  # setup (PKI, TLS contexts) is not part of the rate
        setup = time.perf_counter() - t0
        st = run(h, runs=args.runs, seconds=args.seconds, seed=args.seed)
        extra = f"  (+{len(st.known)} known)" if st.known else ""
        extra += f"  (setup {setup:.1f}s)" if setup > 0.5 else ""
        print(f"{name:22} {st.runs:9d} {st.seconds:8.2f} {st.rate:9.0f} {st.cpu_rate:9.0f} "
              f"{st.labels:8d}  {len(st.crashes)}{extra}", flush=True)
        for data, why in st.crashes:
            path = save_crash(name, data, args.crash_dir)
            print(f"    CRASH {why}\n      input: {path}")
        for data, why in st.known:
            path = save_crash(name, data, args.crash_dir)
            print(f"    known bug (xfail in tests/test_fuzz_regressions.py): {why}\n"
                  f"      input: {path}")
        failed += bool(st.crashes)
    return 1 if failed else 0


STATS = re.compile(r"fuzz-stats: runs=(\d+) seconds=([\d.]+)")
START = re.compile(r"fuzz-start: ([\d.]+)")
FINAL = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


def run_atheris(names: list[str], args: argparse.Namespace) -> int:
    failed = 0
    print(f"{'harness':22} {'inputs':>9} {'seconds':>8} {'inputs/s':>9}  crashes  (atheris)")
    args.crash_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
            seeds = ROOT / "tests" / "data" / "fuzz" / name
            # New corpus entries go to the first directory: a scratch one, never the seeds.
            cmd = [sys.executable, str(Path(__file__)), "--atheris-worker", name,
                   f"-runs={args.runs}", f"-seed={args.seed or 1}",
                   f"-artifact_prefix={args.crash_dir}/{name}-", "-print_final_stats=1",
                   "-rss_limit_mb=4096", work]
            if args.seconds:
                cmd.insert(-1, f"-max_total_time={int(args.seconds)}")
            if seeds.is_dir():
                cmd.append(str(seeds))
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - t0
            end = time.time()
        log = proc.stderr
        # Runs: libFuzzer's final count. Rate: over the time since the first input, since
        # libFuzzer's own exec/s is whole-second granular and start-up (instrumenting the
        # imports) is not fuzzing.
        final = FINAL.search(log)
        last = STATS.findall(log)
        runs = int(final.group(1)) if final else int(last[-1][0]) if last else 0
        start = START.search(log)
        took = end - float(start.group(1)) if start else 0.0
        rate = runs / took if took > 0 else 0.0
        crashed = proc.returncode != 0
        print(f"{name:22} {runs:9d} {wall:8.1f} {rate:9.0f}  {int(crashed)}", flush=True)
        if crashed:
            failed += 1
            tail = [ln for ln in log.splitlines() if ln.strip()][-25:]
            print("    " + "\n    ".join(tail))
    return 1 if failed else 0


def atheris_worker(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    # Coverage only for the code under test; the harness glue stays uninstrumented.
    with atheris.instrument_imports(include=["nac", "eap_ext"]):
        import eap_ext.tnc  # noqa: F401
        import nac.eap.service  # noqa: F401
        import nac.monitor.eve  # noqa: F401
        import nac.radius.engine  # noqa: F401
        registry = load()
    from fuzz.core import KNOWN_BUGS, describe

    target = registry[name].target()
    known = KNOWN_BUGS.get(name, ())
    runs = [int(a.split("=", 1)[1]) for a in libfuzzer_args if a.startswith("-runs=")]
    stop_at = runs[0] if runs else -1
    count = [0, 0.0, 0.0]  # inputs, first input's time, last report's time

    def report() -> None:
        # libFuzzer's exec/s is whole-second granular and it leaves by _Exit (no atexit on
        # success): print our own count, and run.py keeps the last line it sees.
        took = time.perf_counter() - count[1] if count[0] else 0.0
        print(f"fuzz-stats: runs={count[0]} seconds={took:.3f}", file=sys.stderr, flush=True)

    def one(data: bytes) -> None:
        now = time.perf_counter()
        if not count[0]:
            count[1] = count[2] = now  # after libFuzzer's start-up and seed loading
            print(f"fuzz-start: {time.time():.3f}", file=sys.stderr, flush=True)
        count[0] += 1
        try:
            target(data)
        except Exception as exc:
            if not any(k in describe(exc) for k in known):
                report()
                raise
        if count[0] == stop_at or now - count[2] > 2.0:
            count[2] = now
            report()

    h = registry[name]
    args = [sys.argv[0], *libfuzzer_args]
    if not any(a.startswith("-max_len=") for a in libfuzzer_args):
        args.insert(1, f"-max_len={h.max_len}")
    if h.mutate is None:
        atheris.Setup(args, one)
    else:
        structured = h.mutate

        def mutator(data: bytes, max_size: int, seed: int) -> bytes:
            # Half libFuzzer's byte-level mutations, half the harness's own (records kept
            # intact, whole RADIUS attributes): coverage guidance picks what works.
            if seed & 1:
                return atheris.Mutate(data, max_size)
            return structured(data, random.Random(seed))[:max_size]

        atheris.Setup(args, one, custom_mutator=mutator)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--atheris-worker"]:
        logging.disable(logging.CRITICAL)
        atheris_worker(argv[1], argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--harness", default="all", help="a name, comma-separated names, or all")
    ap.add_argument("--runs", type=int, default=10_000, help="inputs per harness")
    ap.add_argument("--seconds", type=float, default=None, help="time cap per harness")
    ap.add_argument("--engine", choices=("builtin", "atheris"), default="builtin")
    ap.add_argument("--seed", type=int, default=0, help="random seed (builtin: reproducible)")
    ap.add_argument("--crash-dir", type=Path, default=ROOT / "bench" / "out" / "fuzz-crashes")
    ap.add_argument("--list", action="store_true", help="list the harnesses and exit")
    ap.add_argument("--write-seeds", action="store_true",
                    help="regenerate the seed corpora (of --harness) in tests/data/fuzz/, exit")
    args = ap.parse_args(argv)
    # Methods log every rejected conversation; a fuzz run makes millions.
    logging.disable(logging.CRITICAL)
    registry = load()
    names = list(registry) if args.harness == "all" else args.harness.split(",")
    unknown = [n for n in names if n not in registry]
    if unknown:
        ap.error(f"unknown harness(es) {unknown}; --list shows them")
    if args.write_seeds:
        write_seeds(names)
        return 0
    if args.list:
        for name, h in registry.items():
            print(f"{name:22} {h.doc}")
        return 0
    if args.engine == "atheris":
        return run_atheris(names, args)
    return run_builtin(names, args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
