"""Whole postures as the store keeps them: the package list as the deflated compact text
our agent sent (base64: 9-14 bytes a package) instead of ~200 bytes a package of JSON.

A 1,500-package posture is ~310 kB of JSON: encoding it, piping it to the SQLite writer and
writing it cost the server ~1 ms per inspection, and 10,000 such nodes 3 GB of database.
pack() keeps the bytes that arrived (eap_ext.tnc.packages_compact.PackageList.wire): no
encoding at all. A list without them (a peer's IETF Installed Packages, a posture built in
code) stays JSON: encoding 1,500 packages compactly costs more than the JSON.

The packed form is still one JSON object (a JSON column takes it): the posture without
"packages", plus PACKED with the base64 text. unpack() turns it back into the posture,
whose package list equals what was reported; it leaves anything else (rows written before,
plain postures) as it is. A posture that arrives with a PACKED key of its own is stored
plain; one that arrives with PACKED and no "packages" unpacks into the package list its own
host wrote there, nothing another host could influence, and decodes under the same bounds as
the wire (a deflate bomb is refused: StoredPostureError).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

PACKED = "packages_compact_z"


class StoredPostureError(ValueError):
    """A packed posture that does not decode (corrupt row, or not ours)."""


def pack(posture: dict[str, Any]) -> dict[str, Any]:
    """The posture as the store keeps it: packed when its package list still carries the
    deflated bytes it arrived as, else the posture itself (unchanged, not copied)."""
    packages = posture.get("packages")
    wire = getattr(packages, "wire", None)
    if not isinstance(wire, bytes) or PACKED in posture:
        return posture
    out = {k: v for k, v in posture.items() if k != "packages"}
    out[PACKED] = base64.b64encode(wire).decode("ascii")
    return out


def unpack(stored: Any) -> Any:
    """The posture a stored value holds: a packed posture with its package list decoded;
    anything else unchanged."""
    if not isinstance(stored, dict) or "packages" in stored:
        return stored
    text = stored.get(PACKED)
    if not isinstance(text, str):
        return stored
    # imported here: nac.posture stays importable without the EAP-TNC codecs
    from eap_ext.tnc.errors import PaTncCodecError
    from eap_ext.tnc.pa_tnc import DEFAULT_VENDOR_ID, VendorAttribute, VendorAttrType

    try:
        wire = base64.b64decode(text, validate=True)
        attr = VendorAttribute.from_wire(VendorAttrType.PACKAGES_COMPACT, wire,
                                         DEFAULT_VENDOR_ID)
    except (binascii.Error, ValueError, PaTncCodecError) as exc:
        raise StoredPostureError(f"stored posture: packed packages unreadable: {exc}") \
            from exc
    out = {k: v for k, v in stored.items() if k != PACKED}
    out["packages"] = attr.data
    return out
