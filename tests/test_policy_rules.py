"""Each rule kind on its own: what passes, what fails, what counts as unknown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from nac.posture.rules import Rule

BASE = json.loads(
    (Path(__file__).parent / "data" / "postures" / "debian12_compliant.json").read_text()
)
RULE = TypeAdapter(Rule)


def outcome(rule: dict[str, Any], **sections: Any) -> tuple[str | None, str]:
    result = RULE.validate_python(rule).check(BASE | sections, None)
    return result.status, result.reason


def pkg(name: str, version: str = "1.0-1", manager: str = "dpkg", purl: bool = True) -> dict:
    p = {"name": name, "version": version, "manager": manager, "source": name}
    if purl:
        kind = {"dpkg": "deb", "pip": "pypi"}[manager]
        ns = "debian/" if kind == "deb" else ""
        p["purl"] = f"pkg:{kind}/{ns}{name}@{version}" + ("?arch=amd64" if kind == "deb" else "")
    return p


SOFTWARE = [
    # (rule keys, packages, status, reason fragment)
    ({"deny": ["pkg:deb/*/telnetd"]}, [pkg("bash"), pkg("telnetd")], "major", "telnetd@1.0-1"),
    ({"deny": ["pkg:deb/*/telnetd"]}, [pkg("bash")], "compliant", ""),
    ({"deny": ["pkg:deb/*/tel*"]}, [pkg("telnet")], "major", "telnet@"),
    ({"deny": ["pkg:deb/debian/openssl@3.0.11-*"]}, [pkg("openssl", "3.0.11-1")], "major", ""),
    ({"deny": ["pkg:deb/debian/openssl@3.0.11-*"]}, [pkg("openssl", "3.0.15-1")], "compliant", ""),
    ({"deny": ["pkg:pypi/django"]}, [pkg("django", manager="pip")], "major", "pkg:pypi/django"),
    (
        {"allow": ["pkg:deb/debian/*"], "unknown": "minor"},
        [pkg("bash"), pkg("requests", manager="pip")],
        "minor",
        "not on the allow list: pkg:pypi/requests",
    ),
    ({"allow": ["pkg:deb/debian/*"]}, [pkg("requests", manager="pip")], "compliant", ""),
    ({"deny": ["pkg:deb/*/nmap"]}, [pkg("nmap", purl=False)], "major", "pkg:deb/debian/nmap"),
]


@pytest.mark.parametrize(("keys", "packages", "status", "reason"), SOFTWARE)
def test_software(keys: dict, packages: list, status: str, reason: str) -> None:
    got, why = outcome({"check": "software", **keys}, packages=packages)
    assert got == status
    assert reason in why


def test_software_fast_paths_never_hide_a_denial() -> None:
    rule = RULE.validate_python({"check": "software", "deny": ["pkg:deb/*/telnetd"]})
    clean = BASE | {"packages": [pkg("bash"), pkg("coreutils")]}
    dirty = BASE | {"packages": [pkg("bash"), pkg("telnetd")]}
    for _ in range(3):  # after the clean host, its purls are remembered as fine
        assert rule.check(clean, None).status == "compliant"
        assert rule.check(dirty, None).status == "major"


OS = [
    ({"id": "debian", "version": "12"}, "compliant"),
    ({"id": "debian", "version_id": "11"}, "major"),
    ({"id": "ubuntu", "version_id": "24.04"}, "compliant"),
    ({"id": "ubuntu", "version_id": "20.04"}, "major"),
    ({"family": "windows", "id": "windows", "version_id": "10.0.22631"}, "compliant"),
    ({"id": "arch", "version_id": "rolling"}, "major"),
]


@pytest.mark.parametrize(("os_fields", "status"), OS)
def test_os(os_fields: dict, status: str) -> None:
    rule = {"check": "os", "allow": [
        {"family": "linux", "id": "debian", "version": ">=12"},
        {"family": "linux", "id": "ubuntu", "version": ">=22.04"},
        {"family": "windows", "version": ">=10.0.19045"},
    ]}  # fmt: skip
    os_info = {"family": "linux", "version_id": "12"} | os_fields
    assert outcome(rule, os=os_info)[0] == status
    assert outcome(rule, os="unknown")[0] is None


def test_security_software() -> None:
    rule = {"check": "security_software", "any_of": ["clamav"], "max_signature_age": "24h"}
    av = {"name": "clamav", "running": True, "signature_age_hours": 5.0}
    assert outcome(rule, security_software=[av])[0] == "compliant"
    assert outcome(rule, security_software=[av | {"signature_age_hours": 30}])[0] == "major"
    assert outcome(rule, security_software=[av | {"running": False}])[1].endswith("not running")
    assert outcome(rule, security_software=[av | {"name": "other"}])[0] == "major"
    assert outcome(rule, security_software=[av | {"signature_age_hours": None}])[0] is None
    assert outcome(rule, security_software="unknown")[0] is None


def test_firewall_forwarding_updates_password() -> None:
    fw = {"check": "firewall", "backends": ["nftables"], "on_fail": "minor"}
    assert outcome(fw)[0] == "compliant"
    assert outcome(fw, firewall={"enabled": True, "backend": "iptables"})[0] == "minor"
    assert outcome(fw, firewall={"enabled": False})[1] == "host firewall is off"
    fwd = {"check": "forwarding", "bridges": True}
    assert outcome(fwd, forwarding={"ipv4": False, "ipv6": False, "bridges": ["br0"]}) == (
        "major", "forwarding on: bridges br0",
    )  # fmt: skip
    assert (
        outcome({"check": "forwarding", "ipv6": False}, forwarding={"ipv4": False, "ipv6": True})[0]
        == "compliant"
    )
    vpn = {"check": "forwarding", "tunnels": True, "on_fail": "minor"}
    off = {"ipv4": False, "ipv6": False, "bridges": [], "tunnels": ["wg0"]}
    assert outcome(vpn, forwarding=off) == ("minor", "forwarding on: tunnels wg0")
    assert outcome({"check": "forwarding"}, forwarding=off)[0] == "compliant"
    upd = {"check": "pending_updates", "max_security": 1, "max_total": 5}
    assert outcome(upd, pending_updates={"security": 1, "total": 5})[0] == "compliant"
    assert outcome(upd, pending_updates={"security": 2, "total": 5})[0] == "major"
    assert outcome(upd, pending_updates={"security": 0, "total": 6})[0] == "major"
    assert outcome(upd, pending_updates={"security": True})[0] is None
    pw = {"check": "default_password"}
    assert outcome(pw)[0] == "compliant"
    assert outcome(pw, factory_default_password=True)[0] == "major"
