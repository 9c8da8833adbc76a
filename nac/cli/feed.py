"""`nac feed ...`: prevention-information sources (OSV feeds), sync, import and signing keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click

from nac.cli.common import fail, state_dir_option, store_option
from nac.prevention import cache
from nac.prevention.cache import FeedSource
from nac.prevention.fetch import FeedError
from nac.prevention.signing import SignatureError, generate_keypair, load_public_key, sign_file
from nac.prevention.sync import SyncReport, import_path, remove_source, sync


def _print_report(report: SyncReport) -> None:
    for name in report.not_modified:
        click.echo(f"{name}: not modified")
    click.echo(
        f"added {len(report.added)}, updated {len(report.updated)}, "
        f"withdrawn {len(report.withdrawn)}, unchanged {report.unchanged}, "
        f"stale {report.stale}, invalid {len(report.invalid)}; epoch {report.epoch}"
    )
    for msg in report.invalid[:20]:
        click.echo(f"warning: skipped {msg}", err=True)
    if len(report.invalid) > 20:
        click.echo(f"warning: ... and {len(report.invalid) - 20} more", err=True)
    for msg in report.errors:
        click.echo(f"error: {msg}", err=True)


@click.group("feed")
def feed() -> None:
    """Prevention information: OSV advisory feeds (draft section 7)."""


@feed.command("add")
@click.argument("name")
@click.option("--url", help="HTTPS URL of an OSV JSON file or all.zip (polled with ETag).")
@click.option(
    "--path",
    "path",
    type=click.Path(exists=True, path_type=Path),
    help="Local OSV file, directory of JSON files, or all.zip.",
)
@click.option(
    "--trust",
    type=click.Choice(cache.TRUST_LEVELS),
    default="community",
    show_default=True,
    help="Who stands behind the source (draft 7.4).",
)
@click.option(
    "--pubkey",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ed25519 public key (PEM): every feed file must carry a valid FILE.sig.",
)
@click.option(
    "--cafile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra CA certificates for an HTTPS source.",
)
@state_dir_option
def add(
    name: str,
    url: str | None,
    path: Path | None,
    trust: str,
    pubkey: Path | None,
    cafile: Path | None,
    state_dir: Path,
) -> None:
    """Add feed source NAME."""
    if (url is None) == (path is None):
        fail("give exactly one of --url or --path")
    pem = None
    if pubkey is not None:
        pem = pubkey.read_text()
        try:
            load_public_key(pem)
        except SignatureError as exc:
            fail(f"{pubkey}: {exc}")
    src = FeedSource(
        name=name,
        url=url,
        path=str(path.resolve()) if path else None,
        trust=trust,
        pubkey=pem,
        cafile=str(cafile.resolve()) if cafile else None,
        etag=None,
        last_modified=None,
        last_sync=None,
    )
    with cache.opened(cache.db_path_for(state_dir)) as conn:
        try:
            cache.add_source(conn, src)
        except sqlite3.IntegrityError:
            fail(f"a feed source named {name!r} already exists")
        except ValueError as exc:
            fail(str(exc))
    click.echo(f"added feed source {name}")


@feed.command("list")
@state_dir_option
def list_cmd(state_dir: Path) -> None:
    """List feed sources, their trust, signing and last sync."""
    with cache.opened(cache.db_path_for(state_dir)) as conn:
        sources = cache.list_sources(conn)
        counts = cache.advisory_counts(conn)
        epoch = cache.get_epoch(conn)
    click.echo(f"epoch {epoch}")
    for s in sources:
        active, withdrawn = counts.get(s.name, (0, 0))
        where = s.url or s.path or "(imports only)"
        signed = "signed" if s.pubkey else "unsigned"
        click.echo(
            f"{s.name}\t{s.trust}\t{signed}\t{where}\tadvisories={active}"
            f" withdrawn={withdrawn}\tlast_sync={s.last_sync or 'never'}"
        )


def _reevaluate(report: SyncReport, state_dir: Path, config_path: Path | None,
                store_url: str | None = None) -> None:
    """A feed change re-checks every inspected node (draft 6.4.2) and says who moved."""
    if not report.changed:
        return
    from nac.config import ConfigError
    from nac.reevaluate import after_change

    try:
        result = after_change(state_dir, "feed", config_path=config_path, store_url=store_url)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
        return
    click.echo(result.summary())
    for ch in result.changes:
        why = next((r for r in ch.reasons[1:] if "->" in r), ch.reasons[-1])
        job = f", job {ch.job}" if ch.job else ""
        click.echo(f"  {ch.mac}: {ch.old_segment or '-'} -> {ch.new_segment} "
                   f"(VLAN {ch.vlan}{job}): {why}")


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Server config: its switch inventory gets the enforcement jobs.")


@feed.command("sync")
@click.argument("name", required=False)
@state_dir_option
@store_option
@config_option
def sync_cmd(name: str | None, state_dir: Path, store_url: str | None,
             config_path: Path | None) -> None:
    """Fetch, verify and import NAME (default: every source), then re-evaluate nodes."""
    try:
        report = sync(cache.db_path_for(state_dir), name, progress=True)
    except FeedError as exc:
        fail(str(exc))
        return
    _print_report(report)
    _reevaluate(report, state_dir, config_path, store_url)
    if report.errors:
        raise SystemExit(1)


@feed.command("remove")
@click.argument("name")
@state_dir_option
@store_option
@config_option
def remove_cmd(name: str, state_dir: Path, store_url: str | None,
               config_path: Path | None) -> None:
    """Remove source NAME and retract its advisories, then re-evaluate nodes."""
    try:
        report = remove_source(cache.db_path_for(state_dir), name)
    except FeedError as exc:
        fail(str(exc))
        return
    click.echo(
        f"removed {name}: {len(report.withdrawn)} advisories retracted; epoch {report.epoch}"
    )
    _reevaluate(report, state_dir, config_path, store_url)


@feed.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--source", "source_name", default="local", show_default=True)
@click.option("--trust", type=click.Choice(cache.TRUST_LEVELS), default="local", show_default=True)
@state_dir_option
@store_option
@config_option
def import_cmd(path: Path, source_name: str, trust: str, state_dir: Path,
               store_url: str | None, config_path: Path | None) -> None:
    """One-off import of a local OSV file, directory or zip, then re-evaluate nodes."""
    try:
        report = import_path(cache.db_path_for(state_dir), path, source_name, trust, progress=True)
    except (FeedError, ValueError) as exc:
        fail(str(exc))
        return
    _print_report(report)
    _reevaluate(report, state_dir, config_path, store_url)


@feed.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def keygen(out_dir: Path) -> None:
    """Create an Ed25519 key pair for signing feeds."""
    try:
        priv, pub = generate_keypair(out_dir)
    except FileExistsError:
        fail(f"{out_dir} already holds a signing key; not overwriting it")
        return
    click.echo(f"private key: {priv}\npublic key:  {pub}")


@feed.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, path_type=Path))
def sign(file: Path, key_path: Path) -> None:
    """Write FILE.sig, the base64 Ed25519 signature of FILE."""
    try:
        sig = sign_file(file, key_path)
    except (SignatureError, ValueError) as exc:
        fail(f"{key_path}: {exc}")
        return
    click.echo(f"wrote {sig}")


def register(cli: click.Group) -> None:
    cli.add_command(feed)
