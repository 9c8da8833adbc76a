"""Posture document (eap_ext/POSTURE_SCHEMA.md) <-> PA-TNC attributes, both ways.

Each section travels in its own attribute so an IMV can ask for just what it needs:

    os                 OS_DETAILS (vendor, whole object) + IETF Product Information
                       (pretty_name) and String Version (version, kernel as build number)
    packages           PACKAGES_COMPACT (vendor, deflated, packages_compact) by default;
                       packages="ietf": IETF Installed Packages (name, version) +
                       PACKAGE_EXTRA_Z (vendor, deflated, index-aligned: every other key)
    forwarding         FORWARDING_DETAIL (vendor) + IETF Forwarding Enabled
    listening          LISTENING_DETAIL (vendor) + IETF Port Filter (not-blocked entries)
    factory_default_password  IETF Factory Default Password Enabled
    pending_updates, firewall, security_software, interfaces, certificate: one vendor
                       attribute each (JSON)
    schema, collected_at and any key this module does not know: DOCUMENT_META (vendor)

A section whose value is "unknown" (or anything the IETF layout cannot hold) still round
trips, through its vendor attribute or DOCUMENT_META. The IETF attributes are the
interoperable summary; when the matching vendor attribute is present it wins. From a peer
that sends only IETF attributes we derive what they say and mark the rest "unknown".

Installed Packages is the one IETF attribute we do not send unasked: uncompressed it is
~45 bytes a package, and through EAP-TNC inside TTLS every ~1,400 bytes cost two EAP round
trips (wpa_supplicant gives up after 100), so a 1,500-package host could not finish. The
compact attribute is ~11 bytes a package. attributes_for_request() answers an IMV that
asks only for the IETF attribute (another vendor's IMV) with it.

A digest-only document (digest_only_document()) is what an agent holding a quarantine
certificate leads with: the certificate, the digest of its current posture, no sections.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Any

from eap_ext.tnc.pa_tnc import (
    DEFAULT_VENDOR_ID,
    IETF_PEN,
    Attribute,
    AttrType,
    FactoryDefaultPasswordEnabled,
    ForwardingEnabled,
    ForwardingStatus,
    InstalledPackages,
    PortFilter,
    ProductInformation,
    StringVersion,
    VendorAttribute,
    VendorAttrType,
)

SECTIONS = ("os", "packages", "pending_updates", "forwarding", "firewall", "listening",
            "security_software", "interfaces", "factory_default_password", "certificate")
UNKNOWN = "unknown"
_PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
_PROTO_NAMES = {v: k for k, v in _PROTOCOLS.items()}
_MAX_PKGS_PER_ATTR = 0xFFFF
_SIMPLE = {
    "pending_updates": VendorAttrType.PENDING_UPDATES,
    "firewall": VendorAttrType.FIREWALL,
    "security_software": VendorAttrType.SECURITY_SOFTWARE,
    "interfaces": VendorAttrType.INTERFACES,
    "certificate": VendorAttrType.CERTIFICATE,
}

# The posture attribute types an IMV asks for (see posture_attribute_types()).
IETF_POSTURE_TYPES = (AttrType.PRODUCT_INFORMATION, AttrType.STRING_VERSION,
                      AttrType.INSTALLED_PACKAGES, AttrType.PORT_FILTER,
                      AttrType.FORWARDING_ENABLED, AttrType.FACTORY_DEFAULT_PASSWORD_ENABLED)
VENDOR_POSTURE_TYPES = tuple(k for k in VendorAttrType if k != VendorAttrType.POSTURE_DOCUMENT)


def posture_attribute_types(vendor_id: int = DEFAULT_VENDOR_ID) -> tuple[tuple[int, int], ...]:
    """(vendor, type) of every attribute posture_to_attributes() can produce."""
    return (tuple((IETF_PEN, int(t)) for t in IETF_POSTURE_TYPES)
            + tuple((vendor_id, int(k)) for k in VENDOR_POSTURE_TYPES))


def _fits(value: Any) -> bool:
    return isinstance(value, str) and len(value.encode("utf-8")) <= 255


def _is_pkg_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, dict) for p in value)


def posture_to_attributes(doc: dict[str, Any], *, vendor_id: int = DEFAULT_VENDOR_ID,
                          packages: str = "compact") -> list[Attribute]:
    """All attributes for a posture document (DOCUMENT_META first); `packages` is
    "compact" (PACKAGES_COMPACT), "ietf" (Installed Packages + PACKAGE_EXTRA_Z) or "both"."""
    if packages not in ("compact", "ietf", "both"):
        raise ValueError(f"packages={packages!r}")

    def vendor(kind: VendorAttrType, data: Any) -> VendorAttribute:
        return VendorAttribute(kind, data, vendor_id)

    meta: dict[str, Any] = {k: doc[k] for k in ("schema", "collected_at") if k in doc}
    rest: dict[str, Any] = {}
    attrs: list[Attribute] = []
    for key, value in doc.items():
        if key in ("schema", "collected_at"):
            continue
        if key == "os":
            attrs.append(vendor(VendorAttrType.OS_DETAILS, value))
            if isinstance(value, dict):
                if _fits(value.get("pretty_name")):
                    attrs.append(ProductInformation(0, 0, value["pretty_name"]))
                version, kernel = value.get("version"), value.get("kernel")
                if _fits(version):
                    attrs.append(StringVersion(version, kernel if _fits(kernel) else ""))
        elif key == "packages" and _is_pkg_list(value):
            if packages != "compact":
                attrs.extend(_packages_to_attributes(value, vendor_id))
            if packages != "ietf":
                attrs.append(vendor(VendorAttrType.PACKAGES_COMPACT, value))
        elif key == "forwarding":
            attrs.append(vendor(VendorAttrType.FORWARDING_DETAIL, value))
            attrs.append(ForwardingEnabled(_forwarding_status(value)))
        elif key == "listening":
            attrs.append(vendor(VendorAttrType.LISTENING_DETAIL, value))
            entries = _port_filter_entries(value)
            if entries is not None:
                attrs.append(PortFilter(entries))
        elif key == "factory_default_password" and isinstance(value, bool):
            attrs.append(FactoryDefaultPasswordEnabled(int(value)))
        elif key in _SIMPLE:
            attrs.append(vendor(_SIMPLE[key], value))
        else:
            rest[key] = value
    meta["rest"] = rest
    return [vendor(VendorAttrType.DOCUMENT_META, meta), *attrs]


def _packages_to_attributes(pkgs: list[dict[str, Any]], vendor_id: int) -> list[Attribute]:
    pairs: list[tuple[str, str]] = []
    extra: list[list[Any]] = []
    for pkg in pkgs:
        name, version = pkg.get("name"), pkg.get("version")
        if _fits(name) and _fits(version):
            pairs.append((name, version))
            # mode 0: the remaining keys; the IETF entry supplies name and version
            extra.append([0, {k: v for k, v in pkg.items() if k not in ("name", "version")}])
        else:
            # mode 1: the IETF layout cannot hold this entry; carry it whole
            pairs.append(("", ""))
            extra.append([1, pkg])
    out: list[Attribute] = [InstalledPackages(tuple(pairs[i:i + _MAX_PKGS_PER_ATTR]))
                            for i in range(0, max(len(pairs), 1), _MAX_PKGS_PER_ATTR)]
    out.append(VendorAttribute(VendorAttrType.PACKAGE_EXTRA_Z, extra, vendor_id))
    return out


def _forwarding_status(value: Any) -> int:
    if isinstance(value, dict) and ("ipv4" in value or "ipv6" in value):
        v4, v6 = value.get("ipv4"), value.get("ipv6")
        if v4 is True or v6 is True:
            return ForwardingStatus.ENABLED
        if v4 is False and v6 is False:
            return ForwardingStatus.DISABLED
    return ForwardingStatus.UNKNOWN


def _port_filter_entries(value: Any) -> tuple[tuple[bool, int, int], ...] | None:
    if not isinstance(value, list):
        return None
    entries = []
    for item in value:
        if not isinstance(item, dict):
            return None
        proto, port = item.get("proto"), item.get("port")
        if (proto not in _PROTOCOLS or not isinstance(port, int) or isinstance(port, bool)
                or not 0 <= port <= 0xFFFF):
            return None
        entries.append((False, _PROTOCOLS[proto], port))
    return tuple(entries)


def attributes_to_posture(attrs: Iterable[Attribute], *,
                          vendor_id: int = DEFAULT_VENDOR_ID) -> dict[str, Any]:
    """Rebuild the posture document from attributes (ours or a plain IETF peer's)."""
    vend: dict[int, Any] = {}
    ietf: dict[int, list[Attribute]] = {}
    for a in attrs:
        if isinstance(a, VendorAttribute) and a.vendor_id == vendor_id:
            vend.setdefault(a.kind, a.data)
        elif a.vendor_id == IETF_PEN:
            ietf.setdefault(a.attr_type, []).append(a)

    whole = vend.get(VendorAttrType.POSTURE_DOCUMENT)
    if isinstance(whole, dict):
        return dict(whole)

    meta = vend.get(VendorAttrType.DOCUMENT_META)
    doc: dict[str, Any]
    if isinstance(meta, dict):
        doc = {k: meta[k] for k in ("schema", "collected_at") if k in meta}
        rest = meta.get("rest")
        if isinstance(rest, dict):
            doc.update(rest)
    else:
        # not one of ours: a schema-shaped document with what the IETF attributes say
        doc = {"schema": 1, "collected_at": None}
        doc.update({s: UNKNOWN for s in SECTIONS})
        doc["certificate"] = None

    os_ = _os_from(vend, ietf)
    if os_ is not None:
        doc["os"] = os_
    pkgs = _packages_from(vend, ietf)
    if pkgs is not None:
        doc["packages"] = pkgs
    for key, kind in _SIMPLE.items():
        if kind in vend:
            doc[key] = vend[kind]
    if VendorAttrType.FORWARDING_DETAIL in vend:
        doc["forwarding"] = vend[VendorAttrType.FORWARDING_DETAIL]
    elif AttrType.FORWARDING_ENABLED in ietf:
        doc["forwarding"] = _forwarding_from(ietf[AttrType.FORWARDING_ENABLED][0])
    if VendorAttrType.LISTENING_DETAIL in vend:
        doc["listening"] = vend[VendorAttrType.LISTENING_DETAIL]
    elif AttrType.PORT_FILTER in ietf:
        doc["listening"] = [
            {"proto": _PROTO_NAMES.get(proto, str(proto)), "address": None, "port": port}
            for pf in ietf[AttrType.PORT_FILTER] if isinstance(pf, PortFilter)
            for blocked, proto, port in pf.entries if not blocked]
    fdp = ietf.get(AttrType.FACTORY_DEFAULT_PASSWORD_ENABLED)
    if fdp and isinstance(fdp[0], FactoryDefaultPasswordEnabled):
        doc["factory_default_password"] = fdp[0].enabled == 1
    return doc


def _os_from(vend: dict[int, Any], ietf: dict[int, list[Attribute]]) -> Any:
    if VendorAttrType.OS_DETAILS in vend:
        return vend[VendorAttrType.OS_DETAILS]
    os_: dict[str, Any] = {}
    for a in ietf.get(AttrType.PRODUCT_INFORMATION, [])[:1]:
        if isinstance(a, ProductInformation):
            os_["pretty_name"] = a.name
    for a in ietf.get(AttrType.STRING_VERSION, [])[:1]:
        if isinstance(a, StringVersion):
            os_["version"] = a.version
            if a.build:
                os_["kernel"] = a.build
    return os_ or None


def _packages_from(vend: dict[int, Any], ietf: dict[int, list[Attribute]]) -> Any:
    if VendorAttrType.PACKAGES_COMPACT in vend:
        return vend[VendorAttrType.PACKAGES_COMPACT]
    pairs = [p for a in ietf.get(AttrType.INSTALLED_PACKAGES, [])
             if isinstance(a, InstalledPackages) for p in a.packages]
    extra = vend.get(VendorAttrType.PACKAGE_EXTRA_Z, vend.get(VendorAttrType.PACKAGE_EXTRA))
    if extra is not None and not isinstance(extra, list):
        return extra  # "unknown" or another non-list value, carried as is
    if AttrType.INSTALLED_PACKAGES not in ietf:
        return None
    if not isinstance(extra, list) or len(extra) != len(pairs):
        return [{"name": n, "version": v} for n, v in pairs]
    out = []
    for (name, version), ex in zip(pairs, extra, strict=True):
        if isinstance(ex, list) and len(ex) == 2 and ex[0] == 1 and isinstance(ex[1], dict):
            out.append(dict(ex[1]))
        elif isinstance(ex, list) and len(ex) == 2 and isinstance(ex[1], dict):
            out.append({"name": name, "version": version, **ex[1]})
        else:
            out.append({"name": name, "version": version})
    return out


def _forwarding_from(attr: Attribute) -> Any:
    status = attr.status if isinstance(attr, ForwardingEnabled) else ForwardingStatus.UNKNOWN
    if status == ForwardingStatus.DISABLED:
        return {"ipv4": False, "ipv6": False, "bridges": []}
    if status == ForwardingStatus.ENABLED:
        # the IETF attribute does not say which family: read it the strict way, as both
        return {"ipv4": True, "ipv6": True, "bridges": []}
    return UNKNOWN


_IETF_PACKAGE_TYPES = frozenset({(IETF_PEN, int(AttrType.INSTALLED_PACKAGES))})


def attributes_for_request(doc: dict[str, Any], requested: Iterable[tuple[int, int]], *,
                           vendor_id: int = DEFAULT_VENDOR_ID) -> list[Attribute]:
    """The attributes of `doc` an Attribute Request asked for. The package list goes once:
    compact when PACKAGES_COMPACT is asked for (our IMV asks for both), else IETF."""
    wanted = set(requested)
    compact = (vendor_id, int(VendorAttrType.PACKAGES_COMPACT)) in wanted
    if compact:
        wanted -= _IETF_PACKAGE_TYPES | {(vendor_id, int(VendorAttrType.PACKAGE_EXTRA)),
                                         (vendor_id, int(VendorAttrType.PACKAGE_EXTRA_Z))}
    attrs = posture_to_attributes(doc, vendor_id=vendor_id,
                                  packages="compact" if compact else "ietf")
    return select_attributes(attrs, wanted)


def digest_only_document(doc: dict[str, Any]) -> dict[str, Any] | None:
    """What an agent with a quarantine certificate sends first, or None without one:
    schema, the certificate (token + posture digest) and digest_only.

    It is kept small enough for one EAP-TNC fragment that fits one TTLS fragment (one EAP
    round trip instead of three): no collected_at, and the token unwrapped from the base64
    the CERTIFICATE attribute gave it when it is one of our ASCII "qc1." tokens.
    """
    cert = doc.get("certificate")
    if not (isinstance(cert, dict) and isinstance(cert.get("token"), str)
            and isinstance(cert.get("posture_digest"), str)):
        return None
    token = cert["token"]
    try:
        raw = base64.b64decode(token, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raw = ""
    if raw.startswith("qc1.") and raw.isprintable():
        token = raw
    out = {k: doc[k] for k in ("schema",) if k in doc}
    return {**out, "certificate": {**cert, "token": token}, "digest_only": True}


def is_digest_only(doc: dict[str, Any]) -> bool:
    """A document that names its posture by digest and carries no section."""
    return doc.get("digest_only") is True and not any(s in doc for s in SECTIONS
                                                      if s != "certificate")


def select_attributes(attrs: Sequence[Attribute],
                      requested: Iterable[tuple[int, int]]) -> list[Attribute]:
    """The attributes whose (vendor, type) was asked for, in their original order."""
    wanted = set(requested)
    return [a for a in attrs if (a.vendor_id, a.attr_type) in wanted]
