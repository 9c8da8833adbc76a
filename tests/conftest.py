"""Shared fixtures: a real `nac serve` on free loopback ports, and the radclient peer."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "testing123"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> tuple[int, int]:
    """Two consecutive free UDP ports on 127.0.0.1 and ::1 (auth, acct)."""
    for _ in range(200):
        p = free_udp_port()
        if p >= 65535:
            continue
        try:
            socks = []
            for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                for port in (p, p + 1):
                    s = socket.socket(fam, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return p, p + 1
    raise RuntimeError("no free UDP port pair")


def nac_cmd() -> list[str]:
    """The installed console script, or the module when running from a checkout."""
    exe = shutil.which("nac")
    return [exe] if exe else [sys.executable, "-m", "nac.cli.main"]


@dataclass
class NacServer:
    state_dir: Path
    auth_port: int
    acct_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def nac(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a `nac` CLI command against this server's state dir."""
        return subprocess.run(
            [*nac_cmd(), *args, "--state-dir", str(self.state_dir)],
            capture_output=True, text=True, check=check, timeout=60,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(tmp: Path, *args: str, ready_timeout: float = 30.0) -> NacServer:
    auth, acct = free_port_pair()
    state = tmp / "state"
    log_path = tmp / "serve.log"
    if "--workers" not in args:  # one process unless a test is about workers
        args = (*args, "--workers", "1")
    cmd = [*nac_cmd(), "serve", "--state-dir", str(state), "--auth-port", str(auth),
           "--acct-port", str(acct), "--listen", "127.0.0.1", "--listen", "::1", *args]
    logf = log_path.open("wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    srv = NacServer(state, auth, acct, proc, log_path, list(args))
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nac serve exited {proc.returncode}:\n{srv.log()}")
        if re.search(r"\bready: ", srv.log()):
            return srv
        time.sleep(0.1)
    srv.stop()
    raise RuntimeError(f"nac serve not ready after {ready_timeout}s:\n{srv.log()}")


@pytest.fixture
def nac_server(tmp_path: Path) -> Iterator[NacServer]:
    srv = start_server(tmp_path)
    yield srv
    srv.stop()


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (CI installs it: see .ci/install)")
    return path


@dataclass
class RadReply:
    code: str | None
    attrs: dict[str, list[str]]
    raw: str
    returncode: int


def radclient(
    port: int,
    kind: str,
    attrs: str,
    *,
    host: str = "127.0.0.1",
    secret: str = SECRET,
    timeout: float = 1.0,
    retries: int = 1,
) -> RadReply:
    """Send one request with the real radclient and parse what it printed."""
    need("radclient")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    proc = subprocess.run(
        ["radclient", "-x", "-r", str(retries), "-t", str(timeout), target, kind, secret],
        input=attrs, capture_output=True, text=True, timeout=30,
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"Received (\S+) Id \d+", out)
    code = m.group(1) if m else None
    parsed: dict[str, list[str]] = {}
    if m:
        for line in out[m.end():].splitlines()[1:]:
            if not line.startswith("\t"):
                break
            name, _, value = line.strip().partition(" = ")
            parsed.setdefault(name, []).append(value.strip('"'))
    return RadReply(code, parsed, out, proc.returncode)
