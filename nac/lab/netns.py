"""Network-namespace lab: a Linux-bridge "switch" with hosts on veth ports.

Topology built by ``create_switch`` (every name carries a random tag so parallel test
runs never collide; every address is inside 10.99.K.0/24 with a free K):

    root ns  --[nm<tag>]==veth==[mgmt0]--  switch ns "<tag>sw"   (10.99.K.1 / 10.99.K.2 /30)
                                             |- bridge(s) with ports swp1..swpN
    host ns "<tag>h1" [eth0 10.99.K.129+]==veth==[swp1]
    ...

VLANs: on kernels with CONFIG_BRIDGE_VLAN_FILTERING one bridge "br0" with vlan_filtering=1
and per-port PVIDs; on kernels without it (some CI/VM kernels) one bridge per VLAN named
"vl<vid>", the port's VLAN being the bridge it is enslaved to. ``vlan_filtering_supported``
tells which; ``LabSwitch.mode`` records it, and ``LabSwitch.port_vlan`` reads the kernel's
truth either way. The management veth is the only link to the root namespace; taking it
down (``mgmt_down``) makes the switch unreachable without touching its daemons.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

IP = shutil.which("ip") or "/usr/sbin/ip"
BRIDGE = shutil.which("bridge") or "/usr/sbin/bridge"


def run(cmd: Sequence[str], ns: str | None = None, check: bool = True,
        timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run a command, inside netns ``ns`` if given (``timeout`` stretches by time_scale)."""
    full = [IP, "netns", "exec", ns, *cmd] if ns else list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout * time_scale())
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


def time_scale() -> float:
    """How many times slower than real hardware the lab runs: NAC_LAB_TIME_SCALE, default 1.

    The test VM (.ci/vm) sets it when it runs under CPU emulation (qemu TCG, some 10-25x
    slower): the lab's waits for daemons and its time budgets stretch by it, so a check
    there fails on what happened, not on how fast the emulator was."""
    try:
        return max(1.0, float(os.environ.get("NAC_LAB_TIME_SCALE", "1")))
    except ValueError:
        return 1.0


def can_use_netns() -> bool:
    """Root and a working ``ip netns``?"""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"nacchk{secrets.token_hex(3)}"
    ok = run([IP, "netns", "add", name], check=False).returncode == 0
    if ok:
        run([IP, "netns", "del", name], check=False)
    return ok


@functools.cache
def vlan_filtering_supported() -> bool:
    """Does this kernel have bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)?"""
    name = f"nacvf{secrets.token_hex(3)}"
    if run([IP, "netns", "add", name], check=False).returncode != 0:
        return False
    try:
        return run([IP, "link", "add", "br0", "type", "bridge", "vlan_filtering", "1"],
                   ns=name, check=False).returncode == 0
    finally:
        run([IP, "netns", "del", name], check=False)


