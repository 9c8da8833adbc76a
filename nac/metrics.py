"""Prometheus /metrics and a /healthz probe on a small asyncio HTTP server.

The server takes callables, never the engine or the store, so the packet path does not
import it (DESIGN.md, "Shape of the code"). What it exports:

- ``counters()``: the engine's collections.Counter (or any str -> int mapping). Keys map to
  families by name: ``access_accept``/``access_reject``/``access_challenge``/``accounting``
  -> ``nac_radius_requests_total{code=...}``; ``duplicates`` ->
  ``nac_radius_duplicates_total``; ``drop_<reason>`` -> ``nac_radius_drops_total{reason=}``;
  ``decision_<segment>`` -> ``nac_decisions_total{segment=}``; ``eap_expired`` ->
  ``nac_eap_expired_total``; any other key ``k`` -> ``nac_<k>_total``.
- ``gauges()``: str -> float. ``jobs_<state>`` -> ``nac_enforcement_jobs{state=}`` (see
  ``job_gauges``); any other key ``k`` -> ``nac_<k>`` (e.g. ``eap_conversations``,
  ``feed_age_seconds``, ``store_backlog``).
- ``histograms()``: str -> Histogram; key ``k`` -> histogram ``nac_<k>`` (e.g.
  ``radius_request_seconds``, ``enforcement_apply_seconds``).
- ``health()``: check name -> bool. /healthz answers 200 when all are true, else 503 naming
  the failed checks.

Counters and histograms are read on the event loop, the thread that updates them, so they
need no locks. Gauges and health may query a database: they run in a worker thread with a
timeout, so a slow store never stalls RADIUS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("nac.metrics")

# generate_latest() writes the classic text format; say so (newer prometheus_client's
# CONTENT_TYPE_LATEST names format 1.0.0, which Prometheus 2.x scrapers do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

__all__ = [
    "DEFAULT_BUCKETS", "Histogram", "MetricsSources", "PoolMetrics", "job_gauges", "merge",
    "parse_address", "render", "start_metrics",
]

# Seconds: RADIUS answers take ~0.1-5 ms, enforcement (decision -> switch) up to minutes.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0,
)


class Histogram:
    """Fixed-bucket latency histogram. observe() is one bisect and three additions: cheap
    enough per packet. Not thread-safe by design: one thread (the event loop) observes."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # last slot: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def observe_many(self, seconds: float, n: int) -> None:
        """`n` observations of the same value (a batch's replies leave together)."""
        self.counts[bisect_left(self.bounds, seconds)] += n
        self.sum += seconds * n
        self.count += n

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, observations <= le), ending with +Inf."""
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((_fmt_bound(bound), float(acc)))
        out.append(("+Inf", float(acc + self.counts[-1])))
        return out


def _fmt_bound(b: float) -> str:
    return repr(float(b))


def job_gauges(counts: Mapping[str, int],
               states: Iterable[str] = ("pending", "claimed", "done", "dead", "superseded"),
               ) -> dict[str, float]:
    """queue.counts() -> gauge keys, with every state present (0 when none)."""
    return {f"jobs_{s}": float(counts.get(s, 0)) for s in (*states, *counts)}


_CODES = {"access_accept", "access_reject", "access_challenge", "accounting"}
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def _name(key: str) -> str:
    return "nac_" + _NAME_OK.sub("_", key)


class MetricsSources:
    """The callables behind /metrics and /healthz; any may be None."""

    def __init__(
        self,
        counters: Callable[[], Mapping[str, int]] | None = None,
        gauges: Callable[[], Mapping[str, float]] | None = None,
        histograms: Callable[[], Mapping[str, Histogram]] | None = None,
        health: Callable[[], Mapping[str, bool]] | None = None,
    ) -> None:
        self.counters = counters
        self.gauges = gauges
        self.histograms = histograms
        self.health = health


class _Snapshot(Collector):
    """Metric families from values already read (the registry calls collect())."""

    def __init__(self, counters: Mapping[str, int], gauges: Mapping[str, float],
                 histograms: Mapping[str, tuple[list[tuple[str, float]], float]]) -> None:
        self.c, self.g, self.h = counters, gauges, histograms

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("nac_radius_requests", "RADIUS requests answered, "
                                       "by the code of the answer", labels=["code"])
        drops = CounterMetricFamily("nac_radius_drops", "RADIUS requests dropped, by reason",
                                    labels=["reason"])
        decisions = CounterMetricFamily("nac_decisions", "Decisions taken, by segment",
                                        labels=["segment"])
        plain: dict[str, CounterMetricFamily] = {}
        for key in sorted(self.c):
            value = float(self.c[key])
            if key in _CODES:
                requests.add_metric([key], value)
            elif key.startswith("drop_"):
                drops.add_metric([key[5:]], value)
            elif key.startswith("decision_"):
                decisions.add_metric([key[9:]], value)
            else:
                name = {"duplicates": "nac_radius_duplicates"}.get(key, _name(key))
                fam = CounterMetricFamily(name, f"Engine counter {key}")
                fam.add_metric([], value)
                plain[name] = fam
        yield from (requests, drops, decisions, *plain.values())

        jobs = GaugeMetricFamily("nac_enforcement_jobs", "Enforcement jobs by state",
                                 labels=["state"])
        others = []
        for key in sorted(self.g):
            if key.startswith("jobs_"):
                jobs.add_metric([key[5:]], float(self.g[key]))
            else:
                fam = GaugeMetricFamily(_name(key), f"Gauge {key}")
                fam.add_metric([], float(self.g[key]))
                others.append(fam)
        if jobs.samples:
            yield jobs
        yield from others

        for key in sorted(self.h):
            buckets, total = self.h[key]
            fam = HistogramMetricFamily(_name(key), f"Histogram {key} (seconds)")
            fam.add_metric([], buckets, sum_value=total)
            yield fam


def render(counters: Mapping[str, int] | None = None, gauges: Mapping[str, float] | None = None,
           histograms: Mapping[str, Histogram] | None = None) -> bytes:
    """The Prometheus text exposition of these values."""
    hist = {k: (h.cumulative(), h.sum) for k, h in (histograms or {}).items()}
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Snapshot(dict(counters or {}), dict(gauges or {}), hist))
    return generate_latest(reg)


def parse_address(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'ADDR:PORT', '[v6]:PORT' or ':PORT' / 'PORT' -> (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:]*):(\d+)|(\d+)", value.strip())
    if not m:
        raise ValueError(f"not an ADDR:PORT: {value!r}")
    host = m.group(1) or m.group(3) or default_host
    port = int(m.group(2) or m.group(4) or m.group(5))
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {value!r}")
    return host, port


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
            503: "Service Unavailable"}


def _response(status: int, body: bytes, ctype: str, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


async def _in_thread(fn: Callable[[], Any], timeout: float) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn), timeout)


async def _health_body(src: MetricsSources, timeout: float) -> tuple[int, bytes]:
    checks: dict[str, bool] = {}
    error = None
    if src.health is not None:
        try:
            checks = {str(k): bool(v) for k, v in (await _in_thread(src.health, timeout)).items()}
        except Exception as exc:  # a probe that cannot answer is a failed probe
            error = f"health check did not answer: {exc!r}"
    failed = sorted(k for k, ok in checks.items() if not ok)
    ok = not failed and error is None
    doc: dict[str, Any] = {"status": "ok" if ok else "fail", "checks": checks}
    if failed:
        doc["failed"] = failed
    if error:
        doc["error"] = error
    return (200 if ok else 503), (json.dumps(doc, sort_keys=True) + "\n").encode()


async def _metrics_body(src: MetricsSources, timeout: float) -> bytes:
    # Loop-owned values first, copied here on the loop; then the gauges in a thread.
    counters = dict(src.counters()) if src.counters else {}
    hists = dict(src.histograms()) if src.histograms else {}
    gauges: Mapping[str, float] = {}
    if src.gauges is not None:
        try:
            gauges = await _in_thread(src.gauges, timeout)
        except Exception as exc:  # export what we have; the gauges are missing this scrape
            log.warning("metrics: gauges unavailable: %r", exc)
    return render(counters, gauges, hists)


async def _handle(src: MetricsSources, timeout: float, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            writer.write(_response(400, b"bad request\n", "text/plain"))
            return
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            writer.write(_response(405, b"GET only\n", "text/plain"))
            return
        head_only = method == "HEAD"
        if target == "/metrics":
            body = await _metrics_body(src, timeout)
            writer.write(_response(200, body, CONTENT_TYPE, head_only))
        elif target == "/healthz":
            status, body = await _health_body(src, timeout)
            writer.write(_response(status, body, "application/json", head_only))
        else:
            writer.write(_response(404, b"not found: try /metrics or /healthz\n",
                                   "text/plain", head_only))
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def start_metrics(
    host: str,
    port: int,
    *,
    counters: Callable[[], Mapping[str, int]] | None = None,
    gauges: Callable[[], Mapping[str, float]] | None = None,
    histograms: Callable[[], Mapping[str, Histogram]] | None = None,
    health: Callable[[], Mapping[str, bool]] | None = None,
    timeout: float = 5.0,
    path: str | None = None,
) -> asyncio.Server:
    """Serve GET /metrics and GET /healthz on host:port (port 0: any free port; read it
    from ``server.sockets[0].getsockname()``), or on the Unix socket ``path`` (a worker of
    a pool, for the supervisor to sum: see ``PoolMetrics``). Close with ``server.close()``."""
    src = MetricsSources(counters, gauges, histograms, health)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _handle(src, timeout, r, w)

    if path is not None:
        if not path.startswith("\0"):  # not an abstract socket: a file
            sock = Path(path)
            sock.parent.mkdir(parents=True, exist_ok=True)
            sock.unlink(missing_ok=True)  # left by a worker that was killed
        server = await asyncio.start_unix_server(handler, path, limit=16384)
        log.info("metrics for the pool's supervisor on %r", path)
        return server
    server = await asyncio.start_server(handler, host, port, limit=16384)
    log.info("metrics on http://%s:%d/metrics and /healthz",
             host if ":" not in host else f"[{host}]", server.sockets[0].getsockname()[1])
    return server


# ---- a pool of workers: one endpoint for all ------------------------------------------
# Gauges that count something each worker holds on its own add up across the pool; every
# other gauge reads shared state (the job queue, the feeds, registrations) that each worker
# reports alike, so the pool reports it once (the largest, should one lag).
PER_WORKER_GAUGES = frozenset({"nac_eap_conversations", "nac_store_backlog"})


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge(texts: Iterable[str]) -> bytes:
    """Several workers' /metrics as one: counters and histograms summed sample by sample,
    gauges summed (PER_WORKER_GAUGES) or the largest."""
    order: list[str] = []
    fams: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in fams:
                fams[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
                order.append(fam.name)
            acc = values[fam.name]
            add = fam.type != "gauge" or fam.name in PER_WORKER_GAUGES
            for sample in fam.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in acc:
                    acc[key] = sample.value
                elif add:
                    acc[key] += sample.value
                else:
                    acc[key] = max(acc[key], sample.value)
    out = []
    for name in order:
        fam = fams[name]
        for (sname, labels), value in values[name].items():
            fam.add_sample(sname, dict(labels), value)
        out.append(fam)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Merged(out))
    return generate_latest(reg)


def unix_get(path: str, target: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``target`` from an HTTP server on a Unix socket: (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n"
                  .encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode("utf-8", "replace")


class PoolMetrics:
    """The supervisor's /metrics and /healthz for ``nac serve --workers N``: on each scrape
    it reads every worker's endpoint (a Unix socket each) and answers their sum, so one
    scrape covers the pool whichever worker took which request.

    sockets(): worker id -> socket path; alive(): worker id -> is its process running.
    /healthz is 200 only when every worker runs and answers healthy.
    """

    def __init__(self, host: str, port: int, sockets: Callable[[], Mapping[int, str]],
                 alive: Callable[[], Mapping[int, bool]], timeout: float = 5.0) -> None:
        self.sockets, self.alive, self.timeout = sockets, alive, timeout
        pool = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                target = self.path.split("?", 1)[0]
                if target == "/metrics":
                    status, body, ctype = 200, pool.metrics(), CONTENT_TYPE
                elif target == "/healthz":
                    status, doc = pool.health()
                    body = (json.dumps(doc, sort_keys=True) + "\n").encode()
                    ctype = "application/json"
                else:
                    status, body = 404, b"not found: try /metrics or /healthz\n"
                    ctype = "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # scrapes are not news

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_cls = type("Server", (ThreadingHTTPServer,), {"address_family": family,
                                                             "daemon_threads": True})
        self.httpd = server_cls((host, port), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="pool-metrics",
                                       daemon=True)
        self.thread.start()
        log.info("metrics for all workers on http://%s:%d/metrics and /healthz",
                 host if ":" not in host else f"[{host}]", self.port)

    def _each(self, target: str) -> dict[int, tuple[int, str] | Exception]:
        out: dict[int, tuple[int, str] | Exception] = {}
        for wid, path in sorted(self.sockets().items()):
            try:
                out[wid] = unix_get(path, target, self.timeout)
            except (OSError, ValueError, IndexError) as exc:
                out[wid] = exc
        return out

    def metrics(self) -> bytes:
        got = self._each("/metrics")
        texts = [r[1] for r in got.values() if not isinstance(r, Exception) and r[0] == 200]
        up = [(wid, not isinstance(r, Exception) and r[0] == 200) for wid, r in got.items()]
        # Which workers this scrape covers: a missing one explains a dip in the sums.
        fam = GaugeMetricFamily("nac_worker_up", "Worker answered this scrape",
                                labels=["worker"])
        for wid, ok in up:
            fam.add_metric([str(wid)], 1.0 if ok else 0.0)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Merged([fam]))
        return merge([*texts, generate_latest(reg).decode()])

    def health(self) -> tuple[int, dict[str, Any]]:
        alive = self.alive()
        checks: dict[str, bool] = {}
        for wid, r in self._each("/healthz").items():
            ok = alive.get(wid, False) and not isinstance(r, Exception) and r[0] == 200
            checks[f"worker{wid}"] = bool(ok)
            if not isinstance(r, Exception):
                try:
                    for name, value in json.loads(r[1]).get("checks", {}).items():
                        checks[f"worker{wid}.{name}"] = bool(value)
                except (ValueError, AttributeError):
                    pass
        for wid, running in alive.items():
            checks.setdefault(f"worker{wid}", False)
            checks[f"worker{wid}"] = checks[f"worker{wid}"] and running
        failed = sorted(k for k, ok in checks.items() if not ok)
        doc: dict[str, Any] = {"status": "fail" if failed else "ok", "checks": checks}
        if failed:
            doc["failed"] = failed
        return (503 if failed else 200), doc

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
