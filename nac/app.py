"""`nac serve`: wires config, store, policy, EAP and the RADIUS listeners together."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nac.accounts import Account, SecretBox, accounts_from_tables, load_accounts_file, make_account
from nac.authorize import Authorizer
from nac.config import DEMO_ACCOUNT, Config
from nac.enforcement import Target, load_planner
from nac.events import DecisionRecord
from nac.observe import feed_gauges, queue_gauges, request_histogram
from nac.posture.decision import Decision
from nac.posture.policy import PolicyError
from nac.radius.clients import ClientTable, NasClient, profile
from nac.radius.engine import Engine
from nac.radius.server import CommitGate, serve_udp
from nac.runtime import LivePolicy, publish_loaded, unpublish
from nac.store import open_job_queue, open_store
from nac.store.sqlite import WRITER_ENV, SqliteStore

log = logging.getLogger("nac")

REGISTRATION_POLL = 0.5  # seconds: how soon a MAC registered by the CLI takes effect
JOB_LEASE = 30.0  # seconds an enforcement job's claim holds without renewal


def metrics_socket(state_dir: Path, worker_id: int) -> str:
    """Where worker N of a pool serves its metrics; the supervisor's endpoint sums them.
    A file in STATE/run, or an abstract socket named after the state dir when that path
    is too long for a Unix socket address (108 bytes)."""
    path = state_dir.resolve() / "run" / f"metrics-w{worker_id}.sock"
    if len(os.fsencode(path)) < 100:
        return str(path)
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:24]
    return f"\0nac-metrics-{digest}-w{worker_id}"


def build_clients(cfg: Config) -> ClientTable:
    table = []
    for cl in cfg.clients:
        if not cl.require_message_authenticator:
            log.warning(
                "client %s (%s) may send Access-Requests without Message-Authenticator: "
                "exposed to BlastRADIUS (CVE-2024-3596); upgrade it and remove the opt-out",
                cl.name or cl.address, cl.address,
            )
        table.append(NasClient(
            network=cl.address, secret=cl.secret.encode(), name=cl.name or "",
            profile=profile(cl.vendor), group=cl.group,
            require_message_authenticator=cl.require_message_authenticator,
        ))
    return ClientTable(table)


def build_accounts(cfg: Config, state_dir: Path, box: SecretBox) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    if cfg.accounts_file:
        accounts.update(load_accounts_file(Path(cfg.accounts_file)))
    if cfg.accounts:
        accounts.update(accounts_from_tables(
            {k: v.model_dump(exclude_none=True) for k, v in cfg.accounts.items()}
        ))
    if cfg.embedded:
        name, password = DEMO_ACCOUNT
        accounts[name] = make_account(name, password, role="default", allow_md5=True, box=box)
    return accounts


def build_eap(cfg: Config, state_dir: Path, accounts: dict[str, Account], box: SecretBox,
              judge: Any, holds: Any = None) -> Any:
    """The EAP service, with the PKI the embedded default creates on first start, and the
    posture method (EAP-TNC) run inside tunnels after authentication."""
    try:
        from nac.eap.methods.tnc import tnc_posture
        from nac.eap.service import EapService, config_from_settings
        from nac.pki import ensure_pki
    except ImportError as exc:  # the EAP package is optional in a partial install
        log.warning("EAP disabled: %s", exc)
        return None
    pki = ensure_pki(state_dir)
    posture = (tnc_posture(judge, digest_first=cfg.eap.posture_digest_first, holds=holds)
               if cfg.eap.posture == "tnc" else None)
    log.info("EAP posture method: %s", "EAP-TNC inside the tunnel after authentication"
             if posture else "off (tunnel clients are decided without posture)")
    return EapService(config_from_settings(cfg.eap, pki), accounts.get, box, posture=posture)


# What the IMV tells the host for each kind of segment (TCG IF-TNCCS recommendations).
def recommendation(policy: Any, segment: str) -> str:
    top = max(policy.segments.values(), key=lambda s: s.level).name
    return "allow" if segment == top else "isolate"


def assessment(policy: Any, segment: str) -> int:
    """PA-TNC Assessment Result: 0 compliant, 1 minor, 2 major non-compliance."""
    if segment == max(policy.segments.values(), key=lambda s: s.level).name:
        return 0
    return 2 if segment == policy.isolated_segment else 1


def preload_drivers(switches: list[Any]) -> None:
    """Import the switch drivers the inventory uses now: the enforcer imports one at its
    first push, on the packet loop, and pysnmp's import alone takes most of a second."""
    import importlib

    modules = {"snmp": "enforcers.snmp", "ssh-linux-bridge": "enforcers.ssh",
               "ssh-cisco-ios": "enforcers.ssh"}
    for name in sorted({modules[sw.driver] for sw in switches if sw.driver in modules}):
        importlib.import_module(name)


