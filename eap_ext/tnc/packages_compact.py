"""The compact package inventory: what travels, deflated, in the PACKAGES_COMPACT vendor
attribute instead of IETF Installed Packages + PACKAGE_EXTRA_Z.

Inside a tunnel every EAP-TNC fragment from wpa_supplicant costs two EAP round trips, so
the inventory's size decides whether a host with thousands of packages gets through at
all. The encoding drops what the receiver can rebuild and leaves the rest to deflate.
UTF-8 text, one line per package after a JSON header line:

    {"m":[manager,...],"t":[purl template,...],"v":2}
    name TAB version TAB arch TAB source TAB source_version TAB manager TAB purl
    =<a package of any other shape, as one line of ASCII JSON>

In a row source / source_version are empty when equal to name / version, manager is an
index into "m" (empty for 0), purl is empty for template 0, "#k" for template k, else the
literal purl. A template has {n}, {v}, {a} for the percent-encoded name, version and arch.
Anything a row cannot say unambiguously (other keys, non-string values, a tab or newline in
a value, a name starting with "=", ...) travels as an "=" line; a value that is not a list
at all as the header {"v":2,"x":value}. decode(encode(p)) == p exactly, so both ends
compute the same posture digest. Text rather than JSON rows: ~7% fewer deflated bytes and
the server splits lines instead of parsing and type-checking JSON (half the decode time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import compress, repeat
from operator import not_
from typing import Any
from urllib.parse import quote

FORMAT_VERSION = 2
KEYS = frozenset({"name", "version", "arch", "source", "source_version", "manager", "purl"})
MAX_PACKAGES = 200_000


# Characters quote() leaves alone: most names, versions and arches need no quoting, and
# the server expands a template per package, so skip quote() for those (it is the cost)...
_PLAIN_COLON = re.compile(r"[A-Za-z0-9_.~:-]*")


# and "+" (libstdc++6, 1.2+deb12u1) is the one other character real names and versions have
_PLUS = re.compile(r"[A-Za-z0-9_.~+-]*")
_PLUS_COLON = re.compile(r"[A-Za-z0-9_.~:+-]*")


def _q(text: str, colon: bool) -> str:
    """quote(text, safe=":" if colon else ""), without calling it for the usual strings."""
    if (_PLUS_COLON if colon else _PLUS).fullmatch(text):
        return text.replace("+", "%2B")
    return quote(text, safe=":" if colon else "")


def _quoted(name: str, version: str, arch: str) -> tuple[str, str, str]:
    # the agent's purls percent-encode as packageurl-python does (collectors/purl.py)
    return _q(name, False), _q(version, True), _q(arch, True)


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


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _row(pkg: Any, managers: dict[str, int], templates: dict[str, int]) -> str | None:
    """The text row for a package, or None when only a literal line can carry it."""
    if type(pkg) is not dict or pkg.keys() != KEYS:
        return None
    values = list(pkg.values())
    if not all(type(v) is str and "\t" not in v and "\n" not in v for v in values):
        return None
    name, version, arch = pkg["name"], pkg["version"], pkg["arch"]
    source, source_version, purl = pkg["source"], pkg["source_version"], pkg["purl"]
    if name.startswith("=") or (source == "" != name) or (source_version == "" != version):
        return None
    t = _template(purl, name, version, arch)
    if t is not None:
        k = templates.setdefault(t, len(templates))
        purl_field = f"#{k}" if k else ""
    elif purl == "" or purl.startswith("#"):
        return None
    else:
        purl_field = purl
    m = managers.setdefault(pkg["manager"], len(managers))
    return "\t".join((name, version, arch, "" if source == name else source,
                      "" if source_version == version else source_version,
                      str(m) if m else "", purl_field))


def encode(packages: Any) -> bytes:
    """The compact text for a package list (any JSON value round trips)."""
    if not isinstance(packages, list):
        return _dumps({"v": FORMAT_VERSION, "x": packages}).encode("utf-8")
    managers: dict[str, int] = {}
    templates: dict[str, int] = {}
    lines = []
    for pkg in packages:
        row = _row(pkg, managers, templates)
        # ASCII JSON holds no raw newline: one line per literal
        lines.append(row if row is not None else "=" + json.dumps(
            pkg, separators=(",", ":"), allow_nan=False))
    header = _dumps({"v": FORMAT_VERSION, "m": list(managers), "t": list(templates)})
    return "\n".join([header, *lines]).encode("utf-8")


class PackageList(list):  # type: ignore[type-arg]
    """A package list decoded from the compact text, with the deflated bytes it came from
    (`wire`, ~7 bytes a package where the list holds ~600 in Python objects): whoever keeps
    the posture (the store, nac/posture/stored.py) can keep those instead of encoding the
    list again. `columns`, when the text was our agent's usual rows (one manager): that
    manager and every package's source and source_version, in order, as the decoder already
    had them; whoever matches packages by source (nac/prevention) reads two lists instead
    of two keys of 1,500 dicts. A change through the list's own methods forgets both (None);
    the package dicts inside are read-only by contract (the server never changes them)."""

    __slots__ = ("wire", "columns")

    def __init__(self, items: Any = (), wire: bytes | None = None,
                 columns: SourceColumns | None = None) -> None:
        super().__init__(items)
        self.wire = wire
        self.columns = columns


# (manager of every package, sources, source_versions): see PackageList.columns
SourceColumns = tuple[str, list[str], list[str]]


def _forgetting(name: str) -> Any:
    method = getattr(list, name)

    def changed(self: PackageList, *args: Any, **kwargs: Any) -> Any:
        self.wire = None
        self.columns = None
        return method(self, *args, **kwargs)

    changed.__name__ = name
    return changed


for _name in ("append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse",
              "__setitem__", "__delitem__", "__iadd__", "__imul__"):
    setattr(PackageList, _name, _forgetting(_name))


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"compact packages: {what} is not a list of strings")
    return value


def _index(field: str, size: int, what: str) -> int:
    if not (field.isascii() and field.isdigit()) or int(field) >= size:
        raise ValueError(f"compact packages: bad {what} index")
    return int(field)


def decode(raw: bytes) -> Any:
    """The package list; ValueError for anything encode() would not have written."""
    text = raw.decode("utf-8")
    header_line, newline, body = text.partition("\n")
    try:
        header = json.loads(header_line)
    except RecursionError as exc:
        raise ValueError("compact packages: bad header") from exc
    if not isinstance(header, dict) or header.get("v") != FORMAT_VERSION:
        raise ValueError("compact packages: unknown format")
    if "x" in header:
        if newline:
            raise ValueError("compact packages: rows after a non-list value")
        return header["x"]
    managers = _str_list(header.get("m"), "m")
    templates = _str_list(header.get("t"), "t")
    lines = body.split("\n") if newline else []
    if len(lines) > MAX_PACKAGES:
        raise ValueError(f"compact packages: more than {MAX_PACKAGES} rows")
    fast = _decode_columns(body, lines, managers, templates)
    if fast is not None:
        return fast
    return _decode_rows(lines, managers, [_formatter(t) for t in templates])


# A whole column (tab-joined) of names (no ":") or of versions and arches (":" allowed)
# whose only character to percent-encode is "+": _q() of each is then a replace.
_PLUS_COLUMN = re.compile(r"[A-Za-z0-9_.~+\t-]*")
_PLUS_COLON_COLUMN = re.compile(r"[A-Za-z0-9_.~:+\t-]*")


def _plus_quoted(column: list[str], joined: str) -> list[str]:
    # one replace() over the tab-joined column and one split, not a replace() per package
    # (a single "+b1" version in the column was enough for 1,500 calls): ~5% of the decode
    return joined.replace("+", "%2B").split("\t") if "+" in joined else column


_FIELD = re.compile(r"(\{[nva]\})")


def _expand_all(template: str, names: list[str], versions: list[str],
                arches: list[str]) -> list[str]:
    """The template expanded for every row (fields already quoted). The usual template,
    {n} then {v} then {a} once each and no other brace, goes through an f-string: a third
    of str.format's time."""
    parts = _FIELD.split(template)
    if parts[1::2] == ["{n}", "{v}", "{a}"] and not any("{" in p or "}" in p
                                                        for p in parts[0::2]):
        p0, p1, p2, p3 = parts[0::2]
        return [f"{p0}{n}{p1}{v}{p2}{a}{p3}"
                for n, v, a in zip(names, versions, arches, strict=True)]
    return list(map(_formatter(template), names, versions, arches))


