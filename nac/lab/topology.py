"""`nac lab up`: the switch, its hosts, the servers and a `nac serve`, all in namespaces.

    root ns: nac serve (RADIUS on the management link's root end, 10.99.K.1) --mgmt veth--
    switch ns "nac<tag>sw": bridge br0 with vlan_filtering (on kernels without it, one
        bridge per VLAN: see netns.py), sshd (+ snmpd) on 10.99.K.2,
        one hostapd (driver=wired, 802.1X authenticator) per host port
      swp1 host1  wpa_supplicant + nac-agent IMC (compliant)         starts in VLAN 10
      swp2 host2  wpa_supplicant + nac-agent IMC (gets vulnerable)   starts in VLAN 10
      swp3 host3  no supplicant (MAB, emulated by radclient)         starts in VLAN 10
      swp4 remediation server (HTTP)                                 VLAN 20 (isolated)
      swp5 corporate server (HTTP)                                   VLAN 30 (normal)

hostapd wired neither blocks an unauthorized port nor applies RADIUS VLANs, so this is a
push-enforced switch: ports start in the quarantine VLAN and `nac serve` sets each port's
VLAN over SSH (or SNMP) after every decision (`enforce_on_auth`).

Everything is described by ``lab.json`` in the lab directory, so `nac lab status`,
`run` and `down` work from other processes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nac.lab import hostroot, procs
from nac.lab.daemons import start_snmpd, start_sshd
from nac.lab.netns import IP, LabHost, LabSwitch, create_switch, run, time_scale

# Not under /run: the lab's sshd mounts a private tmpfs over /run (its privilege-separation
# dir) and must still read its configuration from the lab directory.
DEFAULT_DIR = Path("/tmp/nac-lab")
SECRET = "lab-radius-secret"
SWITCH_NAME = "labsw"
QUARANTINE, ISOLATED, NORMAL = 10, 20, 30
HTTP_PORT = 80
# host name -> (role, VLAN its port starts in)
LAYOUT: dict[str, tuple[str, int]] = {
    "host1": ("supplicant", QUARANTINE),
    "host2": ("supplicant", QUARANTINE),
    "host3": ("mab", QUARANTINE),
    "remediation": ("server", ISOLATED),
    "corp": ("server", NORMAL),
}
# The lab's IDS (Suricata stand-in) and its HMAC key for the alert endpoint.
IDS_NAME, IDS_KEY = "lab-ids", b"lab-ids-shared-hmac-key-0123456789"
PASSWORDS = {"host1": "host1-lab-password", "host2": "host2-lab-password"}
# An extra package on host1 that only the lab's own advisory (scenario "advisory") names.
LAB_PACKAGE, LAB_PACKAGE_VERSION = "nac-lab-demo", "1.0-1"
REQUIRED = ("hostapd", "wpa_supplicant", "wpa_cli", "sshd", "ssh-keygen", "openssl",
            "radclient", "bridge", "unshare", "gcc")


class LabError(RuntimeError):
    pass


@dataclass
class Node:
    name: str
    role: str
    ns: str
    port: str
    nas_port: int
    ip: str
    mac: str
    vlan: int  # the port's VLAN at `up`


@dataclass
class Lab:
    dir: Path
    tag: str
    k: int
    mode: str
    switch_ns: str
    mgmt_root_if: str
    namespaces: list[str]
    enforcer: str
    auth_port: int
    acct_port: int
    nodes: dict[str, Node]
    pids: dict[str, int] = field(default_factory=dict)
    monitor_port: int = 0  # the server's HTTPS alert endpoint, once [monitor] is wired in

    # -- addresses and paths
    @property
    def server_ip(self) -> str:
        return f"10.99.{self.k}.1"

    @property
    def mgmt_ip(self) -> str:
        return f"10.99.{self.k}.2"

    @property
    def state_dir(self) -> Path:
        return self.dir / "server" / "state"

    @property
    def config(self) -> Path:
        return self.dir / "server" / "nac.toml"

    @property
    def marker(self) -> str:
        return str(self.dir)

    def host_dir(self, name: str) -> Path:
        return self.dir / name

    def agent_root(self, name: str) -> Path:
        return self.host_dir(name) / "root"

    def agent_state(self, name: str) -> Path:
        return self.host_dir(name) / "agent-state"

    def ctrl_dir(self, name: str) -> Path:
        return self.host_dir(name) / "ctrl"

    def switch(self) -> LabSwitch:
        """The netns helper's view (kernel VLAN reads, pings)."""
        sw = LabSwitch(tag=self.tag, ns=self.switch_ns, k=self.k, mode=self.mode,
                       vlans=(QUARANTINE, ISOLATED, NORMAL), mgmt_root_if=self.mgmt_root_if,
                       namespaces=list(self.namespaces))
        sw.hosts = [LabHost(ns=n.ns, port=n.port, ip=n.ip, mac=n.mac)
                    for n in self.nodes.values()]
        return sw

    def port_vlan(self, name: str) -> int | None:
        return self.switch().port_vlan(self.nodes[name].port)

    # -- persistence
    def save(self) -> None:
        data = asdict(self)
        data["dir"] = str(self.dir)
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.dir / "lab.json")

    @classmethod
    def load(cls, lab_dir: Path) -> Lab:
        path = lab_dir / "lab.json"
        if not path.exists():
            raise LabError(f"no lab in {lab_dir} (run `nac lab up` first)")
        data = json.loads(path.read_text())
        data["dir"] = Path(data["dir"])
        data["nodes"] = {k: Node(**v) for k, v in data["nodes"].items()}
        return cls(**data)

    # -- processes
    def started(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.save()

    def stop(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        if pid is not None:
            procs.stop(pid, self.marker)
            self.save()

    def running(self, name: str) -> bool:
        pid = self.pids.get(name)
        return pid is not None and procs.alive(pid, self.marker)


def missing_programs() -> list[str]:
    return [p for p in REQUIRED
            if not (shutil.which(p) or Path(f"/usr/sbin/{p}").exists())]


def monitor_wired() -> bool:
    """Does `nac serve` take a [monitor] section (the HTTPS alert endpoint)?"""
    from nac.config import Config

    return "monitor" in Config.model_fields


def _free_tcp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _free_port_pair(address: str) -> int:
    """An auth port P with P+1 free too, on ``address``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((address, port + 1))
        except OSError:
            continue
        return port
    raise LabError("no free UDP port pair for the RADIUS server")


def _wait(cond: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    timeout *= time_scale()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise LabError(f"{what} (waited {timeout:.0f} s)\n{tail}")


# --------------------------------------------------------------------------- config
def server_config(lab: Lab, *, ssh_user: str, ssh_key: Path, snmp_community: str) -> str:
    from nac.accounts import hash_password, nt_hash

    lines = [
        f'listen = ["{lab.server_ip}"]',
        f"auth_port = {lab.auth_port}",
        f"acct_port = {lab.acct_port}",
        'log_level = "info"',
        "",
        "[[clients]]",
        f'address = "{lab.mgmt_ip}"',
        f'secret = "{SECRET}"',
        f'name = "{SWITCH_NAME}"',
        "",
    ]
    for user, password in PASSWORDS.items():
        lines += [f"[accounts.{user}]", 'role = "default"',
                  f'password_hash = "{hash_password(password)}"',
                  f'nt_hash = "{nt_hash(password).hex()}"', ""]
    lines += [
        "[[switches]]",
        f'name = "{SWITCH_NAME}"',
        f'address = "{lab.mgmt_ip}"',
        'driver = "ssh-linux-bridge"' if lab.enforcer == "ssh" else 'driver = "snmp"',
        'vendor = "linux"',
        # hostapd wired ignores RADIUS VLANs: push the VLAN after every decision...
        "enforce_on_auth = true",
        # ...and never bounce: a bounce restarts 802.1X, whose decision pushes again.
        "bounce_after_vlan = false",
        "[switches.ssh]",
        f'username = "{ssh_user}"',
        f'key_file = "{ssh_key}"',
        # The driver's default timeout, stretched in an emulated test VM (netns.time_scale).
        *([f"timeout = {10 * time_scale():g}"] if time_scale() > 1 else []),
        "[switches.linux_bridge]",
        f'vlan_mode = "{lab.mode}"',
        "[switches.ports]",
        # hostapd sends NAS-Port-Id = the interface name and NAS-Port = its number.
        'name_pattern = "swp{nas_port}"',
        "",
    ]
    if lab.enforcer == "snmp":
        lines += ["[switches.snmp]", 'version = "2c"', f'community = "{snmp_community}"',
                  *([f"timeout = {2 * time_scale():g}"] if time_scale() > 1 else []), ""]
    if lab.monitor_port:
        lines += ["[monitor]", f'listen = "{lab.server_ip}"', f"port = {lab.monitor_port}", "",
                  "[[monitor.monitors]]", f'name = "{IDS_NAME}"',
                  f'hmac_key = "{IDS_KEY.decode()}"', ""]
    return "\n".join(lines)


def hostapd_config(lab: Lab, node: Node) -> str:
    hex_ip = ipaddress.IPv4Address(node.ip).packed.hex()
    port_attrs = ["61:d:15", f"5:d:{node.nas_port}", f"87:s:{node.port}"]
    return "\n".join([
        f"interface={node.port}",
        "driver=wired",
        "logger_stdout=-1",
        "logger_stdout_level=1",
        f"ctrl_interface={lab.dir / 'switch' / 'hostapd-ctrl'}",
        "ieee8021x=1",
        "eapol_version=2",
        "eap_reauth_period=0",
        "use_pae_group_addr=1",
        # NAS-IP-Address = the switch's inventory address, so decisions find the switch.
        f"own_ip_addr={lab.mgmt_ip}",
        f"nas_identifier={SWITCH_NAME}",
        f"auth_server_addr={lab.server_ip}",
        f"auth_server_port={lab.auth_port}",
        f"auth_server_shared_secret={SECRET}",
        f"acct_server_addr={lab.server_ip}",
        f"acct_server_port={lab.acct_port}",
        f"acct_server_shared_secret={SECRET}",
        # NAS-Port-Type Ethernet (15), NAS-Port, NAS-Port-Id: the port mapping under test.
        *[f"radius_auth_req_attr={a}" for a in port_attrs],
        *[f"radius_acct_req_attr={a}" for a in port_attrs],
        # A switch learns the host's address (DHCP/ARP snooping, "IP device tracking") and
        # reports it in accounting; hostapd cannot, so the lab states the known address.
        f"radius_acct_req_attr=8:x:{hex_ip}",
        "",
    ])


def supplicant_config(lab: Lab, name: str) -> str:
    return "\n".join([
        f"ctrl_interface={lab.ctrl_dir(name)}",
        "ap_scan=0",
        # With fast re-authentication wpa_supplicant 2.10 keeps EAP-TNC as the TTLS inner
        # method on `reauthenticate` and the check fails: always run the full conversation.
        "fast_reauth=0",
        "network={",
        "  key_mgmt=IEEE8021X",
        "  eap=TTLS",
        f'  identity="{name}"',
        '  anonymous_identity="anonymous"',
        f'  password="{PASSWORDS[name]}"',
        f'  ca_cert="{lab.state_dir / "pki" / "ca.pem"}"',
        '  phase2="autheap=MSCHAPV2"',
        "  eapol_flags=0",
        "}",
        "",
    ])


# --------------------------------------------------------------------------- up
def up(lab_dir: Path = DEFAULT_DIR, *, enforcer: str = "ssh",
       say: Callable[[str], None] = print) -> Lab:
    """Build the whole lab; on failure everything already built is removed again."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces)")
    missing = missing_programs()
    if missing:
        raise LabError(f"missing programs: {', '.join(missing)}")
    if (lab_dir / "lab.json").exists():
        old = Lab.load(lab_dir)
        if old.switch_ns in run([IP, "netns", "list"]).stdout:
            raise LabError(f"a lab is already up in {lab_dir} (`nac lab down` first)")
        say(f"removing the remains of a lab that is gone (namespace {old.switch_ns})")
        down(lab_dir)
    # A kept --dir from an earlier lab: start from scratch (keys, state, logs), touching
    # only what a lab writes there.
    for sub in ("switch", "server", "imc", "www", "feeds", *LAYOUT):
        shutil.rmtree(lab_dir / sub, ignore_errors=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    names = list(LAYOUT)
    sw = create_switch(n_hosts=len(names), vlans=(QUARANTINE, ISOLATED, NORMAL),
                       initial={i + 1: LAYOUT[n][1] for i, n in enumerate(names)})
    nodes = {}
    for i, (name, host) in enumerate(zip(names, sw.hosts, strict=True)):
        nodes[name] = Node(name=name, role=LAYOUT[name][0], ns=host.ns, port=host.port,
                           nas_port=i + 1, ip=host.ip, mac=host.mac, vlan=LAYOUT[name][1])
    lab = Lab(dir=lab_dir, tag=sw.tag, k=sw.k, mode=sw.mode, switch_ns=sw.ns,
              mgmt_root_if=sw.mgmt_root_if, namespaces=list(sw.namespaces), enforcer=enforcer,
              auth_port=0, acct_port=0, nodes=nodes)
    lab.save()
    try:
        _start_all(lab, say)
    except BaseException:
        down(lab_dir)
        raise
    return lab


def _start_all(lab: Lab, echo: Callable[[str], None]) -> None:
    echo(f"switch {SWITCH_NAME}: namespace {lab.switch_ns}, bridge br0 ({lab.mode}), "
         f"management {lab.mgmt_ip}")
    sshd = start_sshd(lab.switch_ns, lab.mgmt_ip, lab.dir / "switch" / "sshd")
    assert sshd.proc is not None
    lab.started("sshd", sshd.proc.pid)
    echo(f"  sshd on {lab.mgmt_ip}:22 (user {sshd.user})")
    community = "lab-rw"
    if lab.enforcer == "snmp":
        snmpd = start_snmpd(lab.switch_ns, lab.mgmt_ip, lab.dir / "switch" / "snmpd",
                            mode=lab.mode, vlans=(QUARANTINE, ISOLATED, NORMAL),
                            community=community)
        assert snmpd.proc is not None
        lab.started("snmpd", snmpd.proc.pid)
        echo(f"  snmpd on {lab.mgmt_ip}:161 (Q-BRIDGE-MIB)")
    lab.auth_port = _free_port_pair(lab.server_ip)
    lab.acct_port = lab.auth_port + 1
    if monitor_wired():
        lab.monitor_port = _free_tcp_port(lab.server_ip)
    lab.save()
    srv_dir = lab.dir / "server"
    srv_dir.mkdir(parents=True, exist_ok=True)
    lab.config.write_text(server_config(lab, ssh_user=sshd.user, ssh_key=sshd.key_file,
                                        snmp_community=community))
    start_server(lab)
    echo(f"nac serve: RADIUS {lab.server_ip}:{lab.auth_port}/{lab.acct_port}, "
         f"config {lab.config}, enforcement over {lab.enforcer.upper()}")
    if lab.monitor_port:
        echo(f"  monitor: HTTPS alert endpoint {lab.server_ip}:{lab.monitor_port} "
             f"(monitor {IDS_NAME}, HMAC)")
    _start_http_servers(lab)
    for node in lab.nodes.values():
        if node.role == "server":
            echo(f"{node.name} server {node.ip}:{HTTP_PORT} on {node.port} (VLAN {node.vlan})")
    sw_dir = lab.dir / "switch"
    for node in lab.nodes.values():
        if node.role == "server":
            continue
        conf = sw_dir / f"hostapd-{node.port}.conf"
        conf.write_text(hostapd_config(lab, node))
        log = sw_dir / f"hostapd-{node.port}.log"
        pid = procs.spawn([IP, "netns", "exec", lab.switch_ns, "hostapd", "-t", str(conf)],
                          log)
        lab.started(f"hostapd-{node.port}", pid)
        _wait(lambda log=log: "AP-ENABLED" in log.read_text(errors="replace"), 10,
              f"hostapd on {node.port} did not start", log)
        echo(f"{node.name} on {node.port} (NAS-Port {node.nas_port}), {node.ip}, MAC "
             f"{node.mac}, VLAN {node.vlan}: hostapd 802.1X authenticator")
    from eap_ext.agent.imc.install import build_library

    build_library(lab.dir / "imc" / "nac_imc.so")
    for name, node in lab.nodes.items():
        if node.role == "supplicant":
            hostroot.build(lab.agent_root(name), node.mac,
                           extra={LAB_PACKAGE: LAB_PACKAGE_VERSION} if name == "host1" else None)
            lab.agent_state(name).mkdir(parents=True, exist_ok=True)
            (lab.host_dir(name) / "wpa.conf").write_text(supplicant_config(lab, name))
    lab.save()


def start_server(lab: Lab) -> None:
    log = lab.dir / "server" / "serve.log"
    start = log.stat().st_size if log.exists() else 0
    argv = [sys.executable, "-m", "nac.cli.main", "serve", "--config", str(lab.config),
            "--state-dir", str(lab.state_dir), "--workers", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    pid = procs.spawn(argv, log, env)
    lab.started("nac-serve", pid)

    def ready() -> bool:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        if "ready: " in text:
            return True
        if not procs.alive(pid, lab.marker):
            raise LabError(f"nac serve exited:\n{text[-3000:]}")
        return False

    _wait(ready, 60, "nac serve did not become ready", log)


def _start_http_servers(lab: Lab) -> None:
    for node in lab.nodes.values():
        if node.role != "server":
            continue
        www = lab.dir / "www" / node.name
        www.mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_text(f"{node.name} server of the nac lab\n")
        pid = procs.spawn([IP, "netns", "exec", node.ns, sys.executable, "-m", "http.server",
                           "--bind", node.ip, "--directory", str(www), str(HTTP_PORT)],
                          lab.dir / "www" / f"{node.name}.log")
        lab.started(f"http-{node.name}", pid)
    for node in lab.nodes.values():
        if node.role == "server":
            _wait(lambda node=node: _tcp_ok(node.ns, node.ip, HTTP_PORT), 10,
                  f"{node.name} HTTP server did not start")


def _tcp_ok(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    probe = (f"import socket,sys; s=socket.create_connection(({ip!r},{port}),{timeout}); "
             f"s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); d=s.recv(4096); "
             f"sys.exit(0 if b' 200 ' in d else 1)")
    r = run([sys.executable, "-c", probe], ns=ns, check=False, timeout=timeout + 10)
    return r.returncode == 0


def reaches(lab: Lab, src: str, dst: str, *, tries: int = 1, timeout: float = 1.0) -> bool:
    """Does an HTTP GET from host ``src`` to server ``dst`` succeed over the switch?

    A host just moved to another VLAN may still hold an unanswered ARP probe for the
    server from its old VLAN (retried once a second), so expecting success takes tries.
    """
    node, target = lab.nodes[src], lab.nodes[dst]
    return any(_tcp_ok(node.ns, target.ip, HTTP_PORT, timeout) for _ in range(tries))


# --------------------------------------------------------------------------- supplicants
def plug_in(lab: Lab, name: str) -> None:
    """Start the host's wpa_supplicant: the moment a supplicant host is plugged in.

    TNC reads the fixed path /etc/tnc_config, so wpa_supplicant runs in a private mount
    namespace where /etc is an overlay (upper layer on a private tmpfs) with its own
    tnc_config naming the lab's IMC; the real /etc is never written, and the mounts vanish
    with the process.
    """
    from eap_ext.agent.imc.install import imc_line

    node = lab.nodes[name]
    hdir = lab.host_dir(name)
    over = hdir / "etc-overlay"
    over.mkdir(parents=True, exist_ok=True)
    script = hdir / "run.sh"
    script.write_text("\n".join([
        "set -e",
        f"mount -t tmpfs nac-lab {over}",
        f"mkdir {over}/upper {over}/work",
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={over}/upper,"
        f"workdir={over}/work /etc",
        f"echo '{imc_line(lab.dir / 'imc' / 'nac_imc.so')}' > /etc/tnc_config",
        # -f: the log file is flushed line by line (stdout to a file is block-buffered), so
        # the lab sees each EAP-Success as it happens.
        f"exec wpa_supplicant -d -t -D wired -i eth0 -c {hdir / 'wpa.conf'} "
        f"-f {hdir / 'wpa_supplicant.log'}",
        "",
    ]))
    env = {**os.environ, "NAC_AGENT_ROOT": str(lab.agent_root(name)),
           "NAC_AGENT_STATE_DIR": str(lab.agent_state(name))}
    pid = procs.spawn([IP, "netns", "exec", node.ns, "unshare", "-m", "--propagation",
                       "private", "sh", str(script)], hdir / "run.log", env)
    lab.started(f"wpa-{name}", pid)


def unplug(lab: Lab, name: str) -> None:
    """Stop the host's supplicant and put its port back in quarantine, as a switch does when
    the link goes down (the 802.1X session ends, the port returns to its default VLAN)."""
    lab.stop(f"wpa-{name}")
    node = lab.nodes[name]
    lab.switch().set_port_vlan(node.port, QUARANTINE)


def eap_successes(lab: Lab, name: str) -> int:
    log = lab.host_dir(name) / "wpa_supplicant.log"
    return log.read_text(errors="replace").count("CTRL-EVENT-EAP-SUCCESS") if log.exists() else 0


def wpa_cli(lab: Lab, name: str, *args: str) -> str:
    r = subprocess.run(["wpa_cli", "-p", str(lab.ctrl_dir(name)), "-i", "eth0", *args],
                       capture_output=True, text=True, timeout=10 * time_scale(),
                       check=False)
    return r.stdout


# --------------------------------------------------------------------------- down
def down(lab_dir: Path = DEFAULT_DIR) -> list[str]:
    """Stop every lab process and delete every namespace and veth; what was removed."""
    path = lab_dir / "lab.json"
    if not path.exists():
        return []
    lab = Lab.load(lab_dir)
    removed = []
    # Supplicants and hostapd first (they hold the ports), the server last.
    order = sorted(lab.pids, key=lambda n: (n == "nac-serve", n))
    for name in order:
        pid = lab.pids[name]
        if procs.stop(pid, lab.marker):
            removed.append(f"process {name} ({pid})")
    lab.pids.clear()
    sw = lab.switch()
    sw.destroy()  # also SIGKILLs anything still inside the namespaces
    removed += [f"namespace {ns}" for ns in lab.namespaces]
    with contextlib.suppress(OSError):
        path.unlink()
    # The lab dir holds configs, logs and the server state: keep it for a post-mortem only
    # when it is not the default runtime dir.
    if lab_dir == DEFAULT_DIR:
        shutil.rmtree(lab_dir, ignore_errors=True)
    return removed


def status(lab_dir: Path = DEFAULT_DIR) -> list[str]:
    lab = Lab.load(lab_dir)
    out = [f"lab in {lab.dir}: switch {SWITCH_NAME} ns {lab.switch_ns} ({lab.mode}), "
           f"management {lab.mgmt_ip}, enforcement over {lab.enforcer.upper()}",
           f"nac serve: RADIUS {lab.server_ip}:{lab.auth_port}, config {lab.config}"]
    for name, pid in sorted(lab.pids.items()):
        out.append(f"  {name:<18} pid {pid:<8} "
                   f"{'running' if procs.alive(pid, lab.marker) else 'NOT RUNNING'}")
    existing = run([IP, "netns", "list"]).stdout
    sw = lab.switch()
    segments = _segments(lab)
    for node in lab.nodes.values():
        vlan = sw.port_vlan(node.port) if lab.switch_ns in existing else None
        seg = segments.get(node.mac, "-") if node.role != "server" else "(server)"
        out.append(f"  {node.name:<12} {node.port} {node.ip:<14} {node.mac} {node.role:<10} "
                   f"port VLAN {vlan}  segment {seg}")
    return out


def _segments(lab: Lab) -> dict[str, str]:
    """MAC -> segment in the lab server's store (read-only; empty before any decision)."""
    import sqlite3

    db = lab.state_dir / "nac.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {mac: seg for mac, seg in conn.execute("SELECT mac, segment FROM nodes")}
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
