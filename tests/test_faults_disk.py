"""Faults: the state dir's disk fills up, then comes back. nac serve keeps answering, says
why in its log, reports 503 on /healthz, does not restart, and commits what it held back
once there is room again (Accounting-Responses wait for that: RFC 2866)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port_pair, nac_cmd, need, radclient

pytestmark = [pytest.mark.peer, pytest.mark.netns]


def health(port: int) -> tuple[int, dict[str, object]]:
    out = subprocess.run(["curl", "-s", "-m", "5", "-w", "\n%{http_code}",
                          f"http://127.0.0.1:{port}/healthz"], capture_output=True, text=True,
                         timeout=20).stdout
    body, code = out.rsplit("\n", 1)
    return int(code), json.loads(body) if body else {}


def mab(port: int, i: int) -> str | None:
    mac = f"02:00:00:00:dd:{i:02x}"
    return radclient(port, "auth", f'User-Name = "{mac}", Calling-Station-Id = "{mac}", '
                     "Service-Type = Call-Check, Message-Authenticator = 0x00").code


def test_full_disk_then_room_again(tmp_path: Path) -> None:
    need("curl")
    need("nsenter")
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace with a small tmpfs")
    state = tmp_path / "state"
    state.mkdir()
    auth, acct = free_port_pair()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mport = s.getsockname()[1]
    log = tmp_path / "serve.log"
    cmd = " ".join([*nac_cmd(), "serve", "--state-dir", str(state), "--auth-port", str(auth),
                    "--acct-port", str(acct), "--listen", "127.0.0.1", "--workers", "1",
                    "--posture", "off", "--metrics", f"127.0.0.1:{mport}"])
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o size=6m tmpfs {state} && exec {cmd}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "ready: " not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert mab(auth, 1) == "Access-Accept"
        assert health(mport)[0] == 200

        # Fill the server's disk from inside its mount namespace.
        subprocess.run(["nsenter", "-t", str(proc.pid), "-m", "sh", "-c",
                        f"dd if=/dev/zero of={state}/filler bs=64k 2>/dev/null; true"],
                       check=True, timeout=60)
        answered = [mab(auth, i) for i in range(2, 40)]
        assert answered.count("Access-Accept") == len(answered)  # the packet path goes on
        acct_reply = radclient(acct, "acct", 'Acct-Status-Type = Start, Acct-Session-Id = "F-1",'
                               ' Calling-Station-Id = "02:00:00:00:dd:01"', timeout=1)
        assert acct_reply.code is None  # not recorded, so not acknowledged
        deadline = time.monotonic() + 20
        code, body = health(mport)
        while code != 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            code, body = health(mport)
        assert code == 503 and "store" in body.get("failed", []), body
        assert "store write failed, will retry" in log.read_text(errors="replace")
        assert "full" in log.read_text(errors="replace")
        assert proc.poll() is None

        # Room again: the held-back writes land and health recovers.
        subprocess.run(["nsenter", "-t", str(proc.pid), "-m", "rm", "-f", f"{state}/filler"],
                       check=True, timeout=30)
        deadline = time.monotonic() + 20
        while health(mport)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert health(mport)[0] == 200
        acct_reply = radclient(acct, "acct", 'Acct-Status-Type = Start, Acct-Session-Id = "F-1",'
                               ' Calling-Station-Id = "02:00:00:00:dd:01"')
        assert acct_reply.code == "Accounting-Response"
        count = ("import sqlite3, sys; print(sqlite3.connect(sys.argv[1])"
                 ".execute('SELECT COUNT(*) FROM decisions').fetchone()[0])")
        rows = subprocess.run(["nsenter", "-t", str(proc.pid), "-m", sys.executable, "-c",
                               count, str(state / "nac.db")], capture_output=True, text=True,
                              timeout=30, check=True)
        assert int(rows.stdout.strip()) == 39  # every decision made during the outage landed
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_read_only_state_dir_is_a_clear_error_not_a_crash_loop(tmp_path: Path) -> None:
    """A read-only state dir (a read-only bind mount, private to the server): `nac serve
    --workers 2` says so in one line and exits 1 at once, before starting any worker."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace with a read-only bind mount")
    state = tmp_path / "state"
    state.mkdir()
    auth, acct = free_port_pair()
    cmd = " ".join([*nac_cmd(), "serve", "--state-dir", str(state), "--auth-port", str(auth),
                    "--acct-port", str(acct), "--listen", "127.0.0.1", "--workers", "2"])
    t0 = time.monotonic()
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount --bind {state} {state} && mount -o remount,bind,ro {state} && exec {cmd}"],
        capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert f"cannot start: the state dir {state} is not writable: Read-only file system" \
        in r.stderr
    assert "Traceback" not in r.stderr and "worker 0 started" not in r.stderr
    assert took < 20
    assert list(state.iterdir()) == []  # nothing half-created behind the mount