def _or_column(column: list[str], fallback: list[str]) -> list[str]:
    """The column with each empty field replaced by the fallback's (an empty source or
    source_version means "as name / version"), in C-level passes but for the fields that
    differ from the majority (a few binNMU source versions, a few unnamed sources)."""
    empty = column.count("")
    if not empty:
        return column
    if empty == len(column):
        return fallback
    if empty * 2 > len(column):
        out = list(fallback)
        for i in compress(range(len(column)), column):
            out[i] = column[i]
    else:
        out = list(column)
        for i in compress(range(len(column)), map(not_, column)):
            out[i] = fallback[i]
    return out


def _decode_columns(body: str, lines: list[str], managers: list[str],
                    templates: list[str]) -> list[Any] | None:
    """What our agent writes for a host: rows only, one manager, template 0 for every purl,
    nothing to quote but "+". Decoded column by column in C-level passes (one dict per
    package is the only per-row Python work left): about half the time of _decode_rows.
    None when the text is anything else; _decode_rows then decides (and raises) row by
    row."""
    if not lines or not managers or not templates or body[:1] == "=" or "\n=" in body:
        return None
    if set(map(str.count, lines, repeat("\t"))) != {6}:  # 7 fields in every row
        return None
    # one flat list of strings (not a list per row: fewer objects for the allocator and
    # the cyclic GC, which a server decoding 1,500 rows per inspection feels)
    flat = body.replace("\n", "\t").split("\t")
    names, versions, arches = flat[0::7], flat[1::7], flat[2::7]
    srcs, srcvers = flat[3::7], flat[4::7]
    if flat[5::7].count("") != len(lines) or flat[6::7].count("") != len(lines):
        return None
    joined = ["\t".join(names), "\t".join(versions), "\t".join(arches)]
    if not (_PLUS_COLUMN.fullmatch(joined[0]) and _PLUS_COLON_COLUMN.fullmatch(joined[1])
            and _PLUS_COLON_COLUMN.fullmatch(joined[2])):
        return None
    purls = _expand_all(templates[0], _plus_quoted(names, joined[0]),
                        _plus_quoted(versions, joined[1]), _plus_quoted(arches, joined[2]))
    manager = managers[0]
    sources = _or_column(srcs, names)
    source_versions = _or_column(srcvers, versions)
    return PackageList(
        [{"name": n, "version": v, "arch": a, "source": s, "source_version": sv,
          "manager": manager, "purl": p}
         for n, v, a, s, sv, p in zip(names, versions, arches, sources, source_versions,
                                      purls, strict=True)],
        columns=(manager, sources, source_versions))


