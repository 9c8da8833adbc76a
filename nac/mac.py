"""MAC addresses in every notation switches use, normalised to aa:bb:cc:dd:ee:ff."""

from __future__ import annotations

_HEX = frozenset("0123456789abcdef")


def normalize_mac(text: str | bytes | None) -> str | None:
    """aabbccddeeff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff, aabbcc-ddeeff -> aa:bb:cc:dd:ee:ff.

    None when `text` is not a MAC address.
    """
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    s = text.strip()
    n = len(s)
    if n == 17:
        # The common notations (switches send one per request): fromhex checks the
        # digits, and a stray separator or space inside a pair makes it fail.
        sep = s[2]
        if (sep == ":" or sep == "-") and s[5] == s[8] == s[11] == s[14] == sep:
            if s.count(sep) != 5:
                return None
            try:
                return bytes.fromhex(s.replace(sep, " ")).hex(":")
            except ValueError:
                return None
    if n > 17:
        return None
    h = s.lower().replace(":", "").replace("-", "").replace(".", "")
    if len(h) != 12 or not _HEX.issuperset(h):
        return None
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))
