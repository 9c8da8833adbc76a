"""`nac feed` commands end to end on a temporary state directory."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nac.cli import feed as feed_cli
from nac.prevention.index import load_index
from nac.prevention.sync import import_path

DATA = Path(__file__).parent / "data" / "osv"


def cli() -> click.Group:
    group = click.Group("nac")
    feed_cli.register(group)
    return group


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli(), list(args))
    return result.exit_code, result.output


def test_add_list_sync_withdraw(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    feed = tmp_path / "feed"
    shutil.copytree(DATA, feed)
    code, out = run("feed", "add", "osv", "--path", str(feed), "--trust", "vendor", *state)
    assert code == 0, out
    code, out = run("feed", "add", "osv", "--path", str(feed), *state)
    assert code == 1 and "already exists" in out
    code, out = run("feed", "add", "bad", *state)
    assert code == 1 and "exactly one of --url or --path" in out

    code, out = run("feed", "sync", *state)
    assert code == 0, out
    assert "added 3, updated 0, withdrawn 0, unchanged 0" in out and "epoch 1" in out

    rec = json.loads((feed / "DSA-5532-1.json").read_text())
    rec["withdrawn"] = rec["modified"] = "2024-06-01T00:00:00Z"
    (feed / "DSA-5532-1.json").write_text(json.dumps(rec))
    code, out = run("feed", "sync", "osv", *state)
    assert code == 0, out
    assert "added 0, updated 0, withdrawn 1, unchanged 2" in out and "epoch 2" in out

    code, out = run("feed", "list", *state)
    assert "epoch 2" in out
    assert "osv\tvendor\tunsigned" in out and "advisories=2 withdrawn=1" in out

    code, out = run("feed", "sync", "nope", *state)
    assert code == 1 and "no feed source named 'nope'" in out


def test_import_one_off(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    code, out = run(
        "feed", "import", str(DATA / "GHSA-j8r2-6x86-q33q.json"), "--state-dir", str(state_dir)
    )
    assert code == 0, out
    assert "added 1" in out
    idx = load_index(state_dir / "nac.db")
    found = idx.findings(
        {"packages": [{"name": "requests", "version": "2.28.1", "manager": "pip"}]}
    )
    assert [(f.advisory_id, f.source, f.trust) for f in found] == [
        ("GHSA-j8r2-6x86-q33q", "local", "local")
    ]


def test_progress_bar_only_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import_path(tmp_path / "a.db", DATA, progress=True)
    assert capsys.readouterr().err == ""  # not a TTY: no bar in logs
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    import_path(tmp_path / "b.db", DATA, progress=True)
    err = capsys.readouterr().err
    assert "local" in err and "100%" in err


def test_remove_source_retracts(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    code, out = run(
        "feed", "import", str(DATA), "--source", "mirror", "--trust", "community", *state
    )
    assert code == 0 and "epoch 1" in out
    code, out = run("feed", "remove", "mirror", *state)
    assert code == 0, out
    assert "removed mirror: 3 advisories retracted; epoch 2" in out
    idx = load_index(tmp_path / "state" / "nac.db")
    assert idx.epoch == 2 and idx.advisory_count == 0
    code, out = run("feed", "remove", "mirror", *state)
    assert code == 1 and "no feed source named 'mirror'" in out
