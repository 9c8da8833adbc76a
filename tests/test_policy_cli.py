"""`nac policy`: check, show, test, apply, explain — through click and as a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nac.cli.main import cli
from nac.posture.policy import Policy, load_policy, loads_policy

DATA = Path(__file__).parent / "data"
POSTURES = DATA / "postures"
SITE = DATA / "policy" / "site.toml"
SAMPLE = Path(__file__).parent.parent / "nac" / "posture" / "sample_policy.toml"
NOW = "1800000000"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir whose nac.db holds the OSV test advisories (DSA-5532-1: openssl)."""
    sync = pytest.importorskip("nac.prevention.sync")
    state = tmp_path_factory.mktemp("feeds")
    report = sync.import_path(state / "nac.db", DATA / "osv", "debian", "vendor")
    assert "DSA-5532-1" in report.added
    return state


def test_check_ok_and_bad() -> None:
    code, out, _ = run("policy", "check", str(SITE))
    assert code == 0 and "ok (policy 'test-site': 4 segments, 7 rules" in out
    bad = DATA / "policy" / "bad" / "bad_signature_age.toml"
    code, out, err = run("policy", "check", str(bad))
    assert code == 1
    assert err.startswith(f"{bad}: rules[2].max_signature_age: not a duration")


def test_show_round_trips_through_check(tmp_path: Path) -> None:
    code, out, _ = run("policy", "show", "--state-dir", str(tmp_path / "empty"))
    assert code == 0
    assert out == SAMPLE.read_text()  # the file itself, comments included
    site = tmp_path / "site.toml"
    site.write_text(out)
    assert run("policy", "check", str(site))[0] == 0
    assert load_policy(site) == Policy.sample()
    code, normalized, _ = run("policy", "show", "--normalized", "--state-dir", str(tmp_path))
    assert code == 0 and loads_policy(normalized) == Policy.sample()


def test_show_prints_the_configs_policy_file_first(tmp_path: Path) -> None:
    """`nac policy show --config` prints what `nac serve --config` enforces: the config's
    policy_file; without one, the policy applied to the state dir; without that, the sample."""
    state = tmp_path / "state"
    cfg = tmp_path / "nac.toml"
    cfg.write_text("")
    assert run("policy", "show", "--config", str(cfg), "--state-dir", str(state))[1] == (
        SAMPLE.read_text())
    assert run("policy", "apply", str(SITE), "--state-dir", str(state), "--wait", "0")[0] == 0
    applied = run("policy", "show", "--config", str(cfg), "--state-dir", str(state))[1]
    assert applied == SITE.read_text()
    own = tmp_path / "own.toml"
    own.write_text(SAMPLE.read_text().replace('name = "sample"', 'name = "from-config"'))
    cfg.write_text(f'policy_file = "{own}"\n')
    code, out, _ = run("policy", "show", "--config", str(cfg), "--state-dir", str(state))
    assert code == 0 and out == own.read_text()
    code, out, _ = run("policy", "show", "--normalized", "--config", str(cfg),
                       "--state-dir", str(state))
    assert code == 0 and loads_policy(out).name == "from-config"
    own.unlink()
    code, _, err = run("policy", "show", "--config", str(cfg), "--state-dir", str(state))
    assert code == 1 and str(own) in err


def test_apply_installs_atomically_and_show_prints_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out, _ = run("policy", "apply", str(SITE), "--state-dir", str(state))
    assert code == 0 and "the running server reloads it within a second" in out
    assert (state / "policy.toml").read_bytes() == SITE.read_bytes()
    assert [p.name for p in state.iterdir()] == ["policy.toml"]  # no temporary left behind
    assert run("policy", "show", "--state-dir", str(state))[1] == SITE.read_text()
    bad = DATA / "policy" / "bad" / "unknown_key.toml"
    code, _, err = run("policy", "apply", str(bad), "--state-dir", str(state))
    assert code == 1 and "requre_posture: unknown key" in err
    assert (state / "policy.toml").read_bytes() == SITE.read_bytes()  # left as it was


