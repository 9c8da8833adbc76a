"""The live policy and prevention index of a running server, reloaded when they change.

`nac policy apply` writes STATE/policy.toml and `nac feed sync` bumps the feed epoch in the
store; the server notices either within a poll interval and swaps in the new one without
touching conversations in flight (a swap is one attribute assignment on the loop thread).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from nac.authorize import apply_segment_settings
from nac.posture.decision import Decision
from nac.posture.evaluate import evaluate
from nac.posture.policy import Policy, PolicyError, active_policy_path, load_policy
from nac.prevention import cache as feed_cache
from nac.prevention.index import VulnIndex, load_index

log = logging.getLogger("nac.policy")


class LivePolicy:
    def __init__(self, state_dir: Path, db_path: Path, policy_file: str | None = None,
                 segment_settings: dict[str, Any] | None = None) -> None:
        self.state_dir = state_dir
        self.db_path = db_path
        self.policy_file = Path(policy_file) if policy_file else None
        self.segment_settings = segment_settings or {}
        self._mtime: float | None = None
        self.policy = self._load_policy()
        self.index: VulnIndex = load_index(db_path)
        log.info("policy %r (%s), %d rule(s); prevention feeds at epoch %d, %d advisories",
                 self.policy.name, self.source, len(self.policy.rules), self.index.epoch,
                 self.index.advisory_count)

    @property
    def path(self) -> Path | None:
        return self.policy_file or active_policy_path(self.state_dir)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "the embedded sample policy"

    def _load_policy(self) -> Policy:
        path = self.path
        policy = load_policy(path) if path else Policy.sample()
        self._mtime = path.stat().st_mtime if path else None
        try:
            segments = apply_segment_settings(policy.segments, self.segment_settings)
        except KeyError as exc:
            raise PolicyError("server config", [("segments", str(exc.args[0]))]) from None
        return policy.model_copy(update={"segments": segments})

    def evaluate(self, posture: dict[str, Any] | None, role: str, group: str | None,
                 vendor: str) -> Decision:
        return evaluate(self.policy, posture, role=role, index=self.index, now=time.time(),
                        nas_group=group, vendor=vendor)

    def poll(self) -> list[str]:
        """Reload what changed; returns what did ("policy", "feeds"), [] if nothing."""
        changed = []
        path = self.path
        mtime = path.stat().st_mtime if path and path.exists() else None
        if mtime != self._mtime:
            try:
                self.policy = self._load_policy()
            except (PolicyError, OSError) as exc:
                self._mtime = mtime  # report a bad file once, keep enforcing the last good one
                log.error("new policy rejected, keeping the previous one: %s", exc)
            else:
                log.info("policy reloaded from %s: %r, %d rule(s)", self.source,
                         self.policy.name, len(self.policy.rules))
                changed.append("policy")
        conn = feed_cache.connect(self.db_path)
        try:
            epoch = feed_cache.get_epoch(conn)
        finally:
            conn.close()
        if epoch != self.index.epoch:
            self.index = load_index(self.db_path)
            log.info("prevention feeds changed: epoch %d, %d advisories", self.index.epoch,
                     self.index.advisory_count)
            changed.append("feeds")
        return changed
