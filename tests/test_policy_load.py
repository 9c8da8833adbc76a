"""Policy files: the sample, round trips, and errors that name the file, the key and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from nac.posture.policy import Policy, PolicyError, load_policy, loads_policy
from nac.posture.segments import sample_segments

DATA = Path(__file__).parent / "data" / "policy"

BAD_FILES = [
    ("bad_signature_age.toml", "rules[2].max_signature_age", "not a duration"),
    ("unknown_key.toml", "requre_posture", "unknown key"),
    ("vlan_out_of_range.toml", "segments.quarantine.vlan", "less than or equal to 4094"),
    ("unknown_check.toml", "rules[0].check", "unknown check 'antivirus'"),
    ("role_unknown_segment.toml", "roles.guest", "unknown segment 'quarantin'"),
    ("bad_os_range.toml", "rules[0].allow[1].version", "not a version range"),
    ("bad_purl.toml", "rules[0].deny[0]", "not a purl pattern"),
    ("bad_severity.toml", "rules[0].min_severity", "'medium'"),
    ("missing_segments.toml", "segments", "required key is missing"),
    ("syntax_error.toml", "(top level)", "not valid TOML"),
    ("duplicate_rule_names.toml", "rules[1].name", "names must differ"),
    ("missing_isolated.toml", "isolated_segment", "unknown segment 'isolated'"),
    ("bad_interval.toml", "segments.quarantine.reinspect_interval", "greater than or equal to 60"),
]


@pytest.mark.parametrize(("name", "key", "reason"), BAD_FILES)
def test_bad_file_error_names_file_key_and_reason(name: str, key: str, reason: str) -> None:
    path = DATA / "bad" / name
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message
    # The structured form carries the same key ("" for the file as a whole).
    assert [k or "(top level)" for k, _ in info.value.errors] == [key]


def test_every_bad_file_is_in_the_table() -> None:
    assert sorted(p.name for p in (DATA / "bad").glob("*.toml")) == sorted(
        n for n, _, _ in BAD_FILES
    )


def test_missing_file_names_it() -> None:
    with pytest.raises(PolicyError, match=r"nope\.toml: \(top level\): cannot read"):
        load_policy(DATA / "nope.toml")


def test_sample_matches_the_brief() -> None:
    policy = Policy.sample()
    assert policy.segments == sample_segments()
    assert {s.name: s.vlan for s in policy.segments.values()} == {
        "quarantine": 10,
        "isolated": 20,
        "normal": 30,
    }
    assert policy.require_posture is True
    assert policy.role_cap("default").name == "normal"
    assert policy.role_cap("guest").name == "quarantine"
    assert policy.role_cap("no-such-role").name == "normal"  # falls back to default_role
    assert policy.rule_names == ("no-forwarding", "no-vulnerable-packages")


@pytest.mark.parametrize("path", [None, DATA / "site.toml"])
def test_normalized_toml_round_trips(path: Path | None) -> None:
    policy = Policy.sample() if path is None else load_policy(path)
    again = loads_policy(policy.to_toml(), "normalized")
    assert again == policy
    assert again.digest == policy.digest


def test_digest_changes_with_the_policy() -> None:
    text = (DATA / "site.toml").read_text()
    a = loads_policy(text)
    b = loads_policy(text.replace('max_signature_age = "48h"', 'max_signature_age = "24h"'))
    assert a.digest != b.digest
    assert loads_policy(text).digest == a.digest


def test_durations_are_seconds() -> None:
    policy = load_policy(DATA / "site.toml")
    assert policy.segments["isolated"].reinspect_interval == 900
    assert policy.rules[1].max_signature_age == 48 * 3600  # type: ignore[union-attr]
    assert policy.rules[5].grace == 72 * 3600


def _documented_keys() -> set[str]:
    from nac.posture.rules import RULE_TYPES, OsMatch

    keys = (
        set(Policy.model_fields)
        | set(sample_segments()["normal"].model_dump())
        | set(OsMatch.model_fields)
    )
    for rule_type in RULE_TYPES:
        keys |= {f.alias or name for name, f in rule_type.model_fields.items()}
    return keys


def test_every_key_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "nac" / "posture" / "POLICY.md").read_text()
    missing = sorted(
        k
        for k in _documented_keys()
        if not any(form in doc for form in (f"`{k}`", f"`[{k}]`", f"`[{k}.", f"`[[{k}]]`"))
    )
    assert not missing, f"keys without documentation in POLICY.md: {missing}"


def test_policy_md_example_is_valid() -> None:
    doc = (Path(__file__).parent.parent / "nac" / "posture" / "POLICY.md").read_text()
    example = doc.split("## Example", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    policy = loads_policy(example, "POLICY.md example")
    assert policy.rule_names == ("supported-os", "antivirus", "security-updates")


def test_copy_recomputes_derived_values() -> None:
    policy = Policy.sample()
    assert (policy.top_segment.vlan, policy.uses_feeds) == (30, True)
    before = policy.digest
    segments = {k: v.model_copy(update={"vlan": v.vlan + 100}) for k, v in policy.segments.items()}
    copy = policy.model_copy(update={"segments": segments, "rules": []})
    assert (copy.top_segment.vlan, copy.uses_feeds, copy.rule_names) == (130, False, ())
    assert copy.digest != before
    assert policy.digest == before and policy.top_segment.vlan == 30