class Server:
    def __init__(self, cfg: Config, state_dir: Path, *, reuse_port: bool = False,
                 worker_id: int | None = None, job_lease: float = JOB_LEASE) -> None:
        self.cfg = cfg
        self.reuse_port = reuse_port
        self.worker_id = worker_id
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        # A worker of a pool on SQLite sends its records to the pool's one writer process.
        writer = os.environ.pop(WRITER_ENV, None) if worker_id is not None else None
        self.store = open_store(cfg.store, state_dir, writer=writer)
        self.box = SecretBox(state_dir / "keys" / "accounts.key")
        self.accounts = build_accounts(cfg, state_dir, self.box)
        db_path = getattr(self.store, "path", state_dir / "nac.db")
        try:
            self.live = LivePolicy(state_dir, db_path, cfg.policy_file, cfg.segments,
                                   store_url=cfg.store)
        except PolicyError as exc:
            raise ValueError(str(exc)) from None
        self.authorizer = Authorizer(self.live.policy, self.decide_posture)
        self.eap = build_eap(cfg, state_dir, self.accounts, self.box, self.judge_posture,
                             self.posture_certificate_holds)
        # The job queue lives in the store: with PostgreSQL, one queue for every server
        # (a job is taken by one of them; a dead server's jobs go to another when their
        # lease expires). The enforcer backs off while that database is away.
        def open_queue() -> Any:
            # defer_enqueue: with PostgreSQL a push queued after a decision is committed
            # by the queue's writer thread, never on the packet loop (SQLite ignores it).
            return open_job_queue(cfg.store, state_dir, lease=job_lease, defer_enqueue=True)

        self.planner = load_planner(cfg.switches, open_queue, cfg.source)
        self.queue: Any = None
        if self.planner is not None:
            self.queue = self.planner.queue
            preload_drivers(self.planner.switches)
        elif cfg.metrics:
            self.queue = open_queue()
        self.engine = Engine(
            build_clients(cfg), self.authorizer, self.accounts, eap=self.eap,
            on_decision=self.on_decision, on_accounting=self.store.record_accounting,
        )
        self._reg_seq = 0
        self.lanes = {
            "slow": ThreadPoolExecutor(max_workers=2, thread_name_prefix="nac-slow"),
            "eap": ThreadPoolExecutor(max_workers=1, thread_name_prefix="nac-eap"),
        }
        # Housekeeping's store reads, apart from the packet lanes.
        self._house = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nac-house")

    def decide_posture(self, posture: dict[str, Any] | None, role: str, identity: str,
                       group: str | None, vendor: str) -> Decision:
        return self.live.decide(posture, identity=identity, role=role, group=group,
                                vendor=vendor)

    def judge_posture(self, posture: dict[str, Any], outcome: Any) -> tuple[str, int, list[str],
                                                                           bytes | None]:
        """The IMV's verdict inside the tunnel, with a new quarantine certificate for the
        agent; the Access-Accept's decision comes from the same posture by decide_posture."""
        d = self.live.decide(posture, identity=outcome.identity, role=outcome.role, group=None,
                             vendor="generic", certify_it=True)
        policy = self.live.policy
        return (recommendation(policy, d.segment), assessment(policy, d.segment),
                list(d.remediation), d.certificate)

    def posture_certificate_holds(self, posture: dict[str, Any], outcome: Any) -> bool:
        """Whether a digest-only posture's certificate would be relied on (EAP-TNC asks
        before judging it: a stale one goes to the posture memory or the inventory)."""
        return self.live.certificate_holds(posture, outcome.identity)

    async def _start_metrics(self, transports: list[Any], latency: Any) -> Any:
        if not self.cfg.metrics:
            return None
        from nac.metrics import parse_address, start_metrics

        db_path = getattr(self.store, "path", self.state_dir / "nac.db")

        def gauges() -> dict[str, float]:
            out: dict[str, float] = {}
            if self.queue is not None:
                try:
                    out.update(queue_gauges(self.queue))
                except Exception as exc:  # the database is away: export the rest
                    log.debug("metrics: job queue unavailable: %s", exc)
            out.update(feed_gauges(db_path))
            if hasattr(self.store, "backlog"):
                out["store_backlog"] = float(self.store.backlog)
            out["eap_conversations"] = float(self.eap.live) if self.eap is not None else 0.0
            out["registered_nodes"] = float(len(self.authorizer.registered))
            return out

        def health() -> dict[str, bool]:
            return {"store": self.store.healthy(),
                    "listeners": all(not t.is_closing() for t in transports)}

        sources: dict[str, Any] = {
            "counters": lambda: self.engine.counters, "gauges": gauges,
            "histograms": lambda: {"radius_request_seconds": latency}, "health": health}
        if self.worker_id is not None:
            # A worker of a pool: the supervisor serves ADDR:PORT and sums every worker's.
            return await start_metrics(
                "", 0, path=metrics_socket(self.state_dir, self.worker_id), **sources)
        host, port = parse_address(self.cfg.metrics)
        return await start_metrics(host, port, **sources)

    def nas_profile(self, nas: str) -> tuple[str | None, str | None]:
        """(client group, vendor profile) of a NAS address: per-switch VLAN overrides."""
        client = self.engine.clients.lookup(nas)
        return (client.group, client.profile.name) if client else (None, None)

    def on_decision(self, rec: DecisionRecord) -> None:
        self.store.record_decision(rec)
        # Compile the posture for the next feed change's re-evaluation, in the background.
        self.live.observe(rec)
        planner = self.planner
        if planner is None or rec.mac is None:
            return
        sw = planner.switch_for(rec.nas)
        if sw is not None and sw.name in planner.push_on_auth:
            # A switch that ignores RADIUS VLANs: set the port now, by SNMP or SSH.
            try:
                planner.set_vlan(Target.from_decision(rec), rec.vlan, decided_at=rec.at,
                                 reason=f"{rec.source}: {rec.segment}", live=False)
            except Exception as exc:  # the queue's database is away: answer anyway
                log.error("decision for %s: VLAN %d push not queued: %s", rec.mac, rec.vlan,
                          exc)

    def poll_registrations(self) -> None:
        self.apply_registrations(*self.store.registrations_since(self._reg_seq))

    def apply_registrations(self, seq: int, changes: list[tuple[str, str | None]]) -> None:
        for mac, segment in changes:
            if segment is None:
                self.authorizer.registered.pop(mac, None)
            else:
                self.authorizer.registered[mac] = segment
        # Seq 0 asks the store for every registration (a scan of all nodes); once loaded,
        # with no change recorded yet, -1 asks for every change instead (none, cheaply):
        # polling with 0 scanned the whole nodes table twice a second.
        self._reg_seq = seq if seq != 0 else -1

    def reload_if_changed(self) -> None:
        try:
            changed = self.live.poll()
        except Exception as exc:  # e.g. the store is locked by a long feed import
            log.warning("could not check policy/feeds for changes: %s", exc)
            return
        if changed:
            self.authorizer.policy = self.live.policy
            self.authorizer.policy_changed()
            self.engine.policy_changed()
            publish_loaded(self.state_dir, self.live.file_digest)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        # A registration read from the local SQLite file costs a few microseconds: done on
        # the loop. A hop to a thread and back cost more than the read (an idle server
        # burnt ~1.4 ms of CPU a second on these hops). A database over the network may
        # wait for its connect timeout, which must not hold up the packets: PostgreSQL's
        # reads stay in a thread.
        local = isinstance(self.store, SqliteStore)
        tick = 0
        while True:
            await asyncio.sleep(REGISTRATION_POLL)
            tick += 1
            try:
                if local:
                    got = self.store.registrations_since(self._reg_seq)
                else:
                    got = await loop.run_in_executor(
                        self._house, self.store.registrations_since, self._reg_seq)
                self.apply_registrations(*got)
            except Exception as exc:  # the store may be briefly locked or down
                log.warning("could not read registrations: %s", exc)
            if local:
                try:
                    self.store.poll()  # the writer's reports nothing waited for
                except Exception:  # must not end housekeeping
                    log.exception("store poll failed")
            if tick % 2 == 0:
                now = time.time()
                self.engine.expire(now)
                try:
                    # On the loop, where EAP rounds run (the EAP lane runs only their pure
                    # slow work): a purge is a few microseconds, a thread hop is not.
                    self.engine.expire_eap(now)
                except Exception:  # a purge that fails must not end housekeeping
                    log.exception("EAP housekeeping failed")
                self.reload_if_changed()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        self.poll_registrations()
        publish_loaded(self.state_dir, self.live.file_digest)
        latency = request_histogram()
        commits = CommitGate(self.engine)
        if hasattr(self.store, "attach"):
            # The SQLite store hands its records over from this loop and reads the
            # writer's acks on it: replies waiting for a commit are released right there
            # (progress() would hop through call_soon_threadsafe from a store thread).
            self.store.attach(loop)
            self.store.on_commit(commits.release)
        elif hasattr(self.store, "on_commit"):
            self.store.on_commit(commits.progress)
        transports = await serve_udp(
            self.engine, self.cfg.listen, self.cfg.auth_port, self.cfg.acct_port,
            lanes=self.lanes, reuse_port=self.reuse_port, commits=commits, latency=latency,
        )
        metrics = await self._start_metrics(transports, latency)
        # Everything built at start (dictionaries, policy, TLS contexts, module objects)
        # stays: keep it out of the cyclic collector's scans, and collect the young
        # generation less often (the packet path makes few cycles). Measured: MAB server
        # CPU per request 54.9 -> 45.9 us, one worker, medians of 3 alternating runs.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        log.info("ready: %d NAS client(s), %d account(s), EAP %s, store %s",
                 len(self.engine.clients.clients), len(self.accounts),
                 "on" if self.eap is not None else "off", self.store.url)
        house = asyncio.ensure_future(self._housekeeping())
        worker = None
        # One enforcer per server: in a worker pool, worker 0 runs it (the queue's claims
        # would keep two apart anyway, but one is enough and keeps switch sessions pooled).
        if self.planner is not None and self.worker_id in (None, 0):
            log.info("enforcement: %d switch(es) in the inventory, %d pushed after every "
                     "decision; pending jobs resume", len(self.planner.switches),
                     len(self.planner.push_on_auth))
            worker = asyncio.ensure_future(self.planner.enforcer.run(stop))
        monitor = None
        # One intake per server, like the enforcer: a port binds once, a file is read once.
        if self.cfg.monitor is not None and self.worker_id in (None, 0):
            from nac.monitor.server import start_monitor

            monitor = await start_monitor(
                self.cfg.monitor, self.store, lambda: self.live.policy, self.planner,
                state_dir=self.state_dir, nas_profile=self.nas_profile)
        await stop.wait()
        log.info("stopping")
        house.cancel()
        if monitor is not None:
            await monitor.close()
        if metrics is not None:
            metrics.close()
        if worker is not None:
            await asyncio.wait_for(worker, timeout=30)
            await self.planner.enforcer.close()  # type: ignore[union-attr]
        for t in transports:
            t.close()
        unpublish(self.state_dir)
        if self.queue is not None:
            self.queue.close()
        self.live.close()
        self.store.close()
        for lane in (*self.lanes.values(), self._house):
            lane.shutdown(wait=False)


def prepare_state(cfg: Config, state_dir: Path) -> Path | None:
    """What workers share and must not race to create: store schema, keys, PKI. Returns
    the SQLite file the pool's workers will write through one shared writer process
    (nac/workers.py), or None for a store without one (PostgreSQL)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(cfg.store, state_dir)
    store.close()
    shared_sqlite = store.path if isinstance(store, SqliteStore) else None
    SecretBox(state_dir / "keys" / "accounts.key")
    try:
        from nac.pki import ensure_pki
    except ImportError:
        return shared_sqlite
    ensure_pki(state_dir)
    return shared_sqlite


def run_server(cfg: Config, state_dir: Path, *, reuse_port: bool = False,
               worker_id: int | None = None, job_lease: float = JOB_LEASE) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    server = Server(cfg, state_dir, reuse_port=reuse_port, worker_id=worker_id,
                    job_lease=job_lease)
    asyncio.run(server.run())
