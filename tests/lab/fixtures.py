"""Context managers and skip helpers for building lab fixtures in test modules.

A test module wraps them in its own fixtures, e.g.::

    @pytest.fixture
    def lab(tmp_path):
        with switch_lab(tmp_path, sshd=True, snmpd=True) as lab:
            yield lab

Everything started is stopped and every namespace deleted on exit, even on failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .daemons import (
    HostapdDas,
    SnmpServer,
    SshServer,
    have,
    start_hostapd_das,
    start_snmpd,
    start_sshd,
)
from .netns import (
    IP,
    LabSwitch,
    can_use_netns,
    create_switch,
    run,
    vlan_filtering_supported,
)


def skip_unless_lab(*programs: str) -> None:
    """pytest.skip with a clear reason when root/netns or a program is missing."""
    if not can_use_netns():
        pytest.skip("needs root and a working `ip netns` (network namespace lab)")
    missing = have("bridge", *programs)
    if missing:
        pytest.skip(f"{missing} not installed")


@dataclass
class Lab:
    switch: LabSwitch
    workdir: Path
    sshd: SshServer | None = None
    snmpd: SnmpServer | None = None
    hostapd: HostapdDas | None = None


@contextlib.contextmanager
def switch_lab(
    workdir: Path,
    *,
    n_hosts: int = 3,
    vlans: tuple[int, ...] = (10, 20, 30),
    initial: dict[int, int] | None = None,
    sshd: bool = False,
    snmpd: bool = False,
    hostapd_port: str | None = None,
    das_secret: str = "das-secret",
    mode: str | None = None,
) -> Iterator[Lab]:
    """Lab switch plus the requested daemons; hostapd_port puts hostapd on that port.

    mode: "filtering" or "bridge-per-vlan"; None picks what the kernel has (see
    ``netns.create_switch``). Asking for "filtering" on a kernel without bridge VLAN
    filtering skips the test with that reason.
    """
    programs = (["sshd", "ssh-keygen", "openssl"] if sshd else []) + (
        ["snmpd", "snmpget"] if snmpd else []) + (["hostapd"] if hostapd_port else [])
    skip_unless_lab(*programs)
    if mode == "filtering" and not vlan_filtering_supported():
        pytest.skip("kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)")
    sw = create_switch(n_hosts=n_hosts, vlans=vlans, initial=initial, mode=mode)
    lab = Lab(switch=sw, workdir=workdir)
    try:
        if sshd:
            lab.sshd = start_sshd(sw.ns, sw.mgmt_ip, workdir / "sshd")
        if snmpd:
            lab.snmpd = start_snmpd(sw.ns, sw.mgmt_ip, workdir / "snmpd", mode=sw.mode,
                                    vlan_bridge_pattern=sw.vlan_bridge_pattern,
                                    vlans=sw.vlans)
        if hostapd_port:
            lab.hostapd = start_hostapd_das(sw.ns, hostapd_port, sw.peer_ip,
                                            workdir / "hostapd", das_secret=das_secret,
                                            own_ip=sw.mgmt_ip)
        yield lab
    finally:
        for d in (lab.hostapd, lab.snmpd, lab.sshd):
            if d is not None:
                d.stop()
        sw.destroy()


# What the manager sends a lab switch: SNMP, SSH, RADIUS DAS and ping.
_MGMT_TRAFFIC = (("udp", 161), ("tcp", 22), ("udp", 3799), ("icmp", None))


def _mgmt_rules(sw: LabSwitch, verb: str) -> None:
    for proto, port in _MGMT_TRAFFIC:
        run([IP, "rule", verb, "pref", "1", "iif", "mgmt0", "ipproto", proto,
             *(["dport", str(port)] if port else []), "blackhole"], ns=sw.ns)


def silence_mgmt(sw: LabSwitch) -> None:
    """Make the switch unreachable the quiet way: its management traffic is dropped on the
    way in without an answer (no RST, no ICMP error), as a dead path or a dropping firewall
    does, while its daemons keep running. Unlike ``mgmt_down`` the link and ARP stay up, so
    the sender sees timeouts, not "network unreachable".

    Policy rules in the switch's namespace: blackhole rules for the management protocols
    ahead of the local table (the local rule moves from priority 0 to 2 for that)."""
    rules = run([IP, "rule", "show"], ns=sw.ns).stdout
    if not any(line.startswith("2:") and "lookup local" in line for line in rules.splitlines()):
        run([IP, "rule", "add", "pref", "2", "lookup", "local"], ns=sw.ns)
        run([IP, "rule", "del", "pref", "0"], ns=sw.ns)
    _mgmt_rules(sw, "add")


def restore_mgmt(sw: LabSwitch) -> None:
    """Undo ``silence_mgmt``."""
    _mgmt_rules(sw, "del")
