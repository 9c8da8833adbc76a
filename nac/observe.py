"""What `nac serve --metrics` exposes: counters from the engine, gauges read from the store,
the queue and the feeds, latency histograms, and the health checks behind /healthz."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from nac.metrics import Histogram, job_gauges

# Packet handling time (receive to reply built), seconds.
REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def request_histogram() -> Histogram:
    return Histogram(REQUEST_BUCKETS)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def queue_gauges(queue: Any) -> dict[str, float]:
    """Read in a thread (never on the packet loop): jobs by state and their decision ->
    applied latency (draft 9.6), from whichever queue the server uses (SQLite or the
    PostgreSQL one every server shares)."""
    out = job_gauges(queue.counts())
    lat = queue.latencies(1000)
    out["enforcement_decision_to_applied_p50_seconds"] = _percentile(lat, 0.5)
    out["enforcement_decision_to_applied_p99_seconds"] = _percentile(lat, 0.99)
    return out


def feed_gauges(db_path: Path) -> dict[str, float]:
    """Feed epoch and age from the feed cache (a SQLite file in the state dir)."""
    out: dict[str, float] = {}
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return out
    try:
        row = conn.execute("SELECT epoch FROM feed_state WHERE id = 1").fetchone()
        out["feed_epoch"] = float(row[0]) if row else 0.0
        syncs = [r[0] for r in conn.execute(
            "SELECT last_sync FROM feed_sources WHERE last_sync IS NOT NULL")]
        stamps = [_epoch(s) for s in syncs]
        stamps = [s for s in stamps if s is not None]
        if stamps:
            out["feed_age_seconds"] = max(0.0, time.time() - max(stamps))
    except sqlite3.Error:
        pass
    finally:
        conn.close()
    return out


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
