"""The policy enforcer (draft 4.4, 6.3): turns queued decisions into switch changes.

Per job it picks the way in, per switch:
1. RADIUS CoA first, when the switch takes CoA (``[coa]`` in its inventory entry) and the
   job names a live session (MAC or session id): a CoA-Request with the VLAN (or
   re-authenticate / Disconnect, per ``coa.vlan_method``).
2. If the NAS NAKs (e.g. Error-Cause 401 Unsupported-Attribute, as hostapd does for VLAN
   attributes), cannot be reached, or CoA is not available: the switch's port driver
   (SNMP or SSH) sets the access VLAN and bounces the port so the host notices (DHCP,
   802.1X restart).

The worker loop claims jobs from the durable queue, runs up to ``concurrency`` at once (one
per switch port at a time, which the queue guarantees), keeps their leases alive, and
reports success or failure back; the queue does retries, backoff and dead letters. It wakes
at once for a job queued in this process, or in another one (enforcers/wake.py: PostgreSQL
NOTIFY, a datagram on SQLite); the poll every ``poll_interval`` is the fallback.

The queue itself may fail (SQLite locked by another process, PostgreSQL restarting): the
loop then logs it, backs off (``queue_backoff`` doubling up to ``queue_backoff_max``) and
goes on. An outcome that cannot be recorded is retried until the job's lease runs out; if
it never can be, the lease expires and the job is applied again (at least once; a VLAN
change is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from enforcers.base import DriverError, NetworkDriver
from enforcers.coa import RETRYABLE_CAUSES, CoaDriver
from enforcers.inventory import ResolvedPort, Switch
from enforcers.queue import Job, Queue
from enforcers.wake import Listener, announce_on

log = logging.getLogger(__name__)

DriverFactory = Callable[[Switch, str], NetworkDriver]


def make_driver(switch: Switch, kind: str) -> NetworkDriver:
    """Build the driver ``kind`` ("coa", "snmp", "ssh-linux-bridge", "ssh-cisco-ios")."""
    if kind == "coa":
        return CoaDriver(switch)
    if kind == "snmp":
        from enforcers.snmp import SnmpDriver

        return SnmpDriver(switch)
    if kind == "ssh-linux-bridge":
        from enforcers.ssh import LinuxBridgeDriver

        return LinuxBridgeDriver(switch)
    if kind == "ssh-cisco-ios":
        from enforcers.ssh import CiscoIosDriver

        return CiscoIosDriver(switch)
    raise DriverError(f"unknown driver {kind!r}", retryable=False, switch=switch.name)


class Enforcer:
    """Producer API (``set_vlan``, ``reauth``, ``bounce``) plus the asyncio worker."""

    def __init__(
        self,
        switches: Iterable[Switch],
        queue: Queue,
        *,
        concurrency: int = 16,
        poll_interval: float = 0.5,
        driver_factory: DriverFactory = make_driver,
        session_live: Callable[[Job], bool] | None = None,
        queue_backoff: float = 0.5,
        queue_backoff_max: float = 10.0,
    ) -> None:
        """session_live(job): does the NAS hold a live session for the job's host? The
        server passes a lookup in its sessions table; by default a job that names a MAC or
        a session id is taken as live (a wrong guess costs one NAK'd CoA round trip).
        queue_backoff/queue_backoff_max: pause after a failing queue call, doubling per
        consecutive failure up to the maximum."""
        self.switches = {s.name: s for s in switches}
        self.queue = queue
        # The worker loop's own handle on the queue while run() runs (queue.for_worker()).
        self._worker: Any = None
        #: the cross-process wake-up listener while run() runs (tests)
        self.listener: Listener | None = None
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.driver_factory = driver_factory
        self._drivers: dict[tuple[str, str], NetworkDriver] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.session_live = session_live or (lambda job: bool(job.mac or job.session_id))
        self.queue_backoff = queue_backoff
        self.queue_backoff_max = queue_backoff_max
        #: queue calls that raised since the worker started (tests, metrics)
        self.queue_errors = 0

    @property
    def queue(self) -> Queue:
        return self._queue

    @queue.setter
    def queue(self, queue: Queue) -> None:
        # Whoever swaps the queue in (the server puts its store's queue here), its
        # enqueues wake the enforcer of another process too.
        self._queue = queue
        announce_on(queue)

    @property
    def wq(self) -> Any:
        """The queue as the worker calls it: run()'s own handle, else ``queue``."""
        return self._worker if self._worker is not None else self._queue

    # -- producer side ------------------------------------------------------------------
    def set_vlan(
        self,
        switch: str,
        port: str | None,
        vlan: int,
        *,
        nas_port: int | None = None,
        nas_port_id: str | None = None,
        mac: str | None = None,
        session_id: str | None = None,
        decided_at: float | None = None,
        reason: str = "",
    ) -> int:
        """Queue "put this port in this VLAN". The port may be given by name, NAS-Port or
        NAS-Port-Id; it is resolved now so supersede works on the interface name."""
        sw = self._switch(switch)
        rp = self._resolve(sw, port, nas_port, nas_port_id)
        job_id = self.queue.enqueue(
            "set_vlan", sw.name, rp.name, vlan=vlan, mac=mac, session_id=session_id,
            decided_at=decided_at, payload={"reason": reason} if reason else None)
        self._notify()
        return job_id

    def reauth(self, switch: str, *, mac: str | None = None, session_id: str | None = None,
               port: str | None = None, decided_at: float | None = None) -> int:
        """Queue "make the NAS re-authenticate this session"."""
        sw = self._switch(switch)
        job_id = self.queue.enqueue("reauth", sw.name, "", mac=mac, session_id=session_id,
                                    decided_at=decided_at,
                                    payload={"port": port} if port else None)
        self._notify()
        return job_id

    def bounce(self, switch: str, port: str, *, decided_at: float | None = None) -> int:
        sw = self._switch(switch)
        rp = self._resolve(sw, port, None, None)
        job_id = self.queue.enqueue("bounce", sw.name, rp.name, decided_at=decided_at)
        self._notify()
        return job_id

    def _notify(self) -> None:
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            wake.set()
            return
        # Queued from another thread (the server decides in its lanes): an asyncio.Event
        # set there would not wake the sleeping loop, and the job would wait for the poll.
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(wake.set)

    # -- drivers ------------------------------------------------------------------------
    def _switch(self, name: str) -> Switch:
        try:
            return self.switches[name]
        except KeyError:
            raise DriverError(f"unknown switch {name!r}", retryable=False,
                              switch=name) from None

    @staticmethod
    def _resolve(sw: Switch, port: str | None, nas_port: int | None,
                 nas_port_id: str | None) -> ResolvedPort:
        try:
            return sw.ports.resolve(name=port, nas_port=nas_port, nas_port_id=nas_port_id)
        except LookupError as exc:
            raise DriverError(f"{sw.name}: {exc}", retryable=False, switch=sw.name) from exc

    def driver(self, sw: Switch, kind: str) -> NetworkDriver:
        """The cached driver of this kind for this switch (drivers are long-lived)."""
        key = (sw.name, kind)
        if key not in self._drivers:
            self._drivers[key] = self.driver_factory(sw, kind)
        return self._drivers[key]

    def port_driver(self, sw: Switch) -> NetworkDriver | None:
        return None if sw.driver == "coa" else self.driver(sw, sw.driver)

    async def close(self) -> None:
        for drv in self._drivers.values():
            with contextlib.suppress(Exception):
                await drv.close()
        self._drivers.clear()

    # -- applying one job ---------------------------------------------------------------
    async def apply(self, job: Job) -> str:
        """Apply a claimed job; returns a one-line result. Raises DriverError."""
        sw = self._switch(job.switch)
        if job.kind == "set_vlan":
            return await self._apply_set_vlan(sw, job)
        if job.kind == "reauth":
            return await self._apply_reauth(sw, job)
        if job.kind == "bounce":
            drv = self.port_driver(sw) or self.driver(sw, "coa")
            await drv.bounce_port(job.port)
            return f"{drv.name} bounce"
        raise DriverError(f"unknown job kind {job.kind!r}", retryable=False, switch=sw.name)

    async def _apply_set_vlan(self, sw: Switch, job: Job) -> str:
        if job.vlan is None:
            raise DriverError("set_vlan job without a VLAN", retryable=False, switch=sw.name)
        notes: list[str] = []
        coa_error: DriverError | None = None
        live = self.session_live(job)
        if sw.coa is not None and live and sw.coa.vlan_method != "none":
            coa = self.driver(sw, "coa")
            assert isinstance(coa, CoaDriver)
            try:
                method = sw.coa.vlan_method
                if method == "coa-vlan":
                    res = await coa.change_vlan(job.vlan, mac=job.mac, session=job.session_id)
                elif method == "reauthenticate":
                    res = await coa.reauthenticate(mac=job.mac, session=job.session_id)
                else:
                    res = await coa.disconnect(mac=job.mac, session=job.session_id)
                if res.ok:
                    return f"coa {res.method}: {res.detail}"
                notes.append(f"coa {res.method}: {res.detail}")
                if res.error_cause in RETRYABLE_CAUSES:
                    coa_error = DriverError(res.detail, retryable=True, switch=sw.name,
                                            error_cause=res.error_cause)
                else:
                    coa_error = DriverError(res.detail, retryable=False, switch=sw.name,
                                            error_cause=res.error_cause)
            except DriverError as exc:
                notes.append(f"coa failed: {exc}")
                coa_error = exc
            log.info("job %d: CoA did not apply (%s); falling back to %s", job.id,
                     notes[-1], sw.driver)
        drv = self.port_driver(sw)
        if drv is None:
            raise coa_error or DriverError(
                f"{sw.name}: no live session for CoA and no port driver", retryable=False,
                switch=sw.name)
        await drv.set_port_vlan(job.port, job.vlan)
        done = f"{drv.name} set VLAN {job.vlan}"
        if sw.bounce_after_vlan:
            await drv.bounce_port(job.port)
            done += " + bounce"
        return "; ".join([*notes, done])

    async def _apply_reauth(self, sw: Switch, job: Job) -> str:
        port = job.payload.get("port")
        can_bounce = bool(port) and sw.driver != "coa"
        notes: list[str] = []
        if sw.coa is not None:
            coa = self.driver(sw, "coa")
            try:
                # NAS-Port-Id only when nothing better identifies the session.
                res = await coa.reauthenticate(
                    mac=job.mac, session=job.session_id,
                    port=None if (job.mac or job.session_id) else port)
            except DriverError as exc:
                if not can_bounce:
                    raise
                notes.append(f"coa failed: {exc}")
            else:
                if res.ok:
                    return f"coa {res.method}: {res.detail}"
                if not can_bounce:
                    raise DriverError(res.detail, retryable=res.error_cause in RETRYABLE_CAUSES,
                                      switch=sw.name, error_cause=res.error_cause)
                notes.append(f"coa {res.method}: {res.detail}")
        drv = self.port_driver(sw)
        if drv is None or not port:
            raise DriverError(f"{sw.name}: cannot re-authenticate without CoA or a port",
                              retryable=False, switch=sw.name)
        await drv.bounce_port(port)
        return "; ".join([*notes, f"{drv.name} bounce {port}"])

    # -- worker -------------------------------------------------------------------------
    async def _process(self, job: Job) -> None:
        keeper = asyncio.create_task(self._keep_lease(job.id))
        try:
            error: tuple[str, bool] | None = None
            try:
                result = await self.apply(job)
            except DriverError as exc:
                error = (str(exc), exc.retryable)
            except Exception as exc:  # noqa: BLE001 - a bug in one job must not stop the loop
                log.exception("job %d: unexpected error", job.id)
                error = (f"{type(exc).__name__}: {exc}", True)
            if error is None:
                await self._record(job, "complete", lambda: self.wq.complete(job.id, result))
            else:
                text, retryable = error
                await self._record(job, "fail", lambda: self.wq.fail(
                    job.id, text, retryable=retryable))
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _record(self, job: Job, what: str, call: Callable[[], object]) -> None:
        """Write a job's outcome, retrying while the queue fails, for at most one lease: past
        it the claim is void anyway and the job is applied again (at least once)."""
        deadline = time.monotonic() + self.queue.lease
        delay = self.queue_backoff
        while True:
            try:
                call()
                return
            except Exception as exc:  # noqa: BLE001 - any store error (locked, connection lost)
                self.queue_errors += 1
                if time.monotonic() + delay > deadline:
                    log.error("job %d: queue failed recording %s (%s: %s); giving up, the job "
                              "is applied again when its lease expires", job.id, what,
                              type(exc).__name__, exc)
                    return
                log.warning("job %d: queue failed recording %s (%s: %s); retrying in %.1f s",
                            job.id, what, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(self.queue_backoff_max, delay * 2)

    async def _keep_lease(self, job_id: int) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.queue.lease / 3))
            try:
                self.wq.extend(job_id)
            except Exception as exc:  # noqa: BLE001 - the next renewal may work
                self.queue_errors += 1
                log.warning("job %d: lease renewal failed (%s: %s)", job_id,
                            type(exc).__name__, exc)

    async def run_once(self, limit: int | None = None) -> int:
        """Claim due jobs and apply them concurrently; returns how many were processed."""
        jobs = self.queue.claim(limit or self.concurrency)
        if jobs:
            await asyncio.gather(*(self._process(j) for j in jobs))
        return len(jobs)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """The worker loop: runs until ``stop`` is set, then finishes in-flight jobs.

        Never ends because the queue failed: a failing claim is logged, the loop backs off
        and tries again (see the module docstring)."""
        stop = stop or asyncio.Event()
        self._wake = asyncio.Event()
        tasks: set[asyncio.Task[Any]] = set()
        failures = 0
        released = False
        wake = self._wake
        self._loop = asyncio.get_running_loop()
        self.listener = Listener(self._queue, wake.set)
        try:
            await self.listener.start()
        except Exception as exc:  # noqa: BLE001 - the poll still finds every job
            log.warning("no cross-process wake-up for the enforcer: %s", exc)
        try:
            while not stop.is_set():
                if self._worker is None:
                    try:
                        worker = getattr(self._queue, "for_worker", None)
                        self._worker = worker() if worker is not None else self._queue
                    except Exception:  # noqa: BLE001 - locked: try again below, backed off
                        self._worker = None
                q = self.wq
                # Clear before claiming: a job queued from now on sets it again.
                self._wake.clear()
                free = self.concurrency - len(tasks)
                try:
                    if not released:
                        release = getattr(q, "release_dead_local_claims", None)
                        if release is not None:  # a restart resumes a dead run's pushes
                            release()
                        released = True
                    jobs = q.claim(free) if free > 0 else []
                    # A full claim may have left more due jobs: claim again at once.
                    # Otherwise nothing more is claimable now; wait (one claim per wake-up).
                    due = None if jobs and len(jobs) >= free else q.next_due()
                except Exception as exc:  # noqa: BLE001 - store locked, database down, ...
                    failures += 1
                    self.queue_errors += 1
                    delay = min(self.queue_backoff_max,
                                self.queue_backoff * 2 ** min(failures - 1, 30))
                    log.error("enforcement queue unavailable (%s: %s); attempt %d failed, "
                              "retrying in %.1f s", type(exc).__name__, exc, failures, delay)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                if failures:
                    log.warning("enforcement queue available again after %d failed "
                                "attempt(s)", failures)
                    failures = 0
                for job in jobs:
                    t = asyncio.create_task(self._process(job))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                if jobs and len(jobs) >= free:
                    await asyncio.sleep(0)
                    continue
                # Sleep until woken by a new job, a job finishing, the next due retry or
                # the poll interval (another process may have queued work). A job already
                # due but not claimed waits for its port's job in flight: the end of that
                # one wakes us, so it is no reason to spin.
                timeout = self.poll_interval
                if due is not None and due > q.clock():
                    timeout = min(timeout, due - q.clock())
                waiters = [asyncio.create_task(self._wake.wait()),
                           asyncio.create_task(stop.wait())]
                if tasks:
                    waiters.append(asyncio.create_task(asyncio.wait(
                        set(tasks), return_when=asyncio.FIRST_COMPLETED)))
                _, pending = await asyncio.wait(waiters, timeout=max(timeout, 0.01),
                                                return_when=asyncio.FIRST_COMPLETED)
                for w in pending:
                    w.cancel()
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._wake = self._loop = None
            await self.listener.close()
            self.listener = None
            if self._worker is not None and self._worker is not self._queue:
                with contextlib.suppress(Exception):
                    self._worker.close()
            self._worker = None

    async def drain(self, timeout: float = 60.0) -> None:
        """Run until no job is pending or claimed (tests, CLI one-shot), or timeout."""
        deadline = time.monotonic() + timeout
        stop = asyncio.Event()
        runner = asyncio.create_task(self.run(stop))
        try:
            while time.monotonic() < deadline:
                try:
                    counts = self.queue.counts()
                except Exception:  # noqa: BLE001 - the worker logs and backs off itself
                    counts = {"pending": 1}
                if not counts.get("pending") and not counts.get("claimed"):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await runner
