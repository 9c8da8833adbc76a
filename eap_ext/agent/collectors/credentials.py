"""The `factory_default_password` key: does a local account accept a well-known password?

Reads etc/shadow (root only) and tries a short list of vendor defaults against each usable
hash with the system crypt(3). Unreadable shadow or no crypt: "unknown".
"""

from __future__ import annotations

import logging
import warnings

from ..hostroot import HostRoot

log = logging.getLogger(__name__)

DEFAULTS = ("", "password", "admin", "root", "toor", "changeme", "raspberry", "123456")


def _crypt():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # noqa: PLC0415 - deprecated module, only where it exists
        except ImportError:
            return None
    return crypt.crypt


def collect(root: HostRoot) -> bool | str:
    shadow = root.read_text("etc/shadow")
    crypt_fn = _crypt()
    if shadow is None or crypt_fn is None:
        return "unknown"
    for line in shadow.splitlines():
        cols = line.split(":")
        if len(cols) >= 2 and cols[1] == "":
            return True  # an account that logs in with no password at all
        if len(cols) < 2 or not cols[1].startswith("$"):
            continue  # locked ("!", "*") or no password set
        user, hashed = cols[0], cols[1]
        for candidate in (*DEFAULTS, user):
            try:
                if crypt_fn(candidate, hashed) == hashed:
                    log.debug("account %s accepts a default password", user)
                    return True
            except OSError:
                break  # hash scheme unsupported by this libc
    return False
