"""OSV record parsing: severity from each vendor's signal, malformed records."""

from __future__ import annotations

from typing import Any

import pytest

from nac.prevention.osv import OsvError, parse_record


def rec(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "X-1", "modified": "2024-01-01T00:00:00Z", "affected": []}
    base.update(extra)
    return base


@pytest.mark.parametrize(
    ("extra", "want"),
    [
        ({"database_specific": {"severity": "MODERATE"}}, "medium"),  # GHSA word
        ({"database_specific": {"severity": "CRITICAL"}}, "critical"),
        (
            {
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
                ]
            },
            "critical",  # 9.8
        ),
        (
            {
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N"}
                ]
            },
            "medium",  # 6.1
        ),
        (
            {
                "severity": [
                    {
                        "type": "CVSS_V4",
                        "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                    }
                ]
            },
            "critical",  # 9.3
        ),
        ({"severity": [{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:C/I:N/A:N"}]}, "high"),
        ({"severity": [{"type": "Ubuntu", "score": "medium"}]}, "medium"),
        (
            {
                "affected": [
                    {
                        "package": {"ecosystem": "Ubuntu:22.04:LTS", "name": "openssl"},
                        "ecosystem_specific": {"severity": "low"},
                    }
                ]
            },
            "low",
        ),
        ({"severity": [{"type": "CVSS_V3", "score": "garbage"}]}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_severity(extra: dict[str, Any], want: str) -> None:
    assert parse_record(rec(**extra)).severity == want


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([], "JSON object"),
        ({"modified": "2024-01-01T00:00:00Z"}, "without an id"),
        ({"id": "X-2"}, "no 'modified'"),
        (rec(affected=[{"ranges": []}]), "without a package"),
        (rec(affected=[{"package": {"name": "x"}}]), "ecosystem and name"),
        (rec(affected=[{"package": {"ecosystem": "npm", "name": "x"}, "ranges": [1]}]), "range"),
    ],
)
def test_malformed(record: object, message: str) -> None:
    with pytest.raises(OsvError, match=message):
        parse_record(record)


def test_digest_ignores_key_order() -> None:
    a = parse_record({"id": "X-1", "modified": "m", "aliases": ["A"]})
    b = parse_record({"aliases": ["A"], "modified": "m", "id": "X-1"})
    assert a.digest == b.digest
    assert parse_record({"id": "X-1", "modified": "m", "aliases": ["B"]}).digest != a.digest
