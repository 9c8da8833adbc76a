"""Enforcement speed (draft 9.6): decision -> applied latency and jobs/s, per driver.

Builds the netns lab switch (tests/lab: Linux bridge, snmpd with the Q-BRIDGE pass_persist
agent, sshd, hostapd DAS with a live wpa_supplicant session) and runs the real Enforcer
worker over a real SQLite queue:

- latency: N sequential set_vlan jobs on one port, each timed from ``decided_at`` (the
  enqueue) to ``applied_at`` (the switch confirmed), per way in: CoA (Disconnect-Request
  ACKed for the live session), SNMP v2c, SNMP v3 authPriv, SSH. Port bounce is off here
  (it is a fixed ``bounce_down_seconds`` pause on top). The ways take turns: ``--repeat``
  rounds, each in a rotated order, and the figures are the medians over the rounds (the
  machine is shared; one noisy moment must not decide a p99).
- CPU per job, from /proc/PID/stat utime+stime: the enforcer (this process: queue, driver,
  pysnmp/netmiko) and the switch (every process in its namespace: snmpd and the agent,
  sshd, hostapd), so a regression shows even when wall-clock times are noisy.
- throughput: one job per port for every port of a ``--total-ports`` switch (the lab's
  host ports plus extra bridge ports built from veth pairs inside the switch namespace),
  worker concurrency C, jobs/s.

    python3 bench/enforce.py                        # N=100, 3 repeats, 1000 ports, C=16
    python3 bench/enforce.py -n 200 --only snmp-v2c,ssh --total-ports 200

Needs root (network namespaces). Results also go to bench/out/enforce.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enforcers.enforcer import Enforcer  # noqa: E402
from enforcers.inventory import Switch  # noqa: E402
from enforcers.queue import JobQueue  # noqa: E402
from enforcers.ssh import DEFAULT_POOL  # noqa: E402
from nac.lab.netns import IP, run  # noqa: E402
from tests.lab import start_supplicant  # noqa: E402
from tests.lab.fixtures import Lab, switch_lab  # noqa: E402

SECRET = "das-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def entry(lab: Lab, way: str, ports: dict[str, int]) -> Switch:
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
        "ports": {"table": [{"name": p, "ifindex": i} for p, i in ports.items()]},
        "linux_bridge": {"vlan_mode": sw.mode, "vlan_bridge_pattern": sw.vlan_bridge_pattern},
        "bounce_after_vlan": False,
    }
    if way == "coa":
        data["coa"] = {"secret": SECRET, "vlan_method": "disconnect"}
    return Switch.model_validate(data)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def cpu_seconds(pids: list[int], task: bool = False) -> float:
    """utime+stime of the given processes (those still running); task=True: of threads
    of this process (/proc/self/task/TID)."""
    total = 0
    for pid in pids:
        path = f"/proc/self/task/{pid}/stat" if task else f"/proc/{pid}/stat"
        try:
            fields = Path(path).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


class Worker:
    """The Enforcer's run loop in a thread of its own, as in the server, so the bench's
    polling (main thread) is neither in its way nor in its CPU time: enforcer CPU =
    process CPU - main thread CPU (pysnmp/netmiko threads count as the enforcer's)."""

    def __init__(self, enf: Enforcer) -> None:
        self.enf = enf
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="enforcer", daemon=True)
        self.thread.start()
        self.ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stop = asyncio.Event()

        async def go() -> None:
            task = asyncio.create_task(self.enf.run(self.stop))
            self.ready.set()
            await task
            await self.enf.close()

        self.loop.run_until_complete(go())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def notify(self) -> None:
        self.loop.call_soon_threadsafe(self.enf._notify)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join()
        self.loop.close()


def enforcer_cpu() -> float:
    return cpu_seconds([os.getpid()]) - cpu_seconds([threading.get_native_id()], task=True)


def switch_pids(lab: Lab) -> list[int]:
    out = run([IP, "netns", "pids", lab.switch.ns], check=False).stdout
    return [int(p) for p in out.split()]


