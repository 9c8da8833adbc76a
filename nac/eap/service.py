"""The sans-I/O EAP server the RADIUS layer calls for every Access-Request with EAP-Message.

It owns conversations (keyed by the RADIUS State it mints), identifiers, method negotiation
and bounds; methods see only type-data. No sockets, clocks or threads: `now` comes in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from nac.accounts import Account, SecretBox
from nac.eap import packet
from nac.eap.config import OUTER_METHODS, EapConfig
from nac.eap.methods.base import (
    Method,
    MethodEnv,
    Outcome,
    PostureFactory,
    Slow,
    Step,
    account_permits,
)
from nac.eap.methods.md5 import Md5Method
from nac.eap.methods.mschapv2 import MschapV2Method
from nac.eap.methods.peap import PeapMethod
from nac.eap.methods.tls import TlsMethod
from nac.eap.methods.ttls import TtlsMethod
from nac.eap.tls_engine import TlsContexts

log = logging.getLogger(__name__)

METHODS: dict[str, type[Method]] = {
    "md5": Md5Method,
    "mschapv2": MschapV2Method,
    "tls": TlsMethod,
    "peap": PeapMethod,
    "ttls": TtlsMethod,
}
BY_TYPE = {cls.type: name for name, cls in METHODS.items()}
TLS_METHODS = ("tls", "peap", "ttls")
PASSWORD_MEMO = 300.0  # seconds a verified password skips scrypt
MAX_ROUNDS = 600  # a 64 KiB flight in 300-octet fragments needs ~230
_RESPONSE_HEAD = struct.Struct("!BBHB")  # code, identifier, length, type


@dataclass(frozen=True)
class NasInfo:  # who asked
    address: str
    group: str | None
    vendor: str
    calling_station_id: str | None
    nas_port_id: str | None


@dataclass(slots=True)
class EapResult:
    action: Literal["challenge", "accept", "reject", "drop", "slow"]
    eap: bytes | None  # the EAP packet for EAP-Message (Request, Success or Failure)
    state: bytes | None  # State attribute value for an Access-Challenge
    msk: bytes | None = None  # 64-byte MSK on accept: [0:32] Recv-Key, [32:64] Send-Key
    identity: str | None = None  # the authenticated identity (inner identity for tunnels)
    role: str | None = None  # the account's role
    method: str | None = None  # "md5", "tls", "peap", "ttls", "mschapv2", e.g. "ttls/pap"
    posture: dict | None = None  # what the posture method in the tunnel reported, if any
    reason: str = ""  # why (logged; Reply-Message on reject)
    outer_identity: str | None = None  # the EAP-Response/Identity, for logs
    # action "slow": run work() (pure, any thread), then resume(its result, now) on the
    # caller's thread for the real result. Only when the service has defer_slow set.
    work: Callable[[], Any] | None = None
    resume: Callable[[Any, float], EapResult] | None = None


@dataclass(slots=True)
class _Conversation:
    state: bytes
    identifier: int  # of the Request we wait an answer to
    last_seen: float
    identity: str = ""
    method: Method | None = None
    nak_allowed: bool = False
    tried: set[str] = field(default_factory=set)
    allowed: list[str] = field(default_factory=list)
    bytes_in: int = 0
    rounds: int = 0
    last_response: bytes = b""
    last_reply: bytes = b""
    station: str | None = None  # Calling-Station-Id
    busy: bool = False  # a round waits for slow work (a password hash)


class EapService:
    def __init__(
        self,
        config: EapConfig,
        lookup: Callable[[str], Account | None],
        box: SecretBox | None,
        *,
        posture: PostureFactory | None = None,
    ) -> None:
        self.config = config
        self.posture = posture
        self.lookup = lookup
        self.box = box
        self.tls: TlsContexts | None = None
        if config.cert_file and config.key_file:
            self.tls = TlsContexts(config)
        self._convs: dict[bytes, _Conversation] = {}
        self._now = 0.0
        # Verified passwords, remembered briefly under a per-process key: scrypt costs
        # ~0.2 s, and handle() runs on the event loop.
        # Keyed BLAKE2b, keyed once: a copy per check skips the key block (HMAC-SHA256
        # cost about three times as much).
        self._memo_tagger = hashlib.blake2b(key=os.urandom(32), digest_size=32)
        self._memo: dict[tuple[str, str], tuple[bytes, float]] = {}
        # Stations whose last conversation stopped at the posture method's first request,
        # and stations to authenticate without posture until the given time.
        self._awaiting: dict[str, bytes] = {}
        self._no_posture: dict[str, float] = {}
        # The outer method each station last succeeded with, when not the default: its next
        # conversation is offered that method first instead of a proposal it would NAK.
        self._station_method: dict[str, str] = {}
        # Set by a caller that runs rounds on its event loop: a password the memo does not
        # know then comes back as an EapResult("slow") instead of hashing here.
        self.defer_slow = False
        # handle(), expire() and resumptions may come from different threads (the loop,
        # a housekeeping executor): one at a time.
        self._lock = threading.Lock()
        # What every conversation's MethodEnv consults, made once rather than per start.
        self._inner_allowed: Callable[[str], bool] = lambda n: n in self.config.inner_methods
        self._clock: Callable[[], float] = lambda: self._now

    @property
    def live(self) -> int:
        return len(self._convs)

    def expire(self, now: float) -> int:
        with self._lock:
            return self._expire(now)

    def _expire(self, now: float) -> int:
        idle = self.config.idle_timeout
        dead = [k for k, c in self._convs.items() if now - c.last_seen > idle]
        for k in dead:
            self._abandoned(self._convs.pop(k), now)
        for station in [s for s, until in self._no_posture.items() if until <= now]:
            del self._no_posture[station]
        return len(dead)

    def _abandoned(self, conv: _Conversation, now: float) -> None:
        """A conversation ended without an answer: if it stopped at the posture method's
        first request, its station gets no posture method for a while (it has no agent)."""
        if conv.station is None or self._awaiting.get(conv.station) != conv.state:
            return
        del self._awaiting[conv.station]
        if getattr(conv.method, "awaiting_posture", False):
            log.info("station %s abandoned the posture method: authenticating it without "
                     "posture for %.0f s", conv.station, self.config.posture_fallback_seconds)
            self._no_posture[conv.station] = now + self.config.posture_fallback_seconds
            while len(self._no_posture) > self.config.max_conversations:
                del self._no_posture[next(iter(self._no_posture))]

    def reload_crl_if_changed(self) -> bool:
        """Call from a housekeeping timer (it stats crl_file): True when a new CRL was
        loaded. A CRL that fails its signature check raises ValueError, keeping the old."""
        return self.tls.reload_crl_if_changed() if self.tls is not None else False

    def reload_crl(self, pem: bytes) -> None:
        """Take a new CRL (e.g. after `nac pki revoke`) without rebuilding TLS contexts."""
        if self.tls is not None:
            self.tls.load_crl(pem)

    def handle(self, *, state: bytes | None, eap: bytes, nas: NasInfo, now: float) -> EapResult:
        with self._lock:
            self._now = now
            try:
                return self._handle(state, eap, nas, now)
            except Exception as exc:  # a bug must cost one conversation, never the server
                return self._crashed(state, eap[1] if len(eap) > 1 else None, exc)

    def _crashed(self, state: bytes | None, ident: int | None, exc: Exception) -> EapResult:
        log.exception("EAP conversation failed")
        conv = self._convs.pop(state, None) if state is not None else None
        if conv is not None and conv.station is not None:
            if self._awaiting.get(conv.station) == conv.state:
                del self._awaiting[conv.station]
        failure = packet.failure(ident) if ident is not None else None
        return EapResult("reject", failure, None, reason=f"internal error: {exc}")

    def _resume(self, conv: _Conversation, resp_id: int, resume: Callable[[Any], Step],
                result: Any, now: float) -> EapResult:
        """The slow work of a round is done: finish the round with its result."""
        with self._lock:
            self._now = now
            conv.busy = False
            if self._convs.get(conv.state) is not conv:  # purged meanwhile
                return EapResult("drop", None, None, reason="conversation expired")
            conv.last_seen = now
            try:
                return self._step(conv, resp_id, resume(result))
            except Exception as exc:
                return self._crashed(conv.state, resp_id, exc)

    # ------------------------------------------------------------------------------------
    def _handle(self, state: bytes | None, raw: bytes, nas: NasInfo, now: float) -> EapResult:
        conv = self._convs.get(state) if state is not None else None
        if conv is not None and len(raw) > 4:
            # Most rounds: the Response to the Request we sent, of our method's type. The
            # same checks as below, without an EapPacket; anything else takes the long way.
            code, ident, length, type_ = _RESPONSE_HEAD.unpack_from(raw)
            method = conv.method
            if code == packet.RESPONSE and ident == conv.identifier and method is not None \
                    and type_ == method.type and 5 <= length <= len(raw) and not conv.busy:
                conv.last_seen = now
                conv.bytes_in += len(raw)
                conv.rounds += 1
                if conv.bytes_in > self.config.max_bytes_per_conversation \
                        or conv.rounds > MAX_ROUNDS:
                    return self._end(conv, ident, Step("failure", reason="conversation too big"))
                conv.last_response = raw
                conv.nak_allowed = False
                return self._step(conv, ident, method.process(ident, raw[5:length]))
        if not raw:  # EAP-Start (RFC 3579 2.6.1): ask who is there
            return self._new(nas, now, None)
        try:
            pkt = packet.parse(raw)
        except packet.EapError as exc:
            # Drop reasons stay fixed strings: the server counts drops by reason.
            log.debug("malformed EAP from %s: %s", nas.address, exc)
            return EapResult("drop", None, None, reason="malformed EAP")
        if pkt.code != packet.RESPONSE:
            return EapResult("drop", None, None, reason="EAP packet is not a Response")
        if conv is None:
            if pkt.type != packet.IDENTITY:
                return EapResult(
                    "reject",
                    packet.failure(pkt.identifier),
                    None,
                    reason="unknown or expired EAP conversation",
                )
            return self._new(nas, now, pkt)
        if conv.busy:  # the last round is still hashing a password: its answer follows
            return EapResult("drop", None, None, reason="round in progress")
        if pkt.identifier != conv.identifier:
            if raw == conv.last_response and conv.last_reply:  # a retransmission
                conv.last_seen = now
                return EapResult(
                    "challenge", conv.last_reply, conv.state, reason="retransmitted response"
                )
            return EapResult(
                "drop", None, None, reason="wrong identifier"
            )
        conv.last_seen = now
        conv.bytes_in += len(raw)
        conv.rounds += 1
        if conv.bytes_in > self.config.max_bytes_per_conversation or conv.rounds > MAX_ROUNDS:
            return self._end(conv, pkt.identifier, Step("failure", reason="conversation too big"))
        conv.last_response = raw
        if conv.method is None:  # waiting for Identity after an EAP-Start
            if pkt.type != packet.IDENTITY:
                return self._end(conv, pkt.identifier, Step("failure", reason="expected Identity"))
            return self._identity(conv, pkt, nas)
        if pkt.type == packet.NAK and conv.nak_allowed:
            return self._nak(conv, pkt)
        if pkt.type != conv.method.type:
            return self._end(
                conv,
                pkt.identifier,
                Step("failure", reason=f"response type {pkt.type} to a {conv.method.name} request"),
            )
        conv.nak_allowed = False
        step = conv.method.process(pkt.identifier, pkt.data)
        return self._step(conv, pkt.identifier, step)

    def _new(self, nas: NasInfo, now: float, pkt: packet.EapPacket | None) -> EapResult:
        if len(self._convs) >= self.config.max_conversations:
            self._expire(now)
            if len(self._convs) >= self.config.max_conversations:
                return EapResult("drop", None, None, reason="too many EAP conversations")
        token = os.urandom(16)
        while token in self._convs:
            token = os.urandom(16)
        first_id = pkt.identifier + 1 if pkt else os.urandom(1)[0]
        conv = _Conversation(token, first_id & 0xFF, now, station=_station(nas))
        self._convs[token] = conv
        if conv.station is not None and conv.station in self._awaiting:
            # The station starts over while its previous conversation waits on posture: it
            # gave up there. The old conversation may still finish if an answer comes.
            old = self._convs.get(self._awaiting[conv.station])
            if old is not None:
                self._abandoned(old, now)
            self._awaiting.pop(conv.station, None)
        if pkt is None:
            return self._challenge(conv, packet.IDENTITY, b"")
        conv.bytes_in = 5 + len(pkt.data)  # its encoded length
        conv.identifier = pkt.identifier
        return self._identity(conv, pkt, nas)

    def _identity(self, conv: _Conversation, pkt: packet.EapPacket, nas: NasInfo) -> EapResult:
        conv.identity = pkt.data.decode("utf-8", "replace").strip("\x00")
        conv.allowed = self.allowed_methods(conv.identity, nas)
        if not conv.allowed:
            return self._end(conv, pkt.identifier, Step("failure", reason="no EAP method allowed"))
        default = self.config.default_method
        first = default if default in conv.allowed else conv.allowed[0]
        if conv.station is not None and self.config.remember_station_method:
            known = self._station_method.get(conv.station)
            if known is not None and known in conv.allowed:
                first = known
        return self._start(conv, first, pkt.identifier)

    def _nak(self, conv: _Conversation, pkt: packet.EapPacket) -> EapResult:
        for t in pkt.data:
            name = BY_TYPE.get(t)
            if name and name in conv.allowed and name not in conv.tried:
                return self._start(conv, name, pkt.identifier)
        wanted = ",".join(str(t) for t in pkt.data)
        return self._end(
            conv,
            pkt.identifier,
            Step("failure", reason=f"peer wants EAP types [{wanted}], none allowed"),
        )

    def _start(self, conv: _Conversation, name: str, resp_id: int) -> EapResult:
        env = MethodEnv(
            self.config,
            self.lookup,
            self.box,
            conv.identity,
            self.tls,
            inner_allowed=self._inner_allowed,
            posture=self._posture_for(conv),
            now=self._clock,
            check_password=self._check_password,
        )
        try:
            method = METHODS[name](env)
        except ValueError as exc:
            return self._end(conv, resp_id, Step("failure", reason=str(exc)))
        conv.method = method
        conv.tried.add(name)
        conv.nak_allowed = True
        ident = (resp_id + 1) & 0xFF
        conv.identifier = ident
        return self._challenge(conv, method.type, method.start(ident))

    def _posture_for(self, conv: _Conversation) -> PostureFactory | None:
        factory = self.posture
        if factory is None:
            return None
        until = self._no_posture.get(conv.station or "")
        if until is not None and until > self._now:
            return None
        wanted = self.config.posture_methods

        def offer(env: MethodEnv, outcome: Outcome) -> Method | None:
            return factory(env, outcome) if outcome.method in wanted else None

        return offer

    def _challenge(self, conv: _Conversation, type_: int, data: bytes) -> EapResult:
        reply = packet.request(conv.identifier, type_, data)
        conv.last_reply = reply
        return EapResult("challenge", reply, conv.state, outer_identity=conv.identity or None)

    def _step(self, conv: _Conversation, resp_id: int, step: Step) -> EapResult:
        kind = step.kind
        if kind == "request":  # most rounds
            method = conv.method
            assert method is not None
            ident = conv.identifier = (resp_id + 1) & 0xFF
            # Without a posture method no conversation can wait on one.
            if conv.station is not None and self.posture is not None:
                if getattr(method, "awaiting_posture", False):
                    self._awaiting[conv.station] = conv.state
                elif self._awaiting.get(conv.station) == conv.state:
                    del self._awaiting[conv.station]
            reply = conv.last_reply = packet.request(ident, method.type, step.data)
            return EapResult("challenge", reply, conv.state,
                             outer_identity=conv.identity or None)
        if kind == "slow":
            assert step.slow is not None
            slow = step.slow
            conv.busy = True
            return EapResult(
                "slow", None, conv.state, reason="password check",
                outer_identity=conv.identity or None, work=slow.work,
                resume=lambda result, now: self._resume(conv, resp_id, slow.resume, result,
                                                        now))
        return self._end(conv, resp_id, step)

    def _end(self, conv: _Conversation, resp_id: int, step: Step) -> EapResult:
        self._convs.pop(conv.state, None)
        if conv.station is not None and self._awaiting.get(conv.station) == conv.state:
            del self._awaiting[conv.station]
        outer = conv.identity or None
        if step.kind == "success" and step.outcome is not None:
            o = step.outcome
            if conv.station is not None and conv.station in self._no_posture:
                # Still without an agent: renew, or every re-authentication would fail once.
                self._no_posture[conv.station] = self._now + self.config.posture_fallback_seconds
            if conv.station is not None and conv.method is not None:
                self._note_method(conv.station, conv.method.name)
            return EapResult(
                "accept",
                packet.success(resp_id),
                None,
                msk=o.msk,
                identity=o.identity,
                role=o.role,
                method=o.method,
                posture=o.posture,
                reason="authenticated",
                outer_identity=outer,
            )
        method = conv.method.name if conv.method else None
        return EapResult(
            "reject",
            packet.failure(resp_id),
            None,
            method=method,
            reason=step.reason or "authentication failed",
            outer_identity=outer,
        )

    def _note_method(self, station: str, method: str) -> None:
        known = self._station_method.pop(station, None)
        if method == self.config.default_method:
            return  # the default is proposed anyway
        if known is None:
            while len(self._station_method) >= self.config.max_conversations:
                del self._station_method[next(iter(self._station_method))]
        self._station_method[station] = method  # newest last: the oldest go first

    def _check_password(self, account: Account, password: str) -> bool | Slow:
        key = (account.name, account.password_hash or "")
        tagger = self._memo_tagger.copy()
        tagger.update(password.encode())
        tag = tagger.digest()
        hit = self._memo.get(key)
        if hit and hmac.compare_digest(hit[0], tag) and self._now - hit[1] < PASSWORD_MEMO:
            return True
        if self.defer_slow:
            def verdict(ok: bool) -> bool:  # back under the lock: remember a good one
                if ok:
                    self._remember(key, tag)
                return ok

            return Slow(lambda: account.check_password(password), verdict)
        if not account.check_password(password):
            return False
        self._remember(key, tag)
        return True

    def _remember(self, key: tuple[str, str], tag: bytes) -> None:
        self._memo.pop(key, None)
        self._memo[key] = (tag, self._now)
        while len(self._memo) > self.config.max_conversations:
            del self._memo[next(iter(self._memo))]

    # Policy -----------------------------------------------------------------------------
    def allowed_methods(self, identity: str, nas: NasInfo) -> list[str]:
        """Outer methods allowed for this identity at this NAS, in preference order:
        global list, then the realm's list, then the NAS group's, then the account's own."""
        cfg = self.config
        allowed = [m for m in OUTER_METHODS if m in cfg.methods]
        if "@" in identity and cfg.realm_methods:
            realm = identity.rsplit("@", 1)[1].lower()
            realms = {k.lower(): v for k, v in cfg.realm_methods.items()}
            if realm in realms:
                allowed = [m for m in allowed if m in realms[realm]]
        if nas.group is not None and nas.group in cfg.nas_group_methods:
            allowed = [m for m in allowed if m in cfg.nas_group_methods[nas.group]]
        account = self.lookup(identity)
        if account is not None:
            allowed = [m for m in allowed if _has_keys(account, m) and account_permits(account, m)]
        tls = self.tls
        allowed = [m for m in allowed if m not in TLS_METHODS or (tls and tls.has(m))]
        return allowed


