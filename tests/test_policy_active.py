"""The active policy follows `nac policy apply`, and a bad file never replaces a good one."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from nac.cli.main import cli
from nac.posture.active import ActivePolicy
from nac.posture.policy import Policy, load_policy

DATA = Path(__file__).parent / "data" / "policy"


def test_follows_apply_and_keeps_good_policy(tmp_path: Path) -> None:
    active = ActivePolicy(tmp_path)
    assert active.current() == Policy.sample()
    assert active.refresh() is False  # nothing changed

    result = CliRunner().invoke(cli, ["policy", "apply", str(DATA / "site.toml"),
                                      "--state-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0
    assert active.refresh() is True
    assert active.current() == load_policy(DATA / "site.toml")

    # An editor writing the file in place with a typo: the site policy stays in force.
    (tmp_path / "policy.toml").write_text((DATA / "bad" / "unknown_check.toml").read_text())
    assert active.refresh() is False
    assert active.current().name == "test-site"
    assert active.last_error is not None and "rules[0].check" in active.last_error

    (tmp_path / "policy.toml").unlink()
    assert active.refresh() is True
    assert active.current() == Policy.sample()
    assert active.last_error is None
