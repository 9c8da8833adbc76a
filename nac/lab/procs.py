"""Processes the lab starts and must outlive `nac lab up`: started detached, stopped by pid.

`nac lab up` exits while hostapd, wpa_supplicant, sshd and `nac serve` keep running, and a
later `nac lab down` (another process) stops them. Each process leads its own session, so
its whole group (e.g. sh -> wpa_supplicant, or the IMC's agent children) is signalled. A pid
is only signalled while /proc/PID/cmdline still names the lab directory: a pid recycled by
an unrelated program after a crash is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from nac.lab.netns import time_scale


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session), output appended to ``log``; its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env) if env else None,
                                start_new_session=True)
    # /proc/PID/cmdline reads empty until the new program is mapped; callers identify
    # their processes by it, so return once it shows.
    deadline = time.monotonic() + 5 * time_scale()
    while not _cmdline(proc.pid).strip() and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    return proc.pid


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _reap(pid: int) -> bool:
    """True once ``pid`` is gone (reaping it if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # A zombie of another parent counts as gone: it holds no sockets or mounts.
        return stat.read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def alive(pid: int, marker: str) -> bool:
    return marker in _cmdline(pid) and not _reap(pid)


def stop(pid: int, marker: str, timeout: float = 5.0) -> bool:
    """SIGTERM the process group of ``pid`` (SIGKILL after ``timeout``); False if not ours."""
    if not alive(pid, marker):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _reap(pid):
                return True
            time.sleep(0.05)
    return True


def kill_hard(pid: int, marker: str) -> bool:
    """SIGKILL the process alone (a crash, not a shutdown); its children are left running."""
    if not alive(pid, marker):
        return False
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _reap(pid):
        time.sleep(0.02)
    return True
