"""SSH Linux-bridge driver against OpenSSH sshd inside a lab switch namespace."""

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
from enforcers.ssh import (
    LinuxBridgeDriver,
    SshPool,
    filtering_set_commands,
    pvid_from_vlan_show,
    vlans_from_vlan_show,
)
from nac.lab.netns import time_scale
from tests.lab import recorded
from tests.lab.fixtures import Lab, switch_lab

pytestmark = [pytest.mark.netns, pytest.mark.peer]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    # hosts 1 and 2 share VLAN 10, host 3 is alone in VLAN 20
    with switch_lab(tmp_path, sshd=True, initial={1: 10, 2: 10, 3: 20}) as lab:
        yield lab


def inventory_entry(lab: Lab, *, password: bool = False, sudo: bool = False) -> Switch:
    assert lab.sshd is not None
    # The driver's default timeout, stretched only in an emulated test VM.
    ssh: dict[str, object] = {"username": lab.sshd.user, "timeout": 10 * time_scale()}
    if password:
        ssh["password"] = lab.sshd.password
    else:
        ssh["key_file"] = str(lab.sshd.key_file)
    return Switch.model_validate({
        "name": "labsw", "address": lab.switch.mgmt_ip, "driver": "ssh-linux-bridge",
        "vendor": "linux", "ssh": ssh, "bounce_down_seconds": 0.2,
        "linux_bridge": {"vlan_mode": lab.switch.mode, "use_sudo": sudo,
                         "vlan_bridge_pattern": lab.switch.vlan_bridge_pattern},
    })


def test_set_vlan_moves_host_between_segments(lab: Lab) -> None:
    sw = lab.switch
    h1, h2, h3 = sw.hosts
    assert sw.reachable(h3, h1, tries=1) is False
    pool = SshPool()

    async def scenario() -> tuple[int, int, float]:
        drv = LinuxBridgeDriver(inventory_entry(lab), pool=pool)
        async with drv:
            before = await drv.get_port_vlan("swp3")
            t0 = time.perf_counter()
            await drv.set_port_vlan("swp3", 10)
            elapsed = time.perf_counter() - t0
            after = await drv.get_port_vlan("swp3")
            await drv.set_port_vlan("swp3", 10)  # idempotent
        return before, after, elapsed

    before, after, elapsed = asyncio.run(scenario())
    assert (before, after) == (20, 10)
    assert sw.port_vlan("swp3") == 10  # the kernel agrees, not just the driver
    assert sw.reachable(h3, h1)
    # and the reverse: move host 1 away from host 2
    asyncio.run(_set(lab, pool, "swp1", 30))
    assert sw.port_vlan("swp1") == 30
    assert not sw.ping(h1, h2, count=1)
    pool.close_all()
    print(f"ssh set_port_vlan {elapsed * 1000:.1f} ms")


async def _set(lab: Lab, pool: SshPool, port: str, vlan: int) -> None:
    drv = LinuxBridgeDriver(inventory_entry(lab), pool=pool)
    await drv.set_port_vlan(port, vlan)


def test_password_login_bounce_and_session_reuse(lab: Lab) -> None:
    sw = lab.switch
    pool = SshPool()

    async def scenario() -> None:
        drv = LinuxBridgeDriver(inventory_entry(lab, password=True), pool=pool)
        await drv.bounce_port("swp2")
        sess = pool.session(drv.switch)
        first = sess.conn
        await drv.set_port_vlan("swp2", 20)
        assert sess.conn is first  # the pooled session was reused, no second login
        res = await drv.reauthenticate(mac="02:00:00:00:00:01", port="swp2")
        assert res.ok and res.method == "bounce"
        await drv.close()

    asyncio.run(scenario())
    assert sw.port_is_up("swp2")
    assert sw.port_vlan("swp2") == 20
    log = (lab.workdir / "sshd" / "sshd.log").read_text()
    assert log.count("Accepted password") == 1


