"""SSH drivers (netmiko): Linux bridge switches and Cisco IOS.

netmiko is blocking, so every call runs in a worker thread. Sessions are pooled: one
logged-in session per switch, shared by every driver instance of that switch and reused
across calls (a login costs far more than a command); a broken session is dropped and the
next call logs in again. Calls on one switch are serialised by the session's lock because
an interactive CLI session can only run one command at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from enforcers.base import DriverError, NetworkDriver, check_readback
from enforcers.inventory import Switch

log = logging.getLogger(__name__)
T = TypeVar("T")

# Interface names go into shell/CLI lines: allow only what real names use.
_PORT_RE = re.compile(r"^[A-Za-z0-9_.:/@-]{1,64}$")


def _check_port(port: str, switch: str) -> str:
    if not _PORT_RE.match(port):
        raise DriverError(f"invalid port name {port!r}", retryable=False, switch=switch)
    return port


def _check_vlan(vlan: int, switch: str) -> int:
    if not 1 <= int(vlan) <= 4094:
        raise DriverError(f"invalid VLAN {vlan}", retryable=False, switch=switch)
    return int(vlan)


def vlans_from_vlan_show(text: str, port: str) -> dict[int, set[str]]:
    """``bridge -j vlan show [dev PORT]`` output -> {vid: flags} of ``port``.

    Ranges (``"vlanEnd"``, printed when the kernel reports compressed ranges) expand to
    every VLAN they cover; entries of other interfaces are ignored.
    """
    vlans: dict[int, set[str]] = {}
    for entry in json.loads(text or "[]"):
        if entry.get("ifname", port) != port:
            continue
        for v in entry.get("vlans", []):
            lo, hi = int(v["vlan"]), int(v.get("vlanEnd", v["vlan"]))
            for vid in range(lo, hi + 1):
                vlans[vid] = set(v.get("flags", []))
    return vlans


def pvid_from_vlan_show(text: str, port: str) -> int | None:
    """The PVID of ``port`` in ``bridge -j vlan show`` output, None if it has none."""
    return next((vid for vid, flags in sorted(vlans_from_vlan_show(text, port).items())
                 if "PVID" in flags), None)


def filtering_set_commands(shown: str, port: str, vlan: int) -> list[str]:
    """Shell commands making ``vlan`` the only VLAN of ``port``, untagged and PVID, given
    the port's current ``bridge -j vlan show dev PORT`` output. Old VLANs go first so the
    port is never a member of two access VLANs at the end; adding the current VLAN again
    is harmless (idempotent)."""
    olds = set(vlans_from_vlan_show(shown, port))
    cmds = [f"bridge vlan del dev {port} vid {o}" for o in sorted(olds - {vlan})]
    cmds.append(f"bridge vlan add dev {port} vid {vlan} pvid untagged")
    return cmds


@dataclass
class _Session:
    key: tuple[str, str, int, str]
    conn: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SshPool:
    """One netmiko session per switch, reused; a process normally has one pool."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str, int, str], _Session] = {}
        self._guard = threading.Lock()

    def session(self, switch: Switch) -> _Session:
        assert switch.ssh is not None
        key = (switch.name, switch.address, switch.ssh.port, switch.ssh.username)
        with self._guard:
            if key not in self._sessions:
                self._sessions[key] = _Session(key)
            return self._sessions[key]

    def drop(self, sess: _Session) -> None:
        """Disconnect (called with sess.lock held)."""
        if sess.conn is not None:
            # Not netmiko's disconnect(): its config-mode probe waits ~10 s on some
            # prompts. Our commands never leave the CLI in config mode, so a plain
            # "exit" and closing the transport is enough.
            try:
                sess.conn.write_channel("exit" + sess.conn.RETURN)
            except Exception:  # noqa: BLE001 - a dead session may fail to write; ignore
                pass
            try:
                sess.conn.paramiko_cleanup()
            except Exception:  # noqa: BLE001
                pass
            sess.conn = None

    def close_all(self) -> None:
        with self._guard:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            with s.lock:
                self.drop(s)


