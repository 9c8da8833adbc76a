"""A decision as reply attributes, per vendor profile (RFC 3580 VLAN attributes + vendor bits).

Profiles change only what differs between vendors; the VLAN attributes of RFC 3580 3.31
are common to all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nac.radius import codec as c

VENDOR_ARUBA = 14823
ARUBA_USER_ROLE = 1


@dataclass(frozen=True)
class VendorProfile:
    name: str
    vlan_by_name: bool = False  # send the VLAN's name (when the segment has one) instead of the ID
    role_attr: str | None = None  # "filter-id" or "aruba-role"


PROFILES: dict[str, VendorProfile] = {
    "generic": VendorProfile("generic", role_attr="filter-id"),
    "cisco": VendorProfile("cisco", vlan_by_name=True, role_attr="filter-id"),
    "aruba": VendorProfile("aruba", role_attr="aruba-role"),
    "juniper": VendorProfile("juniper", vlan_by_name=True, role_attr="filter-id"),
    "hpe": VendorProfile("hpe", role_attr="filter-id"),
}


def vlan_attrs(
    profile: VendorProfile,
    vlan: int,
    *,
    vlan_name: str | None = None,
    session_timeout: int | None = None,
    role: str | None = None,
) -> bytes:
    """Encoded reply attributes for one segment on one kind of switch."""
    group = (vlan_name if (profile.vlan_by_name and vlan_name) else str(vlan)).encode()
    out = [
        c.encode_tagged_int(c.TUNNEL_TYPE, 1, c.TUNNEL_TYPE_VLAN),
        c.encode_tagged_int(c.TUNNEL_MEDIUM_TYPE, 1, c.TUNNEL_MEDIUM_IEEE_802),
        c.encode_tagged_str(c.TUNNEL_PRIVATE_GROUP_ID, 1, group),
    ]
    if session_timeout:
        out.append(c.encode_int_attr(c.SESSION_TIMEOUT, session_timeout))
        out.append(c.encode_int_attr(c.TERMINATION_ACTION, c.TERMINATION_ACTION_RADIUS_REQUEST))
    if role:
        if profile.role_attr == "aruba-role":
            out.append(c.encode_vsa(VENDOR_ARUBA, ARUBA_USER_ROLE, role.encode()))
        elif profile.role_attr == "filter-id":
            out.append(c.encode_attr(c.FILTER_ID, role.encode()))
    return b"".join(out)