def test_errors_are_classified(lab: Lab) -> None:
    pool = SshPool()
    entry = inventory_entry(lab)

    async def scenario() -> None:
        drv = LinuxBridgeDriver(entry, pool=pool)
        with pytest.raises(DriverError) as bad_port:
            await drv.set_port_vlan("nosuchport", 10)
        assert bad_port.value.retryable is False
        with pytest.raises(DriverError) as inj:
            await drv.set_port_vlan("swp1;reboot", 10)
        assert inj.value.retryable is False
        with pytest.raises(DriverError) as bad_vlan:
            await drv.set_port_vlan("swp1", 5000)
        assert bad_vlan.value.retryable is False
        lab.sshd.stop()  # type: ignore[union-attr]
        await drv.close()
        with pytest.raises(DriverError) as down:
            await drv.get_port_vlan("swp1")
        assert down.value.retryable is True
        lab.sshd.start()  # type: ignore[union-attr]
        assert await drv.get_port_vlan("swp1") == 10  # reconnects by itself

    asyncio.run(scenario())
    pool.close_all()


@pytest.mark.skipif(not shutil.which("sudo"), reason="sudo not installed")
def test_use_sudo_wraps_the_whole_line(lab: Lab) -> None:
    async def scenario() -> None:
        drv = LinuxBridgeDriver(inventory_entry(lab, sudo=True), pool=SshPool())
        await drv.set_port_vlan("swp2", 30)
        assert await drv.get_port_vlan("swp2") == 30
        await drv.close()

    asyncio.run(scenario())
    assert lab.switch.port_vlan("swp2") == 30


@pytest.mark.parametrize("mode", ["filtering", "bridge-per-vlan"])
def test_each_vlan_mode_on_a_real_bridge(tmp_path: Path, mode: str) -> None:
    """Filtering mode runs where the kernel has bridge VLAN filtering, else it is skipped
    with that reason (the recorded-output tests below still cover its commands)."""
    with switch_lab(tmp_path, sshd=True, mode=mode, initial={1: 10, 2: 10, 3: 20}) as lab:
        sw = lab.switch
        assert sw.mode == mode
        # VLAN 20 and VLAN 10 are apart until the driver moves swp3 over.
        assert not sw.reachable(sw.hosts[2], sw.hosts[0], tries=1)
        assert sw.reachable(sw.hosts[1], sw.hosts[0])
        pool = SshPool()

        async def scenario() -> None:
            drv = LinuxBridgeDriver(inventory_entry(lab), pool=pool)
            await drv.set_port_vlan("swp3", 10)
            assert await drv.get_port_vlan("swp3") == 10

        asyncio.run(scenario())
        pool.close_all()
        assert lab.switch.port_vlans("swp3") == [10]
        assert lab.switch.reachable(lab.switch.hosts[2], lab.switch.hosts[0])


# ------------------------------------------------ filtering mode against recorded output
def test_recorded_vlan_show_matches_a_filtering_bridge(tmp_path: Path) -> None:
    """The recorded ``bridge -j vlan show`` is what iproute2 prints for the switch it
    describes, built for real (runs where the kernel has VLAN filtering: natively, or in the
    VM of test_vlan_filtering_vm; skipped with the reason elsewhere)."""
    from tests.lab.netns import BRIDGE, run

    with switch_lab(tmp_path, n_hosts=4, mode="filtering",
                    initial={1: 10, 2: 10, 3: 20, 4: 10}) as lab:
        ns = lab.switch.ns
        run([BRIDGE, "vlan", "add", "dev", "swp3", "vid", "30"], ns=ns)
        run([BRIDGE, "vlan", "del", "dev", "swp4", "vid", "10"], ns=ns)
        run([BRIDGE, "vlan", "add", "dev", "swp4", "vid", "100-102"], ns=ns)
        shown = run([BRIDGE, "-j", "vlan", "show"], ns=ns).stdout
        swp3 = run([BRIDGE, "-j", "vlan", "show", "dev", "swp3"], ns=ns).stdout
        swp4 = run([BRIDGE, "-compressvlans", "-j", "vlan", "show", "dev", "swp4"], ns=ns).stdout
        run([BRIDGE, "vlan", "del", "dev", "swp1", "vid", "10"], ns=ns)
        empty = run([BRIDGE, "-j", "vlan", "show", "dev", "swp1"], ns=ns).stdout
    # Compared as parsed JSON: iproute2's key order and spacing are not the contract.
    assert json.loads(shown) == json.loads(recorded.VLAN_SHOW), shown
    assert json.loads(swp3) == json.loads(recorded.VLAN_SHOW_SWP3), swp3
    assert json.loads(swp4) == json.loads(recorded.VLAN_SHOW_SWP4_COMPRESSED), swp4
    assert json.loads(empty) == json.loads(recorded.VLAN_SHOW_EMPTY), empty


