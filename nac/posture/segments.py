"""Segments: the named network levels a node can be put in, and their VLANs per switch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nac.posture.durations import parse_duration

DEFAULT_REINSPECT_INTERVAL = 3600  # seconds; draft 9.5: re-inspect at least hourly


class Segment(BaseModel):
    """One segment (draft 3.2): quarantine, isolated, or a normal level.

    `level` orders segments: a lower level is more restricted. The decision over several
    rules is the lowest level any of them demands; a role caps the highest reachable.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    level: int
    vlan: int = Field(ge=1, le=4094)
    vlan_name: str | None = None
    reinspect_interval: int = Field(default=DEFAULT_REINSPECT_INTERVAL, ge=60, le=86400)
    remediation_servers: list[str] = Field(default_factory=list)
    # VLAN per NAS client group (or vendor profile name), overriding `vlan`.
    vlan_overrides: dict[str, int] = Field(default_factory=dict)
    # Sent as Filter-Id (generic, Juniper, HPE) or the vendor's role attribute (Aruba, Cisco).
    filter_id: str | None = None
    role: str | None = None
    description: str = ""

    # Policy files may write the interval as "1h"; the value stays seconds.
    _interval_duration = field_validator("reinspect_interval", mode="before")(parse_duration)

    def vlan_for(self, group: str | None = None, vendor: str | None = None) -> int:
        """The VLAN ID on a switch of this group / vendor profile."""
        if group and group in self.vlan_overrides:
            return self.vlan_overrides[group]
        if vendor and vendor in self.vlan_overrides:
            return self.vlan_overrides[vendor]
        return self.vlan


QUARANTINE = "quarantine"
ISOLATED = "isolated"
NORMAL = "normal"


def sample_segments() -> dict[str, Segment]:
    """The sample policy's segments (issue #2): quarantine 10, isolated 20, normal 30."""
    return {
        ISOLATED: Segment(
            name=ISOLATED,
            level=0,
            vlan=20,
            description="Non-compliant hosts: remediation servers only.",
        ),
        QUARANTINE: Segment(
            name=QUARANTINE,
            level=10,
            vlan=10,
            description="Default for unknown hosts and hosts whose posture is unknown.",
        ),
        NORMAL: Segment(
            name=NORMAL, level=100, vlan=30, description="Compliant hosts."
        ),
    }
