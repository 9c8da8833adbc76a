"""The one TLS engine of EAP-TLS, PEAP and TTLS: pyOpenSSL over memory BIOs (no sockets),
EAP-TLS style L/M/S fragmentation (RFC 5216 3.1), and per-method key export.

SSL.Context objects are built once per method at service start: pyOpenSSL refuses to change a
context after its first use, and one context per method keeps its session cache (resumption)
and its session-id context apart from the other methods'.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib  # the per-round calls: see TlsSession

from nac.eap.config import EapConfig

# TLS 1.3 session tickets per full handshake: one is all an EAP peer resumes with (OpenSSL's
# default is two); none when resumption is off (OpenSSL would still send two, useless ones,
# and TTLS must deliver them before it may succeed: one round trip more).
TICKETS_WITH_RESUMPTION = 1

FLAG_L, FLAG_M, FLAG_S = 0x80, 0x40, 0x20
VERSION_MASK = 0x07
# Largest single TLS message we reassemble; a handshake flight with a long chain fits easily.
MAX_MESSAGE = 64 * 1024

_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
READ_CHUNK = 16384  # one TLS record's worth of plaintext per SSL_read
_WANT_READ = _lib.SSL_ERROR_WANT_READ
_DRAINED = (_lib.SSL_ERROR_WANT_READ, _lib.SSL_ERROR_ZERO_RETURN)
# Buffers that OpenSSL fills at once need no zeroing first.
_alloc = _ffi.new_allocator(should_clear_after_alloc=False)

# Key material: TLS 1.2 PRF labels (RFC 5216, RFC 5281, PEAPv0), TLS 1.3 exporter with the
# EAP type as context (RFC 9190 2.3, RFC 9427 2.1).
TLS13_LABEL = b"EXPORTER_EAP_TLS_Key_Material"
TLS12_LABELS = {
    "tls": b"client EAP encryption",
    "peap": b"client EAP encryption",
    "ttls": b"ttls keying material",
}
EAP_TYPE_CODE = {"tls": 13, "ttls": 21, "peap": 25}


class TlsError(Exception):
    """The TLS conversation failed (alert, bad record, bad certificate)."""


class TlsContexts:
    """SSL contexts for each TLS-based method plus the revocation list, built once."""

    def __init__(self, config: EapConfig) -> None:
        if not (config.cert_file and config.key_file):
            raise ValueError("TLS methods need cert_file and key_file")
        self.config = config
        # EAP-TLS needs a CA to check client certificates; without one only the tunnels run.
        names = ("tls", "peap", "ttls") if config.ca_file else ("peap", "ttls")
        self._contexts = {name: self._build(name) for name in names}
        self.resumption = ResumptionCache(config.tls_session_lifetime, config.max_conversations)
        self.revoked: frozenset[int] = frozenset()
        self.crl_mtime: float | None = None
        self.reload_crl_if_changed()

    def context(self, method: str) -> SSL.Context:
        if method not in self._contexts:
            raise ValueError(f"{method}: not configured (EAP-TLS needs ca_file)")
        return self._contexts[method]

    def has(self, method: str) -> bool:
        return method in self._contexts

    def _build(self, method: str) -> SSL.Context:
        cfg = self.config
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(_VERSIONS[cfg.tls_min_version])
        ctx.set_max_proto_version(_VERSIONS[cfg.tls_max_version])
        ctx.use_certificate_chain_file(str(cfg.cert_file))
        ctx.use_privatekey_file(str(cfg.key_file))
        ctx.check_privatekey()
        # No renegotiation: EAP conversations are short and renegotiation only adds risk.
        ctx.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        # Resumed sessions must not cross methods: the id context names the method.
        ctx.set_session_id(b"nac-eap-" + method.encode())
        if cfg.tls_resumption:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
            ctx.set_timeout(int(cfg.tls_session_lifetime))
        else:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            ctx.set_options(SSL.OP_NO_TICKET)
        set_num_tickets(ctx, TICKETS_WITH_RESUMPTION if cfg.tls_resumption else 0)
        if method == "tls":
            if not cfg.ca_file:
                raise ValueError("EAP-TLS needs ca_file to verify client certificates")
            ctx.load_verify_locations(str(cfg.ca_file))
            ctx.load_client_ca(str(cfg.ca_file).encode())
            ctx.set_verify(
                SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda _c, _x, _e, _d, ok: ok
            )
        return ctx

    def reload_crl_if_changed(self) -> bool:
        """Re-read crl_file when its mtime changed (`nac pki revoke` rewrites it). File I/O:
        for the server's housekeeping timer, never for the packet path."""
        path = self.config.crl_file
        if not path:
            return False
        try:
            mtime = Path(path).stat().st_mtime
        except OSError:
            return False
        if mtime == self.crl_mtime:
            return False
        self.load_crl(Path(path).read_bytes())
        self.crl_mtime = mtime
        return True

    def load_crl(self, pem: bytes) -> None:
        """Serials revoked by the CA; the CRL's signature is checked against ca_file."""
        crl = x509.load_pem_x509_crl(pem)
        if self.config.ca_file:
            cas = x509.load_pem_x509_certificates(Path(self.config.ca_file).read_bytes())
            if not any(_crl_signed_by(crl, ca) for ca in cas):
                raise ValueError("CRL is not signed by the configured CA")
        self.revoked = frozenset(r.serial_number for r in crl)


