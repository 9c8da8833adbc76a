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
    s = text.strip().lower()
    n = len(s)
    if n == 17 and s[2] == s[5] == s[8] == s[11] == s[14] and s[2] in ":-":
        h = s[0:2] + s[3:5] + s[6:8] + s[9:11] + s[12:14] + s[15:17]
        if _HEX.issuperset(h):
            return s if s[2] == ":" else s.replace("-", ":")
        return None
    if n > 17:
        return None
    h = s.replace(":", "").replace("-", "").replace(".", "")
    if len(h) != 12 or not _HEX.issuperset(h):
        return None
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))
