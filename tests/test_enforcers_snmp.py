"""SNMP driver against net-snmp snmpd in a lab switch namespace (Q-BRIDGE pass_persist).

The net-snmp CLI tools (snmpget/snmpset/snmpwalk) cross-check the pass_persist script
independently of pysnmp.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcers.base import DriverError
from enforcers.inventory import Switch
from enforcers.snmp import (
    DOT1Q_PVID,
    DOT1Q_STATIC_EGRESS,
    DOT1Q_STATIC_UNTAGGED,
    IF_ADMIN_STATUS,
    SnmpDriver,
    set_portlist_bit,
)
from nac.lab import qbridge_pass as qbp
from nac.lab.netns import time_scale
from tests.lab import recorded
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
    timeout = 0.5 * time_scale()  # stretched only in an emulated test VM
    snmp: dict[str, object] = (
        {"version": "3", "user": s.v3_user, "auth_protocol": "SHA", "auth_key": s.v3_auth_key,
         "priv_protocol": "AES", "priv_key": s.v3_priv_key, "timeout": timeout, "retries": 1}
        if v3 else {"version": "2c", "community": s.community, "timeout": timeout, "retries": 1})
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


# --------------------------------------------------------------------------- both VLAN modes
@pytest.mark.parametrize("mode", ["filtering", "bridge-per-vlan"])
def test_agent_and_driver_in_each_vlan_mode(tmp_path: Path, mode: str) -> None:
    """The real-bridge path of each VLAN model; filtering runs where the kernel has it
    (skipped with the reason on kernels without CONFIG_BRIDGE_VLAN_FILTERING)."""
    with switch_lab(tmp_path, snmpd=True, mode=mode, initial={1: 10, 2: 10, 3: 20}) as lab:
        sw = lab.switch
        assert sw.mode == mode
        # VLAN 20 and VLAN 10 are apart until the driver moves swp3 over.
        assert not sw.reachable(sw.hosts[2], sw.hosts[0], tries=1)
        assert sw.reachable(sw.hosts[1], sw.hosts[0])

        async def scenario() -> None:
            async with SnmpDriver(entry(lab, True)) as drv:
                assert await drv.get_port_vlan("swp3") == 20
                await drv.set_port_vlan("swp3", 10)
                await drv.bounce_port("swp3")

        asyncio.run(scenario())
        assert sw.port_vlan("swp3") == 10 and sw.port_vlans("swp3") == [10]
        assert sw.reachable(sw.hosts[2], sw.hosts[0])


# --------------------------------------------------------------------------- agent units
def test_agent_parses_recorded_vlan_show() -> None:
    parsed = qbp.parse_vlan_show(json.loads(recorded.VLAN_SHOW))
    assert parsed["swp1"] == (10, {10: True})
    assert parsed["swp3"] == (20, {20: True, 30: False})
    assert parsed["swp4"] == (None, {100: False, 101: False, 102: False})
    assert parsed["br0"] == (1, {1: True})


def test_agent_filtering_commands() -> None:
    parsed = qbp.parse_vlan_show(json.loads(recorded.VLAN_SHOW))
    assert qbp.pvid_commands("swp3", 10, parsed["swp3"][1]) == [
        "vlan del dev swp3 vid 20", "vlan del dev swp3 vid 30",
        "vlan add dev swp3 vid 10 pvid untagged"]
    assert qbp.pvid_commands("swp1", 10, parsed["swp1"][1]) == [
        "vlan add dev swp1 vid 10 pvid untagged"]  # already there: idempotent
    ports = {i: qbp.Port(i, f"swp{i}", True, parsed[f"swp{i}"][0], parsed[f"swp{i}"][1])
             for i in (1, 2, 3)}
    # PortList of VLAN 10 with ports 2 and 3 (bits 0x40, 0x20): 1 leaves, 3 joins.
    assert qbp.member_commands(ports, 10, b"\x60", untagged=True) == [
        "vlan del dev swp1 vid 10", "vlan add dev swp3 vid 10 untagged"]
    # Egress list of VLAN 30: swp3 is a tagged member already, so only swp1 joins.
    assert qbp.member_commands(ports, 30, b"\xa0", untagged=False) == [
        "vlan add dev swp1 vid 30"]


class RecordedBridgeTool:
    """Stands in for the ``bridge -batch`` child on a kernel without VLAN filtering:
    answers ``vlan show`` with recorded output and records every other line."""

    tool = "bridge"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def run(self, command: str) -> str:
        if command == "vlan show":
            return recorded.VLAN_SHOW
        if command == "vlan show dev swp3":
            return recorded.VLAN_SHOW_SWP3
        self.lines.append(command)
        return ""

    def close(self) -> None:
        pass


def fake_sysfs(root: Path) -> dict[str, int]:
    """/sys/class/net of the recorded switch: br0 and swp1..swp4 enslaved to it."""
    index = {"lo": 1, "br0": 2, "swp1": 11, "swp2": 12, "swp3": 13, "swp4": 14}
    for name, i in index.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "ifindex").write_text(f"{i}\n")
        (d / "flags").write_text("0x1003\n")  # IFF_UP | IFF_BROADCAST | IFF_MULTICAST
        if name.startswith("swp"):
            (d / "master").symlink_to(root / "br0")
    (root / "br0" / "bridge").mkdir()
    return index


def test_agent_filtering_mode_on_recorded_switch(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole pass_persist request path in filtering mode: GET reads the PVID from
    ``bridge vlan show``, SET builds the ``bridge vlan`` lines, walks list every port."""
    index = fake_sysfs(tmp_path)
    monkeypatch.setattr(qbp, "SYS_NET", str(tmp_path))
    tool = RecordedBridgeTool()
    br = qbp.Bridge("filtering", "br0", "vl{vlan}", {10, 20, 30}, br=tool)  # type: ignore[arg-type]

    def ask(*lines: str) -> list[str]:
        it = iter(lines[1:])
        return qbp.handle(lines[0], lambda: next(it), br)

    pvid3 = f"{DOT1Q_PVID}.{index['swp3']}"
    assert ask("get", pvid3) == [f".{pvid3}", "gauge", "20"]
    assert ask("get", f"{DOT1Q_PVID}.{index['br0']}") == ["NONE"]  # the bridge is no port
    assert ask("set", pvid3, "gauge 10") == ["DONE"]
    assert tool.lines == ["vlan del dev swp3 vid 20", "vlan del dev swp3 vid 30",
                          "vlan add dev swp3 vid 10 pvid untagged"]
    assert ask("set", pvid3, "gauge 40") == ["inconsistent-value"]  # not in the VLAN db
    # getnext walks the PVID column in ifIndex order; swp4 (no PVID) is skipped.
    first = ask("getnext", DOT1Q_PVID)
    assert first == [f".{DOT1Q_PVID}.{index['swp1']}", "gauge", "10"]
    assert ask("getnext", pvid3) == ["NONE"]  # swp3 ends the dot1qVlan subtree
    # The first static VLAN row: VLAN 10 egress holds swp1, swp2 (ifIndex 11, 12).
    egress10 = ask("getnext", DOT1Q_STATIC_EGRESS)
    assert egress10[0] == f".{DOT1Q_STATIC_EGRESS}.10" and egress10[2] == "00 30"
    untagged10 = ask("get", f"{DOT1Q_STATIC_UNTAGGED}.10")
    octets = bytes(int(x, 16) for x in untagged10[2].split())
    assert qbp.in_portlist(octets, index["swp1"]) and qbp.in_portlist(octets, index["swp2"])
    assert not qbp.in_portlist(octets, index["swp3"])