_NUM_TICKETS: list[Callable[[int, int], int] | None] = []  # found once per process


def set_num_tickets(ctx: SSL.Context, count: int) -> bool:
    """SSL_CTX_set_num_tickets(ctx, count), which the binding pyOpenSSL uses does not export.
    False where it cannot be reached: OpenSSL then keeps its default of two tickets."""
    if not _NUM_TICKETS:
        _NUM_TICKETS.append(_find_num_tickets())
    setter = _NUM_TICKETS[0]
    if setter is None:
        return False
    return bool(setter(int(_ffi.cast("uintptr_t", ctx._context)), count))  # noqa: SLF001


def _find_num_tickets() -> Callable[[int, int], int] | None:
    """cryptography links OpenSSL statically into its extension module, where
    SSL_CTX_set_num_tickets is a local symbol: its address is the load address of the module
    (from the exported PyInit__rust) plus the offset its ELF symbol table gives. The getter
    must then read OpenSSL's default (2) from a fresh context, or the setter is not used."""
    try:
        from cryptography.hazmat.bindings import _rust

        path = _rust.__file__
        if sys.platform != "linux" or not path:
            return None
        names = ("SSL_CTX_set_num_tickets", "SSL_CTX_get_num_tickets", "PyInit__rust")
        syms = _elf_symbols(path, names)
        if len(syms) != len(names):
            return None
        module = ctypes.CDLL(path)  # already loaded: the same mapping
        anchor = ctypes.cast(module.PyInit__rust, ctypes.c_void_p).value
        if anchor is None:
            return None
        bias = anchor - syms["PyInit__rust"]
        setter = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)(
            bias + syms["SSL_CTX_set_num_tickets"])
        getter = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p)(
            bias + syms["SSL_CTX_get_num_tickets"])
        probe = SSL.Context(SSL.TLS_SERVER_METHOD)
        ptr = int(_ffi.cast("uintptr_t", probe._context))  # noqa: SLF001
        if getter(ptr) != 2 or not setter(ptr, 1) or getter(ptr) != 1:
            return None
        return lambda ctx, n: int(setter(ctx, n))
    except (OSError, ValueError, AttributeError, ImportError, struct.error):
        return None


