"""NAS clients by address or CIDR network, looked up per datagram."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nac.radius.replies import PROFILES, VendorProfile


@dataclass(frozen=True, slots=True)
class NasClient:
    network: str
    secret: bytes
    name: str
    profile: VendorProfile
    group: str | None
    require_message_authenticator: bool


class ClientTable:
    """Exact addresses first (a dict hit on the packet path), then networks, longest first."""

    def __init__(self, clients: list[NasClient]) -> None:
        self._exact: dict[str, NasClient] = {}
        self._nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, NasClient]] = []
        for c in clients:
            net = ipaddress.ip_network(c.network, strict=False)
            if net.num_addresses == 1:
                self._exact[str(net.network_address)] = c
            else:
                self._nets.append((net, c))
        self._nets.sort(key=lambda nc: nc[0].prefixlen, reverse=True)
        self._cache: dict[str, NasClient | None] = {}
        self.clients = clients

    def lookup(self, address: str) -> NasClient | None:
        hit = self._exact.get(address)
        if hit is not None:
            return hit
        if address in self._cache:
            return self._cache[address]
        found = None
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            ip = None
        if ip is not None:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
                found = self._exact.get(str(ip))
            if found is None:
                for net, c in self._nets:
                    if ip.version == net.version and ip in net:
                        found = c
                        break
        if len(self._cache) > 65536:  # bounded: an address scan must not grow memory
            self._cache.clear()
        self._cache[address] = found
        return found


def profile(name: str) -> VendorProfile:
    return PROFILES[name]
