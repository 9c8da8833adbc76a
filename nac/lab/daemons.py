"""Daemons inside a lab namespace: OpenSSH sshd, net-snmp snmpd, hostapd (wired + DAS).

Each ``start_*`` returns a handle with ``stop()`` and ``start()`` (to simulate an outage and
a return) and never touches the real /etc: sshd runs in a private mount namespace with
tmpfs /run and bind-mounted copies of passwd/shadow/group that hold the lab user; snmpd
and hostapd get temp config files and SNMP_PERSISTENT_DIR in a temp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .netns import IP, run, time_scale

HERE = Path(__file__).resolve().parent
QBRIDGE_PASS = HERE / "qbridge_pass.py"


def have(*programs: str) -> str | None:
    """None if all programs exist, else the name of the first missing one."""
    for p in programs:
        if not (shutil.which(p) or Path(f"/usr/sbin/{p}").exists()):
            return p
    return None


def _wait_tcp(ns: str, host: str, port: int, timeout: float = 10.0) -> None:
    # Probe from inside the namespace so it works even before routes settle outside.
    scale = time_scale()
    deadline = time.monotonic() + timeout * scale
    # sshd sends its banner only after re-executing itself for the connection.
    probe = (f"import socket; s=socket.create_connection(({host!r}, {port}), {0.5 * scale}); "
             "print(s.recv(64))")
    while time.monotonic() < deadline:
        r = run([sys.executable, "-c", probe], ns=ns, check=False)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port} in {ns}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _spawn_in_ns(ns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``argv`` inside namespace ``ns``, its output appended to ``log``, in its own session
    (so _stop can kill the whole group)."""
    with open(log, "ab") as logf:
        return subprocess.Popen([IP, "netns", "exec", ns, *argv], stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)