def _elf_symbols(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """Values of the named symbols in a 64-bit little-endian ELF file's .symtab."""
    want = {n.encode(): n for n in names}
    found: dict[str, int] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"\x7fELF" or m[4] != 2 or m[5] != 1:
            return found
        shoff = struct.unpack_from("<Q", m, 0x28)[0]
        shentsize, shnum = struct.unpack_from("<HH", m, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", m, shoff + i * shentsize)
                    for i in range(shnum)]
        for sec in sections:
            if sec[1] != 2:  # SHT_SYMTAB
                continue
            off, size, link, entsize = sec[4], sec[5], sec[6], sec[9]
            strings = sections[link][4]
            for pos in range(off, off + size - entsize + 1, entsize):
                name_at, _info, _other, _shndx, value = struct.unpack_from("<IBBHQ", m, pos)
                start = strings + name_at
                name = m[start:m.find(b"\0", start)]
                if name in want:
                    found[want[name]] = value
                    if len(found) == len(want):
                        return found
    return found


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if crl.issuer != ca.subject:
        return False
    key = ca.public_key()
    return isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)) and (
        crl.is_signature_valid(key)
    )


class ResumptionCache:
    """Phase 2 results of tunnels, by a hash of the TLS session secret, so a resumed PEAP or
    TTLS session (whose peer may skip phase 2, RFC 5281 8) still names who it is."""

    def __init__(self, lifetime: float, max_entries: int) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()

    def put(self, key: bytes, identity: str, method: str, now: float) -> None:
        self._entries[key] = (identity, method, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, key: bytes, now: float) -> tuple[str, str] | None:
        hit = self._entries.get(key)
        if hit is None or now - hit[2] > self.lifetime:
            return None
        return hit[0], hit[1]