def _station(nas: NasInfo) -> str | None:
    """The peer's MAC from Calling-Station-Id in one spelling whatever the NAS's format."""
    raw = nas.calling_station_id
    if not raw:
        return None
    digits = "".join(c for c in raw.lower() if c in "0123456789abcdef")
    return digits if len(digits) == 12 else raw


def _has_keys(account: Account, method: str) -> bool:
    if method == "md5":
        return bool(account.md5_secret)
    if method == "mschapv2":
        return account.nt_hash is not None
    return True  # TLS methods: the certificate or the inner method decides


def config_from_settings(settings: object, pki: object | None = None) -> EapConfig:
    """EapConfig from the `[eap]` table of the server config (nac.config.EapSettings) and
    the PKI paths (nac.pki.PkiPaths) that fill in whatever the table leaves out."""
    g = getattr
    values: dict[str, object] = {}
    for key in (
        "idle_timeout",
        "max_conversations",
        "max_bytes_per_conversation",
        "fragment_size",
        "default_method",
        "tls_min_version",
        "tls_max_version",
        "tls_resumption",
        "tls_require_account",
        "inner_methods",
        "realm_methods",
        "nas_group_methods",
        "server_name",
        "remember_station_method",
        "peap_fast_start",
        "peap_fast_reconnect",
        "peap_soh",
        "peap_skip_inner_identity",
    ):
        v = g(settings, key, None)
        if v is not None:
            values[key] = v
    methods = g(settings, "methods", None)
    if methods:
        values["methods"] = list(methods)
    paths = {
        "cert_file": ("certificate", "server_cert"),
        "key_file": ("private_key", "server_key"),
        "ca_file": ("ca_certificates", "ca_cert"),
        "crl_file": ("crl", "crl"),
    }
    for field_name, (setting, pki_attr) in paths.items():
        v = g(settings, setting, None) or (g(pki, pki_attr, None) if pki is not None else None)
        if v is not None:
            values[field_name] = v
    return EapConfig.model_validate(values)
