"""Reusable network-namespace lab: a Linux-bridge switch, veth hosts, sshd/snmpd/hostapd.

Import as ``from tests.lab import ...`` (tests/ is a package), or use the
fixtures in ``lab.fixtures``.
"""

from .daemons import (
    HostapdDas,
    SnmpServer,
    SshServer,
    have,
    start_hostapd_das,
    start_snmpd,
    start_sshd,
    start_supplicant,
)
from .netns import LabHost, LabSwitch, can_use_netns, create_switch, vlan_filtering_supported

__all__ = [
    "HostapdDas", "LabHost", "LabSwitch", "SnmpServer", "SshServer", "can_use_netns",
    "create_switch", "have", "start_hostapd_das", "start_snmpd", "start_sshd", "start_supplicant",
    "vlan_filtering_supported",
]