def _free_subnet() -> int:
    """A K such that no root-namespace interface has an address in 10.99.K.0/24.

    Addresses, not routes: a lab whose management link is down for an outage test has no
    route but still owns its subnet. Call with ``_subnet_lock`` held.
    """
    used = json.loads(run([IP, "-4", "-j", "addr", "show"]).stdout or "[]")
    taken = {a.get("local", "") for link in used for a in link.get("addr_info", [])}
    for _ in range(200):
        k = 1 + secrets.randbelow(250)
        if not any(t.startswith(f"10.99.{k}.") for t in taken):
            return k
    raise RuntimeError("no free 10.99.K.0/24 subnet")


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """Serialise subnet choice + address assignment between concurrent test processes."""
    with open("/tmp/nac-lab-subnets.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class LabHost:
    ns: str
    port: str  # switch-side interface name
    ip: str  # address of eth0 in the host namespace
    mac: str = ""
    ifname: str = "eth0"


@dataclass
class LabSwitch:
    tag: str
    ns: str
    k: int
    mode: str  # "filtering" or "bridge-per-vlan"
    bridge: str = "br0"
    vlan_bridge_pattern: str = "vl{vlan}"
    vlans: tuple[int, ...] = ()
    hosts: list[LabHost] = field(default_factory=list)
    mgmt_root_if: str = ""
    namespaces: list[str] = field(default_factory=list)

    @property
    def mgmt_ip(self) -> str:
        """Management address of the switch (inside its namespace)."""
        return f"10.99.{self.k}.2"

    @property
    def peer_ip(self) -> str:
        """Address of the root-namespace end of the management link (our source)."""
        return f"10.99.{self.k}.1"

    @property
    def ports(self) -> list[str]:
        return [h.port for h in self.hosts]

    def host(self, port: str) -> LabHost:
        return next(h for h in self.hosts if h.port == port)

    def ifindex(self, port: str) -> int:
        info = json.loads(run([IP, "-j", "link", "show", "dev", port], ns=self.ns).stdout)
        return int(info[0]["ifindex"])

    def port_vlan(self, port: str) -> int | None:
        """The kernel's view of the port's access VLAN (PVID or enslaving bridge)."""
        if self.mode == "filtering":
            out = json.loads(run([BRIDGE, "-j", "vlan", "show", "dev", port],
                                 ns=self.ns).stdout or "[]")
            for entry in out:
                for v in entry.get("vlans", []):
                    if "PVID" in v.get("flags", []):
                        return int(v["vlan"])
            return None
        info = json.loads(run([IP, "-j", "link", "show", "dev", port], ns=self.ns).stdout)
        master = info[0].get("master", "")
        head, tail = self.vlan_bridge_pattern.split("{vlan}")
        if master.startswith(head) and master.endswith(tail):
            return int(master[len(head):len(master) - len(tail)])
        return None

    def port_vlans(self, port: str) -> list[int]:
        """All VLANs the port belongs to (filtering mode; one element otherwise)."""
        if self.mode != "filtering":
            v = self.port_vlan(port)
            return [] if v is None else [v]
        out = json.loads(run([BRIDGE, "-j", "vlan", "show", "dev", port], ns=self.ns).stdout)
        return sorted(int(v["vlan"]) for e in out for v in e.get("vlans", []))

    def set_port_vlan(self, port: str, vlan: int) -> None:
        """Set a port's VLAN directly (test setup, not the driver under test)."""
        if self.mode == "filtering":
            for old in self.port_vlans(port):
                run([BRIDGE, "vlan", "del", "dev", port, "vid", str(old)], ns=self.ns)
            run([BRIDGE, "vlan", "add", "dev", port, "vid", str(vlan), "pvid", "untagged"],
                ns=self.ns)
        else:
            run([IP, "link", "set", "dev", port, "master",
                 self.vlan_bridge_pattern.format(vlan=vlan)], ns=self.ns)

    def port_is_up(self, port: str) -> bool:
        info = json.loads(run([IP, "-j", "link", "show", "dev", port], ns=self.ns).stdout)
        return "UP" in info[0].get("flags", [])

    def ping(self, src: LabHost, dst: LabHost, count: int = 2, wait: float = 1.0) -> bool:
        """Can ``src`` reach ``dst`` over the switch? (ICMP inside the lab only)."""
        r = run(["ping", "-c", str(count), "-i", "0.2", "-W", str(wait), "-q", dst.ip],
                ns=src.ns, check=False, timeout=count * wait + 5)
        return r.returncode == 0

    def reachable(self, src: LabHost, dst: LabHost, tries: int = 10) -> bool:
        """Ping until success or ``tries`` attempts: a freshly bounced port needs a moment."""
        for _ in range(tries):
            if self.ping(src, dst, count=1, wait=1.0):
                return True
        return False

    def mgmt_down(self) -> None:
        """Cut the management link: the switch becomes unreachable, its daemons keep running."""
        run([IP, "link", "set", "dev", self.mgmt_root_if, "down"])

    def mgmt_up(self) -> None:
        run([IP, "link", "set", "dev", self.mgmt_root_if, "up"])
        # The connected route comes back with the link; wait until the switch answers.
        for _ in range(50):
            if run(["ping", "-c", "1", "-W", "0.2", self.mgmt_ip], check=False).returncode == 0:
                return
        raise RuntimeError("management link did not come back")

    def destroy(self) -> None:
        """Delete every namespace and the root-side veth. Safe to call twice."""
        if self.mgmt_root_if:
            run([IP, "link", "del", self.mgmt_root_if], check=False)
        for ns in reversed(self.namespaces):
            # Kill anything left inside (daemons started by tests that failed to stop them).
            pids = run([IP, "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
            run([IP, "netns", "del", ns], check=False)
        self.namespaces.clear()


def create_switch(
    n_hosts: int = 3,
    vlans: Iterable[int] = (10, 20, 30),
    initial: dict[int, int] | None = None,
    mode: str | None = None,
) -> LabSwitch:
    """Build the lab switch. ``initial`` maps host index (1-based) -> VLAN (default first).

    The caller must call ``destroy`` (``nac lab down`` and ``tests.lab.fixtures.switch_lab`` do).
    """
    vlans = tuple(vlans)
    # NAC_LAB_VLAN_MODE forces a mode (e.g. bridge-per-vlan on any kernel).
    mode = mode or os.environ.get("NAC_LAB_VLAN_MODE") or (
        "filtering" if vlan_filtering_supported() else "bridge-per-vlan")
    if mode not in ("filtering", "bridge-per-vlan"):
        raise ValueError(f"unknown lab VLAN mode {mode!r}")
    tag = secrets.token_hex(3)
    with _subnet_lock():
        k = _free_subnet()
        sw = LabSwitch(tag=tag, ns=f"nac{tag}sw", k=k, mode=mode, vlans=vlans)
        try:
            run([IP, "netns", "add", sw.ns])
            sw.namespaces.append(sw.ns)
            # Management link.
            sw.mgmt_root_if = f"nm{tag}"
            run([IP, "link", "add", sw.mgmt_root_if, "type", "veth", "peer", "name",
                 f"nmp{tag}"])
            run([IP, "addr", "add", f"{sw.peer_ip}/30", "dev", sw.mgmt_root_if])
        except BaseException:
            sw.destroy()
            raise
    try:
        run([IP, "link", "set", "lo", "up"], ns=sw.ns)
        run([IP, "link", "set", f"nmp{tag}", "netns", sw.ns])
        run([IP, "link", "set", f"nmp{tag}", "name", "mgmt0"], ns=sw.ns)
        run([IP, "link", "set", sw.mgmt_root_if, "up"])
        run([IP, "addr", "add", f"{sw.mgmt_ip}/30", "dev", "mgmt0"], ns=sw.ns)
        run([IP, "link", "set", "mgmt0", "up"], ns=sw.ns)
        # Data plane.
        if mode == "filtering":
            run([IP, "link", "add", "br0", "type", "bridge", "vlan_filtering", "1"], ns=sw.ns)
            run([IP, "link", "set", "br0", "up"], ns=sw.ns)
        else:
            for v in vlans:
                name = sw.vlan_bridge_pattern.format(vlan=v)
                run([IP, "link", "add", name, "type", "bridge"], ns=sw.ns)
                run([IP, "link", "set", name, "up"], ns=sw.ns)
        for i in range(1, n_hosts + 1):
            hns = f"nac{tag}h{i}"
            run([IP, "netns", "add", hns])
            sw.namespaces.append(hns)
            port = f"swp{i}"
            run([IP, "link", "add", f"hp{tag}{i}", "type", "veth", "peer", "name",
                 f"sp{tag}{i}"])
            run([IP, "link", "set", f"hp{tag}{i}", "netns", hns])
            run([IP, "link", "set", f"sp{tag}{i}", "netns", sw.ns])
            run([IP, "link", "set", f"hp{tag}{i}", "name", "eth0"], ns=hns)
            run([IP, "link", "set", f"sp{tag}{i}", "name", port], ns=sw.ns)
            ip = f"10.99.{k}.{128 + i}"
            run([IP, "addr", "add", f"{ip}/25", "dev", "eth0"], ns=hns)
            run([IP, "link", "set", "lo", "up"], ns=hns)
            run([IP, "link", "set", "eth0", "up"], ns=hns)
            mac = json.loads(run([IP, "-j", "link", "show", "eth0"], ns=hns).stdout)[0]
            host = LabHost(ns=hns, port=port, ip=ip, mac=mac.get("address", ""))
            sw.hosts.append(host)
            vlan = (initial or {}).get(i, vlans[0])
            if mode == "filtering":
                run([IP, "link", "set", port, "master", "br0"], ns=sw.ns)
                run([BRIDGE, "vlan", "del", "dev", port, "vid", "1"], ns=sw.ns, check=False)
                run([BRIDGE, "vlan", "add", "dev", port, "vid", str(vlan), "pvid", "untagged"],
                    ns=sw.ns)
            else:
                run([IP, "link", "set", port, "master", sw.vlan_bridge_pattern.format(vlan=vlan)],
                    ns=sw.ns)
            run([IP, "link", "set", port, "up"], ns=sw.ns)
        return sw
    except BaseException:
        sw.destroy()
        raise
