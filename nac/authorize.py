"""Segment decisions for authentications: MAB, PAP and EAP (with or without posture).

Pure: takes what the request said and what the server knows (policy, registrations),
returns a Decision. The posture rules themselves live in nac/posture/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nac.posture.decision import Decision
from nac.posture.segments import QUARANTINE, Segment, sample_segments


class PolicyView(Protocol):
    """What authorization needs from the active policy."""

    segments: dict[str, Segment]
    require_posture: bool

    def role_cap(self, role: str) -> str | None:
        """The highest segment the role may reach, None for no cap."""
        ...


@dataclass
class SamplePolicyView:
    """The sample policy's segments and roles, used until a policy file is loaded."""

    segments: dict[str, Segment] = field(default_factory=sample_segments)
    require_posture: bool = True
    role_caps: dict[str, str] = field(default_factory=lambda: {"guest": QUARANTINE})

    def role_cap(self, role: str) -> str | None:
        return self.role_caps.get(role)


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


# evaluate(posture, role, identity, mac) -> Decision (segment and reasons; VLAN filled here)
PostureEvaluator = Callable[[dict[str, Any], str, str | None, str | None], Decision]


class Authorizer:
    def __init__(self, policy: PolicyView, evaluator: PostureEvaluator | None = None) -> None:
        self.policy = policy
        self.evaluator = evaluator
        self.registered: dict[str, str] = {}  # MAC -> segment set by an administrator
        self._unknown_mab: dict[tuple[str | None, str], Decision] = {}

    def policy_changed(self) -> None:
        self._unknown_mab.clear()

    def _segment(self, name: str) -> Segment:
        seg = self.policy.segments.get(name)
        if seg is None:  # a registration naming a segment the policy no longer has
            return self.policy.segments[QUARANTINE]
        return seg

    def _cap(self, name: str, role: str | None, reasons: list[str]) -> str:
        if role is None:
            return name
        cap = self.policy.role_cap(role)
        if cap is None or cap not in self.policy.segments:
            return name
        if self.policy.segments[cap].level < self._segment(name).level:
            reasons.append(f"role {role!r} may reach at most {cap!r} (draft 5.4.3)")
            return cap
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
        reasons = [f"authenticated {identity!r} by {method} (role {role!r})"]
        if posture is not None and self.evaluator is not None:
            d = self.evaluator(posture, role, identity, mac)
            reasons.extend(d.reasons)
            name = self._cap(d.segment, role, reasons)
            return self.finish(name, reasons, "posture", group, vendor, d.remediation)
        reg = self.registered.get(mac) if mac else None
        if reg is not None:
            reasons.append(f"MAC registered in segment {reg!r}")
            name = reg
        elif self.policy.require_posture:
            reasons.append("no posture reported: quarantine (draft 5.4.2)")
            name = QUARANTINE
        else:
            name = max(self.policy.segments.values(), key=lambda s: s.level).name
            reasons.append("policy does not require posture")
        return self.finish(self._cap(name, role, reasons), reasons, "account", group, vendor)
