"""What the packet path hands on: decision and accounting records (plain values).

Kept apart from nac/store/ so that nac/radius/ and nac/eap/ never import the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class DecisionRecord:
    at: float
    mac: str | None
    segment: str
    vlan: int
    source: str
    reasons: tuple[str, ...] = ()
    remediation: tuple[str, ...] = ()
    identity: str | None = None
    nas: str | None = None
    nas_port: str | None = None  # NAS-Port-Id, else the NAS-Port number (for people)
    method: str | None = None
    role: str | None = None
    posture: dict[str, Any] | None = field(default=None, repr=False)
    # The two RADIUS port attributes apart, for mapping to a switch interface.
    nas_port_id: str | None = None
    nas_port_number: int | None = None


@dataclass(slots=True)
class AccountingRecord:
    at: float
    nas: str
    status: int  # Acct-Status-Type
    session_id: str
    mac: str | None = None
    user_name: str | None = None
    nas_port: int | None = None
    nas_port_id: str | None = None
    framed_ip: str | None = None
    framed_ipv6_prefix: str | None = None
    input_octets: int | None = None
    output_octets: int | None = None
    session_time: int | None = None
    terminate_cause: int | None = None