# --------------------------------------------------------------------------- sshd
@dataclass
class SshServer:
    ns: str
    address: str
    workdir: Path
    user: str
    password: str
    key_file: Path
    port: int = 22
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "sshd.log"

    def start(self) -> None:
        wd = self.workdir
        # Private mount ns: tmpfs /run (sshd privsep dir) and our passwd/shadow/group copies
        # bind-mounted over the originals, visible to this sshd and its children only.
        script = " && ".join([
            "mount -t tmpfs tmpfs /run",
            "mkdir -p /run/sshd",
            f"mount --bind {wd}/passwd /etc/passwd",
            f"mount --bind {wd}/shadow /etc/shadow",
            f"mount --bind {wd}/group /etc/group",
            f"exec /usr/sbin/sshd -D -e -f {wd}/sshd_config",
        ])
        self.proc = _spawn_in_ns(self.ns, ["unshare", "-m", "--propagation", "private",
                                           "sh", "-c", script], self.log)
        try:
            _wait_tcp(self.ns, self.address, self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"sshd did not start: {self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


def _crypt_password(password: str) -> str:
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start_sshd(ns: str, address: str, workdir: Path, *, user: str = "nacsw",
               password: str = "lab-pass-123", port: int = 22) -> SshServer:
    """Start sshd in ``ns`` listening on ``address``; the user has uid 0 inside the lab.

    The user is root-equivalent (uid 0) because it must run ``bridge``/``ip link``; it
    exists only in the bind-mounted passwd copy seen by this sshd. Log in with
    ``password`` or the private key at ``SshServer.key_file``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    # A recognisable prompt for netmiko's "linux" device type.
    (home / ".profile").write_text("PS1='labsw# '\nexport PS1\n")
    (home / ".bashrc").write_text("PS1='labsw# '\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(workdir / "hostkey")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(workdir / "id_lab")], check=True)
    shutil.copy(workdir / "id_lab.pub", workdir / "authorized_keys")
    passwd = Path("/etc/passwd").read_text()
    (workdir / "passwd").write_text(
        passwd + f"{user}:x:0:0:NAC lab switch admin:{home}:/bin/bash\n")
    shadow = Path("/etc/shadow").read_text()
    (workdir / "shadow").write_text(
        shadow + f"{user}:{_crypt_password(password)}:19000:0:99999:7:::\n")
    os.chmod(workdir / "shadow", 0o600)
    shutil.copy("/etc/group", workdir / "group")
    (workdir / "sshd_config").write_text(f"""\
Port {port}
ListenAddress {address}
HostKey {workdir}/hostkey
PidFile none
UsePAM no
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {workdir}/authorized_keys
StrictModes no
MaxStartups 50
LogLevel VERBOSE
""")
    srv = SshServer(ns=ns, address=address, workdir=workdir, user=user, password=password,
                    key_file=workdir / "id_lab", port=port)
    srv.start()
    return srv


# --------------------------------------------------------------------------- snmpd
@dataclass
class SnmpServer:
    ns: str
    address: str
    workdir: Path
    community: str
    v3_user: str
    v3_auth_key: str
    v3_priv_key: str
    port: int = 161
    proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for net-snmp tools: persistent state in our temp dir, no MIB files."""
        return {**os.environ, "SNMP_PERSISTENT_DIR": str(self.workdir / "persist"),
                "MIBS": "", "MIBDIRS": "/nonexistent"}

    def start(self) -> None:
        log = self.workdir / "snmpd.log"
        # -C: only our config; -I -ifTable,...: our pass_persist script owns ifAdminStatus.
        cmd = [IP, "netns", "exec", self.ns, "env",
               f"SNMP_PERSISTENT_DIR={self.workdir / 'persist'}", "MIBS=",
               "/usr/sbin/snmpd", "-f", "-C", "-c", str(self.workdir / "snmpd.conf"),
               "-Lf", str(log), "-I", "-ifTable,ifXTable,interfaces",
               f"udp:{self.address}:{self.port}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10 * time_scale()
        while time.monotonic() < deadline:
            r = self.snmpget("1.3.6.1.2.1.1.5.0", check=False, timeout=0.5 * time_scale())
            if r.returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        text = log.read_text() if log.exists() else ""
        self.stop()
        raise RuntimeError(f"snmpd did not start: {text[-2000:]}")

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def _cli(self, tool: str, args: list[str], v3: bool, check: bool,
             timeout: float, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        if v3:
            auth = ["-v3", "-l", "authPriv", "-u", self.v3_user, "-a", "SHA", "-A",
                    self.v3_auth_key, "-x", "AES", "-X", self.v3_priv_key]
        else:
            auth = ["-v2c", "-c", self.community]
        cmd = [tool, *auth, "-On", *options, "-t", str(timeout), "-r", "1",
               f"udp:{self.address}:{self.port}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env,
                              timeout=30 * time_scale())
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return proc

    def snmpget(self, oid: str, *, v3: bool = False, check: bool = True,
                timeout: float = 2.0, hex_strings: bool = False
                ) -> subprocess.CompletedProcess[str]:
        """hex_strings: print OCTET STRINGs as hex always (-Ox), e.g. PortLists."""
        return self._cli("snmpget", [oid], v3, check, timeout,
                         ("-Ox",) if hex_strings else ())

    def snmpset(self, oid: str, typ: str, value: str, *, v3: bool = False,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._cli("snmpset", [oid, typ, value], v3, check, 2.0)

    def snmpwalk(self, oid: str, *, v3: bool = False) -> subprocess.CompletedProcess[str]:
        return self._cli("snmpwalk", [oid], v3, True, 2.0)


def start_snmpd(ns: str, address: str, workdir: Path, *, mode: str, bridge: str = "br0",
                vlan_bridge_pattern: str = "vl{vlan}", vlans: tuple[int, ...] = (),
                community: str = "lab-rw",
                v3_user: str = "nacv3", v3_auth_key: str = "lab-auth-pass",
                v3_priv_key: str = "lab-priv-pass", port: int = 161) -> SnmpServer:
    """Start snmpd in ``ns`` with the Q-BRIDGE pass_persist script for the lab bridge.

    v2c read-write community ``community`` and a v3 authPriv user (SHA/AES) are configured.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "persist").mkdir(exist_ok=True)
    # snmpd splits the command on spaces and does not understand shell quoting.
    script = " ".join([
        sys.executable, str(QBRIDGE_PASS), "--mode", mode, "--bridge", bridge,
        "--vlan-bridge-pattern", vlan_bridge_pattern, "--log", str(workdir / "pass.log")]
        + (["--vlans", ",".join(str(v) for v in vlans)] if vlans else []))
    (workdir / "snmpd.conf").write_text(f"""\
sysName labswitch
rwcommunity {community} default
createUser {v3_user} SHA "{v3_auth_key}" AES "{v3_priv_key}"
rwuser {v3_user} priv
pass_persist .1.3.6.1.2.1.17.7.1.4 {script}
pass_persist .1.3.6.1.2.1.2.2.1.7 {script}
pass_persist .1.3.6.1.2.1.31.1.1.1.1 {script}
""")
    srv = SnmpServer(ns=ns, address=address, workdir=workdir, community=community,
                     v3_user=v3_user, v3_auth_key=v3_auth_key, v3_priv_key=v3_priv_key,
                     port=port)
    srv.start()
    return srv


# --------------------------------------------------------------------------- hostapd
@dataclass
class HostapdDas:
    ns: str
    interface: str
    das_address: str
    das_port: int
    das_secret: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.workdir / "hostapd.log"
        conf = str(self.workdir / "hostapd.conf")
        self.proc = _spawn_in_ns(self.ns, ["hostapd", "-dd", conf], log)
        # The DAS socket is opened during setup, before the interface is ENABLED.
        deadline = time.monotonic() + 10 * time_scale()
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "AP-ENABLED" in log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        text = log.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"hostapd did not start: {text[-3000:]}")

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def log_text(self) -> str:
        return (self.workdir / "hostapd.log").read_text()


def start_hostapd_das(ns: str, interface: str, das_client: str, workdir: Path, *,
                      das_secret: str = "das-secret", das_port: int = 3799,
                      own_ip: str = "127.0.0.1") -> HostapdDas:
    """hostapd (driver=wired) on a switch port, its RADIUS DAS open to ``das_client``.

    The auth server points at a closed loopback port inside the namespace: no RADIUS server
    is needed for the DAS, and no traffic leaves the namespace.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "hostapd.conf").write_text(f"""\
interface={interface}
driver=wired
logger_stdout=-1
logger_stdout_level=0
ctrl_interface={workdir}/ctrl
ieee8021x=1
eapol_version=2
eap_reauth_period=0
use_pae_group_addr=1
own_ip_addr={own_ip}
nas_identifier=labsw
auth_server_addr=127.0.0.1
auth_server_port=18120
auth_server_shared_secret=unused
radius_das_port={das_port}
radius_das_client={das_client} {das_secret}
radius_das_time_window=300
radius_das_require_event_timestamp=1
""")
    srv = HostapdDas(ns=ns, interface=interface, das_address=own_ip, das_port=das_port,
                     das_secret=das_secret, workdir=workdir)
    srv.start()
    return srv


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- wpa_supplicant
@dataclass
class Supplicant:
    ns: str
    interface: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.workdir / "wpa_supplicant.log"
        self.proc = _spawn_in_ns(self.ns, ["wpa_supplicant", "-D", "wired", "-i",
                                           self.interface, "-c", str(self.workdir / "wpa.conf"),
                                           "-dd"], log)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


def start_supplicant(ns: str, workdir: Path, *, interface: str = "eth0",
                     identity: str = "host", password: str = "secret",
                     eap: str = "MD5") -> Supplicant:
    """wpa_supplicant (driver=wired) on a lab host: it sends EAPOL-Start, so hostapd on the
    switch port creates a session (station entry) for the host's MAC."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "wpa.conf").write_text(f"""\
ctrl_interface={workdir}/ctrl
ap_scan=0
network={{
  key_mgmt=IEEE8021X
  eap={eap}
  identity="{identity}"
  password="{password}"
  eapol_flags=0
}}
""")
    sup = Supplicant(ns=ns, interface=interface, workdir=workdir)
    sup.start()
    return sup
