"""The live policy and prevention index of a running server, reloaded when they change.

`nac policy apply` writes STATE/policy.toml and `nac feed sync` bumps the feed epoch in the
store; the server notices either within a poll interval and swaps in the new one without
touching conversations in flight (a swap is one attribute assignment on the loop thread).

On a PostgreSQL store the policy is the site's: `nac policy apply --store postgresql://...`
publishes a version in the database (nac/store/pg_policy.py), and every server's site
policy thread writes the newest one to its STATE/policy.toml, which the poll above installs.
Once the database has a version, it wins over the local file and the config's policy_file.
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nac.authorize import apply_segment_settings
from nac.events import DecisionRecord
from nac.posture.certificate import PREFIX as CERT_PREFIX
from nac.posture.certificate import CertificateSigner, QuarantineCertificate, certify
from nac.posture.decision import Decision
from nac.posture.digest import posture_digest
from nac.posture.evaluate import FIRST_SEEN_PREFIX, evaluate
from nac.posture.policy import (
    ACTIVE_POLICY_FILE,
    Policy,
    PolicyError,
    active_policy_path,
    install_policy_text,
    load_policy,
    loads_policy,
)
from nac.prevention import cache as feed_cache
from nac.prevention.fleet import FleetIntake, rule_digest
from nac.prevention.index import VulnIndex, load_index

if TYPE_CHECKING:
    from nac.store.pg_policy import SiteFollower, SiteVersion

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


GRACE_SCHEMA = """CREATE TABLE IF NOT EXISTS grace_first_seen (
    host TEXT NOT NULL,
    rule TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (host, rule)
)"""


def grace_host(identity: str | None, posture: Mapping[str, Any] | None) -> str:
    """Who a grace period belongs to: the account and the interface MACs its agent reports.

    The decision path does not know the switch-side MAC, and one account may serve many
    hosts; the agent's own interface list tells them apart (identity alone if it has none)."""
    macs: set[str] = set()
    interfaces = posture.get("interfaces") if isinstance(posture, Mapping) else None
    if isinstance(interfaces, list):
        for itf in interfaces:
            mac = itf.get("mac") if isinstance(itf, dict) else None
            if isinstance(mac, str) and mac and mac.strip("0:") != "":
                macs.add(mac.lower())
    return f"{identity or ''}|{','.join(sorted(macs))}"


class GraceBook:
    """When each host first failed each rule that has a grace period, kept in STATE/nac.db so
    that neither a server restart nor a fleet re-evaluation restarts the grace.

    Read once into memory; written only when a graced failure starts or ends. Processes
    sharing the file agree on the first writer's time (INSERT OR IGNORE, then read back).
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._by_host: dict[str, dict[str, float]] = {}
        try:
            conn = feed_cache.connect(db_path)
            try:
                with conn:
                    conn.execute(GRACE_SCHEMA)
                for host, rule, ts in conn.execute(
                        "SELECT host, rule, first_seen FROM grace_first_seen"):
                    self._by_host.setdefault(host, {})[rule] = float(ts)
            finally:
                conn.close()
        except sqlite3.Error as exc:  # a read-only or full disk: graces restart, no crash
            log.warning("grace periods not persisted (%s): %s", db_path, exc)

    def get(self, host: str) -> dict[str, float]:
        return self._by_host.get(host, {})

    def record(self, host: str, extra: Mapping[str, str]) -> None:
        """Keep the decision's first_seen.<rule> entries; forget rules it no longer fails."""
        self.record_many([(host, extra)])

    def record_many(self, items: list[tuple[str, Mapping[str, str]]]) -> None:
        adds: list[tuple[str, str, float]] = []
        drops: list[tuple[str, str]] = []
        for host, extra in items:
            have = self._by_host.get(host, {})
            want = {k[len(FIRST_SEEN_PREFIX):]: float(v) for k, v in extra.items()
                    if k.startswith(FIRST_SEEN_PREFIX)}
            if want.keys() == have.keys():
                continue
            adds += [(host, rule, ts) for rule, ts in want.items() if rule not in have]
            drops += [(host, rule) for rule in have if rule not in want]
            if want:
                self._by_host[host] = {r: have.get(r, ts) for r, ts in want.items()}
            else:
                self._by_host.pop(host, None)
        if not adds and not drops:
            return
        try:
            conn = feed_cache.connect(self.db_path)
            try:
                with conn:
                    conn.execute(GRACE_SCHEMA)
                    conn.executemany("INSERT OR IGNORE INTO grace_first_seen (host, rule, "
                                     "first_seen) VALUES (?, ?, ?)", adds)
                    conn.executemany("DELETE FROM grace_first_seen WHERE host = ? AND rule = ?",
                                     drops)
                for host, rule, _ in adds:  # another process may have been first
                    row = conn.execute("SELECT first_seen FROM grace_first_seen WHERE host = ? "
                                       "AND rule = ?", (host, rule)).fetchone()
                    if row is not None and host in self._by_host:
                        self._by_host[host][rule] = float(row[0])
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("could not persist grace periods: %s", exc)