def test_vlan_show_parsing_and_commands() -> None:
    assert pvid_from_vlan_show(recorded.VLAN_SHOW, "swp3") == 20
    assert pvid_from_vlan_show(recorded.VLAN_SHOW_SWP3, "swp3") == 20
    assert pvid_from_vlan_show(recorded.VLAN_SHOW, "swp4") is None  # a trunk, no PVID
    assert pvid_from_vlan_show(recorded.VLAN_SHOW_EMPTY, "swp1") is None
    assert sorted(vlans_from_vlan_show(recorded.VLAN_SHOW, "swp4")) == [100, 101, 102]
    assert sorted(vlans_from_vlan_show(recorded.VLAN_SHOW_SWP4_COMPRESSED, "swp4")) == [
        100, 101, 102]
    assert filtering_set_commands(recorded.VLAN_SHOW_SWP3, "swp3", 10) == [
        "bridge vlan del dev swp3 vid 20", "bridge vlan del dev swp3 vid 30",
        "bridge vlan add dev swp3 vid 10 pvid untagged"]
    assert filtering_set_commands(recorded.VLAN_SHOW_SWP3, "swp3", 20) == [
        "bridge vlan del dev swp3 vid 30", "bridge vlan add dev swp3 vid 20 pvid untagged"]
    assert filtering_set_commands(recorded.VLAN_SHOW_EMPTY, "swp1", 30) == [
        "bridge vlan add dev swp1 vid 30 pvid untagged"]


class RecordedShell:
    """A netmiko connection to a filtering-mode switch: the first ``bridge -j vlan show``
    answers with the recorded output; ``bridge vlan add/del`` lines change the port's
    state, and later shows print it in iproute2's JSON form."""

    base_prompt = "labsw"

    def __init__(self) -> None:
        first = json.loads(recorded.VLAN_SHOW_SWP3)[0]["vlans"]
        self.vlans = {v["vlan"]: v.get("flags", []) for v in first}
        self.commands: list[str] = []

    def is_alive(self) -> bool:
        return True

    def send_command(self, line: str, **_: object) -> str:
        cmd = line.removesuffix("; echo __rc=$?")
        self.commands.append(cmd)
        out = ""
        for part in cmd.split(" && "):
            words = part.split()
            if part == "bridge -j vlan show dev swp3":
                vlans = [{"vlan": vid, **({"flags": f} if f else {})}
                         for vid, f in sorted(self.vlans.items())]
                out += json.dumps([{"ifname": "swp3", "vlans": vlans}] if vlans else []) + "\n"
            elif words[:3] in (["bridge", "vlan", "del"], ["bridge", "vlan", "add"]):
                vid = int(words[words.index("vid") + 1])
                if words[2] == "del":
                    self.vlans.pop(vid, None)
                    continue
                flags = (["PVID"] if "pvid" in words else []) + (
                    ["Egress Untagged"] if "untagged" in words else [])
                if "pvid" in words:  # the kernel keeps one PVID per port
                    self.vlans = {v: [x for x in f if x != "PVID"] for v, f in self.vlans.items()}
                self.vlans[vid] = flags
            else:
                return out + "unknown command\n__rc=127"
        # netmiko strips the prompt: the driver sees the output and the status line.
        return out + "__rc=0"


def test_linux_driver_filtering_mode_on_recorded_output() -> None:
    sw = Switch.model_validate({
        "name": "recsw", "address": "192.0.2.10", "driver": "ssh-linux-bridge",
        "vendor": "linux", "ssh": {"username": "u", "password": "p"},
        "linux_bridge": {"vlan_mode": "filtering"}})
    pool = SshPool()
    shell = RecordedShell()
    pool.session(sw).conn = shell  # the pooled session is this recorded shell

    async def scenario() -> None:
        drv = LinuxBridgeDriver(sw, pool=pool)
        assert await drv.get_port_vlan("swp3") == 20
        await drv.set_port_vlan("swp3", 10)
        assert await drv.get_port_vlan("swp3") == 10

    asyncio.run(scenario())
    assert shell.commands == [
        "bridge -j vlan show dev swp3",
        "bridge -j vlan show dev swp3",
        "bridge vlan del dev swp3 vid 20 && bridge vlan del dev swp3 vid 30 && "
        "bridge vlan add dev swp3 vid 10 pvid untagged && "
        "bridge -j vlan show dev swp3",  # the read-back proof, in the same line
        "bridge -j vlan show dev swp3",
    ]
    assert shell.vlans == {10: ["PVID", "Egress Untagged"]}
