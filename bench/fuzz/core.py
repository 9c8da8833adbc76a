"""What every harness shares: the registry, record framing, and the built-in mutation engine.

A harness is a function `bytes -> str | None` that raises on a bug (any exception the
target may not raise, or a broken invariant) and otherwise returns a short outcome label.
The same function serves atheris (coverage-guided, via libFuzzer) and the built-in engine
below (deterministic mutation of the seed corpus, steered only by new outcome labels), so a
crash found by either replays the same way in tests/test_fuzz_regressions.py.
"""

from __future__ import annotations

import hashlib
import random
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIR = ROOT / "tests" / "data" / "fuzz"
CRASH_DIR = CORPUS_DIR / "crashes"

Target = Callable[[bytes], "str | None"]


class Finding(AssertionError):
    """A broken invariant (as opposed to an unexpected exception, also a finding)."""


@dataclass
class Harness:
    name: str
    doc: str
    # Built lazily: some targets need a PKI or a policy, which costs a second to set up.
    build: Callable[[], Target]
    seeds: Callable[[], Iterator[bytes]]
    # Optional structure-aware mutation for the built-in engine (e.g. re-framed records).
    mutate: Callable[[bytes, random.Random], bytes] | None = None
    max_len: int = 4096
    _target: Target | None = field(default=None, repr=False)

    def target(self) -> Target:
        if self._target is None:
            self._target = self.build()
        return self._target

    def corpus(self) -> list[bytes]:
        """The seed corpus on disk, or (before `run.py --write-seeds`) the generated one."""
        d = CORPUS_DIR / self.name
        files = sorted(d.iterdir()) if d.is_dir() else []
        if files:
            return [f.read_bytes() for f in files if f.is_file()]
        return list(self.seeds())


REGISTRY: dict[str, Harness] = {}


def register(h: Harness) -> Harness:
    REGISTRY[h.name] = h
    return h


# --- record framing for stateful targets ----------------------------------------------------
# A conversation is a run of records: flags octet, 16-bit length, payload. A truncated last
# record keeps what is there, so every byte string decodes to some conversation.
REC = struct.Struct("!BH")


def records(data: bytes, limit: int = 64) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data) and len(out) < limit:
        if pos + REC.size > len(data):
            out.append((data[pos], b""))
            break
        flags, n = REC.unpack_from(data, pos)
        pos += REC.size
        out.append((flags, data[pos : pos + n]))
        pos += n
    return out


def join_records(recs: list[tuple[int, bytes]]) -> bytes:
    return b"".join(REC.pack(f & 0xFF, len(p)) + p for f, p in recs)


# --- the built-in engine ---------------------------------------------------------------------
INTERESTING8 = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING16 = (0, 1, 3, 4, 5, 16, 253, 255, 256, 0x7FFF, 0x8000, 4095, 4096, 0xFFFF)


