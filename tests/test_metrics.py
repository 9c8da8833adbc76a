"""/metrics parses as Prometheus text with the expected families; /healthz says what failed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nac.metrics import Histogram, job_gauges, parse_address, render, start_metrics


async def http(port: int, request: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def get(port: int, path: str) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}


def test_histogram_buckets() -> None:
    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.001, 0.002, 0.05, 0.5, 7.0):
        h.observe(v)
    assert h.cumulative() == [("0.001", 2.0), ("0.01", 3.0), ("0.1", 4.0), ("+Inf", 6.0)]
    assert h.count == 6 and h.sum == pytest.approx(7.5535)


def test_histogram_observe_many_is_n_observations() -> None:
    one, many = Histogram((0.001, 0.01, 0.1)), Histogram((0.001, 0.01, 0.1))
    for v, n in ((0.0005, 3), (0.01, 1), (0.05, 64), (2.0, 2)):
        for _ in range(n):
            one.observe(v)
        many.observe_many(v, n)
    assert many.cumulative() == one.cumulative() == [
        ("0.001", 3.0), ("0.01", 4.0), ("0.1", 68.0), ("+Inf", 70.0)]
    assert many.count == one.count == 70 and many.sum == pytest.approx(one.sum)


def test_histogram_is_cheap() -> None:
    h = Histogram()
    t = time.perf_counter()
    for i in range(200_000):
        h.observe(i * 1e-6)
    per = (time.perf_counter() - t) / 200_000
    assert h.count == 200_000
    assert per < 5e-6, f"observe() took {per * 1e9:.0f} ns"


def test_render_families() -> None:
    counters = Counter({"access_accept": 7, "access_reject": 2, "access_challenge": 11,
                        "accounting": 5, "duplicates": 1, "drop_bad_authenticator": 3,
                        "drop_unknown_nas": 4, "decision_normal": 6, "decision_isolated": 1,
                        "eap_expired": 2, "weird-key": 9})
    lat = Histogram((0.001, 0.01))
    lat.observe(0.0004)
    lat.observe(0.02)
    text = render(counters, {**job_gauges({"pending": 2, "done": 40}),
                             "eap_conversations": 3, "feed_age_seconds": 120.5},
                  {"radius_request_seconds": lat}).decode()
    fams = families(text)
    req = samples(fams["nac_radius_requests"])
    assert fams["nac_radius_requests"].type == "counter"
    assert req[("nac_radius_requests_total", (("code", "access_accept"),))] == 7
    assert req[("nac_radius_requests_total", (("code", "accounting"),))] == 5
    drops = samples(fams["nac_radius_drops"])
    assert drops[("nac_radius_drops_total", (("reason", "unknown_nas"),))] == 4
    dec = samples(fams["nac_decisions"])
    assert dec[("nac_decisions_total", (("segment", "isolated"),))] == 1
    assert samples(fams["nac_radius_duplicates"]) == {("nac_radius_duplicates_total", ()): 1}
    assert samples(fams["nac_eap_expired"]) == {("nac_eap_expired_total", ()): 2}
    assert samples(fams["nac_weird_key"]) == {("nac_weird_key_total", ()): 9}
    jobs = samples(fams["nac_enforcement_jobs"])
    assert fams["nac_enforcement_jobs"].type == "gauge"
    assert jobs[("nac_enforcement_jobs", (("state", "pending"),))] == 2
    assert jobs[("nac_enforcement_jobs", (("state", "dead"),))] == 0
    assert samples(fams["nac_feed_age_seconds"]) == {("nac_feed_age_seconds", ()): 120.5}
    hist = fams["nac_radius_request_seconds"]
    assert hist.type == "histogram"
    hs = samples(hist)
    assert hs[("nac_radius_request_seconds_bucket", (("le", "0.001"),))] == 1
    assert hs[("nac_radius_request_seconds_bucket", (("le", "+Inf"),))] == 2
    assert hs[("nac_radius_request_seconds_count", ())] == 2
    assert hs[("nac_radius_request_seconds_sum", ())] == pytest.approx(0.0204)


def test_empty_render_parses() -> None:
    fams = families(render().decode())
    assert set(fams) == {"nac_radius_requests", "nac_radius_drops", "nac_decisions"}


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9812") == ("127.0.0.1", 9812)
    assert parse_address("[::1]:9812") == ("::1", 9812)
    assert parse_address(":9812") == ("127.0.0.1", 9812)
    assert parse_address("9812") == ("127.0.0.1", 9812)
    with pytest.raises(ValueError):
        parse_address("nope")


def test_http_server() -> None:
    state = {"store": True, "radius": True}
    counters: Counter[str] = Counter()
    lat = Histogram()

    def slow_gauges() -> dict[str, float]:
        time.sleep(0.05)  # a store query: must run off the loop
        return job_gauges({"pending": 1})

    async def main() -> None:
        server = await start_metrics(
            "127.0.0.1", 0, counters=lambda: counters, gauges=slow_gauges,
            histograms=lambda: {"radius_request_seconds": lat}, health=lambda: dict(state),
        )
        port = server.sockets[0].getsockname()[1]
        try:
            counters["access_accept"] += 3
            lat.observe(0.002)
            status, headers, body = await http(port, get(port, "/metrics"))
            assert status == 200
            assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
            fams = families(body.decode())
            assert samples(fams["nac_radius_requests"]) == {
                ("nac_radius_requests_total", (("code", "access_accept"),)): 3}
            assert "nac_enforcement_jobs" in fams and "nac_radius_request_seconds" in fams

            status, _, body = await http(port, get(port, "/healthz"))
            assert status == 200
            assert json.loads(body) == {"status": "ok",
                                        "checks": {"store": True, "radius": True}}
            state["store"] = False
            status, _, body = await http(port, get(port, "/healthz?verbose=1"))
            assert status == 503
            doc = json.loads(body)
            assert doc["status"] == "fail" and doc["failed"] == ["store"]

            status, _, _ = await http(port, get(port, "/nope"))
            assert status == 404
            status, _, _ = await http(port, "POST /metrics HTTP/1.1\r\n\r\n")
            assert status == 405
            status, headers, body = await http(port, "HEAD /metrics HTTP/1.1\r\n\r\n")
            assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_healthz_when_probe_raises() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("database gone")

    async def main() -> None:
        server = await start_metrics("127.0.0.1", 0, health=broken, timeout=1.0)
        port = server.sockets[0].getsockname()[1]
        try:
            status, _, body = await http(port, get(port, "/healthz"))
            assert status == 503
            assert "database gone" in json.loads(body)["error"]
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_merge_sums_workers() -> None:
    """The pool's /metrics: counters and histograms add up, gauges of per-worker things
    add up, gauges of shared state (the job queue) are reported once."""
    from prometheus_client.parser import text_string_to_metric_families

    from nac.metrics import Histogram, merge, render

    def worker(accepts: int, eap: int, latencies: list[float]) -> str:
        h = Histogram((0.001, 0.01))
        for v in latencies:
            h.observe(v)
        return render({"access_accept": accepts, "drop_malformed": 1},
                      {"eap_conversations": eap, "jobs_done": 7.0},
                      {"radius_request_seconds": h}).decode()

    text = merge([worker(3, 2, [0.0005, 0.005]), worker(4, 1, [0.05])]).decode()
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert got[("nac_radius_requests_total", (("code", "access_accept"),))] == 7
    assert got[("nac_radius_drops_total", (("reason", "malformed"),))] == 2
    assert got[("nac_eap_conversations", ())] == 3
    assert got[("nac_enforcement_jobs", (("state", "done"),))] == 7
    assert got[("nac_radius_request_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("nac_radius_request_seconds_bucket", (("le", "0.01"),))] == 2
    assert got[("nac_radius_request_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("nac_radius_request_seconds_count", ())] == 3
