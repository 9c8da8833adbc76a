"""Segment decisions for authentications: MAB, PAP and EAP (with or without posture).

Pure: takes what the request said and what the server knows (policy, registrations),
returns a Decision. The posture rules themselves live in nac/posture/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from nac.posture.decision import Decision
from nac.posture.segments import QUARANTINE, Segment


class PolicyView(Protocol):
    """What authorization needs from the active policy (nac.posture.policy.Policy)."""

    segments: dict[str, Segment]
    require_posture: bool

    def role_cap(self, role: str | None) -> Segment:
        """The highest segment the role may reach."""
        ...


def apply_segment_settings(
    segments: dict[str, Segment], settings: dict[str, Any]
) -> dict[str, Segment]:
    """The policy's segments with the server config's network settings laid over them."""
    out = dict(segments)
    for name, st in settings.items():
        if name not in out:
            raise KeyError(f"segments.{name}: no such segment in the policy "
                           f"(it has {', '.join(sorted(out))})")
        changes = {k: v for k, v in st.model_dump().items() if v not in (None, {})}
        out[name] = out[name].model_copy(update=changes)
    return out


# evaluate(posture or None, role, identity, nas group, vendor) -> Decision, per the active
# policy (and a still-valid quarantine certificate).
PostureEvaluator = Callable[[dict[str, Any] | None, str, str, str | None, str], Decision]


class Authorizer:
    def __init__(self, policy: PolicyView, evaluator: PostureEvaluator | None = None) -> None:
        self.policy = policy
        self.evaluator = evaluator
        self.registered: dict[str, str] = {}  # MAC -> segment set by an administrator
        self._unknown_mab: dict[tuple[str | None, str], Decision] = {}
        self._no_posture: dict[tuple[str, str, str | None, str, str], Decision] = {}

    def policy_changed(self) -> None:
        self._unknown_mab.clear()
        self._no_posture.clear()

    def _segment(self, name: str) -> Segment:
        seg = self.policy.segments.get(name)
        if seg is None:  # a registration naming a segment the policy no longer has
            return self.policy.segments[QUARANTINE]
        return seg

    def _cap(self, name: str, role: str | None, reasons: list[str]) -> str:
        if role is None:
            return name
        cap = self.policy.role_cap(role)
        if cap.level < self._segment(name).level:
            reasons.append(f"role {role!r} may reach at most {cap.name!r} (draft 5.4.3)")
            return cap.name
        return name

    def finish(self, name: str, reasons: list[str], source: str, group: str | None,
               vendor: str, remediation: tuple[str, ...] = ()) -> Decision:
        seg = self._segment(name)
        return Decision(
            segment=seg.name,
            vlan=seg.vlan_for(group, vendor),
            reasons=tuple(reasons),
            remediation=remediation,
            source=source,
        )

    def mab(self, mac: str, group: str | None, vendor: str) -> Decision:
        reg = self.registered.get(mac)
        if reg is not None:
            return self.finish(reg, [f"MAC registered in segment {reg!r}"], "mab",
                               group, vendor)
        d = self._unknown_mab.get((group, vendor))
        if d is None:  # the same answer for every unknown MAC on such a switch: make it once
            d = self.finish(
                QUARANTINE, ["unknown MAC without posture: quarantine (draft 3.2, 5.4.2)"],
                "mab", group, vendor,
            )
            self._unknown_mab[(group, vendor)] = d
        return d

    def account(
        self,
        identity: str,
        role: str,
        mac: str | None,
        posture: dict[str, Any] | None,
        group: str | None,
        vendor: str,
        method: str,
    ) -> Decision:
        reg = self.registered.get(mac) if mac else None
        if reg is None and posture is None and self.evaluator is not None:
            # The common re-authentication: the same answer as last time, made once.
            hit = self._no_posture.get((identity, role, group, vendor, method))
            if hit is not None:
                return hit
        who = f"authenticated {identity!r} by {method} (role {role!r})"
        if reg is not None and reg == getattr(self.policy, "isolated_segment", None):
            # An isolation hold (IDS alert or administrator) outranks what the host reports.
            reasons = [who, f"MAC held in segment {reg!r} (IDS alert or administrator)"]
            return self.finish(reg, reasons, "account", group, vendor)
        if posture is None and reg is not None:
            reasons = [who, f"MAC registered in segment {reg!r}"]
            return self.finish(self._cap(reg, role, reasons), reasons, "account", group, vendor)
        if self.evaluator is None:
            reasons = [who, "no posture policy loaded: quarantine"]
            return self.finish(QUARANTINE, reasons, "account", group, vendor)
        if posture is None:  # the same answer each time until the policy changes: make it once
            key = (identity, role, group, vendor, method)
            cached = self._no_posture.get(key)
            if cached is None:
                if len(self._no_posture) > 100_000:
                    self._no_posture.clear()
                d = self.evaluator(None, role, identity, group, vendor)
                cached = Decision(segment=d.segment, vlan=d.vlan, reasons=(who, *d.reasons),
                                  remediation=d.remediation, source="account", extra=d.extra)
                self._no_posture[key] = cached
            return cached
        d = self.evaluator(posture, role, identity, group, vendor)
        return Decision(
            segment=d.segment, vlan=d.vlan, reasons=(who, *d.reasons),
            remediation=d.remediation, certificate=d.certificate, expires=d.expires,
            source="posture" if posture is not None else "account", extra=d.extra,
        )
