"""Enforcer end to end on the lab switch: CoA first, NAK -> SNMP/SSH fallback, outages,
restart resume. Real hostapd DAS, snmpd and sshd in the switch namespace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
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
from tests.lab.fixtures import Lab, restore_mgmt, silence_mgmt, switch_lab
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


UNREACHABLE_S = 30.0  # issue #6: "a switch that is unreachable for 30 s"
REFUSING_S = 60.0  # issue #8: "a switch that refuses connections for 60 s"


def test_outages_jobs_wait_and_complete(tmp_path: Path) -> None:
    """Two switches at once, each managed over SNMP and over SSH (one port per driver):
    switch A is unreachable for 30 s (its management packets vanish: timeouts), switch B
    refuses connections for 60 s (sshd and snmpd stopped). Jobs queued during the outages
    back off and wait in the store (pending or in flight, never dead), a decision queued
    during the outage supersedes the older one, and every job is applied once its switch
    is back. The outages overlap, so the test takes about a minute."""
    q = queue(tmp_path, base_delay=0.5, max_delay=4.0)
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(switch_lab(tmp_path / "a", sshd=True, snmpd=True,
                                           initial=INITIAL))
        b = stack.enter_context(switch_lab(tmp_path / "b", sshd=True, snmpd=True,
                                           initial=INITIAL))
        stack.callback(DEFAULT_POOL.close_all)
        inventory = [entry(lab, drv, name=f"{tag}-{drv}", coa=None)
                     for tag, lab in (("A", a), ("B", b))
                     for drv in ("snmp", "ssh-linux-bridge")]
        enf = Enforcer(inventory, q, concurrency=8)
        port = {"snmp": "swp2", "ssh-linux-bridge": "swp3"}
        asyncio.run(_outages(enf, q, a, b, port))
        assert (a.switch.port_vlan("swp2"), a.switch.port_vlan("swp3")) == (30, 30)
        assert (b.switch.port_vlan("swp2"), b.switch.port_vlan("swp3")) == (20, 30)
        assert a.switch.reachable(a.switch.hosts[1], a.switch.hosts[2])  # both now in 30
    assert q.counts().get("dead", 0) == 0


async def _outages(enf: Enforcer, q: JobQueue, a: Lab, b: Lab, port: dict[str, str]) -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(enf.run(stop))
    # Before: one job per driver, so each has its engine / pooled SSH session open when
    # the switch goes away (a session then hangs until the SSH timeout, not 30 s).
    warm = [enf.set_vlan(f"{t}-{d}", p, 10 if p == "swp2" else 20)
            for t in "AB" for d, p in port.items()]
    await _until(q, warm, "done", 30)

    t0 = time.monotonic()
    await asyncio.to_thread(silence_mgmt, a.switch)
    await asyncio.to_thread(_stop_daemons, b)
    old = enf.set_vlan("A-snmp", "swp2", 20)
    jobs_a = [enf.set_vlan("A-ssh-linux-bridge", "swp3", 30)]
    jobs_b = [enf.set_vlan("B-snmp", "swp2", 20), enf.set_vlan("B-ssh-linux-bridge", "swp3", 30)]
    await asyncio.sleep(10)
    jobs_a.append(enf.set_vlan("A-snmp", "swp2", 30))  # a newer decision during the outage

    await _sleep_until(t0 + UNREACHABLE_S - 2)
    _assert_waiting(q, jobs_a, min_attempts=3, max_attempts=20)
    assert q.get(old).state == "superseded"  # type: ignore[union-attr]
    assert (a.switch.port_vlan("swp2"), a.switch.port_vlan("swp3")) == (10, 20)
    await _sleep_until(t0 + UNREACHABLE_S)
    await asyncio.to_thread(restore_mgmt, a.switch)
    back_a = time.monotonic()
    await _until(q, jobs_a, "done", 20)
    print(f"unreachable {UNREACHABLE_S:.0f} s: switch A's jobs done "
          f"{time.monotonic() - back_a:.1f} s after it came back")

    await _sleep_until(t0 + REFUSING_S - 2)
    _assert_waiting(q, jobs_b, min_attempts=4, max_attempts=30)
    assert (b.switch.port_vlan("swp2"), b.switch.port_vlan("swp3")) == (10, 20)
    await _sleep_until(t0 + REFUSING_S)
    await asyncio.to_thread(_start_daemons, b)
    back_b = time.monotonic()
    await _until(q, jobs_b, "done", 20)
    print(f"refusing {REFUSING_S:.0f} s: switch B's jobs done "
          f"{time.monotonic() - back_b:.1f} s after it came back")
    for jid in jobs_a + jobs_b:
        job = q.get(jid)
        assert job is not None
        print(f"  job {jid} {job.switch} {job.port} -> VLAN {job.vlan}: {job.attempts} "
              f"attempts, decision->applied {job.latency:.1f} s; last error {job.last_error}")
    stop.set()
    await worker
    await enf.close()


def _assert_waiting(q: JobQueue, ids: list[int], *, min_attempts: int,
                    max_attempts: int) -> None:
    """Jobs of a switch that is still away: waiting, retried with backoff, never dead."""
    now = q.clock()
    for jid in ids:
        job = q.get(jid)
        assert job is not None
        assert job.state in ("pending", "claimed"), job
        assert job.last_error, job  # it was tried and failed
        # Backoff: a few tries, not one per driver timeout (0.3 s SNMP, 3 s SSH)...
        assert min_attempts <= job.attempts <= max_attempts, job
        if job.state == "pending":  # ... and the next one is scheduled ahead, within the cap
            assert now - 2.0 <= job.next_attempt_at <= now + 4.5, job


def _stop_daemons(lab: Lab) -> None:
    """sshd and snmpd gone: new connections are refused, and the sshd serving our pooled
    session goes too (it runs in a session of its own, so stopping the listener alone
    would leave it, and the job would quietly go through the old session)."""
    assert lab.sshd is not None and lab.snmpd is not None
    lab.sshd.stop()
    lab.snmpd.stop()
    for pid in run(["ip", "netns", "pids", lab.switch.ns]).stdout.split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(int(pid), signal.SIGKILL)


def _start_daemons(lab: Lab) -> None:
    assert lab.sshd is not None and lab.snmpd is not None
    lab.sshd.start()
    lab.snmpd.start()


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def _until(q: JobQueue, ids: list[int], state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(q.get(j).state == state for j in ids):  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError([q.get(j) for j in ids])
        await asyncio.sleep(0.1)


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