def mutate_bytes(data: bytes, rng: random.Random, corpus: list[bytes], max_len: int) -> bytes:
    """libFuzzer's classic mutations, a few at a time."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # interesting octet
            buf[rng.randrange(n)] = rng.choice(INTERESTING8)
        elif op == 2 and n >= 2:  # interesting 16-bit value: lengths live here
            i = rng.randrange(n - 1)
            v = rng.choice(INTERESTING16 + (n, n - 1, n + 1)) & 0xFFFF
            buf[i : i + 2] = v.to_bytes(2, "big")
        elif op == 3 and n >= 4:  # 32-bit length fields (EAP-TLS L, PA-TNC, PB-TNC)
            i = rng.randrange(n - 3)
            v = rng.choice((0, 1, n, n - 8, n + 1, 0x10000, 0xFFFFFFFF, rng.getrandbits(32)))
            buf[i : i + 4] = (v & 0xFFFFFFFF).to_bytes(4, "big")
        elif op == 4:  # insert random octets
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 5 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i : i + rng.randrange(1, 17)]
        elif op == 6 and n:  # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randrange(1, 65))
            k = rng.randrange(n + 1)
            buf[k:k] = buf[i:j]
        elif op == 7 and corpus:  # splice with another input
            other = rng.choice(corpus)
            if other:
                i = rng.randrange(len(other))
                k = rng.randrange(n + 1)
                buf = buf[:k] + other[i : i + rng.randrange(1, 129)] + buf[k:]
        elif op == 8 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif n:  # random octet
            buf[rng.randrange(n)] = rng.randrange(256)
    return bytes(buf[:max_len])


def mutate_records(data: bytes, rng: random.Random, *, head: int = 0, max_len: int = 4096,
                   payload: Callable[[bytes, random.Random], bytes] | None = None,
                   empty_flags: int = 0) -> bytes:
    """The structure-aware mutation of every record-framed harness: keep the ``head``
    leading octets (a selector) and the framing, mutate one record: its flags, its payload
    (``payload`` for a harness's own payload mutation, half the time, else the classic
    byte mutations), or drop it; now and then the head instead."""
    front, recs = data[:head].ljust(head, b"\x00"), records(data[head:]) or [(empty_flags, b"")]
    i = rng.randrange(len(recs))
    flags, body = recs[i]
    r = rng.random()
    if r < 0.15:
        flags ^= 1 << rng.randrange(5)
    elif head and r < 0.2:
        front = rng.randbytes(head)
    elif r < 0.25 and len(recs) > 1:
        del recs[i]
        return front + join_records(recs)
    elif payload is not None and rng.random() < 0.5:
        body = payload(body, rng)
    else:
        body = mutate_bytes(body, rng, [p for _, p in recs], max_len)
    recs[i] = (flags, body[:max_len])
    return front + join_records(recs)


# Bugs found and reported but not yet fixed (the fix belongs to another module's owner):
# harness -> substrings of the crash description. Each has an xfail(strict=True) test in
# tests/test_fuzz_regressions.py; when that test starts passing, drop the entry here too.
KNOWN_BUGS: dict[str, tuple[str, ...]] = {}


@dataclass
class Stats:
    harness: str
    runs: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    crashes: list[tuple[bytes, str]] = field(default_factory=list)
    known: list[tuple[bytes, str]] = field(default_factory=list)
    labels: int = 0

    @property
    def rate(self) -> float:
        return self.runs / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_rate(self) -> float:
        """Inputs per CPU second: what the harness costs, whatever else shares the cores."""
        return self.runs / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


_DIGITS = re.compile(r"\d+")


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def run_builtin(h: Harness, *, runs: int, seconds: float | None = None, seed: int = 0,
                stop_on_crash: bool = False) -> Stats:
    """Seeds first, then mutants. New outcome labels add the input to the corpus: the only
    feedback this engine has, but it keeps inputs that reached a new reason or state."""
    rng = random.Random(seed)
    target = h.target()
    corpus = [c[: h.max_len] for c in h.corpus()] or [b""]
    seen: set[str] = set()
    stats = Stats(h.name)
    crash_sigs: set[str] = set()
    start = time.perf_counter()
    cpu_start = time.process_time()
    known = KNOWN_BUGS.get(h.name, ())
    deadline = start + seconds if seconds else None
    queue: Iterator[bytes] = iter(list(corpus))
    while stats.runs < runs:
        if deadline is not None and stats.runs % 64 == 0 and time.perf_counter() > deadline:
            break
        data = next(queue, None)
        if data is None:
            base = rng.choice(corpus)
            if h.mutate is not None and rng.random() < 0.5:
                data = h.mutate(base, rng)[: h.max_len]
            else:
                data = mutate_bytes(base, rng, corpus, h.max_len)
        stats.runs += 1
        try:
            label = target(data)
        except Exception as exc:  # noqa: BLE001 - every escape is the finding we look for
            sig = describe(exc)
            key = type(exc).__name__ + sig.split(":", 1)[-1][:60]
            if key not in crash_sigs:
                crash_sigs.add(key)
                is_known = any(k in sig for k in known)
                (stats.known if is_known else stats.crashes).append((data, sig))
            if stop_on_crash and not any(k in sig for k in known):
                break
            continue
        if label is not None:
            label = _DIGITS.sub("#", label)  # "identifier 5 != 6" is one outcome, not many
        if label is not None and label not in seen:
            seen.add(label)
            if len(corpus) < 4096:
                corpus.append(data)
    stats.seconds = time.perf_counter() - start
    stats.cpu_seconds = time.process_time() - cpu_start
    stats.labels = len(seen)
    return stats


def save_crash(name: str, data: bytes, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{hashlib.sha1(data).hexdigest()[:12]}"
    path.write_bytes(data)
    return path
