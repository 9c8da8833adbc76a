"""Package URLs (github.com/package-url/purl-spec) for the packages section."""

from __future__ import annotations

from urllib.parse import quote


def make_purl(ptype: str, namespace: str, name: str, version: str, arch: str | None,
              distro: str | None, extra: dict[str, str] | None = None) -> str:
    # Percent-encode as packageurl-python does, so server-side parsers round-trip it:
    # ':' (epochs) stays literal, '+' becomes %2B, '~' is unreserved.
    purl = f"pkg:{ptype}/{quote(namespace, safe='')}/{quote(name, safe='')}"
    purl += f"@{quote(version, safe=':')}"
    qualifiers = {"arch": arch, "distro": distro, **(extra or {})}
    parts = [f"{k}={quote(v, safe=':')}" for k, v in sorted(qualifiers.items()) if v]
    return purl + ("?" + "&".join(parts) if parts else "")