CASES = [
    # (policy, posture, role, segment, vlan, a reason that must appear)
    (SAMPLE, "debian12_compliant", None, "normal", 30, "compliant with policy 'sample'"),
    (SAMPLE, "forwarding_ipv4", None, "isolated", 20, "no-forwarding: forwarding on: IPv4"),
    (SAMPLE, "forwarding_ipv6", None, "isolated", 20, "no-forwarding: forwarding on: IPv6"),
    (SAMPLE, "no_posture", None, "quarantine", 10, "no posture reported"),
    (SAMPLE, "debian12_compliant", "guest", "quarantine", 10, "role 'guest' may reach at most"),
    (SITE, "old_signatures", None, "quarantine", 10, "antivirus: signatures are 200 h old"),
    (SITE, "denied_telnetd", None, "isolated", 20, "denied-software: denied software"),
    (SITE, "debian12_compliant", "contractor", "restricted", 40, "role 'contractor'"),
]


def _args(policy: Path, posture: str, role: str | None, state: Path) -> list[str]:
    args = ["policy", "test", str(policy), "--posture", str(POSTURES / f"{posture}.json")]
    args += ["--state-dir", str(state), "--now", NOW, "--json"]
    return args + (["--role", role] if role else [])


@pytest.mark.parametrize(("policy", "posture", "role", "segment", "vlan", "reason"), CASES)
def test_policy_test_json(
    tmp_path: Path,
    policy: Path,
    posture: str,
    role: str | None,
    segment: str,
    vlan: int,
    reason: str,
) -> None:
    code, out, _ = run(*_args(policy, posture, role, tmp_path))
    assert code == 0
    decision = json.loads(out)
    assert (decision["segment"], decision["vlan"]) == (segment, vlan)
    assert any(r.startswith(reason) for r in decision["reasons"]), decision["reasons"]
    assert isinstance(decision["remediation"], list)
    assert decision["expires"] > float(NOW)


def test_policy_test_text(tmp_path: Path) -> None:
    args = _args(SITE, "forwarding_ipv4", None, tmp_path)[:-1]  # without --json
    code, out, _ = run(*args)
    assert code == 0
    assert out.startswith("segment: isolated\nvlan: 20\nreasons:\n  - no-forwarding:")
    assert "remediation:\n  - Turn off IP forwarding" in out
    assert "  - Remediation servers: updates.example.org, av.example.org" in out


@pytest.mark.parametrize(
    ("posture", "segment", "vlan"),
    [
        ("debian12_openssl_vulnerable", "isolated", 20),
        ("debian12_openssl_fixed", "normal", 30),
    ],
)
def test_policy_test_with_real_feeds(feeds: Path, posture: str, segment: str, vlan: int) -> None:
    code, out, _ = run(*_args(SAMPLE, posture, None, feeds))
    assert code == 0
    decision = json.loads(out)
    assert (decision["segment"], decision["vlan"]) == (segment, vlan)
    assert decision["extra"]["feed_epoch"] == "1"
    if segment == "isolated":
        assert "openssl 3.0.11-1~deb12u1 (DSA-5532-1" in decision["reasons"][0]
        assert "fixed in 3.0.11-1~deb12u2" in decision["reasons"][0]


def _process_command() -> list[str]:
    """The installed console script when present, else the same entry point via -m."""
    return ["nac"] if shutil.which("nac") else [sys.executable, "-m", "nac.cli.main"]


