"""SNMP driver against net-snmp snmpd in a lab switch namespace (Q-BRIDGE pass_persist).

The net-snmp CLI tools (snmpget/snmpset/snmpwalk) cross-check the pass_persist script
independently of pysnmp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from enforcers.base import DriverError
from enforcers.inventory import Switch
from enforcers.snmp import (
    DOT1Q_PVID,
    DOT1Q_STATIC_UNTAGGED,
    IF_ADMIN_STATUS,
    SnmpDriver,
    set_portlist_bit,
)
from tests.lab.fixtures import Lab, switch_lab

pytestmark = [pytest.mark.netns, pytest.mark.peer]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    # One lab for the module: each test restores the VLANs it changed.
    with switch_lab(tmp_path_factory.mktemp("snmp"), snmpd=True,
                    initial={1: 10, 2: 10, 3: 20}) as lab:
        yield lab


@pytest.fixture
def fresh(lab: Lab) -> Iterator[Lab]:
    yield lab
    for i, vlan in ((1, 10), (2, 10), (3, 20)):
        port = f"swp{i}"
        if lab.switch.port_vlan(port) != vlan:
            lab.switch.set_port_vlan(port, vlan)


def entry(lab: Lab, v3: bool, **over: object) -> Switch:
    assert lab.snmpd is not None
    s = lab.snmpd
    snmp: dict[str, object] = (
        {"version": "3", "user": s.v3_user, "auth_protocol": "SHA", "auth_key": s.v3_auth_key,
         "priv_protocol": "AES", "priv_key": s.v3_priv_key, "timeout": 0.5, "retries": 1}
        if v3 else {"version": "2c", "community": s.community, "timeout": 0.5, "retries": 1})
    table = [{"name": p, "ifindex": lab.switch.ifindex(p)} for p in lab.switch.ports]
    data = {"name": "labsw", "address": lab.switch.mgmt_ip, "driver": "snmp",
            "snmp": snmp, "ports": {"table": table}, "bounce_down_seconds": 0.2}
    data.update(over)
    return Switch.model_validate(data)


def test_pass_persist_with_net_snmp_tools(fresh: Lab) -> None:
    """snmpset/snmpget against the script, several SETs in a row (the blank-line quirk)."""
    s, sw = fresh.snmpd, fresh.switch
    assert s is not None
    i1, i3 = sw.ifindex("swp1"), sw.ifindex("swp3")
    assert s.snmpget(f"{DOT1Q_PVID}.{i3}").stdout.strip().endswith("Gauge32: 20")
    s.snmpset(f"{DOT1Q_PVID}.{i3}", "u", "30")
    s.snmpset(f"{DOT1Q_PVID}.{i1}", "u", "20", v3=True)
    s.snmpset(f"{DOT1Q_PVID}.{i3}", "u", "10")
    # After three SETs the replies must still match their questions.
    assert s.snmpget(f"{DOT1Q_PVID}.{i1}").stdout.strip().endswith("Gauge32: 20")
    assert s.snmpget(f"{DOT1Q_PVID}.{i3}", v3=True).stdout.strip().endswith("Gauge32: 10")
    assert (sw.port_vlan("swp1"), sw.port_vlan("swp3")) == (20, 10)
    walk = s.snmpwalk(f"{DOT1Q_PVID}").stdout
    assert walk.count("Gauge32") == 3
    bad = s.snmpset(f"{DOT1Q_PVID}.{i3}", "u", "999", check=False)
    assert bad.returncode != 0
    assert "inconsistentValue" in bad.stderr  # VLAN 999 does not exist on the switch
    s.snmpset(f"{IF_ADMIN_STATUS}.{i3}", "i", "2")
    assert not sw.port_is_up("swp3")
    s.snmpset(f"{IF_ADMIN_STATUS}.{i3}", "i", "1")
    assert sw.port_is_up("swp3")


@pytest.mark.parametrize("v3", [False, True], ids=["v2c", "v3-authPriv-SHA-AES"])
def test_driver_moves_host_and_bounces(fresh: Lab, v3: bool) -> None:
    sw = fresh.switch
    h1, h2, h3 = sw.hosts
    assert not sw.ping(h3, h1, count=1)

    async def scenario() -> float:
        async with SnmpDriver(entry(fresh, v3)) as drv:
            assert await drv.get_port_vlan("swp3") == 20
            t0 = time.perf_counter()
            await drv.set_port_vlan("swp3", 10)
            took = time.perf_counter() - t0
            await drv.bounce_port("swp3")
            assert await drv.get_port_vlan("swp3") == 10
            await drv.set_port_vlan("swp1", 30)
        return took

    took = asyncio.run(scenario())
    assert sw.port_vlan("swp3") == 10 and sw.port_vlan("swp1") == 30
    assert sw.port_is_up("swp3")
    assert sw.reachable(h3, h2)  # new VLAN peer
    assert not sw.ping(h1, h2, count=1)  # old VLAN peer of host 1 is gone
    print(f"snmp {'v3' if v3 else 'v2c'} set_port_vlan {took * 1000:.1f} ms")


def test_errors(fresh: Lab) -> None:
    assert fresh.snmpd is not None

    async def scenario() -> None:
        bad_key = entry(fresh, True)
        assert bad_key.snmp is not None
        bad_key = bad_key.model_copy(update={"snmp": bad_key.snmp.model_copy(
            update={"auth_key": type(bad_key.snmp.auth_key)("wrong-auth-pass")})})
        with pytest.raises(DriverError) as exc:
            async with SnmpDriver(bad_key) as drv:
                await drv.get_port_vlan("swp1")
        assert exc.value.retryable is False
        async with SnmpDriver(entry(fresh, False)) as drv:
            with pytest.raises(DriverError) as unknown:
                await drv.get_port_vlan("swp9")  # not in the port table
            assert unknown.value.retryable is False
            with pytest.raises(DriverError) as missing:
                await drv.get_port_vlan("4000")  # an ifIndex the agent does not have
            assert missing.value.retryable is False
        fresh.switch.mgmt_down()
        try:
            async with SnmpDriver(entry(fresh, False)) as drv:
                with pytest.raises(DriverError) as down:
                    await drv.get_port_vlan("swp1")
                assert down.value.retryable is True
        finally:
            fresh.switch.mgmt_up()

    asyncio.run(scenario())


def test_portlist_bits() -> None:
    assert set_portlist_bit(b"", 1, True) == b"\x80"
    assert set_portlist_bit(b"\xff\xff", 9, False) == b"\xff\x7f"
    assert set_portlist_bit(b"\x00", 12, True) == b"\x00\x10"


def test_port_name_resolved_from_ifname(fresh: Lab) -> None:
    """No port table: the driver walks IF-MIB ifName to find the ifIndex."""
    s = fresh.snmpd
    assert s is not None
    walk = s.snmpwalk("1.3.6.1.2.1.31.1.1.1.1").stdout
    assert walk.count("STRING") == 3 and '"swp2"' in walk

    async def scenario() -> None:
        async with SnmpDriver(entry(fresh, False, ports={})) as drv:
            assert await drv.get_port_vlan("swp2") == 10
            await drv.set_port_vlan("swp2", 20)
            with pytest.raises(DriverError) as exc:
                await drv.get_port_vlan("eth7")
            assert exc.value.retryable is False

    asyncio.run(scenario())
    assert fresh.switch.port_vlan("swp2") == 20


def test_static_membership_mode(fresh: Lab) -> None:
    """snmp_vlan_mib = "qbridge-static": egress/untagged PortLists move with the PVID."""
    s, sw = fresh.snmpd, fresh.switch
    assert s is not None
    i3 = sw.ifindex("swp3")

    async def scenario() -> None:
        async with SnmpDriver(entry(fresh, True, snmp_vlan_mib="qbridge-static")) as drv:
            await drv.set_port_vlan("swp3", 30)

    asyncio.run(scenario())
    assert sw.port_vlan("swp3") == 30

    def member(vid: int) -> bool:
        out = s.snmpget(f"{DOT1Q_STATIC_UNTAGGED}.{vid}", hex_strings=True).stdout
        out = out.split(":", 1)[1]
        octets = bytes(int(x, 16) for x in out.split())
        byte, bit = (i3 - 1) // 8, 0x80 >> ((i3 - 1) % 8)
        return byte < len(octets) and bool(octets[byte] & bit)

    assert member(30) and not member(20)
    assert sw.port_is_up("swp3")
