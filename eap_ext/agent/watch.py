"""`nac-agent watch`: the host-type quarantine monitor of draft 4.5.1.

It polls what an inspection judges and that can change under a running host: the package
databases (their mtimes) and the security settings (forwarding, firewall, security software,
accounts). On a change it asks the supplicant to re-authenticate, which reruns the
posture check inside EAP (`wpa_cli -i IFACE reauthenticate`). The trigger command, the
snapshot and the clock are injectable so tests run it without a supplicant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .collectors import firewall, forwarding, security_software
from .hostroot import HostRoot

log = logging.getLogger(__name__)

# Package databases, and etc/shadow for passwords (re-running crypt on every poll is costly).
WATCHED_FILES = ("var/lib/dpkg/status", "var/lib/rpm/rpmdb.sqlite", "var/lib/rpm/Packages",
                 "usr/lib/sysimage/rpm/rpmdb.sqlite", "lib/apk/db/installed", "etc/shadow")


def snapshot(root: HostRoot) -> str:
    """A digest of everything whose change should trigger a new inspection."""
    mtimes: dict[str, float | None] = {}
    for rel in WATCHED_FILES:
        try:
            mtimes[rel] = root.path(rel).stat().st_mtime_ns
        except OSError:
            mtimes[rel] = None
    settings: dict[str, Any] = {"files": mtimes}
    for name, fn in (("forwarding", forwarding.collect), ("firewall", firewall.collect),
                     ("security_software", _security_presence)):
        try:
            settings[name] = fn(root)
        except Exception as exc:  # noqa: BLE001 - a failing probe is "unknown", not a crash
            log.debug("watch probe %s failed: %r", name, exc)
            settings[name] = "unknown"
    raw = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()


def _security_presence(root: HostRoot) -> Any:
    # Signature age changes every hour by itself; only presence and running state count.
    found = security_software.collect(root)
    if isinstance(found, str):
        return found
    return [(s["name"], s["running"]) for s in found]


def wpa_cli_command(interface: str, ctrl_dir: str | None = None,
                    wpa_cli: str = "wpa_cli") -> list[str]:
    argv = [wpa_cli]
    if ctrl_dir:
        argv += ["-p", ctrl_dir]
    return [*argv, "-i", interface, "reauthenticate"]


DEFAULT_CTRL_DIR = "/var/run/wpa_supplicant"


def reauth_runner(interface: str, ctrl_dir: str | None = None, wpa_cli: str = "wpa_cli"
                  ) -> Callable[[list[str]], int]:
    """wpa_cli when the supplicant's control socket exists, else an EAPOL-Start of our own
    (decided at each trigger: the supplicant may come and go)."""

    def run(argv: list[str]) -> int:
        sock = Path(ctrl_dir or DEFAULT_CTRL_DIR) / interface
        if sock.exists():
            return run_command(argv)
        from . import eapol

        try:
            eapol.send(interface)
        except (OSError, ImportError) as exc:
            log.warning("no control socket %s and EAPOL-Start failed: %s", sock, exc)
            return -1
        return 0

    return run


def run_command(argv: list[str]) -> int:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("trigger %s failed: %s", argv[0], exc)
        return -1


def watch(trigger: list[str], *, root: HostRoot | None = None, interval: float = 10.0,
          max_checks: int | None = None,
          take_snapshot: Callable[[HostRoot], str] = snapshot,
          runner: Callable[[list[str]], int] = run_command,
          sleep: Callable[[float], None] = time.sleep,
          on_trigger: Callable[[int], None] | None = None,
          prepare: Callable[[], object] | None = None) -> int:
    """Poll until max_checks (forever if None); returns how many times it triggered.

    `prepare` runs before each trigger: the CLI uses it to refresh the pending-updates
    cache, so the slow apt simulation happens here and not inside the EAP exchange.
    """
    root = root or HostRoot.from_env()
    previous = take_snapshot(root)
    log.info("watching for posture changes every %.1f s", interval)
    triggered = checks = 0
    while max_checks is None or checks < max_checks:
        sleep(interval)
        checks += 1
        current = take_snapshot(root)
        if current != previous:
            log.info("posture-relevant change: re-authenticating")
            if prepare is not None:
                try:
                    prepare()
                except Exception as exc:  # noqa: BLE001 - warming a cache is optional
                    log.debug("prepare failed: %r", exc)
            code = runner(trigger)
            triggered += 1
            if on_trigger:
                on_trigger(code)
            previous = current
    return triggered
