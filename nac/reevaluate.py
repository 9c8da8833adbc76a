"""Re-evaluate every inspected node after a policy or feed change (draft 6.4.2).

Each node's last posture is checked again; a node whose segment changes gets a decision
row (the audit trail says why) and, where its switch is in the inventory, an enforcement
job. Without an inventory the changes are still recorded, so an operator sees what must
move (`nac nodes list`) and the next authentication applies it. A node held in the isolated
segment (IDS alert, administrator) stays there: the hold outranks its posture.

Two ways through: `reevaluate_fleet` (what after_change runs) works from compiled postures
(nac/prevention/fleet.py) and decodes only postures stored since the last run; `reevaluate`
decodes every stored posture and is the reference the fast path is tested against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from nac.enforcement import Planner, Target
from nac.events import DecisionRecord
from nac.posture.decision import Decision
from nac.posture.evaluate import evaluate
from nac.posture.rules import Outcome
from nac.posture.stored import unpack
from nac.store.base import Store

if TYPE_CHECKING:
    from nac.prevention.fleet import FleetCache
    from nac.runtime import LivePolicy

log = logging.getLogger("nac.reevaluate")

# (posture, role, nas, identity) -> Decision, per the policy and feeds now in force.
Evaluator = Callable[[dict[str, Any], str, str | None, str | None], Decision]


@dataclass
class Change:
    mac: str
    old_segment: str | None
    new_segment: str
    vlan: int
    reasons: tuple[str, ...]
    job: int | None = None


@dataclass
class Report:
    checked: int = 0
    changes: list[Change] = field(default_factory=list)
    unreadable: int = 0
    decoded: int = 0  # posture documents read and compiled (the rest came compiled)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase

    def summary(self) -> str:
        moved: dict[tuple[str | None, str], int] = {}
        for ch in self.changes:
            moved[(ch.old_segment, ch.new_segment)] = moved.get(
                (ch.old_segment, ch.new_segment), 0) + 1
        parts = [f"{n} {a or '-'} -> {b}" for (a, b), n in sorted(moved.items(),
                                                                  key=lambda kv: -kv[1])]
        head = f"re-evaluated {self.checked} node(s): {len(self.changes)} changed segment"
        return head + (f" ({', '.join(parts)})" if parts else "")


def _holds(store: Store, isolated: str | None) -> set[str]:
    """MACs held in the isolated segment (registered there by an IDS alert or an admin)."""
    if isolated is None:
        return set()
    _, regs = store.registrations_since(0)
    return {mac for mac, seg in regs if seg == isolated}


def reevaluate(store: Store, evaluator: Evaluator, *, source: str,
               planner: Planner | None = None, now: float | None = None,
               isolated: str | None = None) -> Report:
    now = time.time() if now is None else now
    report = Report()
    held = _holds(store, isolated)
    for node in store.nodes_with_posture():
        if node["mac"] in held:
            report.checked += 1
            continue
        try:
            posture = unpack(orjson.loads(node["posture"]))
        except (TypeError, ValueError):  # StoredPostureError included
            report.unreadable += 1
            continue
        report.checked += 1
        role = node["role"] or "default"
        d = evaluator(posture, role, node["last_nas"], node["identity"])
        if d.segment == node["segment"] and d.vlan == node["vlan"]:
            continue
        _record_change(store, planner, report, node, d, source, now, role)
    store.flush(timeout=60)
    return report




def _record_change(store: Store, planner: Planner | None, report: Report, node: dict[str, Any],
                   d: Decision, source: str, now: float, role: str) -> None:
    change = _queue_change(store, planner, node, d, source, now)
    _record_decision(store, node, d, source, now, role, change.reasons)
    report.changes.append(change)


def _queue_change(store: Store, planner: Planner | None, node: dict[str, Any], d: Decision,
                  source: str, now: float) -> Change:
    """The node's enforcement job (if its switch is in the inventory), as a Change."""
    reasons = (f"{source} changed: re-evaluated the last posture", *d.reasons)
    change = Change(node["mac"], node["segment"], d.segment, d.vlan, reasons)
    if planner is not None:
        sess = store.live_session(node["mac"])
        target = Target(
            mac=node["mac"],
            nas=(sess or {}).get("nas") or node["last_nas"],
            port=(sess or {}).get("nas_port_id") or node["last_port"],
            nas_port=(sess or {}).get("nas_port"),
            session_id=(sess or {}).get("acct_session_id"),
        )
        change.job = planner.set_vlan(target, d.vlan, decided_at=now,
                                      reason=f"{source}: {node['segment']} -> {d.segment}")
    log.info("%s: %s -> %s (VLAN %s): %s", node["mac"], node["segment"], d.segment,
             d.vlan, "; ".join(d.reasons))
    return change


