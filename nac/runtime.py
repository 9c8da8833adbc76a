"""The live policy and prevention index of a running server, reloaded when they change.

`nac policy apply` writes STATE/policy.toml and `nac feed sync` bumps the feed epoch in the
store; the server notices either within a poll interval and swaps in the new one without
touching conversations in flight (a swap is one attribute assignment on the loop thread).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from pathlib import Path
from typing import Any

from nac.authorize import apply_segment_settings
from nac.posture.certificate import PREFIX as CERT_PREFIX
from nac.posture.certificate import CertificateSigner, QuarantineCertificate, certify
from nac.posture.decision import Decision
from nac.posture.digest import posture_digest
from nac.posture.evaluate import evaluate
from nac.posture.policy import Policy, PolicyError, active_policy_path, load_policy
from nac.prevention import cache as feed_cache
from nac.prevention.index import VulnIndex, load_index

log = logging.getLogger("nac.policy")

RUN_DIR = "run"


def publish_loaded(state_dir: Path, digest: str) -> None:
    """Tell `nac policy apply` which policy this process enforces (STATE/run/policy-PID)."""
    run = state_dir / RUN_DIR
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / f".policy-{os.getpid()}.tmp"
    tmp.write_text(digest)
    tmp.replace(run / f"policy-{os.getpid()}")


def unpublish(state_dir: Path) -> None:
    (state_dir / RUN_DIR / f"policy-{os.getpid()}").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until_enforced(state_dir: Path, digest: str, timeout: float = 10.0) -> tuple[int, int]:
    """Wait until every running server process enforces the policy with `digest`.

    Returns (processes enforcing it, processes running); files of dead processes are
    removed. With no server running, returns (0, 0) at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        total = done = 0
        for f in (state_dir / RUN_DIR).glob("policy-*"):
            try:
                pid = int(f.name.split("-", 1)[1])
            except ValueError:
                continue
            if not _alive(pid):
                f.unlink(missing_ok=True)
                continue
            total += 1
            try:
                done += f.read_text().strip() == digest
            except OSError:
                pass
        if done == total or time.monotonic() > deadline:
            return done, total
        time.sleep(0.1)


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
        self.signer = CertificateSigner.from_state_dir(state_dir)
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
        self.file_digest = policy.digest  # what `nac policy apply` computes from the file
        try:
            segments = apply_segment_settings(policy.segments, self.segment_settings)
        except KeyError as exc:
            raise PolicyError("server config", [("segments", str(exc.args[0]))]) from None
        return policy.model_copy(update={"segments": segments})

    def evaluate(self, posture: dict[str, Any] | None, role: str, group: str | None,
                 vendor: str) -> Decision:
        return evaluate(self.policy, posture, role=role, index=self.index, now=time.time(),
                        nas_group=group, vendor=vendor)

    def decide(self, posture: dict[str, Any] | None, *, identity: str, role: str,
               group: str | None, vendor: str, certify_it: bool = False) -> Decision:
        """The posture's decision, reusing a quarantine certificate when it still holds
        (draft 5.2/5.3): same identity, same posture digest, same feeds and policy, not
        expired. Otherwise a full evaluation; with certify_it, a new certificate with it."""
        now = time.time()
        reused = self._reuse(posture, identity, now)
        if reused is not None:
            seg = self.policy.segments[reused.segment]
            issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reused.issued_at))
            return Decision(
                segment=seg.name, vlan=seg.vlan_for(group, vendor),
                reasons=(f"quarantine certificate of {issued} still valid: "
                         "inspection reused (draft 5.3)",),
                expires=reused.expires_at, source="certificate")
        d = self.evaluate(posture, role, group, vendor)
        if certify_it and posture is not None and d.segment in self.policy.segments:
            d = certify(self.signer, d, node_id=identity, mac="", identity=identity,
                        posture=posture, feed_epoch=self.index.epoch,
                        policy_digest=self.policy.digest, now=now)
        return d

    def _reuse(self, posture: dict[str, Any] | None, identity: str,
               now: float) -> QuarantineCertificate | None:
        cert = posture.get("certificate") if isinstance(posture, dict) else None
        if not isinstance(cert, dict) or not isinstance(cert.get("token"), str):
            return None
        token = cert["token"]
        if not token.startswith(CERT_PREFIX + "."):  # the agent keeps it base64-wrapped
            try:
                token = base64.b64decode(token, validate=True).decode("ascii")
            except (ValueError, UnicodeDecodeError):
                return None
        v = self.signer.verify(token, posture_digest=posture_digest(posture), now=now,
                               feed_epoch=self.index.epoch, policy_digest=self.policy.digest)
        if not v.ok or v.certificate is None or v.certificate.identity != identity:
            log.info("quarantine certificate of %s not reused: %s", identity,
                     v.reason if not v.ok else "issued to another identity")
            return None
        if v.certificate.segment not in self.policy.segments:
            return None
        return v.certificate

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
