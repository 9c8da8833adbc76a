"""Posture document <-> PA-TNC attributes: exact round trip, IETF-only peers, selection."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.tnc.pa_tnc import (
    IETF_PEN,
    AttrType,
    InstalledPackages,
    PaTncMessage,
    VendorAttribute,
    VendorAttrType,
    decode_message,
)
from eap_ext.tnc.posture_attrs import (
    SECTIONS,
    attributes_to_posture,
    posture_attribute_types,
    posture_to_attributes,
    select_attributes,
)

DATA = Path(__file__).parent / "data" / "postures"
SCHEMA_EXAMPLE = {
    "schema": 1, "collected_at": "2026-11-27T23:30:00Z",
    "os": {"family": "linux", "id": "debian", "version_id": "12", "version": "12 (bookworm)",
           "pretty_name": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-18-amd64",
           "arch": "x86_64"},
    "packages": [{"name": "openssl", "version": "3.0.11-1~deb12u2", "arch": "amd64",
                  "source": "openssl", "source_version": "3.0.11-1~deb12u2",
                  "manager": "dpkg",
                  "purl": "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"}],
    "pending_updates": {"security": 2, "total": 9},
    "forwarding": {"ipv4": False, "ipv6": False, "bridges": []},
    "firewall": {"enabled": True, "backend": "nftables", "rules": 14},
    "listening": [{"proto": "tcp", "address": "0.0.0.0", "port": 22}],
    "security_software": [{"name": "clamav", "running": True, "signature_age_hours": 5.0}],
    "interfaces": [{"name": "eth0", "mac": "52:54:00:12:34:56", "ipv4": ["192.0.2.10/24"],
                    "ipv6": ["2001:db8::10/64"]}],
    "factory_default_password": False,
    "certificate": {"token": "dG9rZW4=", "posture_digest": "ab" * 32},
}


def _wire_round_trip(doc: dict, vendor_id: int = 32473) -> dict:
    attrs = posture_to_attributes(doc, vendor_id=vendor_id)
    wire = PaTncMessage(9, tuple(attrs)).encode()
    return attributes_to_posture(decode_message(wire, vendor_id=vendor_id).attributes,
                                 vendor_id=vendor_id)


def test_schema_example_and_fixtures_round_trip() -> None:
    assert _wire_round_trip(SCHEMA_EXAMPLE) == SCHEMA_EXAMPLE
    for path in sorted(DATA.glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict):  # no_posture.json is null: no document at all
            assert _wire_round_trip(doc) == doc, path.name


def test_unknown_sections_survive_as_unknown() -> None:
    doc = {"schema": 1, "collected_at": "2026-11-27T23:30:00Z",
           **{s: "unknown" for s in SECTIONS}, "certificate": None,
           "future_section": {"x": [1, 2]}}
    assert _wire_round_trip(doc) == doc


def test_ietf_attributes_carry_the_interoperable_summary() -> None:
    attrs = posture_to_attributes(SCHEMA_EXAMPLE, packages="ietf")
    assert isinstance(attrs[0], VendorAttribute)
    assert attrs[0].kind == VendorAttrType.DOCUMENT_META
    pkgs = [a for a in attrs if isinstance(a, InstalledPackages)]
    assert pkgs[0].packages == (("openssl", "3.0.11-1~deb12u2"),)
    only_ietf = [a for a in attrs if a.vendor_id == IETF_PEN]
    doc = attributes_to_posture(only_ietf)
    assert doc["os"] == {"pretty_name": "Debian GNU/Linux 12 (bookworm)",
                         "version": "12 (bookworm)", "kernel": "6.1.0-18-amd64"}
    assert doc["packages"] == [{"name": "openssl", "version": "3.0.11-1~deb12u2"}]
    assert doc["forwarding"] == {"ipv4": False, "ipv6": False, "bridges": []}
    assert doc["listening"] == [{"proto": "tcp", "address": None, "port": 22}]
    assert doc["factory_default_password"] is False
    assert doc["firewall"] == "unknown" and doc["certificate"] is None


def test_agent_fallback_whole_document() -> None:
    attr = VendorAttribute(VendorAttrType.POSTURE_DOCUMENT, SCHEMA_EXAMPLE)
    wire = PaTncMessage(1, (attr,)).encode()
    assert attributes_to_posture(decode_message(wire).attributes) == SCHEMA_EXAMPLE


def test_select_attributes_by_request() -> None:
    attrs = posture_to_attributes(SCHEMA_EXAMPLE, packages="both")
    types = set(posture_attribute_types())
    assert {(a.vendor_id, a.attr_type) for a in attrs} <= types
    picked = select_attributes(attrs, [(IETF_PEN, AttrType.INSTALLED_PACKAGES)])
    assert [type(a) for a in picked] == [InstalledPackages]


def test_vendor_id_parameter() -> None:
    assert _wire_round_trip(SCHEMA_EXAMPLE, vendor_id=12345) == SCHEMA_EXAMPLE
    attrs = posture_to_attributes(SCHEMA_EXAMPLE, vendor_id=12345)
    # read with the wrong vendor ID the vendor attributes are just unknown attributes
    wire = PaTncMessage(1, tuple(attrs)).encode()
    doc = attributes_to_posture(decode_message(wire).attributes)
    assert doc["firewall"] == "unknown"


# -- property: any schema-shaped document round trips exactly --------------------------

scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=12)
           | st.floats(allow_nan=False, allow_infinity=False))
json_val = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=8)
unknown = st.just("unknown")
name = st.text(max_size=12) | st.text(min_size=256, max_size=300)
package = st.fixed_dictionaries(
    {}, optional={"name": name, "version": name | st.integers(), "arch": st.text(max_size=8),
                  "source": st.text(max_size=8), "source_version": st.text(max_size=8),
                  "manager": st.sampled_from(["dpkg", "rpm", "apk"]), "purl": st.text(),
                  "extra": json_val})
listening = st.lists(st.fixed_dictionaries(
    {"proto": st.sampled_from(["tcp", "udp", "icmp"]), "address": st.text(max_size=15),
     "port": st.integers(-1, 70000)}), max_size=3)
documents = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.just(1), "collected_at": st.text(max_size=20) | st.none(),
        "os": unknown | st.dictionaries(st.sampled_from(
            ["family", "id", "version_id", "version", "pretty_name", "kernel", "arch"]),
            name | st.none()),
        "packages": unknown | st.lists(package, max_size=4) | st.just(["odd"]),
        "pending_updates": unknown | st.fixed_dictionaries(
            {"security": st.integers(0, 99), "total": st.integers(0, 999)}),
        "forwarding": unknown | st.fixed_dictionaries(
            {"ipv4": st.booleans(), "ipv6": st.booleans(),
             "bridges": st.lists(st.text(max_size=6), max_size=2)}),
        "firewall": unknown | json_val,
        "listening": unknown | listening,
        "security_software": unknown | json_val,
        "interfaces": unknown | json_val,
        "factory_default_password": unknown | st.booleans(),
        "certificate": st.none() | st.fixed_dictionaries(
            {"token": st.text(max_size=20), "posture_digest": st.text(max_size=64)}),
        "some_future_key": json_val,
    })


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_round_trips(doc: dict) -> None:
    assert _wire_round_trip(doc) == doc