def test_agent_batch_child_against_real_ip() -> None:
    """The long-lived iproute2 child: answers, failures and a usage error that kills it."""
    if not shutil.which("ip"):
        pytest.skip("ip (iproute2) not installed")
    b = qbp.Batch("ip")
    try:
        out = json.loads(b.run("link show dev lo"))
        assert out[0]["ifname"] == "lo"
        with pytest.raises(qbp.CommandFailed, match="nosuch0"):
            b.run("link show dev nosuch0")
        assert json.loads(b.run("link show dev lo"))[0]["ifname"] == "lo"  # still in step
        with pytest.raises(qbp.CommandFailed):
            b.run("link show dev lo bogus-argument")  # iproute2 exits on usage errors
        assert json.loads(b.run("link show dev lo"))[0]["ifname"] == "lo"
        assert b.spawns == 2
        with pytest.raises(ValueError):
            b.run("link show\nlink show")
    finally:
        b.close()


USM_UNKNOWN_ENGINE_IDS = "1.3.6.1.6.3.15.1.1.4.0"  # SNMP-USM-MIB usmStatsUnknownEngineIDs


def test_v3_discovers_the_engine_once(fresh: Lab) -> None:
    """One long-lived SnmpEngine per event loop: the v3 engine discovery (the agent answers
    a probe with a usmStatsUnknownEngineIDs report, counted there) happens once, not per
    request or per driver; the localised keys are reused with it."""
    s = fresh.snmpd
    assert s is not None

    def unknown_engine_ids() -> int:  # read over v2c, which does not touch the counter
        return int(s.snmpget(USM_UNKNOWN_ENGINE_IDS).stdout.rsplit(":", 1)[1])

    before = unknown_engine_ids()

    async def scenario() -> None:
        for _ in range(2):  # two drivers, as two jobs of the enforcer would build
            async with SnmpDriver(entry(fresh, True)) as drv:
                for vlan in (20, 10, 20, 10):
                    await drv.set_port_vlan("swp1", vlan)

    asyncio.run(scenario())
    assert unknown_engine_ids() - before == 1
