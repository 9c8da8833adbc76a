"""Signed feeds (draft 9.7): Ed25519 detached signatures, verified before anything is imported."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nac.cli import feed as feed_cli
from nac.prevention import cache
from nac.prevention.cache import FeedSource
from nac.prevention.fetch import FeedError
from nac.prevention.index import load_index
from nac.prevention.signing import generate_keypair, sign_file
from nac.prevention.sync import import_path, sync

DATA = Path(__file__).parent / "data" / "osv"


def cli() -> click.Group:
    group = click.Group("nac")
    feed_cli.register(group)
    return group


def add_signed_source(db: Path, name: str, path: Path, pub: Path) -> None:
    with cache.opened(db) as conn:
        cache.add_source(
            conn,
            FeedSource(name, None, str(path), "vendor", pub.read_text(), None, None, None, None),
        )


def test_signed_file_ok_and_flipped_byte_rejected(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    assert priv.stat().st_mode & 0o777 == 0o600
    feed = tmp_path / "dsa.json"
    shutil.copy(DATA / "DSA-5532-1.json", feed)
    sign_file(feed, priv)
    db = tmp_path / "nac.db"
    add_signed_source(db, "debian", feed, pub)

    report = sync(db, "debian")
    assert report.errors == [] and report.added == ["DSA-5532-1"]

    # One flipped byte: the whole source is refused, nothing is imported, the error names both.
    data = bytearray(feed.read_bytes())
    i = data.index(b"3.0.11-1~deb12u2")
    data[i] ^= 0x01
    feed.write_bytes(bytes(data))
    epoch = load_index(db).epoch
    with pytest.raises(FeedError) as err:
        sync_strict(db, "debian")
    assert "debian" in str(err.value) and str(feed) in str(err.value)
    assert "signature does not verify" in str(err.value)
    assert load_index(db).epoch == epoch


def sync_strict(db: Path, name: str) -> None:
    report = sync(db, name)
    if report.errors:
        raise FeedError("; ".join(report.errors))


def test_missing_signature_rejected(tmp_path: Path) -> None:
    _, pub = generate_keypair(tmp_path / "keys")
    feed = tmp_path / "feed"
    shutil.copytree(DATA, feed)
    db = tmp_path / "nac.db"
    add_signed_source(db, "dir", feed, pub)
    report = sync(db, "dir")
    assert report.added == []
    assert len(report.errors) == 1 and "signature file missing" in report.errors[0]
    assert "source dir" in report.errors[0]


def test_signature_by_another_key_rejected(tmp_path: Path) -> None:
    _, pub = generate_keypair(tmp_path / "trusted")
    other, _ = generate_keypair(tmp_path / "other")
    feed = tmp_path / "dsa.json"
    shutil.copy(DATA / "DSA-5532-1.json", feed)
    sign_file(feed, other)
    db = tmp_path / "nac.db"
    add_signed_source(db, "debian", feed, pub)
    assert sync(db, "debian").errors


def test_import_into_signed_source_checks_signature(tmp_path: Path) -> None:
    _, pub = generate_keypair(tmp_path / "keys")
    db = tmp_path / "nac.db"
    add_signed_source(db, "debian", DATA, pub)
    with pytest.raises(FeedError, match="signature file missing"):
        import_path(db, DATA / "DSA-5532-1.json", "debian")


def test_cli_keygen_sign_add_sync_and_tamper(tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "state"
    keys = tmp_path / "keys"
    r = runner.invoke(cli(), ["feed", "keygen", "--out", str(keys)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli(), ["feed", "keygen", "--out", str(keys)])
    assert r.exit_code == 1 and "not overwriting" in r.output

    feed = tmp_path / "feed.json"
    shutil.copy(DATA / "GHSA-35jh-r3h4-6jhm.json", feed)
    r = runner.invoke(cli(), ["feed", "sign", str(feed), "--key", str(keys / "feed-signing.key")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "feed.json.sig").is_file()

    pub = keys / "feed-signing.pub"
    args = ["--state-dir", str(state)]
    r = runner.invoke(
        cli(),
        ["feed", "add", "npm-feed", "--path", str(feed), "--trust", "vendor", "--pubkey", str(pub)]
        + args,
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli(), ["feed", "sync", "npm-feed"] + args)
    assert r.exit_code == 0, r.output
    assert "added 1, updated 0, withdrawn 0" in r.output

    r = runner.invoke(cli(), ["feed", "list"] + args)
    assert "npm-feed\tvendor\tsigned" in r.output and "advisories=1" in r.output

    data = bytearray(feed.read_bytes())
    data[10] ^= 0x20
    feed.write_bytes(bytes(data))
    r = runner.invoke(cli(), ["feed", "sync", "npm-feed"] + args)
    assert r.exit_code == 1
    assert f"error: source npm-feed: {feed}: signature does not verify" in r.output