DEFAULT_POOL = SshPool()
# Blocking netmiko calls run here, not in asyncio's small default executor (cpu + 4
# threads), so many switches can be worked in parallel.
SSH_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="nac-ssh")


class _SshDriver(NetworkDriver):
    """Common part: connect, run in a thread, classify errors."""

    device_type: ClassVar[str] = ""

    def __init__(self, switch: Switch, pool: SshPool | None = None) -> None:
        super().__init__(switch)
        if switch.ssh is None:
            raise DriverError(f"{switch.name}: no [ssh] credentials", retryable=False,
                              switch=switch.name)
        self.pool = pool or DEFAULT_POOL
        self._alock: asyncio.Lock | None = None

    def _connect_params(self) -> dict[str, Any]:
        ssh = self.switch.ssh
        assert ssh is not None
        params: dict[str, Any] = {
            "device_type": self.device_type,
            "host": self.switch.address,
            "port": ssh.port,
            "username": ssh.username,
            "conn_timeout": ssh.timeout,
            "auth_timeout": ssh.timeout,
            "banner_timeout": ssh.timeout,
            "timeout": ssh.timeout,
            "fast_cli": True,
            "allow_agent": False,
        }
        if ssh.password is not None:
            params["password"] = ssh.password.get_secret_value()
        if ssh.key_file:
            params["use_keys"] = True
            params["key_file"] = ssh.key_file
        else:
            params["use_keys"] = False
        if ssh.enable_secret is not None:
            params["secret"] = ssh.enable_secret.get_secret_value()
        return params

    def _read_timeout(self, takes: float = 0.0) -> float:
        ssh = self.switch.ssh
        return (ssh.timeout if ssh is not None else 10.0) + takes

    def _login(self) -> Any:
        from netmiko import ConnectHandler

        conn = ConnectHandler(**self._connect_params())
        self._after_login(conn)
        return conn

    def _after_login(self, conn: Any) -> None:
        """Vendor hook, e.g. enter enable mode."""

    def _classify(self, exc: BaseException) -> DriverError:
        from netmiko.exceptions import NetmikoAuthenticationException

        if isinstance(exc, DriverError):
            return exc
        if isinstance(exc, NetmikoAuthenticationException):
            return DriverError(f"{self.switch.name}: SSH authentication failed: {exc}",
                               retryable=False, switch=self.switch.name)
        # Timeouts, refused connections, resets, protocol errors: the switch may come back.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return DriverError(f"{self.switch.name}: SSH {type(exc).__name__}: {first}",
                           retryable=True, switch=self.switch.name)

    def _with_session(self, fn: Callable[[Any], T]) -> T:
        """Run fn(conn) with the pooled session (blocking; call in a thread)."""
        sess = self.pool.session(self.switch)
        with sess.lock:
            try:
                if sess.conn is None or not self._alive(sess.conn):
                    self.pool.drop(sess)
                    sess.conn = self._login()
                return fn(sess.conn)
            except DriverError as exc:
                if exc.retryable:
                    self.pool.drop(sess)
                raise
            except Exception as exc:  # noqa: BLE001 - netmiko/paramiko raise many types
                self.pool.drop(sess)
                raise self._classify(exc) from exc

    @staticmethod
    def _alive(conn: Any) -> bool:
        """Is the pooled session's SSH channel open? Not netmiko's is_alive(): it writes a
        NUL byte to the CLI and costs ~30 ms before every command. A channel that is open
        but whose packets vanish passes either check; the command's read timeout finds it."""
        chan = getattr(conn, "remote_conn", None)
        if chan is None or not hasattr(chan, "get_transport"):
            return bool(conn.is_alive())
        transport = chan.get_transport()
        return not chan.closed and transport is not None and transport.is_active()

    async def _run(self, fn: Callable[[Any], T]) -> T:
        # Queue per switch in asyncio first, so waiting for a busy switch holds no thread;
        # the threads of SSH_EXECUTOR then only ever run commands.
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(SSH_EXECUTOR, self._with_session, fn)

    async def open(self) -> None:
        await self._run(lambda conn: None)

    async def close(self) -> None:
        sess = self.pool.session(self.switch)

        def _close() -> None:
            with sess.lock:
                self.pool.drop(sess)

        await asyncio.to_thread(_close)


