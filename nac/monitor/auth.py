"""Who sent an alert (draft 9.4: a fake quarantine monitor is a DoS on the whole network).

A monitor proves itself with an HMAC over the request, a TLS client certificate, or both
(a monitor configured with both must present both):

* HMAC: headers ``X-NAC-Monitor: NAME``, ``X-NAC-Timestamp: UNIX-SECONDS`` and
  ``X-NAC-Signature: sha256=HEX`` where HEX is HMAC-SHA256(key, TIMESTAMP + "." + BODY).
  The timestamp must be within ``window`` seconds of our clock and a signature is accepted
  once: a captured request cannot be replayed later (say, after an administrator released
  the node) nor twice within the window.
* Certificate: the TLS layer has verified the chain against the configured CA bundle; here
  the certificate's CN must be the one configured for the monitor.

Sans-I/O: headers, body, peer CN and the clock come in; a Credential or AuthError comes out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MONITOR_HEADER = "x-nac-monitor"
TIMESTAMP_HEADER = "x-nac-timestamp"
SIGNATURE_HEADER = "x-nac-signature"
SIG_PREFIX = "sha256="
DEFAULT_WINDOW = 300
REPLAY_CACHE_MAX = 100_000


class AuthError(Exception):
    """Refused: `reason` says why, `monitor` names who the request claimed to be."""

    def __init__(self, reason: str, monitor: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.monitor = monitor


@dataclass(frozen=True, slots=True)
class Credential:
    name: str
    hmac_key: bytes | None = None
    cert_cn: str | None = None
    min_severity: int = 1


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    """The X-NAC-Signature value a monitor sends."""
    mac = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return SIG_PREFIX + mac.hexdigest()


def signed_headers(name: str, key: bytes, body: bytes, now: float | None = None
                   ) -> dict[str, str]:
    """All three headers for a request (what a monitor-side script does)."""
    ts = str(int(time.time() if now is None else now))
    return {"X-NAC-Monitor": name, "X-NAC-Timestamp": ts,
            "X-NAC-Signature": signature(key, ts, body)}


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


class Authenticator:
    def __init__(self, credentials: list[Credential], *, window: int = DEFAULT_WINDOW,
                 clock: Callable[[], float] = time.time,
                 replay_cache_max: int = REPLAY_CACHE_MAX) -> None:
        self.window = window
        self.clock = clock
        self.replay_cache_max = replay_cache_max
        self._by_name = {c.name: c for c in credentials}
        self._by_cn = {c.cert_cn: c for c in credentials if c.cert_cn}
        self._seen: dict[str, float] = {}  # signature -> when it leaves the window

    @property
    def wants_certificates(self) -> bool:
        return bool(self._by_cn)

    def authenticate(self, headers: Mapping[str, str], body: bytes,
                     peer_cn: str | None = None) -> Credential:
        """`headers` with lower-case names. Returns the monitor or raises AuthError."""
        claimed = headers.get(MONITOR_HEADER)
        by_cert = self._by_cn.get(peer_cn) if peer_cn else None
        if claimed is not None:
            cred = self._by_name.get(claimed)
            if cred is None:
                raise AuthError("unknown monitor", claimed[:64])
        elif by_cert is not None:
            cred = by_cert
        elif peer_cn:
            raise AuthError(f"client certificate CN {peer_cn[:64]!r} is no configured monitor")
        else:
            raise AuthError("no credentials: neither X-NAC-Monitor nor a client certificate")
        if by_cert is not None and by_cert is not cred:
            raise AuthError(f"client certificate belongs to monitor {by_cert.name!r}", cred.name)
        if cred.cert_cn is not None and not (peer_cn and _same(peer_cn, cred.cert_cn)):
            raise AuthError("a client certificate with the monitor's CN is required", cred.name)
        if cred.hmac_key is not None:
            self._check_hmac(cred, headers, body)
        return cred

    def _check_hmac(self, cred: Credential, headers: Mapping[str, str], body: bytes) -> None:
        assert cred.hmac_key is not None
        ts = headers.get(TIMESTAMP_HEADER)
        sig = headers.get(SIGNATURE_HEADER)
        if ts is None or sig is None:
            raise AuthError("X-NAC-Timestamp and X-NAC-Signature are required", cred.name)
        if not (ts.isascii() and ts.isdigit() and len(ts) <= 12):
            raise AuthError("X-NAC-Timestamp must be Unix seconds", cred.name)
        now = self.clock()
        if abs(now - int(ts)) > self.window:
            raise AuthError(f"timestamp outside the {self.window} s window (clock skew or "
                            "replay)", cred.name)
        expected = signature(cred.hmac_key, ts, body)
        # Compare the whole header value: a wrong prefix or length fails in the same time.
        if not _same(sig.strip().lower(), expected):
            raise AuthError("bad signature", cred.name)
        self._remember(expected, int(ts) + self.window, now, cred.name)

    def _remember(self, sig: str, until: float, now: float, name: str) -> None:
        if sig in self._seen:
            raise AuthError("replayed request (signature already used)", name)
        if len(self._seen) >= self.replay_cache_max:
            self._seen = {s: t for s, t in self._seen.items() if t >= now}
            if len(self._seen) >= self.replay_cache_max:
                # Only authenticated monitors fill it: refuse rather than forget signatures.
                raise AuthError("too many requests within the replay window", name)
        self._seen[sig] = until