# LivePolicy's store_url when the caller does not pass one: the store `nac serve` was given
# through the environment (NAC_STORE, which --store also reads).
FROM_ENV = "from the environment"


def site_store(store_url: str | None) -> str | None:
    """The URL whose site policy to follow: a PostgreSQL store's; None for SQLite."""
    if store_url and store_url.startswith(("postgresql://", "postgres://")):
        return store_url
    return None


class LivePolicy:
    def __init__(self, state_dir: Path, db_path: Path, policy_file: str | None = None,
                 segment_settings: dict[str, Any] | None = None,
                 store_url: str | None = FROM_ENV) -> None:
        self.state_dir = state_dir
        self.db_path = db_path
        self.policy_file = Path(policy_file) if policy_file else None
        self.segment_settings = segment_settings or {}
        self._mtime: float | None = None
        self._epoch_conn: sqlite3.Connection | None = None
        if store_url is FROM_ENV:
            store_url = os.environ.get("NAC_STORE")
        self.site_url = site_store(store_url)
        self.site: SiteVersion | None = None  # the version installed in STATE/policy.toml
        self._site_lock = threading.Lock()  # the site thread and the loop both install
        self._local_edit: str | None = None  # digest of a policy file the site did not publish
        self._follower: SiteFollower | None = None
        self.file_digest = ""  # of the policy file in force; set by _load_policy
        if self.site_url is not None:
            self._take_site_policy()
        self.policy = self._load_policy()
        self.index: VulnIndex = load_index(db_path)
        self.signer = CertificateSigner.from_state_dir(state_dir)
        self.grace = GraceBook(db_path)
        self._last: tuple[Any, Any, Any] = (None, None, None)  # posture, index, findings
        self._intake: FleetIntake | None = None
        self._soft_rules: tuple[Any, list[tuple[str, Any]]] = (None, [])
        log.info("policy %r (%s), %d rule(s); prevention feeds at epoch %d, %d advisories",
                 self.policy.name, self.source, len(self.policy.rules), self.index.epoch,
                 self.index.advisory_count)

    @property
    def path(self) -> Path | None:
        if self.site is not None:  # the database's policy, mirrored in the state dir
            return self.state_dir / ACTIVE_POLICY_FILE
        return self.policy_file or active_policy_path(self.state_dir)

    # ---- the site policy of a PostgreSQL store ----------------------------------------
    def _take_site_policy(self) -> None:
        """At start: the newest site version, if the database has one, replaces the local
        policy (a server started after `nac policy apply --store` enforces it at once)."""
        import psycopg

        from nac.store import pg_policy
        from nac.store.postgres import redact

        assert self.site_url is not None
        try:
            with pg_policy.connect(self.site_url) as conn:
                newest = pg_policy.newest(conn)
        except psycopg.Error as exc:
            log.warning("site policy: cannot read it from %s at start (%s); enforcing %s "
                        "until the database answers", redact(self.site_url),
                        str(exc).strip(), self.source)
            return
        if newest is None:
            log.info("site policy: none published in %s yet; enforcing %s (this server's "
                     "own) until `nac policy apply --store` publishes one",
                     redact(self.site_url), self.source)
            return
        self.install_site(newest)

    def install_site(self, version: SiteVersion) -> bool:
        """Make a site version this server's policy: validated, then written to
        STATE/policy.toml, which poll() installs. Runs on the site policy thread (or at
        start); False, with the reason logged, if this server refuses it."""
        try:
            parsed = loads_policy(version.text, f"site policy version {version.version}")
        except PolicyError as exc:  # e.g. published by a newer nac with keys this one lacks
            log.error("site policy version %d refused by this server, keeping %s: %s",
                      version.version, self.describe_loaded(), exc)
            return False
        if self.site is None:
            local = self.policy_file or active_policy_path(self.state_dir)
            try:
                local_digest = (load_policy(local) if local else Policy.sample()).digest
            except PolicyError:
                local_digest = "unreadable"
            if local_digest != parsed.digest:
                why = ("the config's policy_file " if local == self.policy_file and local
                       else "this server's own policy ")
                log.warning("site policy: %s%s (digest %s) differs from the database's "
                            "%s: the database's wins (once a site policy is published, "
                            "`nac policy apply FILE --store URL` changes it for every server)",
                            why, local or "(the embedded sample)", local_digest[:16],
                            version.describe())
        elif self.site.version != version.version:
            log.info("%s published; installing it", version.describe())
        with self._site_lock:
            # The version first, then the file: a poll that reads the new file between the
            # two would take it for a local edit and keep the old policy.
            self.site = version
            target, written = install_policy_text(
                self.state_dir, version.text.encode("utf-8"), force=False)
        if written:
            log.info("%s written to %s", version.describe(), target)
        return True

    def _site_tick(self) -> None:
        """Each site thread poll, after it installed any newer version: a policy file the
        loop found that is not the site's was edited here; put the site's back."""
        site, edit = self.site, self._local_edit
        if edit is None or site is None:
            return
        self._local_edit = None
        if edit == site.digest:  # a version this thread had not seen yet: the loop takes it
            return
        path = self.state_dir / ACTIVE_POLICY_FILE
        log.error("site policy: %s was changed on this server (digest %s); ignored, this "
                  "server keeps %s and puts it back (publish a change for every server "
                  "with `nac policy apply FILE --store URL`)", path, edit[:16],
                  site.describe())
        with self._site_lock:
            install_policy_text(self.state_dir, site.text.encode("utf-8"), force=False)

    def loaded(self) -> tuple[str | None, int | None]:
        """(digest enforced, the site version it is, if it is one): the heartbeat's."""
        site = self.site
        digest = self.file_digest
        return digest, (site.version if site is not None and site.digest == digest else None)

    def describe_loaded(self) -> str:
        site = self.site
        if site is not None and site.digest == self.file_digest:
            return site.describe()
        if not self.file_digest:  # at start, before the first load
            return self.source
        return f"{self.source} (digest {self.file_digest[:16]})"

    def follow_site(self) -> None:
        """Start the thread that follows the site policy and reports what this server
        enforces (servers only: a CLI re-evaluation reads the site policy once)."""
        if self.site_url is None or self._follower is not None:
            return
        from nac.store.pg_policy import SiteFollower

        site = self.site
        self._follower = SiteFollower(
            self.site_url, self.state_dir, self.install_site, self.loaded,
            seen=site.version if site is not None else None, on_tick=self._site_tick)
        self._follower.start()

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "the embedded sample policy"

    def _load_policy(self) -> Policy:
        path = self.path
        # The time before the text: a file replaced between the two is read again.
        mtime = path.stat().st_mtime if path else None
        policy = load_policy(path) if path else Policy.sample()
        self._mtime = mtime
        self.file_digest = policy.digest  # what `nac policy apply` computes from the file
        try:
            segments = apply_segment_settings(policy.segments, self.segment_settings)
        except KeyError as exc:
            raise PolicyError("server config", [("segments", str(exc.args[0]))]) from None
        return policy.model_copy(update={"segments": segments})

    def observe(self, rec: DecisionRecord) -> None:
        """Compile a recorded posture for fleet re-evaluation, off the packet path: the
        server's on_decision calls this with every decision it stores. A digest-only posture
        (certificate fast path) changes nothing: the store keeps the whole one it confirms."""
        if rec.posture is None or not rec.mac or rec.posture.get("digest_only") is True:
            return
        if self._intake is None:
            self._intake = FleetIntake(self.db_path)
        policy = self.policy
        if self._soft_rules[0] is not policy:
            self._soft_rules = (policy, [(rule_digest(r), r) for r in policy.rules
                                         if r.reads_packages])
        self._intake.observe(rec.mac, rec.posture, rec.at, self._soft_rules[1])

    def close(self) -> None:
        if self._intake is not None:
            self._intake.close()
        if self._follower is not None:
            self._follower.close()
            self._follower = None

    def evaluate(self, posture: dict[str, Any] | None, role: str, group: str | None,
                 vendor: str, identity: str | None = None, now: float | None = None) -> Decision:
        host = grace_host(identity, posture)
        findings = None
        if isinstance(posture, dict) and self.policy.uses_feeds:
            # One authentication decides twice on the same document (the IMV's verdict in
            # the tunnel, then the Access-Accept): match its packages once.
            index, last = self.index, self._last
            if last[0] is posture and last[1] is index:
                findings = last[2]
            else:
                findings = index.findings(posture)
                self._last = (posture, index, findings)
        d = evaluate(self.policy, posture, role=role, index=self.index,
                     now=time.time() if now is None else now, findings=findings,
                     first_seen=self.grace.get(host), nas_group=group, vendor=vendor)
        self.grace.record(host, d.extra)
        return d

    def decide(self, posture: dict[str, Any] | None, *, identity: str, role: str,
               group: str | None, vendor: str, certify_it: bool = False,
               now: float | None = None) -> Decision:
        """The posture's decision, reusing a quarantine certificate when it still holds
        (draft 5.2/5.3): same identity, same posture digest, same feeds and policy, not
        expired. Otherwise a full evaluation; with certify_it, a new certificate with it."""
        now = time.time() if now is None else now
        reused = self._reuse(posture, identity, now)
        if reused is not None:
            seg = self.policy.segments[reused.segment]
            issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reused.issued_at))
            return Decision(
                segment=seg.name, vlan=seg.vlan_for(group, vendor),
                reasons=(f"quarantine certificate of {issued} still valid: "
                         "inspection reused (draft 5.3)",),
                expires=reused.expires_at, source="certificate")
        d = self.evaluate(posture, role, group, vendor, identity, now)
        if certify_it and posture is not None and d.segment in self.policy.segments:
            d = certify(self.signer, d, node_id=identity, mac="", identity=identity,
                        posture=posture, feed_epoch=self.index.epoch,
                        policy_digest=self.policy.digest, now=now)
        return d

    def certificate_holds(self, posture: dict[str, Any], identity: str,
                          now: float | None = None) -> bool:
        """Would decide() reuse the certificate this posture presents (same checks)?"""
        return self._reuse(posture, identity, time.time() if now is None else now) is not None

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

    def _feed_epoch(self) -> int:
        """The feeds' epoch, through one connection kept for these polls (opening one and
        checking the schema every second cost more than the read)."""
        if self._epoch_conn is None:
            self._epoch_conn = feed_cache.connect(self.db_path)
        try:
            return feed_cache.get_epoch(self._epoch_conn)
        except sqlite3.Error:
            self._epoch_conn.close()
            self._epoch_conn = None
            raise

    def poll(self) -> list[str]:
        """Reload what changed; returns what did ("policy", "feeds"), [] if nothing."""
        changed = []
        # The first poll is a server's (housekeeping calls it; a CLI never does).
        self.follow_site()
        path = self.path
        mtime = path.stat().st_mtime if path and path.exists() else None
        if mtime != self._mtime:
            previous = (self.policy, self.file_digest)
            try:
                self.policy = self._load_policy()
            except (PolicyError, OSError) as exc:
                self._mtime = mtime  # report a bad file once, keep enforcing the last good one
                log.error("new policy rejected, keeping the previous one: %s", exc)
            else:
                site = self.site  # read after the file: the site thread sets it first
                if site is not None and self.file_digest != site.digest:
                    # Not the site's policy: edited here, or a version another worker of
                    # this state dir installed before this one's site thread saw it. The
                    # site thread tells which (it knows the newest version); until then the
                    # policy stays, and the file is read again at the next poll.
                    self._local_edit = self.file_digest
                    self.policy, self.file_digest = previous
                    self._mtime = None
                else:
                    log.info("policy reloaded from %s: %r, %d rule(s)%s", self.source,
                             self.policy.name, len(self.policy.rules),
                             f" ({site.describe()})" if site is not None else "")
                    changed.append("policy")
        epoch = self._feed_epoch()
        if epoch != self.index.epoch:
            self.index = load_index(self.db_path)
            log.info("prevention feeds changed: epoch %d, %d advisories", self.index.epoch,
                     self.index.advisory_count)
            changed.append("feeds")
        return changed
