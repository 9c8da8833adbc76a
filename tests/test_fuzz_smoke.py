"""CI smoke for the fuzz harnesses (bench/fuzz/): each runs a bounded number of inputs with
the built-in engine (seeded, so a failure reproduces) and must find nothing new.

Long campaigns: `python3 bench/fuzz/run.py --engine atheris --seconds 600`."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from fuzz import run  # noqa: E402
from fuzz.core import CORPUS_DIR, KNOWN_BUGS, REGISTRY, run_builtin  # noqa: E402

run.load()

# Inputs per harness: a few seconds each on a busy 2-core machine. The tunnel does a TLS
# handshake per input, the posture exchange evaluates the policy per input.
RUNS = {"eap_tunnel": 250, "tnc_server": 1500, "tnc_peer": 2000, "eap_service": 2500,
        "radius_engine": 3000}
DEFAULT_RUNS = 4000


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    # Rejected conversations log at INFO and caught bugs at ERROR; thousands of inputs
    # would flood the captured log. Findings surface as crashes, not as log lines.
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def test_every_harness_has_a_seed_corpus_on_disk() -> None:
    assert len(REGISTRY) >= 12
    for name in REGISTRY:
        d = CORPUS_DIR / name
        assert d.is_dir() and any(d.iterdir()), f"no seeds in {d}: run.py --write-seeds"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_harness_finds_nothing_new(name: str) -> None:
    h = REGISTRY[name]
    stats = run_builtin(h, runs=RUNS.get(name, DEFAULT_RUNS), seed=1234)
    assert stats.runs == RUNS.get(name, DEFAULT_RUNS)
    assert not stats.crashes, "\n".join(
        f"{why}\n  input (hex): {data.hex()}" for data, why in stats.crashes)
    for _, why in stats.known:
        assert any(k in why for k in KNOWN_BUGS[name])
    assert stats.labels >= 3, "the harness reaches almost nothing: check its seeds"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_seeds_replay_cleanly(name: str) -> None:
    h = REGISTRY[name]
    target = h.target()
    for seed in h.corpus():
        target(seed)  # a seed must never be a crash


def test_resigned_packets_pass_the_authenticator_checks() -> None:
    """The engine harness only reaches attribute handling if re-signing is right."""
    from fuzz import lab, radius

    from nac.radius import codec as c

    eng = lab.engine()
    for i, p in enumerate(radius.auth_packets()):
        body = bytearray(radius.resign(p, accounting=False))
        body[1] = i  # a new identifier: not a duplicate
        body = radius.resign(bytes(body), accounting=False)
        out = eng.handle_auth(body, lab.NAS_ADDR, 1, lab.NOW + i)
        assert out is not None or "drop_malformed_attr_length" in eng.counters, i
    for p in radius.acct_packets():
        mutated = bytearray(p)
        mutated[1] ^= 0x55  # another identifier: the old authenticators are now wrong
        out = eng.handle_acct(radius.resign(bytes(mutated), accounting=True), lab.NAS_ADDR,
                              2, lab.NOW)
        assert out is not None and c.decode(out).code == c.ACCOUNTING_RESPONSE
    assert not [k for k in eng.counters if "authenticator" in k], eng.counters


def test_tunnel_seeds_reach_posture_inside_both_tunnels() -> None:
    """Seeds authenticate (TTLS/PAP, PEAP and TTLS with inner MSCHAPv2) and run EAP-TNC to
    an accept carrying the posture: the input can reach every phase of both tunnels."""
    h = REGISTRY["eap_tunnel"]
    target = h.target()
    labels = [target(s) or "" for s in h.corpus()]
    for method in ("ttls/pap", "peap/mschapv2", "ttls/eap-mschapv2"):
        assert any(f"accept:{method}:authenticated:posture" in lbl for lbl in labels), labels


def test_cli_runs_and_reports(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz" / "run.py"), "--harness",
         "radius_decode,eap_packet", "--runs", "300", "--crash-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "radius_decode" in proc.stdout and "inputs/s" in proc.stdout


def test_atheris_engine(tmp_path: Path) -> None:
    """Coverage-guided run through libFuzzer. Needs atheris from PyPI (a manylinux wheel,
    nothing to build); until the test extra lists it, this skips where it is missing."""
    pytest.importorskip("atheris", reason="pip install atheris (add it to the test extra)")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz" / "run.py"), "--engine", "atheris",
         "--harness", "pb_tnc", "--runs", "2000", "--crash-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("pb_tnc"))
    assert int(line.split()[1]) >= 2000, proc.stdout