class TlsSession:
    """One server-side TLS connection fed and drained through memory BIOs.

    The per-round calls go to OpenSSL directly: pyOpenSSL's wrappers raise WantReadError for
    every "give me more bytes", allocate a 16 KiB buffer per recv and check its callback
    helpers on every call, which cost more than the record work of a small EAP round. Any
    outcome other than success or "want read" still goes through pyOpenSSL's error mapping.

    EAP-TLS checks the peer in pyOpenSSL's verify callback, so its connection is a
    pyOpenSSL Connection. The tunnels (PEAP, TTLS) verify no peer: their SSL object and
    BIOs are made here, as pyOpenSSL would make them, without the Connection object (its
    set-up registers it in a weak-value map and copies the context's helpers, once per
    conversation for nothing).
    """

    def __init__(self, contexts: TlsContexts, method: str) -> None:
        self.method = method
        ctx = contexts.context(method)
        # EAP-TLS checks the peer in a Python verify callback: pyOpenSSL reports its
        # failures, so that context takes pyOpenSSL's path for every handshake step.
        self._fast = ctx._verify_helper is None  # noqa: SLF001
        self.conn: SSL.Connection | None = None
        if self._fast:
            ctx._used = True  # noqa: SLF001  (pyOpenSSL's guard against later changes)
            ssl = _lib.SSL_new(ctx._context)  # noqa: SLF001
            if ssl == _ffi.NULL:
                raise TlsError("TLS: cannot create a connection")
            ssl = _ffi.gc(ssl, _lib.SSL_free)  # SSL_free frees both BIOs too
            _lib.SSL_set_mode(ssl, _lib.SSL_MODE_AUTO_RETRY)  # as pyOpenSSL sets it
            into = _lib.BIO_new(_lib.BIO_s_mem())
            out = _lib.BIO_new(_lib.BIO_s_mem())
            if into == _ffi.NULL or out == _ffi.NULL:
                raise TlsError("TLS: cannot create memory BIOs")
            _lib.SSL_set_bio(ssl, into, out)
            _lib.SSL_set_accept_state(ssl)
            self._ssl, self._into, self._from = ssl, into, out
            self._errors: object = _ErrorSource(ctx)
        else:
            conn = SSL.Connection(ctx, None)
            conn.set_accept_state()
            self.conn = conn
            self._ssl = conn._ssl  # noqa: SLF001
            self._into = conn._into_ssl  # noqa: SLF001
            self._from = conn._from_ssl  # noqa: SLF001
            self._errors = conn
        self.established = False

    def _failed(self, result: int, tolerate: tuple[type[SSL.Error], ...]) -> bool:
        """pyOpenSSL's verdict on a call that neither succeeded nor wants more input:
        False for the tolerated outcomes, TlsError for the others."""
        try:
            _RAISE_SSL_ERROR(self._errors, self._ssl, result)
        except tolerate:
            return False
        except SSL.Error as exc:
            raise TlsError(f"TLS: {_describe(exc)}") from exc
        raise TlsError("TLS: call failed without an error")

    def feed(self, data: bytes) -> bool:
        """Give the peer's TLS bytes; True when this call completed the handshake."""
        if data and _lib.BIO_write(self._into, data, len(data)) != len(data):
            raise TlsError("TLS: cannot buffer the peer's data")
        if self.established:
            return False
        ssl = self._ssl
        result = _lib.SSL_do_handshake(ssl)
        if result == 1:
            self.established = True
            return True
        if self._fast and _lib.SSL_get_error(ssl, result) == _WANT_READ:
            return False
        return self._failed(result, (SSL.WantReadError,))

    def read_app(self) -> bytes:
        ssl = self._ssl
        chunks: list[bytes] = []
        buf = _alloc("char[]", READ_CHUNK)
        while True:
            n = _lib.SSL_read(ssl, buf, READ_CHUNK)
            if n > 0:
                chunks.append(_ffi.buffer(buf, n)[:])
                continue
            if _lib.SSL_get_error(ssl, n) not in _DRAINED:
                self._failed(n, (SSL.WantReadError, SSL.ZeroReturnError))
            return b"".join(chunks)

    def write_app(self, data: bytes) -> None:
        if not data:
            return
        # A memory BIO takes everything: SSL_write writes all of it or fails.
        n = _lib.SSL_write(self._ssl, data, len(data))
        if n != len(data):
            self._failed(n, ())

    def outgoing(self) -> bytes:
        # The memory BIO says how much it holds; read exactly that.
        pending = _lib.BIO_get_mem_data(self._from, _ffi.NULL)
        if pending <= 0:
            return b""
        buf = _alloc("char[]", pending)
        n = _lib.BIO_read(self._from, buf, pending)
        return _ffi.buffer(buf, n)[:] if n > 0 else b""

    @property
    def version(self) -> str:
        return "1.3" if _lib.SSL_version(self._ssl) == SSL.TLS1_3_VERSION else "1.2"

    @property
    def resumed(self) -> bool:
        return bool(_lib.SSL_session_reused(self._ssl))

    def session_key(self) -> bytes:
        """Names the current TLS session: a hash of its secret (TLS 1.2 master secret; TLS 1.3
        resumption PSK of the newest ticket), equal again when the peer resumes it."""
        session = _lib.SSL_get_session(self._ssl)
        if session == _ffi.NULL:
            raise TlsError("TLS: no session")
        buf = _alloc("unsigned char[]", 64)  # TLS master secret 48, TLS 1.3 PSK <= 64
        n = _lib.SSL_SESSION_get_master_key(session, buf, 64)
        return hashlib.sha256(b"nac-resume" + _ffi.buffer(buf, n)[:]).digest()

    def peer_certificate(self) -> x509.Certificate | None:
        # Only EAP-TLS asks for a client certificate, and it has a pyOpenSSL Connection.
        if self.conn is None:
            return None
        return self.conn.get_peer_certificate(as_cryptography=True)

    def export(self, label: bytes, length: int, context: bytes | None = None) -> bytes:
        # Straight to OpenSSL, like the per-round calls (pyOpenSSL's wrapper costs more).
        out = _alloc("unsigned char[]", length)
        if context is None:
            ok = _lib.SSL_export_keying_material(self._ssl, out, length, label, len(label),
                                                 _ffi.NULL, 0, 0)
        else:
            ok = _lib.SSL_export_keying_material(self._ssl, out, length, label, len(label),
                                                 context, len(context), 1)
        if ok != 1:
            raise TlsError("TLS: key export failed")
        return _ffi.buffer(out, length)[:]

    def key_material(self) -> bytes:
        """128 octets: MSK (first 64) then EMSK, with the method's label for this version."""
        if self.version == "1.3":
            return self.export(TLS13_LABEL, 128, bytes([EAP_TYPE_CODE[self.method]]))
        return self.export(TLS12_LABELS[self.method], 128)


