"""Inventory models: validation and RADIUS port -> interface/ifIndex mapping."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from enforcers.inventory import Inventory, PortMapping, Switch


def test_patterns_both_ways() -> None:
    m = PortMapping(name_pattern="GigabitEthernet1/0/{nas_port}",
                    ifindex_pattern="nas_port + 10100")
    rp = m.resolve(nas_port=7)
    assert (rp.name, rp.ifindex, rp.base_port, rp.nas_port) == (
        "GigabitEthernet1/0/7", 10107, 10107, 7)
    assert m.resolve(name="GigabitEthernet1/0/12").ifindex == 10112
    # NAS-Port-Id is the interface name on most switches
    assert m.resolve(nas_port_id="GigabitEthernet1/0/3").nas_port == 3
    assert PortMapping(ifindex_pattern="nas_port").resolve(name="x", nas_port=5).ifindex == 5


def test_table_wins_over_patterns() -> None:
    m = PortMapping(table=[{"name": "swp1", "ifindex": 3, "base_port": 1, "nas_port": 1}],
                    name_pattern="swp{nas_port}", ifindex_pattern="nas_port + 100")
    assert m.resolve(nas_port=1).ifindex == 3 and m.resolve(nas_port=1).base_port == 1
    assert m.resolve(nas_port=2).ifindex == 102


def test_unresolvable_and_bad_patterns() -> None:
    with pytest.raises(LookupError):
        PortMapping().resolve(nas_port=4)
    with pytest.raises(ValidationError):
        PortMapping(ifindex_pattern="__import__('os').system('x')")
    with pytest.raises(ValidationError):
        PortMapping(name_pattern="Gi1/0/1")


def test_switch_validation() -> None:
    sw = Switch.model_validate({
        "name": "a", "address": "192.0.2.1", "driver": "snmp", "vendor": "cisco",
        "snmp": {"version": "3", "user": "u", "auth_key": "k" * 8, "priv_key": "p" * 8},
        "coa": {"secret": "s"}})
    assert sw.vlan_mib() == "cisco-vmvlan" and sw.takes_coa and sw.coa.port == 3799
    assert "k" * 8 not in repr(sw)  # secrets stay out of logs
    with pytest.raises(ValidationError, match=r"needs a \[ssh\] section"):
        Switch.model_validate({"name": "b", "address": "x", "driver": "ssh-cisco-ios"})
    with pytest.raises(ValidationError, match="password or key_file"):
        Switch.model_validate({"name": "b", "address": "x", "driver": "ssh-cisco-ios",
                               "ssh": {"username": "u"}})
    with pytest.raises(ValidationError):
        Switch.model_validate({"name": "c", "address": "x", "driver": "snmp",
                               "snmp": {"version": "2c", "community": "c"}, "typo": 1})
    with pytest.raises(ValidationError, match="duplicate"):
        Inventory.model_validate({"switches": [
            {"name": "d", "address": "x", "driver": "coa", "coa": {"secret": "s"}}] * 2})
