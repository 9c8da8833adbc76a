"""Detached Ed25519 signatures over feed files (draft 9.7: authenticate the prevention source).

A feed FILE is published with FILE.sig: the base64 of the 64-byte Ed25519 signature over the
file's exact bytes. Keys are PEM (PKCS#8 private, SubjectPublicKeyInfo public).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG_SUFFIX = ".sig"
PRIVATE_NAME = "feed-signing.key"
PUBLIC_NAME = "feed-signing.pub"


class SignatureError(Exception):
    """A feed's signature is missing or does not verify; the feed must not be used."""


def generate_keypair(out_dir: Path) -> tuple[Path, Path]:
    """Write a new key pair into out_dir; the private key is created 0600 and never overwritten."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv_path, pub_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: refusing to clobber an existing signing key is cheaper than recovering one.
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(priv_pem)
    pub_path.write_bytes(public_pem(key.public_key()))
    return priv_path, pub_path


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("feed public key is not Ed25519")
    return key


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The .sig file content for data."""
    return base64.b64encode(key.sign(data)) + b"\n"


def sign_file(path: Path, key_path: Path) -> Path:
    sig_path = path.with_name(path.name + SIG_SUFFIX)
    sig_path.write_bytes(sign_bytes(load_private_key(key_path), path.read_bytes()))
    return sig_path


def verify(key: Ed25519PublicKey, data: bytes, sig_text: bytes | None, what: str) -> None:
    """Raise SignatureError naming `what` unless sig_text is a valid signature over data."""
    if sig_text is None:
        raise SignatureError(f"{what}: signature file missing")
    try:
        sig = base64.b64decode(sig_text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{what}: signature is not base64") from exc
    try:
        key.verify(sig, data)
    except InvalidSignature as exc:
        raise SignatureError(f"{what}: signature does not verify (feed altered?)") from exc
