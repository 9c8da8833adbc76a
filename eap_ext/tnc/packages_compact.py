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

from typing import Any
from urllib.parse import quote

FORMAT_VERSION = 1
KEYS = frozenset({"name", "version", "arch", "source", "source_version", "manager", "purl"})
MAX_PACKAGES = 200_000


def _quoted(name: str, version: str, arch: str) -> tuple[str, str, str]:
    # the agent's purls percent-encode as packageurl-python does (collectors/purl.py)
    return quote(name, safe=""), quote(version, safe=":"), quote(arch, safe=":")


def _expand(template: str, name: str, version: str, arch: str) -> str:
    qn, qv, qa = _quoted(name, version, arch)
    return template.replace("{n}", qn).replace("{v}", qv).replace("{a}", qa)


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


def _zero(value: Any) -> bool:
    return type(value) is int and value == 0  # not False, which == 0 too


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
    out: list[Any] = []
    for row in rows:
        if isinstance(row, list) and len(row) == 1:
            out.append(row[0])
            continue
        if not isinstance(row, list) or len(row) != 7:
            raise ValueError("compact packages: bad row")
        name, version, arch, src, srcver, mgr, purl = row
        if not (isinstance(name, str) and isinstance(version, str) and isinstance(arch, str)
                and (_zero(src) or isinstance(src, str))
                and (_zero(srcver) or isinstance(srcver, str))
                and type(mgr) is int and 0 <= mgr < len(managers)):
            raise ValueError("compact packages: bad row")
        if type(purl) is int:
            if not 0 <= purl < len(templates):
                raise ValueError("compact packages: purl template out of range")
            purl = _expand(templates[purl], name, version, arch)
        elif not isinstance(purl, str):
            raise ValueError("compact packages: bad purl")
        out.append({"name": name, "version": version, "arch": arch,
                    "source": name if _zero(src) else src,
                    "source_version": version if _zero(srcver) else srcver,
                    "manager": managers[mgr], "purl": purl})
    return out
