"""Where the agent reads the host from: "/" normally, or NAC_AGENT_ROOT (tests, offline images).

Every collector goes through a HostRoot so that, when rooted at a directory, no file of the
real host is read and no external command that would inspect the real host is run.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT_ENV = "NAC_AGENT_ROOT"


@dataclass(frozen=True)
class HostRoot:
    base: Path = Path("/")
    rooted: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> HostRoot:
        env = os.environ if environ is None else environ
        value = env.get(ROOT_ENV, "").strip()
        if value and value != "/":
            return cls(Path(value), True)
        return cls()

    def path(self, rel: str) -> Path:
        """Host path `rel` ("/etc/os-release" or "etc/os-release") under the root."""
        return self.base / rel.lstrip("/")

    def read_text(self, rel: str) -> str | None:
        try:
            return self.path(rel).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.debug("cannot read %s: %s", rel, exc)
            return None

    def can_run(self, program: str) -> bool:
        """True if `program` may be run: never when rooted (it would read the real host)."""
        return not self.rooted and shutil.which(program) is not None

    def run(self, argv: list[str], timeout: float = 30.0) -> str | None:
        """Stdout of a host command, or None (rooted, missing, failed, timed out)."""
        if not self.can_run(argv[0]):
            log.debug("not running %s (rooted=%s or missing)", argv[0], self.rooted)
            return None
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("%s failed: %s", argv[0], exc)
            return None
        if proc.returncode != 0:
            log.debug("%s exited %d: %s", argv[0], proc.returncode, proc.stderr.strip()[:200])
            return None
        return proc.stdout