class LinuxBridgeDriver(_SshDriver):
    """A Linux box whose bridge is the switch (netmiko device type "linux").

    vlan_mode "filtering": ``bridge vlan del dev PORT vid OLD`` for every old VLAN, then
    ``bridge vlan add dev PORT vid N pvid untagged``. vlan_mode "bridge-per-vlan":
    ``ip link set dev PORT master <bridge of VLAN N>``. Bounce: ``ip link set dev PORT
    down``, a pause, ``up`` in one shell line so a dropped session cannot leave it down.
    """

    name = "ssh-linux-bridge"
    device_type = "linux"

    def _sh(self, conn: Any, command: str, takes: float = 0.0) -> str:
        """Run one shell line; raise DriverError if it exits non-zero.

        takes: seconds the command itself needs (a bounce's pause). The answer is awaited
        for that plus the switch's SSH timeout: a session whose packets vanish (switch
        gone dark) is given up after that long, not held for a fixed 30 s.
        """
        if self.switch.linux_bridge.use_sudo:
            # The whole line under sudo, not just its first command of a && chain.
            command = f"sudo -n sh -c {shlex.quote(command)}"
        # An explicit prompt pattern: netmiko's default prompt search costs ~50 ms/command.
        prompt = re.escape(conn.base_prompt) + r"[^\n]*[#$]\s*$"
        # cmd_verify=False: no separate wait for the command's echo (~12 ms a command);
        # the prompt pattern cannot match the echo, which never holds the prompt.
        out: str = conn.send_command(f"{command}; echo __rc=$?",
                                     expect_string=prompt, cmd_verify=False,
                                     read_timeout=self._read_timeout(takes))
        m = re.search(r"__rc=(\d+)\s*$", out.strip())
        if m is None:
            raise DriverError(f"{self.switch.name}: no exit status from {command!r}",
                              retryable=True, switch=self.switch.name)
        body = out[: m.start()].strip()
        if m.group(1) != "0":
            raise DriverError(f"{self.switch.name}: {command!r} failed: {body}",
                              retryable=False, switch=self.switch.name)
        return body

    def _show(self, port: str) -> str:
        """The command printing the port's VLAN state as JSON."""
        if self.switch.linux_bridge.vlan_mode == "filtering":
            return f"bridge -j vlan show dev {port}"
        return f"ip -j link show dev {port}"

    def _vlan_of(self, shown: str, port: str) -> int:
        """The port's access VLAN from the output of ``_show``."""
        opts = self.switch.linux_bridge
        if opts.vlan_mode == "filtering":
            pvid = pvid_from_vlan_show(shown, port)
            if pvid is None:
                raise DriverError(f"{self.switch.name}: {port} has no PVID", retryable=False,
                                  switch=self.switch.name)
            return pvid
        data = json.loads(shown or "[]")
        master = data[0].get("master", "") if data else ""
        head, tail = opts.vlan_bridge_pattern.split("{vlan}")
        mid = master[len(head): len(master) - len(tail)] if master else ""
        if master.startswith(head) and master.endswith(tail) and mid.isdigit():
            return int(mid)
        raise DriverError(f"{self.switch.name}: {port} is in no VLAN bridge ({master!r})",
                          retryable=False, switch=self.switch.name)

    def _read_vlan(self, conn: Any, port: str) -> int:
        return self._vlan_of(self._sh(conn, self._show(port)), port)

    async def get_port_vlan(self, port: str) -> int:
        port = _check_port(port, self.switch.name)
        return await self._run(lambda conn: self._read_vlan(conn, port))

    async def set_port_vlan(self, port: str, vlan: int) -> None:
        port = _check_port(port, self.switch.name)
        vlan = _check_vlan(vlan, self.switch.name)
        opts = self.switch.linux_bridge

        def change(conn: Any) -> None:
            if opts.vlan_mode == "filtering":
                shown = self._sh(conn, self._show(port))
                cmds = filtering_set_commands(shown, port, vlan)
            else:
                cmds = [f"ip link set dev {port} master "
                        f"{opts.vlan_bridge_pattern.format(vlan=vlan)}"]
            # Read back in the same line (one round trip less): the switch's own state is
            # the proof, not the command's exit code.
            got = self._vlan_of(self._sh(conn, " && ".join([*cmds, self._show(port)])), port)
            check_readback(self.switch.name, port, got, vlan)

        await self._run(change)

    async def bounce_port(self, port: str) -> None:
        port = _check_port(port, self.switch.name)
        pause = max(0.0, float(self.switch.bounce_down_seconds))
        await self._run(lambda conn: self._sh(
            conn, f"ip link set dev {port} down && sleep {pause:g} && "
                  f"ip link set dev {port} up", takes=pause))


