#!/usr/bin/env python3
"""net-snmp pass_persist agent: Q-BRIDGE-MIB and IF-MIB ifAdminStatus over a Linux bridge.

snmpd runs this inside the lab switch namespace (see nac/lab/daemons.py), registered for
  .1.3.6.1.2.1.17.7.1.4      dot1qVlan subtree (Q-BRIDGE-MIB)
  .1.3.6.1.2.1.2.2.1.7       ifAdminStatus (IF-MIB)
  .1.3.6.1.2.1.31.1.1.1.1    ifName (IF-MIB)
and serves:
  dot1qPvid.<port>                    Unsigned32  GET/GETNEXT/SET
  dot1qVlanStaticEgressPorts.<vid>    PortList    GET/GETNEXT/SET
  dot1qVlanStaticUntaggedPorts.<vid>  PortList    GET/GETNEXT/SET
  ifAdminStatus.<ifIndex>             INTEGER     GET/GETNEXT/SET (up(1), down(2))
  ifName.<ifIndex>                    DisplayString GET/GETNEXT (bridge ports only)
The bridge port number (dot1dBasePort) of a port is its ifIndex in the namespace.

This lab switch treats its ports as access ports: setting dot1qPvid moves the port's
untagged membership to the new VLAN too, as many access switches do. ``--vlans`` is the
switch's VLAN database: a PVID outside it is refused with inconsistentValue.

Protocol (snmpd pass_persist): "PING" -> "PONG"; "get\\nOID" / "getnext\\nOID" ->
"OID\\nTYPE\\nVALUE" or "NONE"; "set\\nOID\\nTYPE VALUE" -> "DONE" or an error word.
snmpd writes an extra empty line after each set: empty lines are skipped, or every later
reply would answer the previous question.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

QBRIDGE = (1, 3, 6, 1, 2, 1, 17, 7, 1, 4)
PVID = QBRIDGE + (5, 1, 1)
EGRESS = QBRIDGE + (3, 1, 2)
UNTAGGED = QBRIDGE + (3, 1, 4)
IFADMIN = (1, 3, 6, 1, 2, 1, 2, 2, 1, 7)
IFNAME = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1)
ROOTS = (QBRIDGE, IFADMIN, IFNAME)

OID = tuple[int, ...]


def parse_oid(text: str) -> OID:
    return tuple(int(x) for x in text.strip().strip(".").split(".") if x)


def fmt_oid(oid: OID) -> str:
    return "." + ".".join(str(x) for x in oid)


class Bridge:
    def __init__(self, mode: str, bridge: str, pattern: str,
                 vlans: set[int] | None = None) -> None:
        self.vlans = vlans  # the switch's VLAN database; None: any VLAN
        self.mode = mode
        self.bridge = bridge
        self.head, self.tail = pattern.split("{vlan}")
        self.pattern = pattern

    def _json(self, *cmd: str) -> list[dict]:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out or "[]")

    def _vlan_of_master(self, master: str) -> int | None:
        if master.startswith(self.head) and master.endswith(self.tail):
            mid = master[len(self.head):len(master) - len(self.tail)]
            if mid.isdigit():
                return int(mid)
        return None

    @staticmethod
    def _links() -> list[dict]:
        """Every interface of the namespace from sysfs (``ip netns exec`` mounts the
        namespace's own /sys): no process spawned per SNMP request."""
        links = []
        for dev in sorted(Path("/sys/class/net").iterdir()):
            try:
                master = (dev / "master").resolve().name if (dev / "master").exists() else ""
                links.append({
                    "ifname": dev.name,
                    "ifindex": int((dev / "ifindex").read_text()),
                    "up": bool(int((dev / "flags").read_text(), 16) & 0x1),  # IFF_UP
                    "master": master,
                    "is_bridge": (dev / "bridge").is_dir(),
                })
            except OSError:
                continue  # the interface went away while we looked
        return links

    def ports(self) -> dict[int, dict]:
        """ifindex -> {name, up, pvid, vlans: {vid: untagged?}} for every bridge port."""
        ports: dict[int, dict] = {}
        for link in self._links():
            master = link["master"]
            if not master:
                continue
            if self.mode == "filtering" and master != self.bridge:
                continue
            if self.mode != "filtering" and self._vlan_of_master(master) is None:
                continue
            ports[int(link["ifindex"])] = {"name": link["ifname"], "up": link["up"],
                                           "pvid": None, "vlans": {}}
            if self.mode != "filtering":
                vid = self._vlan_of_master(master)
                ports[int(link["ifindex"])].update(pvid=vid, vlans={vid: True})
        if self.mode == "filtering":
            by_name = {p["name"]: p for p in ports.values()}
            for entry in self._json("bridge", "-j", "vlan", "show"):
                p = by_name.get(entry.get("ifname"))
                if p is None:
                    continue
                for v in entry.get("vlans", []):
                    flags = v.get("flags", [])
                    lo, hi = int(v["vlan"]), int(v.get("vlanEnd", v["vlan"]))
                    for vid in range(lo, hi + 1):
                        p["vlans"][vid] = "Egress Untagged" in flags
                        if "PVID" in flags:
                            p["pvid"] = vid
        return ports

    def known_vlans(self, ports: dict[int, dict]) -> set[int]:
        vids = {v for p in ports.values() for v in p["vlans"]} | (self.vlans or set())
        if self.mode != "filtering":
            for link in self._links():
                if not link["is_bridge"]:
                    continue
                vid = self._vlan_of_master(link["ifname"])
                if vid is not None:
                    vids.add(vid)
        return vids

    # -- writes ------------------------------------------------------------------------
    def set_pvid(self, name: str, vid: int, current: dict) -> str:
        if self.vlans is not None and vid not in self.vlans:
            return "inconsistent-value"  # like a switch: the VLAN must exist first
        if self.mode == "filtering":
            for old in list(current["vlans"]):
                if old != vid:
                    run("bridge", "vlan", "del", "dev", name, "vid", str(old))
            run("bridge", "vlan", "add", "dev", name, "vid", str(vid), "pvid", "untagged")
            return "DONE"
        target = self.pattern.format(vlan=vid)
        if not Path("/sys/class/net", target, "bridge").is_dir():
            return "inconsistent-value"  # the VLAN does not exist on this switch
        run("ip", "link", "set", "dev", name, "master", target)
        return "DONE"

    def set_admin(self, name: str, up: bool) -> str:
        run("ip", "link", "set", "dev", name, "up" if up else "down")
        return "DONE"

    def set_members(self, vid: int, bitmap: bytes, untagged: bool,
                    ports: dict[int, dict]) -> str:
        if self.vlans is not None and vid not in self.vlans:
            return "inconsistent-value"
        if self.mode != "filtering":
            # One bridge per VLAN: a port is a member of exactly its bridge's VLAN, so
            # joining a VLAN moves the port there and leaving it detaches the port.
            for ifindex, p in ports.items():
                byte, bit = (ifindex - 1) // 8, 0x80 >> ((ifindex - 1) % 8)
                want = byte < len(bitmap) and bool(bitmap[byte] & bit)
                has = vid in p["vlans"]
                if want and not has:
                    run("ip", "link", "set", "dev", p["name"], "master",
                        self.pattern.format(vlan=vid))
                elif has and not want:
                    run("ip", "link", "set", "dev", p["name"], "nomaster")
            return "DONE"
        for ifindex, p in ports.items():
            byte, bit = (ifindex - 1) // 8, 0x80 >> ((ifindex - 1) % 8)
            want = byte < len(bitmap) and bool(bitmap[byte] & bit)
            has = vid in p["vlans"] and (p["vlans"][vid] if untagged else True)
            if want and not has:
                extra = ["untagged"] if untagged else []
                run("bridge", "vlan", "add", "dev", p["name"], "vid", str(vid), *extra)
            elif not want and has:
                run("bridge", "vlan", "del", "dev", p["name"], "vid", str(vid))
        return "DONE"


def run(*cmd: str) -> None:
    subprocess.run(cmd, capture_output=True, check=True)


def portlist(ifindexes: list[int]) -> str:
    """PortList octets as a pass_persist 'octet' value (hex bytes separated by spaces)."""
    size = max([(i + 7) // 8 for i in ifindexes] + [1])
    buf = bytearray(size)
    for i in ifindexes:
        buf[(i - 1) // 8] |= 0x80 >> ((i - 1) % 8)
    return " ".join(f"{b:02X}" for b in buf)


def table(br: Bridge) -> list[tuple[OID, str, str]]:
    """Every (oid, type, value) this agent serves, sorted."""
    ports = br.ports()
    rows: list[tuple[OID, str, str]] = []
    for ifindex, p in ports.items():
        if p["pvid"] is not None:
            rows.append((PVID + (ifindex,), "gauge", str(p["pvid"])))
        rows.append((IFADMIN + (ifindex,), "integer", "1" if p["up"] else "2"))
        rows.append((IFNAME + (ifindex,), "string", p["name"]))
    for vid in br.known_vlans(ports):
        members = [i for i, p in ports.items() if vid in p["vlans"]]
        untagged = [i for i, p in ports.items() if p["vlans"].get(vid)]
        rows.append((EGRESS + (vid,), "octet", portlist(members)))
        rows.append((UNTAGGED + (vid,), "octet", portlist(untagged)))
    rows.sort()
    return rows


def root_of(oid: OID) -> OID | None:
    for r in ROOTS:
        if oid[:len(r)] == r:
            return r
    return None


def handle(cmd: str, read: Callable[[], str], br: Bridge) -> list[str]:
    if cmd == "PING":
        return ["PONG"]
    if cmd in ("get", "getnext"):
        oid = parse_oid(read())
        rows = table(br)
        if cmd == "get":
            for o, t, v in rows:
                if o == oid:
                    return [fmt_oid(o), t, v]
            return ["NONE"]
        root = root_of(oid)
        for o, t, v in rows:
            if o > oid and root is not None and o[:len(root)] == root:
                return [fmt_oid(o), t, v]
        return ["NONE"]
    if cmd == "set":
        oid = parse_oid(read())
        typ, _, value = read().strip().partition(" ")
        ports = br.ports()
        idx = oid[-1] if oid else 0
        if oid[:-1] == PVID:
            if typ not in ("gauge", "unsigned", "integer"):
                return ["wrong-type"]
            if idx not in ports:
                return ["not-writable"]
            vid = int(value)
            if not 1 <= vid <= 4094:
                return ["wrong-value"]
            return [br.set_pvid(ports[idx]["name"], vid, ports[idx])]
        if oid[:-1] == IFADMIN:
            if typ != "integer":
                return ["wrong-type"]
            if idx not in ports:
                return ["not-writable"]
            if value.strip() not in ("1", "2"):
                return ["wrong-value"]
            return [br.set_admin(ports[idx]["name"], value.strip() == "1")]
        if oid[:-1] in (EGRESS, UNTAGGED):
            if typ != "octet":
                return ["wrong-type"]
            raw = bytes(int(x, 16) for x in value.replace('"', "").split())
            return [br.set_members(idx, raw, oid[:-1] == UNTAGGED, ports)]
        return ["not-writable"]
    return ["NONE"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("filtering", "bridge-per-vlan"), default="filtering")
    ap.add_argument("--bridge", default="br0")
    ap.add_argument("--vlan-bridge-pattern", default="vl{vlan}")
    ap.add_argument("--vlans", default=None, help="VLAN database, e.g. 10,20,30")
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    vlans = {int(v) for v in args.vlans.split(",")} if args.vlans else None
    br = Bridge(args.mode, args.bridge, args.vlan_bridge_pattern, vlans)
    logf = open(args.log, "a") if args.log else None  # noqa: SIM115

    def read() -> str:
        line = sys.stdin.readline()
        if logf:
            logf.write(f"< {line!r}\n")
        if not line:
            raise SystemExit(0)
        return line.rstrip("\n")

    while True:
        cmd = read().strip()
        if not cmd:
            continue  # the blank line snmpd sends after every set
        try:
            reply = handle(cmd, read, br)
        except SystemExit:
            raise
        except Exception as exc:  # one bad request must not kill the agent
            if logf:
                logf.write(f"! {exc!r}\n")
            reply = ["NONE"] if cmd != "set" else ["commit-failed"]
        if logf:
            logf.write(f"> {reply!r}\n")
            logf.flush()
        sys.stdout.write("\n".join(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
