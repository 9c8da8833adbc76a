"""The decision value: computed once, stored, turned into RADIUS attributes, explained."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Decision:
    """Which segment a node belongs in, and why.

    segment: the segment's name ("quarantine", "isolated", "normal", ...).
    vlan: the VLAN ID the segment maps to for the NAS that asked (0 when not known yet).
    reasons: why, one human-readable line each (stored and logged).
    remediation: what the host must do to reach a better segment.
    certificate: the signed quarantine certificate issued with it, if any.
    expires: epoch seconds after which the node must be re-inspected, if known.
    source: what produced it ("mab", "pap", "eap", "posture", "admin", "feed", "ids").
    """

    segment: str
    vlan: int = 0
    reasons: tuple[str, ...] = ()
    remediation: tuple[str, ...] = ()
    certificate: bytes | None = None
    expires: float | None = None
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
