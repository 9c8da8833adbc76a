"""MS-CHAPv2 arithmetic (RFC 2759) and its key derivation (RFC 3079), shared by the
EAP-MSCHAPv2 method and EAP-TTLS/MSCHAPv2."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

MAGIC1 = b"Magic server to client signing constant"
MAGIC2 = b"Pad to make it do more than one iteration"
# RFC 3079 3.4
KEY_MAGIC1 = b"This is the MPPE Master Key"
KEY_MAGIC2 = b"On the client side, this is the send key; on the server side, it is the receive key."
KEY_MAGIC3 = b"On the client side, this is the receive key; on the server side, it is the send key."
SHS_PAD1 = b"\x00" * 40
SHS_PAD2 = b"\xf2" * 40


# Per NT hash (an account's password), what each conversation would otherwise rebuild:
# MD4 and DES objects cost tens of microseconds each to make in Python, more than the
# MS-CHAPv2 arithmetic itself. Bounded; an ECB cipher keeps no state between blocks.
_PER_HASH_MAX = 4096
_HASH_HASH: dict[bytes, bytes] = {}
_CIPHERS: dict[bytes, tuple[Any, Any, Any]] = {}


def _md4(data: bytes) -> bytes:
    from Crypto.Hash import MD4  # hashlib lacks MD4 on OpenSSL 3

    return MD4.new(data).digest()


def _hash_hash(password_hash: bytes) -> bytes:
    """HashNtPasswordHash (RFC 2759 8.4), remembered per NT hash."""
    got = _HASH_HASH.get(password_hash)
    if got is None:
        if len(_HASH_HASH) >= _PER_HASH_MAX:
            _HASH_HASH.clear()
        got = _HASH_HASH[password_hash] = _md4(password_hash)
    return got


def _sha1(*parts: bytes) -> bytes:
    h = hashlib.sha1()
    for p in parts:
        h.update(p)
    return h.digest()


def strip_domain(username: str) -> str:
    """RFC 2759 hashes the user name without a DOMAIN\\ prefix."""
    return username.rsplit("\\", 1)[-1]


def challenge_hash(peer_challenge: bytes, auth_challenge: bytes, username: str) -> bytes:
    return _sha1(peer_challenge, auth_challenge, strip_domain(username).encode())[:8]


def _des_key(key7: bytes) -> bytes:
    """Spread 56 key bits over 8 octets (parity bits are ignored by DES)."""
    bits = int.from_bytes(key7, "big")
    return bytes(((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    ciphers = _CIPHERS.get(password_hash)
    if ciphers is None:
        z = password_hash + b"\x00" * (21 - len(password_hash))
        a, b, c = (_des(_des_key(z[i : i + 7])) for i in (0, 7, 14))
        if len(_CIPHERS) >= _PER_HASH_MAX:
            _CIPHERS.clear()
        ciphers = _CIPHERS[password_hash] = (a, b, c)
    a, b, c = ciphers
    return a.update(challenge) + b.update(challenge) + c.update(challenge)


def _des(key: bytes) -> Any:
    """Single DES as 3DES-EDE with three equal keys (E(k) D(k) E(k) is E(k)): OpenSSL's,
    ~0.8 us a block against pycryptodome's ~4 us through its Python wrapper."""
    return Cipher(TripleDES(key * 3), modes.ECB()).encryptor()


def nt_response(
    auth_challenge: bytes, peer_challenge: bytes, username: str, password_hash: bytes
) -> bytes:
    return challenge_response(
        challenge_hash(peer_challenge, auth_challenge, username), password_hash
    )


def verify_nt_response(
    auth_challenge: bytes,
    peer_challenge: bytes,
    username: str,
    password_hash: bytes,
    response: bytes,
) -> bool:
    want = nt_response(auth_challenge, peer_challenge, username, password_hash)
    return hmac.compare_digest(want, response)


def authenticator_response(
    password_hash: bytes,
    nt_resp: bytes,
    peer_challenge: bytes,
    auth_challenge: bytes,
    username: str,
) -> str:
    """The "S=<40 hex>" string that proves the server knew the password too."""
    digest = _sha1(_hash_hash(password_hash), nt_resp, MAGIC1)
    digest = _sha1(digest, challenge_hash(peer_challenge, auth_challenge, username), MAGIC2)
    return "S=" + digest.hex().upper()


def master_key(password_hash: bytes, nt_resp: bytes) -> bytes:
    return _sha1(_hash_hash(password_hash), nt_resp, KEY_MAGIC1)[:16]


def asymmetric_start_key(master: bytes, *, send: bool, server: bool) -> bytes:
    magic = KEY_MAGIC3 if send == server else KEY_MAGIC2
    return _sha1(master, SHS_PAD1, magic, SHS_PAD2)[:16]


def server_keys(password_hash: bytes, nt_resp: bytes) -> tuple[bytes, bytes]:
    """(receive key, send key) of the server, 16 octets each."""
    mk = master_key(password_hash, nt_resp)
    return (
        asymmetric_start_key(mk, send=False, server=True),
        asymmetric_start_key(mk, send=True, server=True),
    )
