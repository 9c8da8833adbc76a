"""The request path, sans-I/O: a datagram in, a reply datagram (or nothing) out.

The asyncio layer (server.py) only moves bytes and runs `Deferred.work` in a thread when
a request needs slow work (scrypt for PAP). Decisions and accounting leave through the
`on_decision` / `on_accounting` callbacks as plain records.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from nac.accounts import Account
from nac.authorize import Authorizer
from nac.events import AccountingRecord, DecisionRecord
from nac.mac import normalize_mac
from nac.posture.decision import Decision
from nac.radius import codec as c
from nac.radius.clients import ClientTable, NasClient
from nac.radius.dedup import DuplicateCache
from nac.radius.replies import vlan_attrs

log = logging.getLogger("nac.radius")

PAP_CACHE_TTL = 300.0
UNKNOWN_NAS_LOG_INTERVAL = 60.0
REJECT_MESSAGE = b"Authentication failed"


@dataclass(slots=True)
class Deferred:
    """Slow work for a thread: `finish(work())` gives the reply (or None to drop).

    lane "slow": any pool thread (password hashing). lane "eap": the one thread that owns
    the EAP service, so TLS and password checks in tunnels never block the packet loop
    and the service is never entered from two threads at once."""

    work: Callable[[], Any]
    finish: Callable[[Any, float], bytes | None]
    key: tuple[object, ...]
    lane: str = "slow"
    # Instead of work: the result of the same work already running for another request.
    wait: Future[Any] | None = None


@dataclass(slots=True)
class AfterCommit:
    """A reply to send once the store has committed record `ticket` (accounting)."""

    reply: bytes
    ticket: int
    key: tuple[object, ...]


Outcome = bytes | Deferred | None


class Engine:
    def __init__(
        self,
        clients: ClientTable,
        authorizer: Authorizer,
        accounts: dict[str, Account],
        *,
        eap: Any = None,
        on_decision: Callable[[DecisionRecord], None] = lambda r: None,
        on_accounting: Callable[[AccountingRecord], int | None] = lambda r: None,
    ) -> None:
        self.clients = clients
        self.authorizer = authorizer
        self.accounts = accounts
        self.eap = eap
        self.on_decision = on_decision
        self.on_accounting = on_accounting
        self.dedup = DuplicateCache()
        self.counters: Counter[str] = Counter()
        self._unknown_nas_logged: dict[str, float] = {}
        self._reply_cache: dict[tuple[object, ...], bytes] = {}
        self._mab_attrs: tuple[object, object, bytes] = (None, None, b"")
        # (NAS-Port-Id, NAS-Port) octets -> what _record stores: the same few per switch.
        self._ports: dict[tuple[bytes | None, bytes | None],
                          tuple[str | None, str | None, int | None]] = {}
        self._pap_ok: dict[tuple[str, bytes], tuple[str, float]] = {}
        # One scrypt per distinct credentials in flight: a burst of the same login after a
        # start (or a cache expiry) waits for the first check instead of repeating it.
        self._pap_inflight: dict[tuple[str, bytes, str | None], Future[bool]] = {}
        self._pap_tagger = hashlib.blake2b(key=os.urandom(32), digest_size=32)
        self._nas_info: Any = None
        self._nas_seen: dict[tuple[object, ...], Any] = {}
        if eap is not None:
            from nac.eap.service import NasInfo  # the EAP package is optional

            self._nas_info = NasInfo
            if hasattr(eap, "defer_slow"):
                eap.defer_slow = True  # EAP rounds run on the packet loop (see _eap)

    # ---- entry points -------------------------------------------------------------------
    def _receive(self, data: bytes, host: str, port: int, now: float,
                 codes: tuple[int, ...]) -> tuple[NasClient, c.Packet, tuple[object, ...]] | bytes:
        """Who sent it, what it is, and whether it was answered already.

        Returns (client, packet, duplicate key) for a new request, or the bytes to answer
        with right away: a cached reply, or b"" for nothing (dropped, or a retransmission
        of a request still in progress)."""
        client = self._client(host, now)
        if client is None:
            return b""
        try:
            pkt = c.decode(data)
        except c.MalformedPacket as exc:
            self._drop("malformed_" + exc.reason)
            return b""
        if pkt.code not in codes:
            self._drop("unexpected_code")
            return b""
        key = (host, port, pkt.ident, pkt.authenticator)
        cached = self.dedup.get(key, now)
        if cached is not None:
            self.counters["duplicates"] += 1
            return cached
        return client, pkt, key

    def handle_auth(self, data: bytes, host: str, port: int, now: float) -> Outcome:
        # Every Access-Request passes here: _receive inlined and the request sorted into
        # EAP, MAB or PAP in place; a MAB request is answered without leaving (each call
        # saved is ~0.1 us of ~10 a request).
        client = self.clients.lookup(host)
        if client is None:
            self._client(host, now)
            return None
        try:
            pkt = c.decode(data)
        except c.MalformedPacket as exc:
            self._drop("malformed_" + exc.reason)
            return None
        code = pkt.code
        if code != c.ACCESS_REQUEST and code != c.STATUS_SERVER:
            self._drop("unexpected_code")
            return None
        key = (host, port, pkt.ident, pkt.authenticator)
        cached = self.dedup.get(key, now)
        if cached is not None:
            self.counters["duplicates"] += 1
            return cached or None
        try:
            if code == c.ACCESS_REQUEST:
                if pkt.ma_offset >= 0:
                    if not c.message_authenticator_ok(pkt, client.secret):
                        self._drop("bad_message_authenticator", host)
                        return None
                elif client.require_message_authenticator or c.EAP_MESSAGE in pkt.first:
                    self._drop("missing_message_authenticator", host)
                    return None
                first = pkt.first
                if c.EAP_MESSAGE in first:
                    out: Outcome = self._eap(pkt, c.join_eap(pkt) or b"", client, host, key,
                                             now)
                else:
                    user = first.get(c.USER_NAME)
                    calling = first.get(c.CALLING_STATION_ID)
                    mac = None if calling is None else normalize_mac(calling)
                    # The same octets name the same MAC: one normalisation, not two.
                    if mac is not None and (user == calling
                                            or first.get(c.SERVICE_TYPE) == _CALL_CHECK
                                            or normalize_mac(user) == mac):
                        out = self._mab(pkt, client, host, now, mac)
                        self.dedup.add(key, out, now)  # type: ignore[arg-type]
                        return out
                    out = self._not_mab(pkt, client, host, user, mac, key, now)
            else:
                out = self._status_server(pkt, client, host)
        except c.ReplyTooLarge:
            self._drop("reply_too_large", host)
            self.dedup.put(key, b"", now)  # the same request would fail the same way
            return None
        if out.__class__ is bytes:
            self.dedup.put(key, out, now)  # type: ignore[arg-type]
        elif isinstance(out, Deferred):
            self.dedup.put(key, b"", now)
            out.finish = self._guarded(out.finish, host)
        return out

    def _mab(self, pkt: c.Packet, client: NasClient, host: str, now: float,
             mac: str) -> bytes:
        d = self.authorizer.mab(mac, client.group, client.profile.name)
        self._record(d, pkt, client, host, now, mac, None, None, "mab")
        self.counters["access_accept"] += 1
        # Unknown MACs on one switch get one Decision object: its attributes by identity
        # (the memo keeps both alive, so `is` cannot match a reused id).
        memo = self._mab_attrs
        if memo[0] is d and memo[1] is client:
            attrs = memo[2]
        else:
            attrs = self._reply_attrs(d, client)
            self._mab_attrs = (d, client, attrs)
        return c.encode_reply(c.ACCESS_ACCEPT, pkt, client.secret, attrs)

    def _guarded(self, finish: Callable[[Any, float], bytes | None],
                 host: str) -> Callable[[Any, float], bytes | None]:
        def run(result: Any, when: float) -> bytes | None:
            try:
                return finish(result, when)
            except c.ReplyTooLarge:
                self._drop("reply_too_large", host)
                return None
        return run

    def _status_server(self, pkt: c.Packet, client: NasClient, host: str) -> bytes | None:
        """Status-Server (RFC 5997): signed, and answered with an empty Access-Accept."""
        if not c.message_authenticator_ok(pkt, client.secret):
            self._drop("bad_message_authenticator", host)
            return None
        return c.encode_reply(c.ACCESS_ACCEPT, pkt, client.secret, b"")

    def handle_acct(self, data: bytes, host: str, port: int,
                    now: float) -> bytes | AfterCommit | None:
        got = self._receive(data, host, port, now, (c.ACCOUNTING_REQUEST,))
        if isinstance(got, bytes):
            return got or None  # b"" also while the record is not committed yet
        client, pkt, key = got
        if not c.accounting_authenticator_ok(pkt, client.secret):
            self._drop("bad_authenticator", host)
            return None
        if pkt.ma_offset >= 0 and not c.message_authenticator_ok(pkt, client.secret, bytes(16)):
            self._drop("bad_message_authenticator", host)
            return None
        rec = self._accounting_record(pkt, host, now)
        if rec is None:
            self._drop("accounting_incomplete", host)
            return None
        try:  # a request of nearly 4096 octets of Proxy-State leaves no room to echo it
            out = c.encode_reply(c.ACCOUNTING_RESPONSE, pkt, client.secret, b"")
        except c.ReplyTooLarge:
            self._drop("reply_too_large", host)
            return None
        ticket = self.on_accounting(rec)
        self.counters["accounting"] += 1
        if ticket is None:
            self.dedup.put(key, out, now)
            return out
        self.dedup.put(key, b"", now)
        return AfterCommit(out, ticket, key)

    def committed(self, job: AfterCommit, now: float) -> bytes:
        """The record of `job` is on disk: its reply may go, and retransmissions get it."""
        self.dedup.put(job.key, job.reply, now)
        return job.reply

    def expire(self, now: float) -> None:
        self.dedup.expire(now)
        if len(self._pap_ok) > 100_000:
            self._pap_ok.clear()

    def expire_eap(self, now: float) -> int:
        """Purge idle EAP conversations and pick up a changed CRL (from housekeeping, on the
        loop that runs the EAP rounds)."""
        if self.eap is None:
            return 0
        reload_crl = getattr(self.eap, "reload_crl_if_changed", None)
        if reload_crl is not None:
            reload_crl()
        n = int(self.eap.expire(now))
        if n:
            log.info("purged %d idle EAP conversation(s)", n)
        return n

    # ---- helpers ------------------------------------------------------------------------
    def _client(self, host: str, now: float) -> NasClient | None:
        client = self.clients.lookup(host)
        if client is None:
            self.counters["drop_unknown_nas"] += 1
            last = self._unknown_nas_logged.get(host)
            if last is None or now - last >= UNKNOWN_NAS_LOG_INTERVAL:
                if len(self._unknown_nas_logged) > 10_000:
                    self._unknown_nas_logged.clear()
                self._unknown_nas_logged[host] = now
                log.warning("dropped request from unknown NAS %s (not in clients)", host)
        return client

    def _drop(self, reason: str, host: str | None = None) -> None:
        self.counters["drop_" + reason] += 1
        if host is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("dropped request from %s: %s", host, reason)

    def _reply_attrs(self, d: Decision, client: NasClient) -> bytes:
        key = (d.segment, d.vlan, client.profile.name)
        attrs = self._reply_cache.get(key)
        if attrs is None:
            seg = self.authorizer.policy.segments[d.segment]
            attrs = vlan_attrs(
                client.profile,
                d.vlan,
                vlan_name=seg.vlan_name,
                session_timeout=seg.reinspect_interval,
                role=seg.role or seg.filter_id or (
                    seg.name if client.profile.role_attr == "aruba-role" else None),
            )
            self._reply_cache[key] = attrs
        return attrs

    def policy_changed(self) -> None:
        self._reply_cache.clear()
        self._mab_attrs = (None, None, b"")

    def _record(self, d: Decision, pkt: c.Packet, client: NasClient, host: str, now: float,
                mac: str | None, identity: str | None = None, role: str | None = None,
                method: str | None = None, posture: dict[str, Any] | None = None) -> None:
        first = pkt.first
        raw = (first.get(87), first.get(5))  # NAS-Port-Id, NAS-Port
        ports = self._ports.get(raw)
        if ports is None:
            ports = _ports(*raw)
            if len(self._ports) > 65536:  # a switch has a few hundred ports: bounded anyway
                self._ports.clear()
            self._ports[raw] = ports
        port, port_id, number = ports
        # Positional: a slots dataclass built from keywords costs twice as much, per decision.
        self.on_decision(DecisionRecord(
            now, mac, d.segment, d.vlan, d.source, d.reasons, d.remediation, identity,
            client.name or host, port, method, role, posture, port_id, number,
        ))
        self.counters[_DECISION_COUNTERS.get(d.segment) or "decision_" + d.segment] += 1
        if log.isEnabledFor(logging.INFO):
            state = pkt.get(c.STATE)
            corr = (state.hex()[:16] if state
                    else f"{host}/{pkt.ident}/{pkt.authenticator.hex()[:8]}")
            log.info("decision mac=%s identity=%s nas=%s port=%s -> %s (vlan %d): %s",
                     mac, identity, client.name or host, port, d.segment, d.vlan,
                     "; ".join(d.reasons),
                     extra={"mac": mac, "identity": identity, "nas": client.name or host,
                            "port": port, "segment": d.segment, "vlan": d.vlan,
                            "reasons": d.reasons, "remediation": d.remediation,
                            "source": d.source, "method": method, "correlation_id": corr})

    def _reject(self, pkt: c.Packet, client: NasClient, message: bytes,
                extra: bytes = b"") -> bytes:
        self.counters["access_reject"] += 1
        return c.encode_reply(
            c.ACCESS_REJECT, pkt, client.secret, extra + c.encode_attr(c.REPLY_MESSAGE, message)
        )

    def _not_mab(self, pkt: c.Packet, client: NasClient, host: str, user: bytes | None,
                 mac: str | None, key: tuple[object, ...], now: float) -> Outcome:
        """An Access-Request neither EAP nor MAB: PAP, or a reject."""
        hidden = pkt.get(c.USER_PASSWORD)
        if user is None or hidden is None:
            self.counters["reject_unsupported"] += 1
            log.info("reject from %s: neither MAB, PAP nor EAP (user %r)", host, user)
            return self._reject(pkt, client, b"Unsupported authentication request")
        return self._pap(pkt, client, host, user.decode("utf-8", "replace"), hidden, mac, key,
                         now)

    def _pap(self, pkt: c.Packet, client: NasClient, host: str, user: str, hidden: bytes,
             mac: str | None, key: tuple[object, ...], now: float) -> Outcome:
        password = c.unhide_password(hidden, client.secret, pkt.authenticator)
        account = self.accounts.get(user)
        if password is None or account is None or not account.password_hash:
            log.info("PAP reject for %r from %s: %s", user, host,
                     "unknown user" if account is None else "bad password attribute")
            return self._reject(pkt, client, REJECT_MESSAGE)
        # A keyed hash names verified credentials in the cache (no password kept);
        # BLAKE2b costs a third of HMAC-SHA256 here.
        tagger = self._pap_tagger.copy()  # keyed once: a copy skips the key block
        tagger.update(password)
        tag = tagger.digest()
        hit = self._pap_ok.get((user, tag))
        if hit is not None and hit[0] == account.password_hash and now - hit[1] < PAP_CACHE_TTL:
            return self._pap_done(True, pkt, client, host, account, mac, (user, tag), now)
        pw = password.decode("utf-8", "replace")
        flight_key = (user, tag, account.password_hash)

        def finish(ok: bool, when: float) -> bytes | None:
            if self._pap_inflight.get(flight_key) is shared:
                del self._pap_inflight[flight_key]
            reply = self._pap_done(ok, pkt, client, host, account, mac, (user, tag), when)
            self.dedup.put(key, reply, when)
            return reply

        shared = self._pap_inflight.get(flight_key)
        if shared is not None:  # the same credentials are being hashed already: wait for it
            return Deferred(work=lambda: None, finish=finish, key=key, wait=shared)
        shared = Future()
        self._pap_inflight[flight_key] = shared

        def work() -> bool:
            try:
                ok = account.check_password(pw)
            except BaseException as exc:
                shared.set_exception(exc)
                raise
            shared.set_result(ok)
            return ok

        return Deferred(work=work, finish=finish, key=key)

    def _pap_done(self, ok: bool, pkt: c.Packet, client: NasClient, host: str,
                  account: Account, mac: str | None, cache_key: tuple[str, bytes],
                  now: float) -> bytes:
        if not ok:
            log.info("PAP reject for %r from %s: wrong password", account.name, host)
            return self._reject(pkt, client, REJECT_MESSAGE)
        self._pap_ok[cache_key] = (account.password_hash or "", now)
        d = self.authorizer.account(account.name, account.role, mac, None, client.group,
                                    client.profile.name, "pap")
        self._record(d, pkt, client, host, now, mac, account.name, account.role, "pap")
        self.counters["access_accept"] += 1
        return c.encode_reply(c.ACCESS_ACCEPT, pkt, client.secret, self._reply_attrs(d, client))

    def _eap(self, pkt: c.Packet, eap: bytes, client: NasClient, host: str,
             key: tuple[object, ...], now: float) -> bytes | Deferred | None:
        if self.eap is None:
            return self._reject(pkt, client, b"EAP is not enabled on this server",
                                c.split_eap(_eap_failure(eap)))
        first = pkt.first
        calling = first.get(c.CALLING_STATION_ID)
        # A conversation's rounds come from one station on one port: its NasInfo is made
        # once, not every round (the service only reads it).
        nas_key = (host, client.group, client.profile.name, calling, first.get(c.NAS_PORT_ID))
        nas = self._nas_seen.get(nas_key)
        if nas is None:
            if len(self._nas_seen) >= 4096:
                self._nas_seen.clear()
            nas = self._nas_seen[nas_key] = self._nas_info(
                address=host, group=client.group, vendor=client.profile.name,
                calling_station_id=pkt.get_str(c.CALLING_STATION_ID),
                nas_port_id=pkt.get_str(c.NAS_PORT_ID))
        # Rounds run here, on the packet loop: a round is TLS and hashing in C, tens of
        # microseconds, while a hop to a thread and back cost more than the round (GIL
        # handoffs, wake-ups). Only slow work (a password hash) leaves, as a Deferred.
        res = self.eap.handle(state=first.get(c.STATE), eap=eap, nas=nas, now=now)
        if res.action != "slow":
            reply = self._eap_reply(res, pkt, client, host, calling, now)
            if reply is None:
                self.dedup.put(key, b"", now)  # its retransmission is dropped alike
            return reply

        def finish(result: Any, when: float) -> bytes | None:
            done = res.resume(result, when)
            reply = self._eap_reply(done, pkt, client, host, calling, when)
            self.dedup.put(key, reply or b"", when)
            return reply

        return Deferred(work=res.work, finish=finish, key=key, lane="eap")

    def _eap_reply(self, res: Any, pkt: c.Packet, client: NasClient, host: str,
                   calling: bytes | None, now: float) -> bytes | None:
        """The reply to an EAP round; `calling` is the raw Calling-Station-Id, made a MAC
        only for an Access-Accept (the one reply that records a decision)."""
        if res.action == "drop":
            self._drop("eap_" + (res.reason or "invalid").replace(" ", "_")[:40], host)
            return None
        if res.action == "challenge":
            self.counters["access_challenge"] += 1
            attrs = c.split_eap(res.eap or b"") + c.encode_attr(c.STATE, res.state or b"")
            return c.encode_reply(c.ACCESS_CHALLENGE, pkt, client.secret, attrs)
        eap_attr = c.split_eap(res.eap or b"")
        if res.action == "reject":
            who = res.identity or getattr(res, "outer_identity", None) or "?"
            log.info("EAP reject from %s (%s): %s", host, who, res.reason)
            return self._reject(pkt, client, (res.reason or "Authentication failed").encode(),
                                eap_attr)
        mac = normalize_mac(calling)
        d = self.authorizer.account(res.identity or "", res.role or "default", mac, res.posture,
                                    client.group, client.profile.name, res.method or "eap")
        self._record(d, pkt, client, host, now, mac, res.identity, res.role,
                     res.method or "eap", res.posture)
        attrs = eap_attr + self._reply_attrs(d, client)
        if res.identity:
            attrs += c.encode_attr(c.USER_NAME, res.identity.encode()[:253])
        if res.msk:
            attrs += c.mppe_key_attr(c.MS_MPPE_RECV_KEY, res.msk[:32], client.secret,
                                     pkt.authenticator)
            attrs += c.mppe_key_attr(c.MS_MPPE_SEND_KEY, res.msk[32:64], client.secret,
                                     pkt.authenticator)
        self.counters["access_accept"] += 1
        return c.encode_reply(c.ACCESS_ACCEPT, pkt, client.secret, attrs)

    def _accounting_record(self, pkt: c.Packet, host: str, now: float) -> AccountingRecord | None:
        status = pkt.get_int(c.ACCT_STATUS_TYPE)
        sid = pkt.get_str(c.ACCT_SESSION_ID)
        if status is None:
            return None
        if sid is None:
            if status in (c.ACCT_ON, c.ACCT_OFF):
                sid = f"nas-{status}"
            else:
                return None
        nas = pkt.get(c.NAS_IP_ADDRESS)
        nas_name = str(ipaddress.IPv4Address(nas)) if nas and len(nas) == 4 else host
        framed = pkt.get(c.FRAMED_IP_ADDRESS)
        prefix = pkt.get(c.FRAMED_IPV6_PREFIX)
        delay = pkt.get_int(c.ACCT_DELAY_TIME) or 0

        def octets(lo: int, hi: int) -> int | None:
            low = pkt.get_int(lo)
            return None if low is None else ((pkt.get_int(hi) or 0) << 32) + low

        return AccountingRecord(
            at=now - delay,
            nas=nas_name,
            status=status,
            session_id=sid,
            mac=normalize_mac(pkt.get(c.CALLING_STATION_ID)),
            user_name=pkt.get_str(c.USER_NAME),
            nas_port=pkt.get_int(c.NAS_PORT),
            nas_port_id=pkt.get_str(c.NAS_PORT_ID),
            framed_ip=str(ipaddress.IPv4Address(framed)) if framed and len(framed) == 4 else None,
            framed_ipv6_prefix=_ipv6_prefix(prefix),
            input_octets=octets(c.ACCT_INPUT_OCTETS, c.ACCT_INPUT_GIGAWORDS),
            output_octets=octets(c.ACCT_OUTPUT_OCTETS, c.ACCT_OUTPUT_GIGAWORDS),
            session_time=pkt.get_int(c.ACCT_SESSION_TIME),
            terminate_cause=pkt.get_int(c.ACCT_TERMINATE_CAUSE),
        )


_CALL_CHECK = c.SERVICE_TYPE_CALL_CHECK.to_bytes(4, "big")
_DECISION_COUNTERS = {s: "decision_" + s for s in ("quarantine", "isolated", "normal")}


def _ports(raw_id: bytes | None, raw_number: bytes | None) -> tuple[str | None, str | None,
                                                                      int | None]:
    """(port for people, NAS-Port-Id, NAS-Port) of a request's two port attributes."""
    number = (int.from_bytes(raw_number) if raw_number is not None and len(raw_number) == 4
              else None)
    if raw_id is not None:
        port_id = raw_id.decode("utf-8", "replace")
        return port_id, port_id, number
    return (None if number is None else str(number)), None, number


def _eap_failure(eap: bytes) -> bytes:
    ident = eap[1] if len(eap) > 1 else 0
    return bytes((4, ident, 0, 4))


def _ipv6_prefix(value: bytes | None) -> str | None:
    """RFC 3162 2.3: reserved, prefix-length, then up to 16 prefix octets."""
    if not value or len(value) < 2 or value[1] > 128 or len(value) > 18:
        return None
    raw = value[2:] + bytes(16 - len(value[2:]))
    try:
        return str(ipaddress.IPv6Network((raw, value[1]), strict=False))
    except ValueError:
        return None