def add_ports(lab: Lab, total: int) -> None:
    """Grow the switch to ``total`` bridge ports: veth pairs inside the switch namespace,
    one end a port of the first VLAN, both ends up (no host namespace per port: the
    agent, the drivers and the queue see a real bridge port all the same)."""
    sw = lab.switch
    extra = total - len(sw.ports)
    if extra <= 0:
        return
    first = sw.vlan_bridge_pattern.format(vlan=sw.vlans[0]) if sw.mode != "filtering" else "br0"
    # No IPv6 on the new links: addrconf, DAD and MLD for 2,000 interfaces keep the kernel
    # (and snmpd, which follows address events) busy for minutes and would be measured.
    for key in ("default", "all"):
        run(["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"], ns=sw.ns)
    lines = []
    for i in range(extra):
        lines += [f"link add xp{i} type veth peer name xq{i}",
                  f"link set xp{i} master {first}", f"link set xp{i} up", f"link set xq{i} up"]
    subprocess.run([IP, "-n", sw.ns, "-batch", "-"], input="\n".join(lines) + "\n",
                   text=True, check=True, capture_output=True)
    if sw.mode == "filtering":
        vlan = sw.vlans[0]
        cmds = [f"vlan del dev xp{i} vid 1\nvlan add dev xp{i} vid {vlan} pvid untagged"
                for i in range(extra)]
        subprocess.run(["bridge", "-n", sw.ns, "-force", "-batch", "-"], text=True,
                       input="\n".join(cmds) + "\n", check=True, capture_output=True)


def port_table(lab: Lab) -> dict[str, int]:
    """name -> ifIndex of every bridge port, from one ``ip -j link`` in the namespace."""
    links = json.loads(run([IP, "-j", "link", "show"], ns=lab.switch.ns).stdout)
    return {link["ifname"]: int(link["ifindex"]) for link in links
            if link.get("master") and link["ifname"].startswith(("swp", "xp"))}


def latency(lab: Lab, way: str, n: int, db: Path, ports: dict[str, int]) -> dict[str, float]:
    q = JobQueue(db, base_delay=0.2, max_delay=1.0)
    producer = JobQueue(db)  # the bench's own connection, like another process's
    worker = Worker(Enforcer([entry(lab, way, ports)], q, poll_interval=0.05))
    mac = lab.switch.hosts[0].mac if way == "coa" else None
    lat: list[float] = []
    fallbacks = 0
    pids = switch_pids(lab)
    for i in range(n + 1):
        if i == 1:  # the first job pays for logins and engine set-up
            cpu0, sw0 = enforcer_cpu(), cpu_seconds(pids)
        jid = producer.enqueue("set_vlan", "labsw", "swp1", vlan=20 if i % 2 else 10, mac=mac)
        worker.notify()
        while (job := producer.get(jid)) is not None and job.state not in ("done", "dead"):
            time.sleep(0.0005)
        assert job is not None and job.state == "done", job
        if i:
            lat.append((job.latency or 0.0) * 1000)
            # CoA: a NAK (no session at that instant) falls back to SNMP; count those.
            fallbacks += way == "coa" and not (job.result or "").startswith("coa")
    cpu, sw_cpu = enforcer_cpu() - cpu0, cpu_seconds(pids) - sw0
    worker.close()
    q.close()
    producer.close()
    return {"n": n, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99),
            "max_ms": max(lat), "first_excluded": True, "fallbacks": fallbacks,
            "enforcer_cpu_ms_per_job": cpu / n * 1000,
            "switch_cpu_ms_per_job": sw_cpu / n * 1000}


