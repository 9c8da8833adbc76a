"""Re-evaluate every inspected node after a policy or feed change (draft 6.4.2).

Each node's last posture is checked again; a node whose segment changes gets a decision
row (the audit trail says why) and, where its switch is in the inventory, an enforcement
job. Without an inventory the changes are still recorded, so an operator sees what must
move (`nac nodes list`) and the next authentication applies it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nac.enforcement import Planner, Target
from nac.events import DecisionRecord
from nac.posture.decision import Decision
from nac.store.base import Store

log = logging.getLogger("nac.reevaluate")

# (posture, role, nas) -> Decision, per the policy and feeds now in force.
Evaluator = Callable[[dict[str, Any], str, str | None], Decision]


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

    def summary(self) -> str:
        moved: dict[tuple[str | None, str], int] = {}
        for ch in self.changes:
            moved[(ch.old_segment, ch.new_segment)] = moved.get(
                (ch.old_segment, ch.new_segment), 0) + 1
        parts = [f"{n} {a or '-'} -> {b}" for (a, b), n in sorted(moved.items(),
                                                                  key=lambda kv: -kv[1])]
        head = f"re-evaluated {self.checked} node(s): {len(self.changes)} changed segment"
        return head + (f" ({', '.join(parts)})" if parts else "")


def reevaluate(store: Store, evaluator: Evaluator, *, source: str,
               planner: Planner | None = None, now: float | None = None) -> Report:
    now = time.time() if now is None else now
    report = Report()
    for node in store.nodes_with_posture():
        try:
            posture = json.loads(node["posture"])
        except (TypeError, ValueError):
            report.unreadable += 1
            continue
        report.checked += 1
        role = node["role"] or "default"
        d = evaluator(posture, role, node["last_nas"])
        if d.segment == node["segment"] and d.vlan == node["vlan"]:
            continue
        reasons = (f"{source} changed: re-evaluated the last posture", *d.reasons)
        store.record_decision(DecisionRecord(
            at=now, mac=node["mac"], segment=d.segment, vlan=d.vlan, source=source,
            reasons=reasons, remediation=d.remediation, identity=node["identity"],
            nas=node["last_nas"], nas_port=node["last_port"], role=role,
        ))
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
        report.changes.append(change)
        log.info("%s: %s -> %s (VLAN %s): %s", node["mac"], node["segment"], d.segment,
                 d.vlan, "; ".join(d.reasons))
    store.flush(timeout=60)
    return report


def after_change(state_dir: Path, source: str, *, config_path: Path | None = None,
                 store_url: str | None = None) -> Report:
    """Re-evaluate every inspected node under the policy and feeds now in the state dir,
    queueing enforcement through the config's switch inventory (if one is given)."""
    from nac.config import load_config
    from nac.enforcement import load_planner
    from nac.runtime import LivePolicy
    from nac.store import open_store

    cfg = load_config(config_path) if config_path else None
    if not (store_url or (cfg and cfg.store)) and not (state_dir / "nac.db").exists():
        return Report()  # no store yet: no node was ever inspected
    store = open_store(store_url or (cfg.store if cfg else None), state_dir)
    db_path = getattr(store, "path", state_dir / "nac.db")
    live = LivePolicy(state_dir, db_path, cfg.policy_file if cfg else None,
                      cfg.segments if cfg else None)
    groups: dict[str, tuple[str | None, str]] = {}
    if cfg is not None:
        for cl in cfg.clients:
            groups[(cl.name or cl.address.split("/")[0])] = (cl.group, cl.vendor)
    planner = load_planner(cfg.switches, db_path, str(config_path)) if cfg else None

    def evaluator(posture: dict[str, Any], role: str, nas: str | None) -> Decision:
        group, vendor = groups.get(nas or "", (None, "generic"))
        return live.evaluate(posture, role, group, vendor)

    try:
        return reevaluate(store, evaluator, source=source, planner=planner)
    finally:
        store.close()
        if planner is not None:
            planner.close()