class CiscoIosDriver(_SshDriver):
    """Cisco IOS access switch over SSH (netmiko "cisco_ios").

    Configuration goes ``configure terminal`` / ``interface X`` / commands / ``exit`` /
    ``exit``: leaving with ``exit`` rather than ``end`` also works on IOS emulators that
    lack ``end``. Reads use ``show running-config interface X``.
    """

    name = "ssh-cisco-ios"
    device_type = "cisco_ios"

    def _after_login(self, conn: Any) -> None:
        if self.switch.ssh is not None and self.switch.ssh.enable_secret is not None:
            conn.enable()

    def _check_output(self, out: str) -> None:
        for line in out.splitlines():
            # IOS creates a missing access VLAN and says so with a "%" line: not an error.
            if line.strip().startswith("%") and "Creating vlan" not in line:
                raise DriverError(f"{self.switch.name}: IOS said {line.strip()!r}",
                                  retryable=False, switch=self.switch.name)

    def _configure(self, conn: Any, port: str, lines: list[str]) -> str:
        # Line by line, each waiting for the next prompt: netmiko's send_config_set probes
        # config mode with timed reads (~2 s per change). "exit" twice leaves config-if
        # and config mode.
        out = ""
        for cmd in ["configure terminal", f"interface {port}", *lines, "exit", "exit"]:
            out += conn.send_command(cmd, expect_string=r"#\s*$", strip_prompt=False,
                                     read_timeout=15.0)
        self._check_output(out)
        return out

    def _read_vlan(self, conn: Any, port: str) -> int:
        out: str = conn.send_command(f"show running-config interface {port}")
        self._check_output(out)
        if f"interface {port}" not in out:
            raise DriverError(f"{self.switch.name}: no interface {port}", retryable=False,
                              switch=self.switch.name)
        m = re.search(r"^\s*switchport access vlan (\d+)\s*$", out, re.M)
        return int(m.group(1)) if m else 1  # IOS omits the default access VLAN 1

    async def get_port_vlan(self, port: str) -> int:
        port = _check_port(port, self.switch.name)
        return await self._run(lambda conn: self._read_vlan(conn, port))

    async def set_port_vlan(self, port: str, vlan: int) -> None:
        port = _check_port(port, self.switch.name)
        vlan = _check_vlan(vlan, self.switch.name)

        def change(conn: Any) -> None:
            self._configure(conn, port, [f"switchport access vlan {vlan}"])
            check_readback(self.switch.name, port, self._read_vlan(conn, port), vlan)

        await self._run(change)

    async def bounce_port(self, port: str) -> None:
        port = _check_port(port, self.switch.name)
        await self._run(lambda conn: self._configure(conn, port, ["shutdown"]))
        await asyncio.sleep(max(0.0, float(self.switch.bounce_down_seconds)))
        await self._run(lambda conn: self._configure(conn, port, ["no shutdown"]))
