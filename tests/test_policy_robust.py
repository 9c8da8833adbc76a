"""Postures come from untrusted hosts: no document may crash evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nac.posture.evaluate import evaluate
from nac.posture.policy import Policy, load_policy

DATA = Path(__file__).parent / "data"
SITE = load_policy(DATA / "policy" / "site.toml")
SAMPLE = Policy.sample()
BASE = json.loads((DATA / "postures" / "debian12_compliant.json").read_text())
SECTIONS = [
    "os", "packages", "pending_updates", "forwarding", "firewall", "listening",
    "security_software", "interfaces", "factory_default_password", "schema",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
# Sometimes a whole section is junk, sometimes one field inside it.
section_values = json_values | st.just("unknown")


class FindingsOf:
    """An index that reports nothing: robustness is about the policy side here."""

    epoch = 1

    def findings(self, posture: dict[str, Any]) -> list[Any]:
        return []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(SECTIONS), section_values, max_size=4),
    st.sampled_from(SECTIONS),
    st.text(max_size=6),
    json_values,
)
def test_any_posture_yields_a_segment(
    replaced: dict[str, Any], section: str, field: str, value: Any
) -> None:
    posture = dict(BASE) | replaced
    if isinstance(posture.get(section), dict):
        posture[section] = posture[section] | {field: value}
    elif isinstance(posture.get(section), list) and posture[section]:
        first = posture[section][0]
        posture[section] = [first | {field: value} if isinstance(first, dict) else value]
    for policy in (SITE, SAMPLE):
        d = evaluate(policy, posture, role="default", index=FindingsOf(), now=1.8e9)
        assert d.segment in policy.segments
        assert d.reasons


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_any_json_document_yields_a_segment(doc: Any) -> None:
    d = evaluate(SITE, doc, role="default", index=None, now=1.8e9)
    assert d.segment in SITE.segments


def test_ten_thousand_hosts_quickly() -> None:
    """The benchmark's shape: 10,000 hosts, 500 packages each from a shared pool."""
    pool = [
        {"name": f"p{i}", "version": "1.0", "manager": "dpkg", "source": f"p{i}",
         "purl": f"pkg:deb/debian/p{i}@1.0?arch=amd64&distro=debian-12"}
        for i in range(3000)
    ]  # fmt: skip
    hosts = [dict(BASE, packages=pool[i % 2000 : i % 2000 + 500]) for i in range(10_000)]
    start = time.perf_counter()
    for host in hosts:
        evaluate(SITE, host, role="default", index=FindingsOf(), now=1.8e9)
    elapsed = time.perf_counter() - start
    # ~1-2 s on a loaded 2-core machine; the bound only catches a lost fast path.
    assert elapsed < 30, f"{elapsed:.1f} s for 10,000 evaluations"
