"""Enforcer end to end on the lab switch: CoA first, NAK -> SNMP/SSH fallback, outages,
restart resume. Real hostapd DAS, snmpd and sshd in the switch namespace."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from enforcers.enforcer import Enforcer
from enforcers.inventory import Switch
from enforcers.queue import JobQueue
from enforcers.ssh import DEFAULT_POOL
from tests.lab import start_supplicant
from tests.lab.fixtures import Lab, switch_lab
from tests.lab.netns import run

pytestmark = [pytest.mark.netns, pytest.mark.peer]
SECRET = "das-secret"
INITIAL = {1: 10, 2: 10, 3: 20}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with switch_lab(tmp_path_factory.mktemp("enf"), sshd=True, snmpd=True,
                    hostapd_port="swp1", das_secret=SECRET, initial=INITIAL) as lab:
        yield lab
    DEFAULT_POOL.close_all()


@pytest.fixture
def fresh(lab: Lab) -> Iterator[Lab]:
    yield lab
    if not _mgmt_up(lab):
        lab.switch.mgmt_up()
    for i, vlan in INITIAL.items():
        port = f"swp{i}"
        if lab.switch.port_vlan(port) != vlan:
            lab.switch.set_port_vlan(port, vlan)


def _mgmt_up(lab: Lab) -> bool:
    out = run(["ip", "-j", "link", "show", lab.switch.mgmt_root_if]).stdout
    return "UP" in json.loads(out)[0].get("flags", [])


def entry(lab: Lab, driver: str, **over: object) -> Switch:
    assert lab.sshd is not None and lab.snmpd is not None
    sw = lab.switch
    data: dict[str, object] = {
        "name": "labsw", "address": sw.mgmt_ip, "driver": driver, "vendor": "linux",
        "snmp": {"version": "2c", "community": lab.snmpd.community, "timeout": 0.3,
                 "retries": 0},
        "ssh": {"username": lab.sshd.user, "key_file": str(lab.sshd.key_file),
                "timeout": 3},
        "coa": {"secret": SECRET, "timeout": 0.3, "retries": 0},
        "ports": {"table": [{"name": p, "ifindex": sw.ifindex(p)} for p in sw.ports]},
        "linux_bridge": {"vlan_mode": sw.mode, "vlan_bridge_pattern": sw.vlan_bridge_pattern},
        "bounce_down_seconds": 0.1,
    }
    data.update(over)
    return Switch.model_validate(data)


def queue(tmp_path: Path, **kw: object) -> JobQueue:
    kw.setdefault("base_delay", 0.3)
    kw.setdefault("max_delay", 1.0)
    kw.setdefault("max_attempts", 50)
    kw.setdefault("lease", 10.0)
    return JobQueue(tmp_path / "nac.db", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("driver", ["snmp", "ssh-linux-bridge"])
def test_coa_nak_falls_back_to_port_driver(fresh: Lab, tmp_path: Path, driver: str) -> None:
    sw = fresh.switch
    h1, h2, h3 = sw.hosts
    q = queue(tmp_path)
    enf = Enforcer([entry(fresh, driver)], q)
    # Live session (MAC known): CoA first; hostapd NAKs the VLAN attributes (401).
    jid = enf.set_vlan("labsw", "swp1", 20, mac=h1.mac, decided_at=time.time())

    async def go() -> None:
        await enf.drain(30)
        await enf.close()

    asyncio.run(go())
    job = q.get(jid)
    assert job is not None and job.state == "done", job
    assert "CoA-NAK Error-Cause 401 (Unsupported-Attribute)" in (job.result or "")
    assert f"{driver} set VLAN 20 + bounce" in (job.result or "")
    assert sw.port_vlan("swp1") == 20 and sw.port_is_up("swp1")
    assert sw.reachable(h1, h3)  # host 1 joined host 3's VLAN
    assert not sw.ping(h1, h2, count=1)  # and left host 2's
    print(f"{driver}: CoA NAK + fallback, decision->applied {job.latency * 1000:.0f} ms")


def test_no_session_goes_straight_to_port_driver(fresh: Lab, tmp_path: Path) -> None:
    q = queue(tmp_path)
    enf = Enforcer([entry(fresh, "snmp")], q)
    jid = enf.set_vlan("labsw", "swp3", 10)
    asyncio.run(_drain(enf))
    job = q.get(jid)
    assert job is not None and job.state == "done"
    assert job.result == "snmp set VLAN 10 + bounce"
    assert fresh.switch.port_vlan("swp3") == 10


def test_coa_ack_is_enough_for_a_live_session(fresh: Lab, tmp_path: Path) -> None:
    """vlan_method=disconnect on a NAS that has the session: the ACK completes the job."""
    h1 = fresh.switch.hosts[0]
    sup = start_supplicant(h1.ns, tmp_path / "wpa")
    try:
        deadline = time.monotonic() + 10
        while "received EAPOL-Start" not in fresh.hostapd.log_text():  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        q = queue(tmp_path)
        sw_entry = entry(fresh, "snmp")
        assert sw_entry.coa is not None
        sw_entry = sw_entry.model_copy(update={"coa": sw_entry.coa.model_copy(
            update={"vlan_method": "disconnect"})})
        enf = Enforcer([sw_entry], q)
        jid = enf.set_vlan("labsw", "swp1", 30, mac=h1.mac)
        asyncio.run(_drain(enf))
        job = q.get(jid)
        assert job is not None and job.state == "done"
        assert job.result == "coa disconnect: Disconnect-ACK"
    finally:
        sup.stop()


async def _drain(enf: Enforcer, timeout: float = 30) -> None:
    await enf.drain(timeout)
    await enf.close()


@pytest.mark.parametrize("driver", ["snmp", "ssh-linux-bridge"])
def test_unreachable_switch_jobs_wait_and_apply(fresh: Lab, tmp_path: Path, driver: str) -> None:
    """Management link down for a few seconds (30 s in production terms, shortened by a
    0.3 s..1 s backoff): jobs back off, nothing is lost, the latest decision wins."""
    sw = fresh.switch
    q = queue(tmp_path)
    enf = Enforcer([entry(fresh, driver, coa=None)], q)
    sw.mgmt_down()
    outage = 4.0

    async def scenario() -> None:
        stop = asyncio.Event()
        worker = asyncio.create_task(enf.run(stop))
        a = enf.set_vlan("labsw", "swp2", 20)
        b = enf.set_vlan("labsw", "swp3", 30)
        await asyncio.sleep(outage / 2)
        c = enf.set_vlan("labsw", "swp2", 30)  # supersedes a while it waits
        await asyncio.sleep(outage / 2)
        for jid in (b, c):
            job = q.get(jid)
            assert job is not None and job.state in ("pending", "claimed")
        assert q.get(b).attempts >= 2 and q.get(b).last_error  # type: ignore[union-attr]
        # a was in flight when c came: it is superseded when its attempt fails
        await asyncio.sleep(1.5)
        assert q.get(a).state == "superseded"  # type: ignore[union-attr]
        sw.mgmt_up()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(q.get(j).state == "done" for j in (b, c)):  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.1)
        stop.set()
        await worker
        await enf.close()
        for jid in (b, c):
            job = q.get(jid)
            assert job is not None and job.state == "done", job
            print(f"{driver}: job {jid} applied after {job.attempts} attempts, "
                  f"decision->applied {job.latency:.2f} s")

    try:
        asyncio.run(scenario())
    finally:
        if not _mgmt_up(fresh):
            sw.mgmt_up()
    assert sw.port_vlan("swp2") == 30 and sw.port_vlan("swp3") == 30
    assert q.counts().get("dead", 0) == 0


def test_restart_resumes_claimed_job(fresh: Lab, tmp_path: Path) -> None:
    """A worker dies holding a job: after its lease expires a new process applies it."""
    first = queue(tmp_path, lease=1.0, owner="dead-worker")
    jid = first.enqueue("set_vlan", "labsw", "swp2", vlan=30)
    assert [j.id for j in first.claim()] == [jid]
    first.close()
    second = queue(tmp_path, lease=1.0, owner="new-worker")
    enf = Enforcer([entry(fresh, "ssh-linux-bridge")], second)
    time.sleep(1.1)
    asyncio.run(_drain(enf))
    job = second.get(jid)
    assert job is not None and job.state == "done" and job.attempts == 2
    assert fresh.switch.port_vlan("swp2") == 30


def test_reauth_nak_bounces_the_port(fresh: Lab, tmp_path: Path) -> None:
    """reauth for a MAC the NAS has no session for: Disconnect-NAK, then an SNMP bounce."""
    q = queue(tmp_path)
    enf = Enforcer([entry(fresh, "snmp")], q)
    jid = enf.reauth("labsw", mac="02:00:00:00:00:77", port="swp2")
    no_port = enf.reauth("labsw", mac="02:00:00:00:00:78")
    asyncio.run(_drain(enf))
    job = q.get(jid)
    assert job is not None and job.state == "done", job
    assert job.result == ("coa disconnect: Disconnect-NAK Error-Cause 503 "
                          "(Session-Context-Not-Found); snmp bounce swp2")
    assert fresh.switch.port_is_up("swp2")
    dead = q.get(no_port)
    assert dead is not None and dead.state == "dead" and dead.attempts == 1
    assert "Session-Context-Not-Found" in (dead.last_error or "")


def test_session_lookup_decides_coa_or_not(fresh: Lab, tmp_path: Path) -> None:
    """The server's session table says the host is gone: no CoA attempt at all."""
    q = queue(tmp_path)
    enf = Enforcer([entry(fresh, "snmp")], q, session_live=lambda job: False)
    jid = enf.set_vlan("labsw", "swp3", 30, mac=fresh.switch.hosts[2].mac)
    asyncio.run(_drain(enf))
    job = q.get(jid)
    assert job is not None and job.result == "snmp set VLAN 30 + bounce"


