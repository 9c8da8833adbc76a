"""Local accounts: password hashes at rest, never plaintext.

Each account carries what each method needs and nothing more:
- password_hash: scrypt, for PAP and EAP-TTLS/PAP;
- nt_hash: MD4 of the UTF-16LE password, for MSCHAPv2 (the protocol needs exactly that);
- md5_secret: EAP-MD5 needs the password itself, so accounts that allow it keep it encrypted
  with a key from the state directory (Fernet); accounts without it cannot use EAP-MD5.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from Crypto.Hash import MD4
from cryptography.fernet import Fernet, InvalidToken

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """scrypt$N$r$p$salt$hash, all base64 where binary."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password_hash(encoded: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    want = base64.b64decode(digest)
    got = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(want),
    )
    return hmac.compare_digest(want, got)


def nt_hash(password: str) -> bytes:
    """NtPasswordHash (RFC 2759 8.3): MD4 over the UTF-16LE password."""
    return MD4.new(password.encode("utf-16-le")).digest()


class SecretBox:
    """Reversible encryption for the few secrets a protocol needs in clear (EAP-MD5)."""

    def __init__(self, key_file: Path) -> None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
        self._fernet = Fernet(key_file.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return "fernet:" + self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str | None:
        if not sealed.startswith("fernet:"):
            return None
        try:
            return self._fernet.decrypt(sealed[7:].encode()).decode()
        except InvalidToken:
            return None


@dataclass(slots=True)
class Account:
    name: str
    role: str = "default"
    password_hash: str | None = None
    nt_hash: bytes | None = None
    md5_secret: str | None = None  # "fernet:..." sealed by SecretBox
    # EAP methods this account may use (names as in nac.eap), empty = all that it has keys for.
    methods: tuple[str, ...] = field(default_factory=tuple)

    def check_password(self, password: str) -> bool:
        return bool(self.password_hash) and verify_password_hash(self.password_hash, password)


def make_account(
    name: str,
    password: str,
    *,
    role: str = "default",
    allow_md5: bool = False,
    box: SecretBox | None = None,
) -> Account:
    md5 = box.seal(password) if (allow_md5 and box is not None) else None
    return Account(
        name=name,
        role=role,
        password_hash=hash_password(password),
        nt_hash=nt_hash(password),
        md5_secret=md5,
    )


def account_to_toml_table(acc: Account) -> dict[str, object]:
    out: dict[str, object] = {"role": acc.role}
    if acc.password_hash:
        out["password_hash"] = acc.password_hash
    if acc.nt_hash:
        out["nt_hash"] = acc.nt_hash.hex()
    if acc.md5_secret:
        out["md5_secret"] = acc.md5_secret
    if acc.methods:
        out["methods"] = list(acc.methods)
    return out


def accounts_from_tables(tables: dict[str, dict[str, object]]) -> dict[str, Account]:
    """Accounts from `[accounts.NAME]` tables (config file or accounts file)."""
    accounts: dict[str, Account] = {}
    for name, t in tables.items():
        nt = t.get("nt_hash")
        methods = t.get("methods") or []
        accounts[name] = Account(
            name=name,
            role=str(t.get("role", "default")),
            password_hash=str(t["password_hash"]) if t.get("password_hash") else None,
            nt_hash=bytes.fromhex(str(nt)) if nt else None,
            md5_secret=str(t["md5_secret"]) if t.get("md5_secret") else None,
            methods=tuple(str(m) for m in methods),  # type: ignore[union-attr]
        )
    return accounts


def load_accounts_file(path: Path) -> dict[str, Account]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    return accounts_from_tables(data.get("accounts", {}))
