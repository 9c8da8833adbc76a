"""The `listening` section: sockets accepting traffic, from proc/net/{tcp,tcp6,udp,udp6}."""

from __future__ import annotations

import ipaddress

from ..hostroot import HostRoot

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"  # a bound, unconnected UDP socket receives from anyone


def decode_address(hexaddr: str) -> str:
    """The kernel prints each 32-bit word of the address in host (little-endian) order."""
    raw = bytes.fromhex(hexaddr)
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(swapped))


def parse_proc_net(text: str, proto: str) -> list[dict[str, object]]:
    want = TCP_LISTEN if proto == "tcp" else UDP_UNCONNECTED
    found = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 4 or cols[3] != want:
            continue
        local, _, port = cols[1].partition(":")
        try:
            found.append({"proto": proto, "address": decode_address(local),
                          "port": int(port, 16)})
        except ValueError:
            continue
    return found


def collect(root: HostRoot) -> list[dict[str, object]] | str:
    seen: set[tuple[str, str, int]] = set()
    readable = False
    for name, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        text = root.read_text(f"proc/net/{name}")
        if text is None:
            continue
        readable = True
        for entry in parse_proc_net(text, proto):
            seen.add((entry["proto"], entry["address"], entry["port"]))  # type: ignore[arg-type]
    if not readable:
        return "unknown"
    return [{"proto": p, "address": a, "port": n}
            for p, a, n in sorted(seen, key=lambda e: (e[0], e[2], e[1]))]