def throughput(lab: Lab, way: str, conc: int, db: Path, ports: dict[str, int],
               vlan: int) -> dict[str, float]:
    q = JobQueue(db, base_delay=0.2, max_delay=1.0)
    producer = JobQueue(db)
    enf = Enforcer([entry(lab, way, ports)], q, concurrency=conc, poll_interval=0.05)
    worker = Worker(enf)
    worker.call(enf.driver(enf.switches["labsw"], enf.switches["labsw"].driver).open())
    pids = switch_pids(lab)
    cpu0, sw0 = enforcer_cpu(), cpu_seconds(pids)
    t0 = time.perf_counter()
    ids = [producer.enqueue("set_vlan", "labsw", p, vlan=vlan) for p in ports]
    worker.notify()
    while True:
        counts = producer.counts()
        if not counts.get("pending") and not counts.get("claimed"):
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    cpu, sw_cpu = enforcer_cpu() - cpu0, cpu_seconds(pids) - sw0
    worker.close()
    counts = producer.counts()
    lat = [(j.latency or 0.0) for j in (producer.get(i) for i in ids) if j is not None]
    q.close()
    producer.close()
    return {"jobs": len(ids), "done": counts.get("done", 0), "dead": counts.get("dead", 0),
            "ports": len(ports), "concurrency": conc, "seconds": elapsed,
            "jobs_per_s": len(ids) / elapsed, "max_latency_s": max(lat) if lat else 0.0,
            "enforcer_cpu_ms_per_job": cpu / len(ids) * 1000,
            "switch_cpu_ms_per_job": sw_cpu / len(ids) * 1000}


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k, v in rounds[0].items() if isinstance(v, int | float)]
    return {k: statistics.median(r[k] for r in rounds) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100, help="latency samples per way and repeat")
    ap.add_argument("--repeat", type=int, default=3, help="latency rounds (ways alternate)")
    ap.add_argument("-p", "--ports", type=int, default=16, help="host ports (namespaces)")
    ap.add_argument("--total-ports", type=int, default=1000,
                    help="bridge ports for the throughput run (extra ones are veth pairs)")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--only", default="coa,snmp-v2c,snmp-v3,ssh")
    args = ap.parse_args()
    # SIGTERM ends the run through the finally blocks: the lab is torn down, not leaked.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ways = args.only.split(",")
    results: dict[str, dict[str, object]] = {w: {} for w in ways}
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
                host_ports = port_table(lab)
                rounds: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
                for r in range(args.repeat):
                    order = ways[r % len(ways):] + ways[:r % len(ways)]
                    for way in order:
                        rounds[way].append(latency(
                            lab, way, args.n, work / f"{way}-lat{r}.db", host_ports))
                for way in ways:
                    lat = median_of(rounds[way])
                    results[way]["latency"] = {**lat, "rounds": rounds[way]}
                    print(f"{way:9s} p50 {lat['p50_ms']:7.2f} ms  p99 {lat['p99_ms']:7.2f} ms"
                          f"  cpu/job enforcer {lat['enforcer_cpu_ms_per_job']:5.2f} ms, "
                          f"switch {lat['switch_cpu_ms_per_job']:5.2f} ms"
                          f"  (median of {args.repeat} x {args.n})"
                          + (f"  {lat['fallbacks']:.0f} fell back to SNMP"
                             if lat["fallbacks"] else ""), flush=True)
                add_ports(lab, args.total_ports)
                ports = port_table(lab)
                for i, way in enumerate(w for w in ways if w != "coa"):
                    tp = throughput(lab, way, args.concurrency, work / f"{way}-tp.db", ports,
                                    30 if i % 2 == 0 else 10)
                    results[way]["throughput"] = tp
                    print(f"{way:9s} {tp['jobs_per_s']:7.1f} jobs/s  {tp['jobs']} jobs on "
                          f"{tp['ports']} ports, concurrency {tp['concurrency']}, "
                          f"{tp['seconds']:.1f} s, done {tp['done']}, dead {tp['dead']}, "
                          f"cpu/job enforcer {tp['enforcer_cpu_ms_per_job']:.2f} ms, "
                          f"switch {tp['switch_cpu_ms_per_job']:.2f} ms", flush=True)
            finally:
                sup.stop()
                DEFAULT_POOL.close_all()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "enforce.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
