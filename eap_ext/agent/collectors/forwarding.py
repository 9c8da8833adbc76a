"""The `forwarding` section: can this host route or bridge between segments (draft 9.8)?"""

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


def collect(root: HostRoot) -> dict[str, object] | str:
    ipv4 = _flag(root, "proc/sys/net/ipv4/ip_forward")
    ipv6 = _flag(root, "proc/sys/net/ipv6/conf/all/forwarding")
    if ipv4 is None and ipv6 is None:
        return "unknown"
    # An absent IPv6 stack cannot forward IPv6.
    return {"ipv4": bool(ipv4), "ipv6": bool(ipv6), "bridges": bridges(root)}