def _decode_rows(lines: list[str], managers: list[str],
                 formats: list[Callable[..., str]]) -> list[Any]:
    plain_colon = _PLAIN_COLON.fullmatch
    out: list[Any] = []
    append = out.append
    # per-row work is what a 1,500-package inventory costs the server: str.split and
    # local names, no JSON and no helper calls for the usual row
    for line in lines:
        if line[:1] == "=":
            try:
                append(json.loads(line[1:]))
            except RecursionError as exc:
                raise ValueError("compact packages: bad literal") from exc
            continue
        fields = line.split("\t")
        if len(fields) != 7:
            raise ValueError("compact packages: bad row")
        name, version, arch, src, srcver, mgr, purl = fields
        manager = managers[_index(mgr, len(managers), "manager")] if mgr else (
            managers[0] if managers else None)
        if manager is None:
            raise ValueError("compact packages: no manager")
        if not purl or purl[0] == "#":
            k = _index(purl[1:], len(formats), "template") if purl else 0
            if k >= len(formats):
                raise ValueError("compact packages: no purl template")
            if ":" not in name and plain_colon(name + version + arch):
                purl = formats[k](name, version, arch)  # the usual case: nothing to quote
            else:
                purl = formats[k](_q(name, False), _q(version, True), _q(arch, True))
        append({"name": name, "version": version, "arch": arch, "source": src or name,
                "source_version": srcver or version, "manager": manager, "purl": purl})
    return out