@pytest.mark.parametrize(
    ("posture", "role", "segment"),
    [("debian12_compliant", None, "normal"), ("forwarding_ipv4", None, "isolated"),
     ("no_posture", None, "quarantine"), ("debian12_compliant", "guest", "quarantine")],
)  # fmt: skip
def test_policy_test_as_a_process(
    tmp_path: Path, posture: str, role: str | None, segment: str
) -> None:
    proc = subprocess.run(
        _process_command() + _args(SAMPLE, posture, role, tmp_path),
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["segment"] == segment


def test_console_script_check_exit_code() -> None:
    if not shutil.which("nac"):
        pytest.skip("the `nac` console script is not installed (pip install -e .)")
    bad = DATA / "policy" / "bad" / "vlan_out_of_range.toml"
    proc = subprocess.run(["nac", "policy", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{bad}: segments.quarantine.vlan:" in proc.stderr


def test_explain_without_store(tmp_path: Path) -> None:
    code, _, err = run("policy", "explain", "52:54:00:12:34:56", "--state-dir", str(tmp_path))
    assert code == 1 and "no store yet" in err


def test_explain_reads_the_last_decision(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("nac.store")
    events = pytest.importorskip("nac.events")
    store = store_mod.open_store(None, tmp_path)
    fixed = json.loads((POSTURES / "debian12_compliant.json").read_text())
    for segment, vlan, reasons, posture in [
        ("quarantine", 10, ("no posture reported",), None),
        ("isolated", 20, ("no-forwarding: forwarding on: IPv4 (major -> isolated)",), fixed),
    ]:
        store.record_decision(
            events.DecisionRecord(
                at=1_800_000_000.0, mac="52:54:00:12:34:56", segment=segment, vlan=vlan,
                source="posture", reasons=reasons, remediation=("Turn off IP forwarding.",),
                identity="alice", role="default", posture=posture,
            )
        )  # fmt: skip
    store.flush()
    store.close()
    code, out, _ = run("policy", "explain", "5254.0012.3456", "--state-dir", str(tmp_path))
    assert code == 0, out
    assert out.startswith("52:54:00:12:34:56: isolated (VLAN 20) by posture at")
    assert "  - no-forwarding: forwarding on: IPv4 (major -> isolated)" in out
    assert "  - Turn off IP forwarding." in out
    # The stored posture (since fixed) under today's policy: the sample, no feeds.
    assert "its last posture would now get:\nsegment: normal\nvlan: 30" in out
    code, out, _ = run(
        "policy", "explain", "52:54:00:12:34:56", "--json", "--state-dir", str(tmp_path)
    )
    assert json.loads(out)["current_policy"]["segment"] == "normal"
    code, out, _ = run("policy", "explain", "52:54:00:12:34:57", "--state-dir", str(tmp_path))
    assert code == 1


def test_apply_waits_for_running_servers(tmp_path: Path) -> None:
    runtime = pytest.importorskip("nac.runtime")
    state = tmp_path / "state"
    # This test process stands in for a server: it publishes what it enforces.
    runtime.publish_loaded(state, "an-older-policy")
    try:
        code, out, err = run(
            "policy", "apply", str(SITE), "--state-dir", str(state), "--wait", "0.3"
        )
        assert code == 1 and "only 0 of 1 server process(es) enforce it" in err
        runtime.publish_loaded(state, load_policy(SITE).digest)
        code, out, _ = run("policy", "apply", str(SITE), "--state-dir", str(state))
        assert code == 0 and "enforced by 1 server process(es)" in out
    finally:
        runtime.unpublish(state)


def test_posture_from_stdin_and_bad_posture(tmp_path: Path) -> None:
    doc = (POSTURES / "forwarding_ipv4.json").read_text()
    args = ["policy", "test", str(SAMPLE), "--posture", "-", "--json", "--state-dir", str(tmp_path)]
    result = CliRunner().invoke(cli, args, input=doc)
    assert result.exit_code == 0 and json.loads(result.stdout)["segment"] == "isolated"
    result = CliRunner().invoke(cli, args, input="{not json")
    assert result.exit_code == 1 and "-: not a JSON posture document" in result.stderr
    result = CliRunner().invoke(cli, args, input="[1, 2]")
    assert result.exit_code == 1 and "a posture document is a JSON object" in result.stderr
