"""From decisions to enforcement jobs: which switch, which port, which job.

The job queue (enforcers/queue.py) is durable and shared by every process on the store, so
the CLI (feed sync, policy apply, nodes reinspect), the quarantine monitor and the server
all enqueue here, into the store's queue (``open_queue``: the SQLite file, or PostgreSQL
with ``--store postgresql://``), and the server's enforcer worker applies the jobs; each
enqueue wakes it at once (enforcers/wake.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enforcers.base import DriverError
from enforcers.enforcer import Enforcer
from enforcers.inventory import Switch
from enforcers.queue import JobQueue, Queue
from nac.events import DecisionRecord

log = logging.getLogger("nac.enforce")

# Server-config keys of a [[switches]] entry that are ours, not the driver inventory's.
APP_KEYS = ("enforce_on_auth",)


@dataclass(frozen=True)
class Target:
    """Where a node is: from its latest accounting session or its last authentication."""

    mac: str
    nas: str | None
    port: str | None
    nas_port: int | None = None
    session_id: str | None = None

    @classmethod
    def from_decision(cls, rec: DecisionRecord) -> Target:
        """Where the host of a decision is: NAS-Port-Id names the interface; a NAS-Port
        number alone goes through the inventory's port mapping (never as a name)."""
        return cls(mac=rec.mac or "", nas=rec.nas, port=rec.nas_port_id,
                   nas_port=rec.nas_port_number)


def parse_switches(raw: list[dict[str, Any]], source: str) -> tuple[list[Switch], set[str]]:
    """Inventory models and the names of switches that get a push after every decision."""
    from pydantic import ValidationError

    switches, push = [], set()
    for i, entry in enumerate(raw):
        entry = dict(entry)
        on_auth = bool(entry.pop("enforce_on_auth", False))
        try:
            sw = Switch.model_validate(entry)
        except ValidationError as exc:
            msgs = [f"{source}: switches[{i}].{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                    for e in exc.errors()]
            raise ValueError("\n".join(msgs)) from None
        switches.append(sw)
        if on_auth:
            push.add(sw.name)
    return switches, push


def open_queue(store_url: str | None, state_dir: Path, **kwargs: Any) -> Any:
    """The store's job queue (nac.store.open_job_queue): STATE/nac.db, sqlite:///PATH or the
    PostgreSQL every server shares. Close it when done."""
    from nac.store import open_job_queue

    return open_job_queue(store_url, state_dir, **kwargs)


class Planner:
    """Turns "node X should be in VLAN V" into a job for the switch that node is on.

    ``queue``: the store's queue (``open_queue``), which the planner then owns and closes;
    a path opens the SQLite queue in that file."""

    def __init__(self, switches: list[Switch], queue: Queue | Path,
                 push_on_auth: set[str]) -> None:
        self.switches = switches
        self.queue: Any = JobQueue(queue) if isinstance(queue, (str, Path)) else queue
        self.enforcer = Enforcer(switches, self.queue)
        self.push_on_auth = push_on_auth
        self._by_key: dict[str, Switch] = {}
        for sw in switches:
            self._by_key[sw.name] = sw
            self._by_key[sw.address] = sw

    def switch_for(self, nas: str | None) -> Switch | None:
        return self._by_key.get(nas) if nas else None

    def set_vlan(self, target: Target, vlan: int, *, decided_at: float, reason: str,
                 live: bool = True) -> int | None:
        sw = self.switch_for(target.nas)
        if sw is None:
            log.info("node %s must move to VLAN %d but NAS %s is not in the switch inventory",
                     target.mac, vlan, target.nas)
            return None
        try:
            job = self.enforcer.set_vlan(
                sw.name, target.port, vlan, nas_port=target.nas_port,
                nas_port_id=target.port, mac=target.mac if live else None,
                session_id=target.session_id if live else None, decided_at=decided_at,
                reason=reason)
        except DriverError as exc:
            log.warning("cannot enforce VLAN %d for %s on %s: %s", vlan, target.mac, sw.name,
                        exc)
            return None
        log.info("job %d: %s port %s -> VLAN %d for %s (%s)", job, sw.name, target.port, vlan,
                 target.mac, reason)
        return job

    def reauth(self, target: Target, *, decided_at: float) -> int | None:
        sw = self.switch_for(target.nas)
        if sw is None:
            return None
        return self.enforcer.reauth(sw.name, mac=target.mac, session_id=target.session_id,
                                    port=target.port, decided_at=decided_at)

    def close(self) -> None:
        self.queue.close()


def load_planner(switches_raw: list[dict[str, Any]], queue: Queue | Path | Callable[[], Any],
                 source: str) -> Planner | None:
    """The planner of a ``[[switches]]`` inventory, or None without one. ``queue``: a queue,
    a callable that opens one (called only when there is an inventory), or a SQLite path."""
    if not switches_raw:
        return None
    switches, push = parse_switches(switches_raw, source)
    if callable(queue) and not hasattr(queue, "enqueue"):
        queue = queue()
    return Planner(switches, queue, push)
