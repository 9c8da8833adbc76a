"""OSV JSON records -> the few facts the cache keeps (https://ossf.github.io/osv-schema/)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cvss import CVSS2, CVSS3, CVSS4

SEVERITIES = ("critical", "high", "medium", "low", "unknown")
_RANK = {name: i for i, name in enumerate(reversed(SEVERITIES))}

# Words vendors use for severity -> our five levels.
_WORDS = {
    "critical": "critical",
    "urgent": "critical",
    "high": "high",
    "important": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "negligible": "low",
    "unimportant": "low",
}


class OsvError(ValueError):
    """A record is not usable OSV."""


@dataclass(frozen=True)
class AffectedPackage:
    ecosystem: str
    name: str
    purl: str | None
    ranges: tuple[dict[str, Any], ...]  # OSV ranges as given: {"type", "events"}
    versions: tuple[str, ...]


@dataclass(frozen=True)
class Advisory:
    id: str
    modified: str
    published: str | None
    withdrawn: str | None
    aliases: tuple[str, ...]
    summary: str
    severity: str
    affected: tuple[AffectedPackage, ...]
    digest: str  # sha256 of the canonical record: detects silent re-publication


def parse_record(record: object) -> Advisory:
    if not isinstance(record, dict):
        raise OsvError("an OSV record must be a JSON object")
    adv_id = record.get("id")
    modified = record.get("modified")
    if not isinstance(adv_id, str) or not adv_id:
        raise OsvError("OSV record without an id")
    if not isinstance(modified, str):
        raise OsvError(f"{adv_id}: no 'modified' timestamp")
    affected = tuple(_affected(adv_id, a) for a in record.get("affected") or ())
    summary = record.get("summary") or (record.get("details") or "").split("\n", 1)[0]
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return Advisory(
        id=adv_id,
        modified=modified,
        published=record.get("published"),
        withdrawn=record.get("withdrawn") or None,
        aliases=tuple(str(a) for a in record.get("aliases") or ()),
        summary=str(summary)[:500],
        severity=severity_of(record),
        affected=affected,
        digest=hashlib.sha256(canonical).hexdigest(),
    )


def _affected(adv_id: str, entry: object) -> AffectedPackage:
    if not isinstance(entry, dict) or not isinstance(entry.get("package"), dict):
        raise OsvError(f"{adv_id}: affected[] entry without a package")
    pkg = entry["package"]
    if not pkg.get("ecosystem") or not pkg.get("name"):
        raise OsvError(f"{adv_id}: affected package needs ecosystem and name")
    ranges = []
    for r in entry.get("ranges") or ():
        if not isinstance(r, dict) or not isinstance(r.get("events"), list):
            raise OsvError(f"{adv_id}: malformed range")
        ranges.append({"type": r.get("type", ""), "events": r["events"]})
    return AffectedPackage(
        ecosystem=str(pkg["ecosystem"]),
        name=str(pkg["name"]),
        purl=pkg.get("purl"),
        ranges=tuple(ranges),
        versions=tuple(str(v) for v in entry.get("versions") or ()),
    )


def _word(value: object) -> str | None:
    if isinstance(value, str):
        return _WORDS.get(value.strip().lower())
    return None


def _cvss_level(score: str) -> str | None:
    """A CVSS vector -> qualitative rating (FIRST's bands), via the cvss library."""
    try:
        if score.startswith("CVSS:4"):
            base = CVSS4(score).base_score
        elif score.startswith("CVSS:3"):
            base = CVSS3(score).scores()[0]
        else:
            base = CVSS2(score).scores()[0]
    except Exception:
        return None
    base = float(base)
    if base >= 9.0:
        return "critical"
    if base >= 7.0:
        return "high"
    if base >= 4.0:
        return "medium"
    if base > 0.0:
        return "low"
    return None


def _severity_entry(entry: dict[str, Any]) -> str | None:
    """One OSV severity[] entry: a CVSS vector, or (type "Ubuntu") Ubuntu's priority word."""
    score = str(entry.get("score", ""))
    if entry.get("type") == "Ubuntu":
        return _word(score)
    return _cvss_level(score)


def severity_of(record: dict[str, Any]) -> str:
    """The record's severity: its own rating word first, then CVSS vectors, then per-package.

    GHSA puts a word in database_specific; Ubuntu a priority in ecosystem_specific; NVD-derived
    records only CVSS vectors. When several signals exist at one level, the highest wins.
    """
    db = record.get("database_specific")
    if isinstance(db, dict) and (w := _word(db.get("severity"))):
        return w
    levels = [
        lvl
        for s in record.get("severity") or ()
        if isinstance(s, dict) and (lvl := _severity_entry(s))
    ]
    if not levels:
        for a in record.get("affected") or ():
            if not isinstance(a, dict):
                continue
            for key in ("ecosystem_specific", "database_specific"):
                spec = a.get(key)
                if isinstance(spec, dict) and (w := _word(spec.get("severity"))):
                    levels.append(w)
                for s in a.get("severity") or ():
                    if isinstance(s, dict) and (lvl := _severity_entry(s)):
                        levels.append(lvl)
    if not levels:
        return "unknown"
    return max(levels, key=_RANK.__getitem__)


def records_from_json(data: bytes, origin: str) -> list[dict[str, Any]]:
    """A JSON file holds one record or a list of records."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise OsvError(f"{origin}: not JSON: {exc}") from exc
    if isinstance(doc, list):
        return doc
    return [doc]
