"""Two real `nac serve` on one PostgreSQL store share one enforcement job queue.

Decisions taken by radclient MAB on either server queue VLAN pushes (enforce_on_auth) to a
lab switch driven over SNMP (net-snmp snmpd with the Q-BRIDGE script, in a network
namespace). Each job is applied by exactly one server; a job held by a server that is
SIGKILLed mid-push is taken by the other once its lease expires.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from nac.store.pg_jobs import PgJobQueue
from tests.conftest import NacServer, nac_cmd, radclient, start_server
from tests.lab.fixtures import Lab, switch_lab
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)
from tests.test_metrics_serve import free_tcp_port, scrape

pytestmark = [pytest.mark.peer, pytest.mark.netns]

LEASE = 3.0
UNKNOWN = "02:00:00:00:6a:01"  # quarantine: VLAN 10
KNOWN = "02:00:00:00:6a:02"  # registered normal: VLAN 30
APPLIED = re.compile(r"job (\d+) set_vlan labsw (\S+) vlan=(\d+) applied")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with switch_lab(tmp_path / "lab", snmpd=True, initial={1: 20, 2: 20, 3: 20}) as lab:
        yield lab


def config(lab: Lab) -> str:
    assert lab.snmpd is not None
    lines = [
        "[[clients]]", 'address = "127.0.0.1"', 'secret = "testing123"', 'name = "labsw"', "",
        "[[switches]]", 'name = "labsw"', f'address = "{lab.switch.mgmt_ip}"',
        'driver = "snmp"', "enforce_on_auth = true", "bounce_after_vlan = false",
        # One try with a long timeout: a push to a stalled switch stays in flight (claimed).
        "[switches.snmp]", 'version = "2c"', f'community = "{lab.snmpd.community}"',
        "timeout = 30", "retries = 0", "",
    ]
    for port in lab.switch.ports:
        lines += ["[[switches.ports.table]]", f'name = "{port}"',
                  f"ifindex = {lab.switch.ifindex(port)}", ""]
    return "\n".join(lines)


def mab(srv: NacServer, mac: str, port: str) -> None:
    r = radclient(srv.auth_port, "auth",
                  f'User-Name = "{mac.replace(":", "")}", Calling-Station-Id = "{mac}", '
                  f'Service-Type = Call-Check, NAS-Port-Id = "{port}", '
                  "Message-Authenticator = 0x00")
    assert r.code == "Access-Accept", r.raw


def wait(cond, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


def test_two_servers_one_queue(lab: Lab, pg_server: PgServer,  # noqa: F811
                               tmp_path: Path) -> None:
    url = pg_server.create_database(migrate=True)
    cfg = tmp_path / "nac.toml"
    cfg.write_text(config(lab))
    r = subprocess.run([*nac_cmd(), "nodes", "set", KNOWN, "normal", "--store", url,
                        "--state-dir", str(tmp_path / "cli")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    servers: list[NacServer] = []
    mport = {"a": free_tcp_port(), "b": free_tcp_port()}
    queue = PgJobQueue(url)
    snmpd = lab.snmpd.proc if lab.snmpd else None
    assert snmpd is not None
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(start_server(tmp_path / name, "--config", str(cfg), "--store", url,
                                        "--job-lease", str(LEASE), "--posture", "off",
                                        "--metrics", f"127.0.0.1:{mport[name]}"))
        a, b = servers

        # 1. Decisions on both servers, alternating VLANs per port: every job ends done or
        # superseded, each done job applied by exactly one server, ports as last decided.
        last: dict[str, int] = {}
        for i in range(12):
            port = lab.switch.ports[i % 3]
            mac = UNKNOWN if (i // 3) % 2 == 0 else KNOWN
            mab(a if i % 2 == 0 else b, mac, port)
            last[port] = 10 if mac == UNKNOWN else 30

        def settled() -> bool:
            counts = queue.counts()
            return counts.get("pending", 0) == 0 and counts.get("claimed", 0) == 0 \
                and sum(counts.values()) == 12
        wait(settled, 30, "all 12 jobs applied or superseded")
        jobs = queue.list_jobs()
        assert {j.state for j in jobs} <= {"done", "superseded"}, [j.as_dict() for j in jobs]
        done = {j.id for j in jobs if j.state == "done"}
        applied = Counter(int(m.group(1)) for srv in servers
                          for m in APPLIED.finditer(srv.log()))
        assert set(applied) == done and set(applied.values()) == {1}, applied
        for port, vlan in last.items():
            assert lab.switch.port_vlan(port) == vlan, (port, lab.switch.port_vlans(port))
        by = {name: sum(1 for m in APPLIED.finditer(srv.log()))
              for name, srv in (("a", a), ("b", b))}
        print(f"jobs applied by server: {by}; states {queue.counts()}")
        # Both servers' /metrics count the one shared queue, not a local one.
        counts = queue.counts()
        for name in ("a", "b"):
            samples = scrape(mport[name])
            jobs = {dict(k[1])["state"]: v for k, v in samples.items()
                    if k[0] == "nac_enforcement_jobs"}
            assert jobs["done"] == counts.get("done", 0) > 0, (name, jobs, counts)
            assert jobs["superseded"] == counts.get("superseded", 0), (name, jobs, counts)

        # 2. The switch stalls; the server that claimed the next push is SIGKILLed with it
        # in flight; the other takes it when the lease runs out and applies it.
        port = lab.switch.ports[0]
        os.kill(snmpd.pid, signal.SIGSTOP)
        try:
            before = {j.id for j in queue.list_jobs()}
            mab(a, KNOWN if last[port] == 10 else UNKNOWN, port)
            want = 40 - last[port]  # 10 <-> 30
            # The server commits a push just after its decision (off its packet loop), with
            # an id from its own block of the sequence: not necessarily the highest.
            wait(lambda: {j.id for j in queue.list_jobs()} - before, 5, "the push queued")
            (job_id,) = {j.id for j in queue.list_jobs()} - before
            wait(lambda: (queue.get(job_id) or queue.list_jobs()[0]).state == "claimed", 15,
                 "the push claimed")
            owner = queue.get(job_id).lease_owner  # type: ignore[union-attr]
            pid = int(str(owner).split(":")[1])
            holder = next(s for s in servers if s.proc.pid == pid)
            other = b if holder is a else a
            holder.proc.kill()
            holder.proc.wait()
            killed_at = time.monotonic()
        finally:
            os.kill(snmpd.pid, signal.SIGCONT)
        wait(lambda: queue.get(job_id).state == "done", 30,  # type: ignore[union-attr]
             "the dead server's job applied by the other")
        took = time.monotonic() - killed_at
        job = queue.get(job_id)
        assert job is not None and job.attempts == 2 and job.vlan == want
        assert [int(m.group(1)) for m in APPLIED.finditer(other.log())].count(job_id) == 1
        assert job_id not in [int(m.group(1)) for m in APPLIED.finditer(holder.log())]
        assert lab.switch.port_vlan(port) == want
        print(f"job {job_id} taken over {took:.1f} s after the SIGKILL (lease {LEASE} s)")
        assert took < LEASE + 10
    finally:
        queue.close()
        for srv in servers:
            srv.stop()
