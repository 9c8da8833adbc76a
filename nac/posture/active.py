"""The policy the server enforces, reloaded when `nac policy apply` replaces STATE/policy.toml.

The server calls refresh() about once a second (a stat, no read unless the file changed) and
current() on every evaluation. A file that fails validation never replaces a good policy:
the old one stays in force and `last_error` says why.
"""

from __future__ import annotations

import os
from pathlib import Path

from nac.posture.policy import ACTIVE_POLICY_FILE, Policy, PolicyError, load_policy

_Stamp = tuple[int, int, int] | None  # (inode, mtime_ns, size); None = no file


class ActivePolicy:
    """STATE/policy.toml if present and valid, else the built-in sample."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / ACTIVE_POLICY_FILE
        self.last_error: str | None = None
        self._stamp: _Stamp = None
        self._policy = Policy.sample()
        self.refresh()

    def current(self) -> Policy:
        return self._policy

    def refresh(self) -> bool:
        """Reload if the file changed (apply replaces it atomically); True if the policy did."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:  # removed: back to the built-in sample
            new = Policy.sample()
        else:
            try:
                new = load_policy(self.path)
            except PolicyError as exc:
                self.last_error = str(exc)
                return False
        self.last_error = None
        changed = new.digest != self._policy.digest
        self._policy = new
        return changed

    def _stat(self) -> _Stamp:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)
