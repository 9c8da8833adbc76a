"""The `interfaces` section: each network interface with its MAC and addresses.

Live host: `ip -j addr` (iproute2) has everything. Under NAC_AGENT_ROOT (or without ip):
names and MACs from sys/class/net, IPv6 addresses from proc/net/if_inet6; IPv4 addresses have
no simple file under proc/sys, so they are left empty there.
"""

from __future__ import annotations

import ipaddress
import json
import logging

from ..hostroot import HostRoot

log = logging.getLogger(__name__)


def from_ip_json(text: str) -> list[dict[str, object]]:
    result = []
    for link in json.loads(text):
        v4, v6 = [], []
        for addr in link.get("addr_info", []):
            cidr = f"{addr['local']}/{addr['prefixlen']}"
            (v4 if addr.get("family") == "inet" else v6).append(cidr)
        result.append({"name": link["ifname"], "mac": link.get("address"),
                       "ipv4": v4, "ipv6": v6})
    return sorted(result, key=lambda i: str(i["name"]))


def _if_inet6(root: HostRoot) -> dict[str, list[str]]:
    # Columns: address(32 hex) ifindex prefixlen scope flags name
    out: dict[str, list[str]] = {}
    for line in (root.read_text("proc/net/if_inet6") or "").splitlines():
        cols = line.split()
        if len(cols) != 6 or len(cols[0]) != 32:
            continue
        addr = ipaddress.IPv6Address(bytes.fromhex(cols[0]))
        out.setdefault(cols[5], []).append(f"{addr}/{int(cols[2], 16)}")
    return out


def from_sysfs(root: HostRoot) -> list[dict[str, object]] | str:
    net = root.path("sys/class/net")
    if not net.is_dir():
        return "unknown"
    v6 = _if_inet6(root)
    result = []
    for dev in sorted(net.iterdir()):
        mac = root.read_text(f"sys/class/net/{dev.name}/address")
        result.append({"name": dev.name, "mac": mac.strip() if mac else None,
                       "ipv4": [], "ipv6": sorted(v6.get(dev.name, []))})
    return result


def collect(root: HostRoot) -> list[dict[str, object]] | str:
    out = root.run(["ip", "-j", "addr"])
    if out is not None:
        try:
            return from_ip_json(out)
        except (ValueError, KeyError, TypeError) as exc:
            log.debug("bad ip -j output: %s", exc)
    return from_sysfs(root)
