"""``bridge -j vlan show`` output of a VLAN-filtering lab switch, for tests that exercise
the filtering-mode parsing and command building on kernels without
CONFIG_BRIDGE_VLAN_FILTERING (where the real-bridge tests run bridge-per-vlan mode).

The text is what iproute2 6.1 (Debian 12) prints with ``-j`` on Debian 12's kernel: one
object per interface with ``ifname`` and ``vlans``; each VLAN has ``vlan`` and ``flags``
holding "PVID" and/or "Egress Untagged", and a VLAN with neither flag has no ``flags`` key.
A range added at once (``vid 100-102``) is listed VLAN by VLAN; only
``-compressvlans`` folds it into ``vlan`` .. ``vlanEnd``, and then prints an empty
``flags`` list for a VLAN without flags. The switch: br0 (vlan_filtering=1,
default PVID 1 on the bridge itself), swp1 and swp2 access ports in VLAN 10, swp3 access in
20 and tagged in 30, swp4 a trunk with 100-102 tagged.
tests/test_enforcers_ssh.py::test_recorded_vlan_show_matches_a_filtering_bridge builds that
switch and compares, wherever the kernel has VLAN filtering (the VM of
tests/test_vlan_filtering_vm.py runs it on hosts without).
"""

VLAN_SHOW = (
    '[{"ifname":"br0","vlans":[{"vlan":1,"flags":["PVID","Egress Untagged"]}]},'
    '{"ifname":"swp1","vlans":[{"vlan":10,"flags":["PVID","Egress Untagged"]}]},'
    '{"ifname":"swp2","vlans":[{"vlan":10,"flags":["PVID","Egress Untagged"]}]},'
    '{"ifname":"swp3","vlans":[{"vlan":20,"flags":["PVID","Egress Untagged"]},{"vlan":30}]},'
    '{"ifname":"swp4","vlans":[{"vlan":100},{"vlan":101},{"vlan":102}]}]\n'
)

VLAN_SHOW_SWP3 = (
    '[{"ifname":"swp3","vlans":[{"vlan":20,"flags":["PVID","Egress Untagged"]},{"vlan":30}]}]\n'
)

# ``bridge -compressvlans -j vlan show dev swp4``: the trunk's range, compressed.
VLAN_SHOW_SWP4_COMPRESSED = (
    '[{"ifname":"swp4","vlans":[{"vlan":100,"vlanEnd":102,"flags":[]}]}]\n'
)

# A port that is in no VLAN at all (every VLAN deleted): iproute2 prints no entry for it.
VLAN_SHOW_EMPTY = "[]\n"
