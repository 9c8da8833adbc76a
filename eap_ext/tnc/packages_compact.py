"""The compact package inventory: what travels, deflated, in the PACKAGES_COMPACT vendor
attribute instead of IETF Installed Packages + PACKAGE_EXTRA_Z.

Inside a tunnel every EAP-TNC fragment from wpa_supplicant costs two EAP round trips, so
the inventory's size decides whether a host with thousands of packages gets through at
all. The encoding drops what the receiver can rebuild and leaves the rest to deflate:

    {"v": 1, "m": [manager, ...], "t": [purl template, ...], "r": [row, ...]}

A row is [name, version, arch, source, source_version, manager index, purl], where
source / source_version are 0 when equal to name / version, and purl is an index into
"t" (a template with {n}, {v}, {a} standing for the percent-encoded name, version and
arch) or the literal purl when no template reproduces it. A package of any other shape
(other keys, non-string values, not an object) travels as [its JSON value]; a value that
is not a list at all as {"v": 1, "x": value}. decode(encode(p)) == p exactly, so both
ends compute the same posture digest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

FORMAT_VERSION = 1
KEYS = frozenset({"name", "version", "arch", "source", "source_version", "manager", "purl"})
MAX_PACKAGES = 200_000


# Characters quote() leaves alone: most names, versions and arches need no quoting, and
# the server expands a template per package, so skip quote() for those (it is the cost).
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")
_PLAIN_COLON = re.compile(r"[A-Za-z0-9_.~:-]*")


def _quoted(name: str, version: str, arch: str) -> tuple[str, str, str]:
    # the agent's purls percent-encode as packageurl-python does (collectors/purl.py)
    return (name if _PLAIN.fullmatch(name) else quote(name, safe=""),
            version if _PLAIN_COLON.fullmatch(version) else quote(version, safe=":"),
            arch if _PLAIN_COLON.fullmatch(arch) else quote(arch, safe=":"))


def _formatter(template: str) -> Callable[..., str]:
    """str.format of the template with {n}, {v}, {a} as its only fields."""
    fmt = template.replace("{", "{{").replace("}", "}}")
    fmt = fmt.replace("{{n}}", "{0}").replace("{{v}}", "{1}").replace("{{a}}", "{2}")
    return fmt.format


def _expand(template: str, name: str, version: str, arch: str) -> str:
    return _formatter(template)(*_quoted(name, version, arch))


def _template(purl: str, name: str, version: str, arch: str) -> str | None:
    qn, qv, qa = _quoted(name, version, arch)
    key = f"/{qn}@{qv}"
    if "{" in purl or purl.count(key) != 1:
        return None
    t = purl.replace(key, "/{n}@{v}")
    if t.count(f"arch={qa}") == 1:
        t = t.replace(f"arch={qa}", "arch={a}")
    return t if _expand(t, name, version, arch) == purl else None


def encode(packages: Any) -> dict[str, Any]:
    """The compact JSON value for a package list (any JSON value round trips)."""
    if not isinstance(packages, list):
        return {"v": FORMAT_VERSION, "x": packages}
    managers: dict[str, int] = {}
    templates: dict[str, int] = {}
    rows: list[Any] = []
    for pkg in packages:
        if (not isinstance(pkg, dict) or set(pkg) != KEYS
                or not all(isinstance(v, str) for v in pkg.values())):
            rows.append([pkg])
            continue
        name, version, arch = pkg["name"], pkg["version"], pkg["arch"]
        t = _template(pkg["purl"], name, version, arch)
        purl: int | str = pkg["purl"] if t is None else templates.setdefault(t, len(templates))
        rows.append([name, version, arch,
                     0 if pkg["source"] == name else pkg["source"],
                     0 if pkg["source_version"] == version else pkg["source_version"],
                     managers.setdefault(pkg["manager"], len(managers)), purl])
    return {"v": FORMAT_VERSION, "m": list(managers), "t": list(templates), "r": rows}


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"compact packages: {what} is not a list of strings")
    return value


def decode(obj: Any) -> Any:
    """The package list; ValueError for anything encode() would not have written."""
    if not isinstance(obj, dict) or obj.get("v") != FORMAT_VERSION:
        raise ValueError("compact packages: unknown format")
    if "x" in obj:
        return obj["x"]
    managers = _str_list(obj.get("m"), "m")
    templates = _str_list(obj.get("t"), "t")
    rows = obj.get("r")
    if not isinstance(rows, list) or len(rows) > MAX_PACKAGES:
        raise ValueError("compact packages: r is not a list of at most "
                         f"{MAX_PACKAGES} rows")
    formats = [_formatter(t) for t in templates]
    plain, plain_colon = _PLAIN.fullmatch, _PLAIN_COLON.fullmatch
    out: list[Any] = []
    append = out.append
    # per-row work is what a 1,500-package inventory costs the server: type() identity
    # checks and local names instead of isinstance() and helper calls
    for row in rows:
        if type(row) is not list:
            raise ValueError("compact packages: bad row")
        if len(row) == 1:
            append(row[0])
            continue
        if len(row) != 7:
            raise ValueError("compact packages: bad row")
        name, version, arch, src, srcver, mgr, purl = row
        if type(src) is int and src == 0:
            src = name
        if type(srcver) is int and srcver == 0:
            srcver = version
        if not (type(name) is str and type(version) is str and type(arch) is str
                and type(src) is str and type(srcver) is str
                and type(mgr) is int and 0 <= mgr < len(managers)):
            raise ValueError("compact packages: bad row")
        if type(purl) is int:
            if not 0 <= purl < len(formats):
                raise ValueError("compact packages: purl template out of range")
            purl = formats[purl](
                name if plain(name) else quote(name, safe=""),
                version if plain_colon(version) else quote(version, safe=":"),
                arch if plain_colon(arch) else quote(arch, safe=":"))
        elif type(purl) is not str:
            raise ValueError("compact packages: bad purl")
        append({"name": name, "version": version, "arch": arch, "source": src,
                "source_version": srcver, "manager": managers[mgr], "purl": purl})
    return out
