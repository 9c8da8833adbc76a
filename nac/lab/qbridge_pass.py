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

The kernel stays authoritative: every GET reads the port's state from the kernel at that
moment (sysfs in bridge-per-vlan mode, ``bridge vlan show`` in filtering mode), nothing is
cached but the ifIndex -> name map, which is checked against sysfs on every use. Changes
go through one long-lived ``ip -batch -`` (and ``bridge -batch -``) child instead of a
process per SET: a fork+exec of ``ip`` costs ~5 ms, a batch line ~0.3 ms.

Protocol (snmpd pass_persist): "PING" -> "PONG"; "get\\nOID" / "getnext\\nOID" ->
"OID\\nTYPE\\nVALUE" or "NONE"; "set\\nOID\\nTYPE VALUE" -> "DONE" or an error word.
snmpd writes an extra empty line after each set: empty lines are skipped, or every later
reply would answer the previous question.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

QBRIDGE = (1, 3, 6, 1, 2, 1, 17, 7, 1, 4)
PVID = QBRIDGE + (5, 1, 1)
EGRESS = QBRIDGE + (3, 1, 2)
UNTAGGED = QBRIDGE + (3, 1, 4)
IFADMIN = (1, 3, 6, 1, 2, 1, 2, 2, 1, 7)
IFNAME = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1)
ROOTS = (QBRIDGE, IFADMIN, IFNAME)
SYS_NET = "/sys/class/net"

OID = tuple[int, ...]


def parse_oid(text: str) -> OID:
    return tuple(int(x) for x in text.strip().strip(".").split(".") if x)


def fmt_oid(oid: OID) -> str:
    return "." + ".".join(str(x) for x in oid)


# --------------------------------------------------------------------------- iproute2 child
class CommandFailed(Exception):
    """An iproute2 batch line failed; the message is what the tool printed on stderr."""


