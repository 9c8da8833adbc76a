"""The `forwarding` section: can this host route or bridge between segments (draft 9.8)?

Beyond the schema's ipv4/ipv6/bridges it adds `tunnels`: interfaces that lead to another
network (VPN, tun/tap, GRE/IPIP/SIT, PPP), the draft's "VPN connections" case.
"""

from __future__ import annotations

from ..hostroot import HostRoot


def _flag(root: HostRoot, rel: str) -> bool | None:
    text = root.read_text(rel)
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip()) != 0


def bridges(root: HostRoot) -> list[str]:
    net = root.path("sys/class/net")
    try:
        # A bridge device has a bridge/ directory (members have brport/ instead).
        return sorted(d.name for d in net.iterdir() if (d / "bridge").is_dir())
    except OSError:
        return []


# ARPHRD_* link types of tunnel-like devices: PPP, IPIP, IP6TNL, SIT, IPGRE, IP6GRE, NONE
# (tun, WireGuard).
TUNNEL_TYPES = {512, 768, 769, 776, 778, 823, 65534}


def tunnels(root: HostRoot) -> list[str]:
    net = root.path("sys/class/net")
    found = []
    try:
        devices = sorted(net.iterdir())
    except OSError:
        return []
    for dev in devices:
        kind = (root.read_text(f"sys/class/net/{dev.name}/type") or "").strip()
        if (dev / "tun_flags").exists() or (kind.isdigit() and int(kind) in TUNNEL_TYPES):
            found.append(dev.name)
    return found


def collect(root: HostRoot) -> dict[str, object] | str:
    ipv4 = _flag(root, "proc/sys/net/ipv4/ip_forward")
    ipv6 = _flag(root, "proc/sys/net/ipv6/conf/all/forwarding")
    if ipv4 is None and ipv6 is None:
        return "unknown"
    # An absent IPv6 stack cannot forward IPv6.
    return {"ipv4": bool(ipv4), "ipv6": bool(ipv6), "bridges": bridges(root),
            "tunnels": tunnels(root)}
