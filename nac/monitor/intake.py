"""What an authenticated alert does (draft 6.4.3): isolate the node that sent the traffic.

The alert's source address (and, if configured, its destination) is mapped to a node through
RADIUS accounting: the newest session whose Framed-IP-Address is that address, provided the
session was live around the alert's time (an address handed to another host since then must
not get that host isolated). The node then gets:

* a registration in the isolated segment (store.register_node): the next MAB or
  no-posture authentication keeps it isolated until an administrator clears it with
  ``nac nodes set MAC none``;
* a decision row with source "ids" saying which alert, from which monitor, and the hold;
* an enforcement job moving its switch port to the isolated VLAN, when the switch is in the
  inventory (a Planner is configured).

A burst of alerts isolates a node once: a node already held in the isolated segment is left
alone until the hold is cleared. A monitor may isolate at most `max_per_hour` nodes an hour:
a monitor that goes wrong (or is taken over) cannot empty the network (draft 9.4).

IPv6: accounting keeps Framed-IPv6-Prefix per session. A store with
``live_ipv6_sessions() -> list[session row]`` (sessions not stopped that have a prefix) lets
an IPv6 source match the session whose prefix contains it, newest first; the SQLite store
has no such method yet, so there IPv6 sources count as "no session for the address".
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nac.enforcement import Planner, Target
from nac.events import DecisionRecord
from nac.monitor.eve import Alert
from nac.posture.segments import Segment
from nac.store.base import Store

log = logging.getLogger("nac.monitor")

RECENT_MAX = 10_000


class PolicyLike(Protocol):
    segments: dict[str, Segment]
    isolated_segment: str


# NAS address -> (client group, vendor profile name), for per-switch VLAN overrides.
NasProfile = Callable[[str], tuple[str | None, str | None]]


@dataclass
class Outcome:
    accepted: int = 0
    ignored: int = 0
    isolated: list[str] = field(default_factory=list)
    why_ignored: dict[str, int] = field(default_factory=dict)
    jobs: list[int] = field(default_factory=list)

    def ignore(self, why: str) -> None:
        self.ignored += 1
        self.why_ignored[why] = self.why_ignored.get(why, 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "ignored": self.ignored,
                "isolated": self.isolated, "ignored_reasons": self.why_ignored}


class Intake:
    def __init__(self, store: Store, policy_getter: Callable[[], PolicyLike],
                 planner: Planner | None = None, *, match_destination: bool = False,
                 session_slack: float = 300.0, nas_profile: NasProfile | None = None,
                 max_per_hour: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy_getter = policy_getter
        self.planner = planner
        self.match_destination = match_destination
        self.session_slack = session_slack
        self.nas_profile = nas_profile
        self.clock = clock
        # MACs this process isolated: the decision row is written in the background, so
        # until it lands the node row still shows the old segment.
        self._recent: dict[str, float] = {}
        self.max_per_hour = max_per_hour  # 0: no limit
        self._spent: dict[str, deque[float]] = {}  # monitor -> its isolations this hour

    def handle(self, records: Sequence[Alert | None], monitor: str,
               min_severity: int) -> Outcome:
        out = Outcome()
        for alert in records:
            out.accepted += 1
            if alert is None:
                out.ignore("not an alert")
                continue
            if alert.severity > min_severity:
                out.ignore("severity below the monitor's threshold")
                continue
            why = self._one(alert, monitor, out)
            if why is not None:
                out.ignore(why)
        return out

    def _one(self, alert: Alert, monitor: str, out: Outcome) -> str | None:
        """Act on one alert; the reason it changed nothing, or None if it isolated."""
        addresses = [alert.src_ip]
        if self.match_destination and alert.dest_ip != alert.src_ip:
            addresses.append(alert.dest_ip)
        why = "no session for the address"
        acted = False
        for address in addresses:
            sess = self._session(address, alert.at)
            if sess is None:
                continue
            mac = sess["mac"]
            if mac in out.isolated or self._held(mac):
                why = "node already isolated"
                continue
            if not self._allowance(monitor):
                why = "monitor over its isolation limit"
                continue
            self._isolate(mac, address, sess, alert, monitor, out)
            acted = True
        return None if acted else why

    def _allowance(self, monitor: str) -> bool:
        if not self.max_per_hour:
            return True
        now = self.clock()
        spent = self._spent.setdefault(monitor, deque())
        while spent and spent[0] < now - 3600:
            spent.popleft()
        if len(spent) >= self.max_per_hour:
            log.error("monitor %s isolated %d nodes within the hour: further alerts are not "
                      "acted on until the count drops (max_isolations_per_hour)", monitor,
                      len(spent))
            return False
        spent.append(now)
        return True

    def _session(self, address: str, at: float) -> dict[str, Any] | None:
        ip = ipaddress.ip_address(address)
        sess = self.store.session_by_ip(address) if ip.version == 4 else self._by_prefix(ip)
        if sess is None or not sess.get("mac"):
            return None
        stopped, started = sess.get("stopped_at"), sess.get("started_at")
        if stopped is not None and stopped < at - self.session_slack:
            log.info("alert for %s: its last session (%s) stopped before the alert; ignored",
                     address, sess["mac"])
            return None
        if started is not None and started > at + self.session_slack:
            log.info("alert for %s: the address's session (%s) began after the alert; "
                     "ignored", address, sess["mac"])
            return None
        return sess

    def _by_prefix(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
                   ) -> dict[str, Any] | None:
        live = getattr(self.store, "live_ipv6_sessions", None)
        if live is None:
            return None  # see the module docstring
        best = None
        for row in live():
            try:
                net = ipaddress.ip_network(row.get("framed_ipv6_prefix") or "", strict=False)
            except ValueError:
                continue
            if ip in net and (best is None or row["updated_at"] > best["updated_at"]):
                best = row
        return best

    def _held(self, mac: str) -> bool:
        node = self.store.get_node(mac)
        iso = self.policy_getter().isolated_segment
        if node is None or node.get("registered_segment") != iso:
            self._recent.pop(mac, None)  # an administrator released it: act again
            return False
        return node.get("segment") == iso or mac in self._recent

    def _isolate(self, mac: str, address: str, sess: dict[str, Any], alert: Alert,
                 monitor: str, out: Outcome) -> None:
        now = self.clock()
        policy = self.policy_getter()
        iso = policy.isolated_segment
        nas = sess.get("nas")
        group, vendor = self.nas_profile(nas) if (self.nas_profile and nas) else (None, None)
        vlan = policy.segments[iso].vlan_for(group, vendor)
        reason = (f"IDS alert sid {alert.signature_id} '{alert.signature}' from monitor "
                  f"{monitor} at {alert.timestamp}")
        hold = (f"held in segment {iso!r} by a registration until an administrator clears it "
                f"(nac nodes set {mac} none)")
        # The registration first: it commits at once, so the next authentication (the
        # server polls registrations) already keeps the node isolated.
        self.store.register_node(mac, iso, f"{reason}; {hold}")
        node = self.store.get_node(mac) or {}
        port = sess.get("nas_port_id") or (str(sess["nas_port"])
                                           if sess.get("nas_port") is not None else None)
        self.store.record_decision(DecisionRecord(
            at=now, mac=mac, segment=iso, vlan=vlan, source="ids", reasons=(reason, hold),
            identity=sess.get("user_name") or node.get("identity"), nas=nas,
            nas_port=port or node.get("last_port"), role=node.get("role"),
        ))
        self._remember(mac, now)
        out.isolated.append(mac)
        log.warning("isolating %s (%s, session %s on %s): %s", mac, address,
                    sess.get("acct_session_id"), nas, reason)
        if self.planner is not None:
            target = Target(mac=mac, nas=nas, port=sess.get("nas_port_id"),
                            nas_port=sess.get("nas_port"),
                            session_id=sess.get("acct_session_id"))
            job = self.planner.set_vlan(target, vlan, decided_at=now, reason=f"ids: {reason}",
                                        live=sess.get("stopped_at") is None)
            if job is not None:
                out.jobs.append(job)

    def _remember(self, mac: str, now: float) -> None:
        if len(self._recent) >= RECENT_MAX:
            cutoff = now - 3600
            self._recent = {m: t for m, t in self._recent.items() if t >= cutoff}
        self._recent[mac] = now