class Batch:
    """A long-lived ``ip``/``bridge`` child in batch mode (``-j -force -batch -``).

    Each ``run(line)`` writes the line and then a sync line that always fails (an unknown
    object). iproute2 reports a failed line as "Command failed -:N" on stderr, so seeing
    the sync line's N means the command is finished; a "Command failed" for the command's
    own N before it means the command failed. stdout (JSON of show commands, flushed per
    command) is drained at the same time so a large answer cannot fill the pipe and stall
    the child. A usage error makes iproute2 exit: that line fails and the next call starts
    a new child.
    """

    SYNC = "nacsync"

    def __init__(self, tool: str, timeout: float = 10.0) -> None:
        self.tool = tool
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.line = 0
        self.spawns = 0

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [self.tool, "-j", "-force", "-batch", "-"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
            self.line = 0
            self.spawns += 1
        return self.proc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def run(self, command: str) -> str:
        """Run one batch line; return its stdout. Raises CommandFailed."""
        if "\n" in command or not command.strip():
            raise ValueError(f"bad batch line {command!r}")
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        mine, sync = self.line + 1, self.line + 2
        self.line += 2
        try:
            proc.stdin.write(f"{command}\n{self.SYNC}\n".encode())
        except BrokenPipeError:
            self.close()
            raise CommandFailed(f"{self.tool} batch child died") from None
        out, err = bytearray(), bytearray()
        done_mark = f"Command failed -:{sync}\n".encode()
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while done_mark not in err:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise CommandFailed(f"{self.tool}: {command!r} timed out")
                for key, _ in sel.select(left):
                    chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                    if not chunk:  # the child exited (usage error) mid-command
                        self.close()
                        text = err.decode(errors="replace").strip()
                        raise CommandFailed(text or f"{self.tool} exited")
                    key.data.extend(chunk)
        text = err.decode(errors="replace")
        head = text[: text.index(f"Command failed -:{sync}\n")]
        # Everything before the sync line's own message belongs to the command.
        head = head[: head.rfind(f'Object "{self.SYNC}"')] if self.SYNC in head else head
        if f"Command failed -:{mine}\n" in head:
            raise CommandFailed(head.replace(f"Command failed -:{mine}", "").strip())
        return out.decode(errors="replace")


# --------------------------------------------------------------------------- bridge model
@dataclass
class Port:
    ifindex: int
    name: str
    up: bool
    pvid: int | None = None
    vlans: dict[int, bool] = field(default_factory=dict)  # vid -> egress untagged?


def parse_vlan_show(data: list[dict]) -> dict[str, tuple[int | None, dict[int, bool]]]:
    """``bridge -j vlan show`` -> {ifname: (pvid, {vid: untagged})}. Ranges (``vlanEnd``,
    printed when the kernel compresses them) expand to every VLAN they cover."""
    result: dict[str, tuple[int | None, dict[int, bool]]] = {}
    for entry in data:
        name = entry.get("ifname")
        if not name:
            continue
        pvid, vlans = result.get(name, (None, {}))
        for v in entry.get("vlans", []):
            flags = v.get("flags", [])
            lo, hi = int(v["vlan"]), int(v.get("vlanEnd", v["vlan"]))
            for vid in range(lo, hi + 1):
                vlans[vid] = "Egress Untagged" in flags
                if "PVID" in flags:
                    pvid = vid
        result[name] = (pvid, vlans)
    return result


def pvid_commands(name: str, vid: int, current: dict[int, bool]) -> list[str]:
    """``bridge`` batch lines making ``vid`` the port's only, untagged, PVID VLAN."""
    cmds = [f"vlan del dev {name} vid {old}" for old in sorted(current) if old != vid]
    cmds.append(f"vlan add dev {name} vid {vid} pvid untagged")
    return cmds


def member_commands(ports: dict[int, Port], vid: int, bitmap: bytes,
                    untagged: bool) -> list[str]:
    """``bridge`` batch lines making the port set of ``vid`` equal ``bitmap`` (a PortList;
    bit of port N = ifIndex N). For the untagged list, a member joins untagged."""
    cmds = []
    for ifindex, p in sorted(ports.items()):
        want = in_portlist(bitmap, ifindex)
        has = vid in p.vlans and (p.vlans[vid] if untagged else True)
        if want and not has:
            cmds.append(f"vlan add dev {p.name} vid {vid}" + (" untagged" if untagged else ""))
        elif has and not want:
            cmds.append(f"vlan del dev {p.name} vid {vid}")
    return cmds


def in_portlist(bitmap: bytes, port: int) -> bool:
    byte, bit = (port - 1) // 8, 0x80 >> ((port - 1) % 8)
    return byte < len(bitmap) and bool(bitmap[byte] & bit)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _master(name: str) -> str:
    try:
        return os.path.basename(os.readlink(f"{SYS_NET}/{name}/master"))
    except OSError:
        return ""


class Bridge:
    def __init__(self, mode: str, bridge: str, pattern: str,
                 vlans: set[int] | None = None,
                 ip: Batch | None = None, br: Batch | None = None) -> None:
        self.vlans = vlans  # the switch's VLAN database; None: any VLAN
        self.mode = mode
        self.bridge = bridge
        self.head, self.tail = pattern.split("{vlan}")
        self.pattern = pattern
        self.ip = ip or Batch("ip")
        self.br = br or Batch("bridge")
        self._names: dict[int, str] = {}

    def close(self) -> None:
        self.ip.close()
        self.br.close()

    def _vlan_of_master(self, master: str) -> int | None:
        if master.startswith(self.head) and master.endswith(self.tail):
            mid = master[len(self.head):len(master) - len(self.tail)]
            if mid.isdigit():
                return int(mid)
        return None

    # -- reads (always the kernel's current state) ---------------------------------------
    def _scan_names(self) -> dict[int, str]:
        names = {}
        for dev in os.scandir(SYS_NET):
            try:
                names[int(_read(f"{dev.path}/ifindex"))] = dev.name
            except (OSError, ValueError):
                continue  # the interface went away while we looked
        self._names = names
        return names

    def name_of(self, ifindex: int) -> str | None:
        """The interface name of ``ifindex``: cached, but checked against sysfs each time
        (an interface renamed or re-created since is looked up again)."""
        name = self._names.get(ifindex)
        if name is not None:
            try:
                if int(_read(f"{SYS_NET}/{name}/ifindex")) == ifindex:
                    return name
            except (OSError, ValueError):
                pass
        return self._scan_names().get(ifindex)

    def _is_port(self, name: str) -> bool:
        master = _master(name)
        if self.mode == "filtering":
            return master == self.bridge
        return self._vlan_of_master(master) is not None

    def _up(self, name: str) -> bool:
        return bool(int(_read(f"{SYS_NET}/{name}/flags"), 16) & 0x1)  # IFF_UP

    def _vlan_show(self, name: str | None = None) -> dict[str, tuple[int | None, dict[int, bool]]]:
        out = self.br.run("vlan show" + (f" dev {name}" if name else ""))
        return parse_vlan_show(json.loads(out or "[]"))

    def port(self, ifindex: int) -> Port | None:
        """One bridge port's current state, or None if ``ifindex`` is no bridge port."""
        name = self.name_of(ifindex)
        if name is None or not self._is_port(name):
            return None
        try:
            p = Port(ifindex, name, self._up(name))
        except OSError:
            return None
        if self.mode == "filtering":
            p.pvid, p.vlans = self._vlan_show(name).get(name, (None, {}))
        else:
            vid = self._vlan_of_master(_master(name))
            p.pvid, p.vlans = vid, {vid: True} if vid is not None else {}
        return p

    def ports(self) -> dict[int, Port]:
        """ifindex -> Port for every bridge port."""
        ports: dict[int, Port] = {}
        for ifindex, name in self._scan_names().items():
            if not self._is_port(name):
                continue
            try:
                ports[ifindex] = Port(ifindex, name, self._up(name))
            except OSError:
                continue
            if self.mode != "filtering":
                vid = self._vlan_of_master(_master(name))
                if vid is not None:
                    ports[ifindex].pvid, ports[ifindex].vlans = vid, {vid: True}
        if self.mode == "filtering" and ports:
            by_name = {p.name: p for p in ports.values()}
            for name, (pvid, vlans) in self._vlan_show().items():
                if name in by_name:
                    by_name[name].pvid, by_name[name].vlans = pvid, vlans
        return ports

    def known_vlans(self, ports: dict[int, Port]) -> set[int]:
        vids = {v for p in ports.values() for v in p.vlans} | (self.vlans or set())
        if self.mode != "filtering":
            for dev in os.scandir(SYS_NET):
                vid = self._vlan_of_master(dev.name)
                if vid is not None and os.path.isdir(f"{dev.path}/bridge"):
                    vids.add(vid)
        return vids

    # -- writes ------------------------------------------------------------------------
    def _apply(self, batch: Batch, cmds: list[str]) -> str:
        for cmd in cmds:
            try:
                batch.run(cmd)
            except CommandFailed as exc:
                log(f"! {batch.tool} {cmd}: {exc}")
                return "commit-failed"
        return "DONE"

    def set_pvid(self, port: Port, vid: int) -> str:
        if self.vlans is not None and vid not in self.vlans:
            return "inconsistent-value"  # like a switch: the VLAN must exist first
        if self.mode == "filtering":
            return self._apply(self.br, pvid_commands(port.name, vid, port.vlans))
        target = self.pattern.format(vlan=vid)
        if not os.path.isdir(f"{SYS_NET}/{target}/bridge"):
            return "inconsistent-value"  # the VLAN does not exist on this switch
        if port.pvid == vid:
            return "DONE"
        return self._apply(self.ip, [f"link set dev {port.name} master {target}"])

    def set_admin(self, port: Port, up: bool) -> str:
        return self._apply(self.ip, [f"link set dev {port.name} {'up' if up else 'down'}"])

    def set_members(self, vid: int, bitmap: bytes, untagged: bool,
                    ports: dict[int, Port]) -> str:
        if self.vlans is not None and vid not in self.vlans:
            return "inconsistent-value"
        if self.mode == "filtering":
            return self._apply(self.br, member_commands(ports, vid, bitmap, untagged))
        # One bridge per VLAN: a port is a member of exactly its bridge's VLAN, so
        # joining a VLAN moves the port there and leaving it detaches the port.
        cmds = []
        for ifindex, p in sorted(ports.items()):
            want, has = in_portlist(bitmap, ifindex), vid in p.vlans
            if want and not has:
                cmds.append(f"link set dev {p.name} master {self.pattern.format(vlan=vid)}")
            elif has and not want:
                cmds.append(f"link set dev {p.name} nomaster")
        return self._apply(self.ip, cmds)


def portlist(ifindexes: list[int]) -> str:
    """PortList octets as a pass_persist 'octet' value (hex bytes separated by spaces)."""
    size = max([(i + 7) // 8 for i in ifindexes] + [1])
    buf = bytearray(size)
    for i in ifindexes:
        buf[(i - 1) // 8] |= 0x80 >> ((i - 1) % 8)
    return " ".join(f"{b:02X}" for b in buf)


def table(br: Bridge) -> list[tuple[OID, str, str]]:
    """Every (oid, type, value) this agent serves, sorted (for GETNEXT and walks)."""
    ports = br.ports()
    rows: list[tuple[OID, str, str]] = []
    for ifindex, p in ports.items():
        if p.pvid is not None:
            rows.append((PVID + (ifindex,), "gauge", str(p.pvid)))
        rows.append((IFADMIN + (ifindex,), "integer", "1" if p.up else "2"))
        rows.append((IFNAME + (ifindex,), "string", p.name))
    for vid in br.known_vlans(ports):
        rows.extend(_portlist_rows(ports, vid))
    rows.sort()
    return rows


def _portlist_rows(ports: dict[int, Port], vid: int) -> list[tuple[OID, str, str]]:
    members = [i for i, p in ports.items() if vid in p.vlans]
    untagged = [i for i, p in ports.items() if p.vlans.get(vid)]
    return [(EGRESS + (vid,), "octet", portlist(members)),
            (UNTAGGED + (vid,), "octet", portlist(untagged))]


def get_one(br: Bridge, oid: OID) -> list[str]:
    """GET of one instance, reading only what it needs (one port, or the PortLists)."""
    col, idx = oid[:-1], oid[-1] if oid else 0
    if col in (PVID, IFADMIN, IFNAME):
        p = br.port(idx)
        if p is None:
            return ["NONE"]
        if col == PVID:
            return ["NONE"] if p.pvid is None else [fmt_oid(oid), "gauge", str(p.pvid)]
        if col == IFADMIN:
            return [fmt_oid(oid), "integer", "1" if p.up else "2"]
        return [fmt_oid(oid), "string", p.name]
    if col in (EGRESS, UNTAGGED):
        ports = br.ports()
        if idx not in br.known_vlans(ports):
            return ["NONE"]
        for o, t, v in _portlist_rows(ports, idx):
            if o == oid:
                return [fmt_oid(o), t, v]
    return ["NONE"]


def root_of(oid: OID) -> OID | None:
    for r in ROOTS:
        if oid[:len(r)] == r:
            return r
    return None


def handle(cmd: str, read: Callable[[], str], br: Bridge) -> list[str]:
    if cmd == "PING":
        return ["PONG"]
    if cmd == "get":
        return get_one(br, parse_oid(read()))
    if cmd == "getnext":
        oid = parse_oid(read())
        root = root_of(oid)
        for o, t, v in table(br):
            if o > oid and root is not None and o[:len(root)] == root:
                return [fmt_oid(o), t, v]
        return ["NONE"]
    if cmd == "set":
        oid = parse_oid(read())
        typ, _, value = read().strip().partition(" ")
        col, idx = oid[:-1], oid[-1] if oid else 0
        if col == PVID:
            if typ not in ("gauge", "unsigned", "integer"):
                return ["wrong-type"]
            port = br.port(idx)
            if port is None:
                return ["not-writable"]
            vid = int(value)
            if not 1 <= vid <= 4094:
                return ["wrong-value"]
            return [br.set_pvid(port, vid)]
        if col == IFADMIN:
            if typ != "integer":
                return ["wrong-type"]
            port = br.port(idx)
            if port is None:
                return ["not-writable"]
            if value.strip() not in ("1", "2"):
                return ["wrong-value"]
            return [br.set_admin(port, value.strip() == "1")]
        if col in (EGRESS, UNTAGGED):
            if typ != "octet":
                return ["wrong-type"]
            raw = bytes(int(x, 16) for x in value.replace('"', "").split())
            return [br.set_members(idx, raw, col == UNTAGGED, br.ports())]
        return ["not-writable"]
    return ["NONE"]


_logf = None


def log(text: str) -> None:
    if _logf is not None:
        _logf.write(text + "\n")


def main() -> None:
    global _logf
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("filtering", "bridge-per-vlan"), default="filtering")
    ap.add_argument("--bridge", default="br0")
    ap.add_argument("--vlan-bridge-pattern", default="vl{vlan}")
    ap.add_argument("--vlans", default=None, help="VLAN database, e.g. 10,20,30")
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    vlans = {int(v) for v in args.vlans.split(",")} if args.vlans else None
    br = Bridge(args.mode, args.bridge, args.vlan_bridge_pattern, vlans)
    _logf = open(args.log, "a") if args.log else None  # noqa: SIM115

    def read() -> str:
        line = sys.stdin.readline()
        log(f"< {line!r}")
        if not line:
            raise SystemExit(0)
        return line.rstrip("\n")

    try:
        while True:
            cmd = read().strip()
            if not cmd:
                continue  # the blank line snmpd sends after every set
            try:
                reply = handle(cmd, read, br)
            except SystemExit:
                raise
            except Exception as exc:  # one bad request must not kill the agent
                log(f"! {exc!r}")
                reply = ["NONE"] if cmd != "set" else ["commit-failed"]
            if _logf is not None:
                log(f"> {reply!r}")
                _logf.flush()
            sys.stdout.write("\n".join(reply) + "\n")
            sys.stdout.flush()
    finally:
        br.close()


if __name__ == "__main__":
    main()
