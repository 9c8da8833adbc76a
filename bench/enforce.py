"""Enforcement speed (draft 9.6): decision -> applied latency and jobs/s, per driver.

Builds the netns lab switch (tests/lab: Linux bridge, snmpd with the Q-BRIDGE pass_persist
script, sshd, hostapd DAS with a live wpa_supplicant session) and runs the real Enforcer
worker over a real SQLite queue:

- latency: N sequential set_vlan jobs on one port, each timed from ``decided_at`` (the
  enqueue) to ``applied_at`` (the switch confirmed), per way in: CoA (Disconnect-Request
  ACKed for the live session), SNMP v2c, SNMP v3 authPriv, SSH. Port bounce is off here
  (it is a fixed ``bounce_down_seconds`` pause on top).
- throughput: rounds of one job per port for P ports, worker concurrency C, jobs/s.

    python3 bench/enforce.py                 # N=50, P=16, C=16
    python3 bench/enforce.py -n 200 -p 32 --only snmp-v2c,ssh

Needs root (network namespaces). Results also go to bench/out/enforce.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enforcers.enforcer import Enforcer  # noqa: E402
from enforcers.inventory import Switch  # noqa: E402
from enforcers.queue import JobQueue  # noqa: E402
from enforcers.ssh import DEFAULT_POOL  # noqa: E402
from tests.lab import start_supplicant  # noqa: E402
from tests.lab.fixtures import Lab, switch_lab  # noqa: E402

SECRET = "das-secret"


def entry(lab: Lab, way: str) -> Switch:
    assert lab.snmpd is not None and lab.sshd is not None
    sw = lab.switch
    snmp = ({"version": "3", "user": lab.snmpd.v3_user, "auth_key": lab.snmpd.v3_auth_key,
             "priv_key": lab.snmpd.v3_priv_key} if way == "snmp-v3"
            else {"version": "2c", "community": lab.snmpd.community})
    driver = {"snmp-v2c": "snmp", "snmp-v3": "snmp", "ssh": "ssh-linux-bridge",
              "coa": "snmp"}[way]
    data: dict[str, object] = {
        "name": "labsw", "address": sw.mgmt_ip, "driver": driver, "snmp": snmp,
        "ssh": {"username": lab.sshd.user, "key_file": str(lab.sshd.key_file)},
        "ports": {"table": [{"name": p, "ifindex": sw.ifindex(p)} for p in sw.ports]},
        "linux_bridge": {"vlan_mode": sw.mode, "vlan_bridge_pattern": sw.vlan_bridge_pattern},
        "bounce_after_vlan": False,
    }
    if way == "coa":
        data["coa"] = {"secret": SECRET, "vlan_method": "disconnect"}
    return Switch.model_validate(data)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


async def latency(lab: Lab, way: str, n: int, db: Path) -> dict[str, float]:
    q = JobQueue(db, base_delay=0.2, max_delay=1.0)
    enf = Enforcer([entry(lab, way)], q, poll_interval=0.05)
    stop = asyncio.Event()
    worker = asyncio.create_task(enf.run(stop))
    mac = lab.switch.hosts[0].mac if way == "coa" else None
    lat: list[float] = []
    fallbacks = 0
    for i in range(n + 1):
        jid = enf.set_vlan("labsw", "swp1", 20 if i % 2 else 10, mac=mac)
        while (job := q.get(jid)) is not None and job.state not in ("done", "dead"):
            await asyncio.sleep(0.0005)
        assert job is not None and job.state == "done", job
        if i:  # the first job pays for logins and engine set-up
            lat.append((job.latency or 0.0) * 1000)
            # CoA: a NAK (no session at that instant) falls back to SNMP; count those.
            fallbacks += way == "coa" and not (job.result or "").startswith("coa")
    stop.set()
    await worker
    await enf.close()
    q.close()
    return {"n": n, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99),
            "max_ms": max(lat), "first_excluded": True, "fallbacks": fallbacks}


async def throughput(lab: Lab, way: str, rounds: int, conc: int, db: Path) -> dict[str, float]:
    q = JobQueue(db, base_delay=0.2, max_delay=1.0)
    enf = Enforcer([entry(lab, way)], q, concurrency=conc, poll_interval=0.05)
    ports = lab.switch.ports
    await enf.driver(enf.switches["labsw"], enf.switches["labsw"].driver).open()
    stop = asyncio.Event()
    worker = asyncio.create_task(enf.run(stop))
    t0 = time.perf_counter()
    total = 0
    for r in range(rounds):
        ids = [enf.set_vlan("labsw", p, 30 if r % 2 == 0 else 10) for p in ports]
        total += len(ids)
        while any(q.get(j).state not in ("done", "dead") for j in ids):  # type: ignore[union-attr]
            await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - t0
    stop.set()
    await worker
    await enf.close()
    dead = q.counts().get("dead", 0)
    q.close()
    return {"jobs": total, "ports": len(ports), "concurrency": conc,
            "jobs_per_s": total / elapsed, "dead": dead}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="latency samples per way")
    ap.add_argument("-p", "--ports", type=int, default=16)
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--only", default="coa,snmp-v2c,snmp-v3,ssh")
    args = ap.parse_args()
    ways = args.only.split(",")
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with switch_lab(work, n_hosts=args.ports, sshd=True, snmpd=True, hostapd_port="swp1",
                        das_secret=SECRET) as lab:
            sup = start_supplicant(lab.switch.hosts[0].ns, work / "wpa")
            try:
                deadline = time.monotonic() + 10
                while "received EAPOL-Start" not in lab.hostapd.log_text():  # type: ignore[union-attr]
                    if time.monotonic() > deadline:
                        raise SystemExit("hostapd never saw the supplicant")
                    time.sleep(0.1)
                for way in ways:
                    res: dict[str, object] = {"latency": asyncio.run(
                        latency(lab, way, args.n, work / f"{way}-lat.db"))}
                    if way != "coa":
                        res["throughput"] = asyncio.run(throughput(
                            lab, way, args.rounds, args.concurrency, work / f"{way}-tp.db"))
                    results[way] = res
                    lat = res["latency"]
                    tp = res.get("throughput")
                    line = (f"{way:9s} p50 {lat['p50_ms']:7.2f} ms  p99 {lat['p99_ms']:7.2f} ms")
                    if lat["fallbacks"]:
                        line += f" ({lat['fallbacks']} fell back to SNMP)"
                    if tp:
                        line += (f"  {tp['jobs_per_s']:7.1f} jobs/s ({tp['ports']} ports, "
                                 f"concurrency {tp['concurrency']})")
                    print(line, flush=True)
            finally:
                sup.stop()
                DEFAULT_POOL.close_all()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "enforce.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
