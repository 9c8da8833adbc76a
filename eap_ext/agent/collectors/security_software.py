"""The `security_software` section: anti-malware presence, whether it runs, signature age.

ClamAV is the one Linux scanner we know: "running" means a clamd process exists (proc/*/comm),
the signature age is that of the newest database (var/lib/clamav/*.cvd|*.cld), from the build
time in its 512-byte header ("ClamAV-VDB:<date>:..."), else the file's mtime.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from ..hostroot import HostRoot

log = logging.getLogger(__name__)

CLAMAV_DB = "var/lib/clamav"


def process_running(root: HostRoot, comm: str) -> bool:
    try:
        for entry in root.path("proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "comm").read_text().strip() == comm:
                        return True
                except OSError:
                    continue  # the process exited while we looked
    except OSError as exc:
        log.debug("cannot list proc: %s", exc)
    return False


def cvd_build_time(path: Path) -> float:
    """Build time of a ClamAV database, from its header when present, else the mtime."""
    try:
        with path.open("rb") as fh:
            header = fh.read(512).decode("ascii", errors="replace")
        if header.startswith("ClamAV-VDB:"):
            stamp = header.split(":")[1]
            return datetime.strptime(stamp, "%d %b %Y %H-%M %z").timestamp()
    except (OSError, ValueError, IndexError) as exc:
        log.debug("no usable header in %s: %s", path, exc)
    return path.stat().st_mtime


def clamav(root: HostRoot, now: float) -> dict[str, object] | None:
    db = root.path(CLAMAV_DB)
    files = sorted(db.glob("*.cvd")) + sorted(db.glob("*.cld")) if db.is_dir() else []
    running = process_running(root, "clamd")
    installed = files or running or root.path("usr/sbin/clamd").exists() \
        or root.path("usr/bin/clamscan").exists()
    if not installed:
        return None
    age = None
    if files:
        newest = max(cvd_build_time(f) for f in files)
        age = round(max(0.0, now - newest) / 3600.0, 1)
    return {"name": "clamav", "running": running, "signature_age_hours": age}


def collect(root: HostRoot, now: float | None = None) -> list[dict[str, object]] | str:
    now = time.time() if now is None else now
    found = [clamav(root, now)]
    return [entry for entry in found if entry is not None]
