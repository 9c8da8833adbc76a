"""The agent's posture document as the server reads it: the same digest (certificates are
bound to it) and the site policy deciding on what the collectors reported."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from eap_ext.agent.collectors import collect_posture, posture_digest
from eap_ext.agent.hostroot import HostRoot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_fixtures import build_debian_root  # noqa: E402

SITE_POLICY = Path(__file__).resolve().parent / "data" / "policy" / "site.toml"


def _posture(root: Path, **kwargs: bool) -> dict:
    fresh = time.strftime("%d %b %Y %H-%M", time.gmtime(time.time() - 3600))
    build_debian_root(root, clamav_built=fresh, clamd_running=True, **kwargs)
    return collect_posture(HostRoot(root, rooted=True), certificate_token="dG9rZW4=")


def test_digest_matches_the_servers(tmp_path: Path) -> None:
    digest = pytest.importorskip("nac.posture.digest")
    doc = _posture(tmp_path)
    assert posture_digest(doc) == digest.posture_digest(doc)
    assert doc["certificate"]["posture_digest"] == digest.posture_digest(doc)


@pytest.mark.parametrize(("kwargs", "segment", "reason"), [
    ({}, "normal", None),
    ({"ip_forward": True}, "isolated", "no-forwarding: forwarding on: IPv4"),
])
def test_site_policy_decides_on_collected_posture(tmp_path: Path, kwargs: dict, segment: str,
                                                  reason: str | None) -> None:
    policy_mod = pytest.importorskip("nac.posture.policy")
    evaluate_mod = pytest.importorskip("nac.posture.evaluate")
    policy = policy_mod.load_policy(SITE_POLICY)
    decision = evaluate_mod.evaluate(policy, _posture(tmp_path, **kwargs), role="default",
                                     index=None, now=time.time())
    assert decision.segment == segment, decision.reasons
    # Every rule found its section: none fell back to "no posture" or a schema complaint.
    assert not any("posture" in r and "schema" in r for r in decision.reasons)
    if reason:
        assert any(r.startswith(reason) for r in decision.reasons), decision.reasons