def _record_decision(store: Store, node: dict[str, Any], d: Decision, source: str,
                     now: float, role: str, reasons: tuple[str, ...]) -> None:
    store.record_decision(DecisionRecord(
        at=now, mac=node["mac"], segment=d.segment, vlan=d.vlan, source=source,
        reasons=reasons, remediation=d.remediation, identity=node["identity"],
        nas=node["last_nas"], nas_port=node["last_port"], role=role,
    ))


# Nodes with a stored posture, as the fast path reads them: the posture's date, not its text.
_NODES = ("SELECT n.mac, n.segment, n.vlan, n.role, n.identity, n.last_nas, n.last_port, "
          "n.last_seen, n.registered_segment, p.posture_at FROM nodes n "
          "JOIN node_postures p ON p.mac = n.mac ORDER BY n.mac")


def _stored_posture(store: Store, mac: str) -> tuple[dict[str, Any] | None, float | None]:
    """A node's stored whole posture, decoded (None if missing or unreadable), and its date."""
    found = store.posture_of(mac)
    if found is None:
        return None, None
    try:
        posture = unpack(orjson.loads(found[0]))
    except (TypeError, ValueError):  # StoredPostureError included
        return None, found[1]
    return (posture if isinstance(posture, dict) else None), found[1]


def reevaluate_fleet(store: Store, live: LivePolicy, fleet: FleetCache, *, source: str,
                     groups: dict[str, tuple[str | None, str]] | None = None,
                     planner: Planner | None = None, now: float | None = None) -> Report:
    """reevaluate() from compiled postures: the same decisions, without decoding postures
    that were compiled before (see nac/prevention/fleet.py)."""
    from nac.prevention.fleet import rule_digest
    from nac.runtime import grace_host

    query = store._query  # type: ignore[attr-defined]  # both backends (nac/store/queries.py)
    now = time.time() if now is None else now
    report = Report()
    policy = live.policy
    groups = groups or {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        report.seconds[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    nodes = query(_NODES)
    entries = fleet.load()
    lap("read")

    named = list(zip(policy.rules, policy.rule_names, strict=True))
    soft_rules = [(name, rule, rule_digest(rule)) for rule, name in named
                  if rule.reads_packages]

    # 1. Bring the compiled postures up to date with the stored ones.
    unsure = [n for n in nodes if (e := entries.get(n["mac"])) is None
              or e.last_seen != n["last_seen"]]
    for n in unsure:
        e = entries.get(n["mac"])
        if e is not None and e.posture_at == n["posture_at"]:
            e.last_seen, e.dirty = n["last_seen"], True  # seen again, same posture
            continue
        posture, posture_at = _stored_posture(store, n["mac"])
        if posture is None:
            report.unreadable += 1
            entries.pop(n["mac"], None)
            continue
        entries[n["mac"]] = fleet.compile(n["mac"], posture, posture_at, n["last_seen"],
                                          [(digest, rule) for _, rule, digest in soft_rules])
        report.decoded += 1
    lap("refresh")

    # 2. Evaluate each node from its compiled posture. Each feed rule gets, per package id,
    # only the findings it counts (judged once per id, not once per node).
    index = live.index.with_table(fleet.table) if policy.uses_feeds else None
    feed_rules: list[tuple[str, Any, list[tuple[Any, ...]]]] = []
    if index is not None:
        by_id = index.verdicts()
        for rule, name in named:
            if rule.uses_findings:
                feed_rules.append((name, rule, [
                    tuple(f for f in v if rule.relevant(f)) if v else () for v in by_id]))
    held = policy.isolated_segment
    graces: list[tuple[str, Mapping[str, str]]] = []
    moved: list[tuple[dict[str, Any], Decision, str]] = []
    for node in nodes:
        e = entries.get(node["mac"])
        if e is None:
            continue
        report.checked += 1
        if node["registered_segment"] == held:
            continue
        known: dict[str, Outcome] = {}
        missing = [(digest, rule) for _, rule, digest in soft_rules if digest not in e.soft]
        if missing:  # rules this node was never checked against (a new policy): read it once
            posture, _ = _stored_posture(store, node["mac"])
            if posture is None:
                report.unreadable += 1
                continue
            for digest, rule in missing:
                outcome = rule.check(posture, None)
                e.soft[digest] = [outcome.status, outcome.reason]
            e.dirty = True
        for name, _, digest in soft_rules:
            stored = e.soft[digest]
            known[name] = Outcome(stored[0], stored[1])
        rest = e.rest
        for name, rule, relevant in feed_rules:
            hits = list(chain.from_iterable(filter(None, map(relevant.__getitem__,
                                                             e.compiled.ids))))
            known[name] = rule.check(rest, hits)
        role = node["role"] or "default"
        group, vendor = groups.get(node["last_nas"] or "", (None, "generic"))
        host = grace_host(node["identity"], e.rest)
        d = evaluate(policy, rest, role=role, index=index, now=now,
                     first_seen=live.grace.get(host), nas_group=group, vendor=vendor,
                     findings=(), known=known)
        graces.append((host, d.extra))
        if d.segment == node["segment"] and d.vlan == node["vlan"]:
            continue
        moved.append((node, d, role))
        # The store sets the node's last_seen to the decision's time: the entry still
        # matches it, so the next run need not read posture_at again.
        e.last_seen, e.dirty = now, True
    lap("evaluate")
    # The cache first: the store's writer is about to be busy with the nodes that moved.
    live.grace.record_many(graces)
    fleet.save(entries.values(), keep={n["mac"] for n in nodes})
    lap("save")
    # Switch jobs before the decision rows: the enforcer starts on them at once, and the
    # store's writer (busy with the node rows) does not hold up each enqueue.
    report.changes = [_queue_change(store, planner, node, d, source, now)
                      for node, d, _ in moved]
    lap("queue")
    for (node, d, role), change in zip(moved, report.changes, strict=True):
        _record_decision(store, node, d, source, now, role, change.reasons)
    store.flush(timeout=600)
    lap("store")
    return report


def after_change(state_dir: Path, source: str, *, config_path: Path | None = None,
                 store_url: str | None = None) -> Report:
    """Re-evaluate every inspected node under the policy and feeds now in the state dir,
    queueing enforcement through the config's switch inventory (if one is given)."""
    from nac.config import load_config
    from nac.enforcement import load_planner, open_queue
    from nac.prevention.fleet import connect as fleet_connect
    from nac.runtime import LivePolicy
    from nac.store import open_store

    cfg = load_config(config_path) if config_path else None
    if not (store_url or (cfg and cfg.store)) and not (state_dir / "nac.db").exists():
        return Report()  # no store yet: no node was ever inspected
    url = store_url or (cfg.store if cfg else None)
    store = open_store(url, state_dir)
    db_path = getattr(store, "path", state_dir / "nac.db")
    # With a PostgreSQL store the site policy (if one was published) is what the servers
    # enforce, so it is what the nodes are judged by here too.
    live = LivePolicy(state_dir, db_path, cfg.policy_file if cfg else None,
                      cfg.segments if cfg else None, store_url=url)
    groups: dict[str, tuple[str | None, str]] = {}
    if cfg is not None:
        for cl in cfg.clients:
            groups[(cl.name or cl.address.split("/")[0])] = (cl.group, cl.vendor)
    # The jobs go to the store's queue (PostgreSQL with a PostgreSQL store), where the
    # server's enforcer takes them.
    planner = (load_planner(cfg.switches, lambda: open_queue(url, state_dir), str(config_path))
               if cfg else None)
    fleet = fleet_connect(db_path) if hasattr(store, "_query") else None

    def evaluator(posture: dict[str, Any], role: str, nas: str | None,
                  identity: str | None) -> Decision:
        group, vendor = groups.get(nas or "", (None, "generic"))
        return live.evaluate(posture, role, group, vendor, identity)

    try:
        if fleet is not None:
            return reevaluate_fleet(store, live, fleet, source=source, groups=groups,
                                    planner=planner)
        return reevaluate(store, evaluator, source=source, planner=planner,
                          isolated=live.policy.isolated_segment)
    finally:
        if fleet is not None:
            fleet.close()
        store.close()
        if planner is not None:
            planner.close()
