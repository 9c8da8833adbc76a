"""Evaluate a posture document against the site policy: a Decision, as a value.

The decision is the lowest-level segment any rule demands ("major" -> the isolated segment,
"minor" -> the rule's or the policy's minor segment), capped by the highest segment the
account's role may reach. No posture means the quarantine segment when the policy requires
one. Nothing here touches a switch, the store or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from nac.posture.decision import Decision
from nac.posture.policy import Policy
from nac.posture.rules import COMPLIANT, MAJOR, MINOR, FindingLike, Outcome

POSTURE_SCHEMA = 1
SOURCE = "posture"
# Decision.extra keys: the caller stores first_seen.<rule> and passes it back next time.
FIRST_SEEN_PREFIX = "first_seen."


class VulnIndexLike(Protocol):
    """What evaluation needs from nac.prevention.index.VulnIndex."""

    epoch: int

    def findings(self, posture: dict[str, Any]) -> Sequence[FindingLike]: ...


def evaluate(
    policy: Policy,
    posture: dict[str, Any] | None,
    *,
    role: str,
    index: VulnIndexLike | None,
    now: float,
    first_seen: Mapping[str, float] | None = None,
    nas_group: str | None = None,
    vendor: str | None = None,
    findings: Sequence[FindingLike] | None = None,
    known: Mapping[str, Outcome] | None = None,
) -> Decision:
    """The segment for a host with this posture and account role, and why.

    `first_seen` maps rule names to when the host first failed them with a "minor" result;
    a rule with `grace` tolerates the failure that long. The decision's `extra` carries
    `first_seen.<rule>` for every graced minor failure, for the caller to store.

    Fleet re-evaluation (nac/reevaluate.py) passes what it already knows instead of a full
    posture: `findings` (from a compiled posture) replaces index.findings(posture), and
    `known` gives the outcomes of rules by name (those that read the package list).
    """
    segments = policy.segments
    reasons: list[str] = []
    remediation: list[str] = []
    extra: dict[str, str] = {"policy_digest": policy.digest}
    if index is not None:
        extra["feed_epoch"] = str(index.epoch)
    target = policy.top_segment
    grace_end: float | None = None

    schema = posture.get("schema") if isinstance(posture, dict) else None
    if not isinstance(posture, dict) or type(schema) is not int or schema != POSTURE_SCHEMA:
        why = (
            "no posture reported (no agent, or it did not answer)"
            if not isinstance(posture, dict)
            else f"unsupported posture schema {posture.get('schema')!r}"
        )
        if policy.require_posture:
            target = segments[policy.quarantine_segment]
            reasons.append(f"{why} -> {target.name}")
            remediation.append("Install and run the NAC agent (nac-agent) to be inspected.")
        else:
            reasons.append(f"{why}; the policy does not require one")
    else:
        if index is None or not policy.uses_feeds:
            findings = None
        elif findings is None:
            findings = index.findings(posture)
        for rule, name in zip(policy.rules, policy.rule_names, strict=True):
            outcome = (known.get(name) if known else None) or rule.check(posture, findings)
            status = outcome.status if outcome.status is not None else rule.on_unknown
            if status == COMPLIANT:
                if outcome.reason:  # e.g. "not checked: no prevention feeds loaded"
                    reasons.append(f"{name}: {outcome.reason}")
                continue
            reason = (
                outcome.reason
                if outcome.status is not None
                else (f"{outcome.reason} (counts as {status})")
            )
            fix = rule.remediation or rule.default_remediation()
            if status == MINOR and rule.grace is not None:
                first = (first_seen or {}).get(name, now)
                extra[FIRST_SEEN_PREFIX + name] = repr(float(first))
                until = first + rule.grace
                if now < until:
                    reasons.append(f"{name}: {reason}; tolerated until {_iso(until)} (grace)")
                    remediation.append(fix)
                    grace_end = until if grace_end is None else min(grace_end, until)
                    continue
            demanded = segments[
                policy.isolated_segment if status == MAJOR else rule.segment or policy.minor_segment
            ]
            reasons.append(f"{name}: {reason} ({status} -> {demanded.name})")
            remediation.append(fix)
            if demanded.level < target.level:
                target = demanded
        if not reasons or all(": not checked" in r for r in reasons):
            reasons.insert(0, f"compliant with policy {policy.name!r} ({len(policy.rules)} rules)")

    cap = policy.role_cap(role)
    if target.level > cap.level:
        target = cap
        reasons.append(f"role {role!r} may reach at most {cap.name}")
    if target.remediation_servers and target.level < policy.top_segment.level:
        remediation.append("Remediation servers: " + ", ".join(target.remediation_servers))

    expires = now + target.reinspect_interval
    if grace_end is not None and grace_end < expires:
        expires = grace_end  # re-inspect when the grace ends, not an interval later
    return Decision(
        segment=target.name,
        vlan=target.vlan_for(nas_group, vendor),
        reasons=tuple(reasons),
        remediation=tuple(dict.fromkeys(remediation)),
        expires=expires,
        source=SOURCE,
        extra=extra,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
