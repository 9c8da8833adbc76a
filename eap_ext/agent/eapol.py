"""EAPOL-Start / EAPOL-Logoff from the agent itself, for hosts without a wpa_supplicant
control socket (IEEE 802.1X-2010 11.3: the PAE group address and EtherType 0x888E).

An EAPOL-Start makes the authenticator restart authentication on the port, which is what
`watch` needs after a posture change. scapy builds and sends the frame (imported lazily: it
takes seconds to load and most runs never need it).
"""

from __future__ import annotations

from pathlib import Path

PAE_GROUP = "01:80:c2:00:00:03"
EAPOL_START = 1
EAPOL_LOGOFF = 2


def frame(src_mac: str, packet_type: int = EAPOL_START) -> bytes:
    from scapy.layers.eap import EAPOL
    from scapy.layers.l2 import Ether

    return bytes(Ether(dst=PAE_GROUP, src=src_mac) / EAPOL(version=2, type=packet_type))


def send(interface: str, packet_type: int = EAPOL_START) -> None:
    """Send one EAPOL frame out of `interface` (needs CAP_NET_RAW)."""
    from scapy.sendrecv import sendp

    mac = Path(f"/sys/class/net/{interface}/address").read_text().strip()
    sendp(frame(mac, packet_type), iface=interface, verbose=False)