def test_worker_survives_a_failing_queue(fresh: Lab, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """The store fails under the worker: another process holds the SQLite write lock (to
    the loop this is what PostgreSQL down looks like: every queue call raises). The loop
    logs, backs off and goes on; jobs apply once the store is back, and an outcome that
    could not be written at first is written later rather than the job applied twice."""
    caplog.set_level(logging.WARNING, logger="enforcers.enforcer")
    sw = fresh.switch
    q = queue(tmp_path)
    q.conn.execute("PRAGMA busy_timeout=50")  # fail fast instead of blocking 10 s per call
    enf = Enforcer([entry(fresh, "snmp", coa=None, bounce_down_seconds=1.0)], q,
                   queue_backoff=0.1, queue_backoff_max=0.4)
    locker = sqlite3.connect(tmp_path / "nac.db", isolation_level=None)

    async def until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        stop = asyncio.Event()
        a = enf.set_vlan("labsw", "swp3", 30)
        locker.execute("BEGIN EXCLUSIVE")  # 1: claim() raises
        worker = asyncio.create_task(enf.run(stop))
        await asyncio.sleep(1.5)
        assert not worker.done()
        assert enf.queue_errors >= 3
        job = q.get(a)  # WAL: readers still read
        assert job is not None and job.state == "pending" and job.attempts == 0
        assert sw.port_vlan("swp3") == 20
        locker.execute("ROLLBACK")
        await until(lambda: q.get(a).state == "done")  # type: ignore[union-attr]
        assert sw.port_vlan("swp3") == 30

        b = enf.set_vlan("labsw", "swp2", 20)
        await until(lambda: q.get(b).state == "claimed")  # type: ignore[union-attr]
        errors = enf.queue_errors
        locker.execute("BEGIN EXCLUSIVE")  # 2: complete() raises (job in its 1 s bounce)
        await asyncio.sleep(2.5)
        assert sw.port_vlan("swp2") == 20  # applied on the switch ...
        assert q.get(b).state == "claimed"  # type: ignore[union-attr]  # ... not recorded yet
        assert enf.queue_errors > errors and not worker.done()
        locker.execute("ROLLBACK")
        await until(lambda: q.get(b).state == "done")  # type: ignore[union-attr]
        assert q.get(b).attempts == 1  # type: ignore[union-attr]  # recorded, not redone
        stop.set()
        await worker
        await enf.close()

    try:
        asyncio.run(scenario())
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
    assert "enforcement queue unavailable (OperationalError: database is locked)" in caplog.text
    assert "enforcement queue available again" in caplog.text
    assert "queue failed recording complete" in caplog.text