class _ErrorSource:
    """What pyOpenSSL's error mapping reads from a Connection: its context (whose callback
    helpers may hold an exception to re-raise)."""

    __slots__ = ("_context",)

    def __init__(self, context: SSL.Context) -> None:
        self._context = context


# pyOpenSSL's mapping of a failed call to its exceptions, used for our own SSL objects too.
_RAISE_SSL_ERROR = SSL.Connection._raise_ssl_error  # noqa: SLF001


def _describe(exc: SSL.Error) -> str:
    args = exc.args[0] if exc.args else None
    if isinstance(args, list) and args:
        return "; ".join(str(e[-1]) for e in args if isinstance(e, tuple))
    return str(exc) or type(exc).__name__


@dataclass(slots=True)  # not frozen: one per round, and frozen init is slower
class Frame:
    kind: str  # "partial" (send an ACK), "ack" (peer acked), "message", "error"
    data: bytes = b""
    reason: str = ""


class Framer:
    """EAP-TLS fragmentation both ways: flags octet, optional 4-octet TLS Message Length."""

    def __init__(self, fragment_size: int, version: int = 0) -> None:
        # EAP header 4 + type 1 + flags 1 + length 4.
        self.payload = max(16, fragment_size - 10)
        self.whole = self.payload + 4  # a message sent in one piece needs no length field
        self.version = version & VERSION_MASK
        self._in = bytearray()
        self._in_total: int | None = None
        self._out = b""
        self._out_pos = 0

    def start(self) -> bytes:
        return bytes([FLAG_S | self.version])

    def ack(self) -> bytes:
        return bytes([self.version])

    @property
    def sending(self) -> bool:
        return self._out_pos < len(self._out)

    def queue(self, data: bytes) -> None:
        self._out, self._out_pos = data, 0

    def next_fragment(self) -> bytes:
        if self._out_pos == 0 and len(self._out) <= self.whole:
            self._out_pos = len(self._out)
            return bytes([self.version]) + self._out
        chunk = self._out[self._out_pos : self._out_pos + self.payload]
        first = self._out_pos == 0
        self._out_pos += len(chunk)
        more = self._out_pos < len(self._out)
        flags = self.version | (FLAG_M if more else 0)
        if first and more:
            return bytes([flags | FLAG_L]) + struct.pack("!I", len(self._out)) + chunk
        return bytes([flags]) + chunk

    def one_piece(self, data: bytes) -> bytes | None:
        """The TLS message of a response that is one whole unfragmented message (no M flag,
        no L flag or one announcing exactly the octets that follow, nothing half-received,
        nothing of ours still to send): most rounds. None: anything else, for receive()."""
        if len(data) > 1 and not self._in and self._out_pos >= len(self._out):
            flags = data[0]
            if flags == self.version:
                return data[1:]
            # wpa_supplicant sets L on whole messages too (ClientHello, Finished): a length
            # equal to what follows is one piece as well.
            if flags == self.version | FLAG_L and len(data) > 5 \
                    and int.from_bytes(data[1:5]) == len(data) - 5:
                return data[5:]
        return None

    def receive(self, data: bytes) -> Frame:
        if not data:
            return Frame("error", reason="TLS: response without flags")
        flags, body = data[0], data[1:]
        if flags & FLAG_L:
            if len(body) < 4:
                return Frame("error", reason="TLS: truncated length field")
            total = struct.unpack("!I", body[:4])[0]
            body = body[4:]
            if total > MAX_MESSAGE:
                return Frame("error", reason=f"TLS: message of {total} octets is too long")
            if self._in_total is None and not self._in:
                self._in_total = total
        if not body and not (flags & FLAG_M):
            if self._in:
                return Frame("error", reason="TLS: empty final fragment")
            return Frame("ack")
        if self.sending:
            return Frame("error", reason="TLS: peer sent data while we were fragmenting")
        self._in += body
        if len(self._in) > (self._in_total or MAX_MESSAGE):
            return Frame("error", reason="TLS: fragments exceed the announced length")
        if flags & FLAG_M:
            return Frame("partial")
        message = bytes(self._in)
        self._in.clear()
        self._in_total = None
        return Frame("message", message)
