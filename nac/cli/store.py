"""`nac store`: schema version and migrations, row counts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import click

from nac.cli.common import fail, state_dir_option, store_option
from nac.cli.output import dump_json, table
from nac.store import migrations as m


def _target(store_url: str | None, state_dir: Path) -> tuple[str, str]:
    """(backend, location): a SQLite path or a PostgreSQL URL."""
    if store_url is None:
        return "sqlite", str(state_dir / "nac.db")
    if store_url.startswith("sqlite:///"):
        return "sqlite", store_url[len("sqlite:///"):]
    if store_url.startswith(("postgresql://", "postgres://")):
        return "postgresql", store_url
    fail(f"unknown store URL {store_url!r}: expected sqlite:///PATH or postgresql://...")
    raise AssertionError  # unreachable: fail() exits


def _pg_connect(url: str) -> Any:
    import psycopg

    from nac.store.postgres import redact

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        fail(f"cannot reach the store {redact(url)}: {str(exc).strip()}")


def open_store_or_fail(store_url: str | None, state_dir: Path) -> Any:
    """open_store for CLI commands: an unreachable or unmigrated store is a one-line error
    (exit 1), not a traceback."""
    from nac.store import open_store

    try:
        return open_store(store_url, state_dir)
    except (ValueError, OSError) as exc:  # SchemaError is a ValueError, ConnectionError OSError
        fail(str(exc))


@click.group("store")
def store() -> None:
    """The store's schema: version, migrations, row counts."""


@store.command("migrate")
@state_dir_option
@store_option
@click.option("--to", "target", type=int, default=None,
              help="Stop at this schema version (default: the newest).")
def migrate(state_dir: Path, store_url: str | None, target: int | None) -> None:
    """Apply pending schema migrations and print the version.

    Run it once per upgrade for a PostgreSQL store (servers refuse an older schema); a
    SQLite store also migrates by itself when a server opens it.
    """
    backend, where = _target(store_url, state_dir)
    newest = m.latest(backend)
    if target is not None and not 1 <= target <= newest:
        fail(f"--to must be between 1 and {newest}")
    try:
        if backend == "sqlite":
            Path(where).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(where, timeout=30.0)
            try:
                before, after = m.migrate_sqlite(conn, target)
            finally:
                conn.close()
            label = f"sqlite:///{where}"
        else:
            from nac.store.postgres import redact

            with _pg_connect(where) as conn:
                before, after = m.migrate_postgres(conn, target)
            label = redact(where)
    except m.SchemaError as exc:
        fail(str(exc))
        return
    if before == after:
        click.echo(f"{label}: schema version {after} (up to date)")
    else:
        click.echo(f"{label}: schema version {before} -> {after}")


@store.command("info")
@state_dir_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(state_dir: Path, store_url: str | None, as_json: bool) -> None:
    """Backend, schema version and row counts (reads only; migrates nothing)."""
    backend, where = _target(store_url, state_dir)
    if backend == "sqlite":
        if not Path(where).exists():
            fail(f"no store at {where} (has the server run? `nac store migrate` creates it)")
        conn = sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=30.0)
        try:
            version, counts = m.sqlite_version(conn), m.table_counts_sqlite(conn)
        finally:
            conn.close()
        label = f"sqlite:///{where}"
    else:
        from nac.store.postgres import redact

        with _pg_connect(where) as conn:
            version, counts = m.postgres_version(conn), m.table_counts_postgres(conn)
        label = redact(where)
    newest = m.latest(backend)
    doc = {"backend": backend, "store": label, "schema_version": version,
           "latest_version": newest, "up_to_date": version == newest, "rows": counts}
    if as_json:
        dump_json(doc)
        return
    click.echo(f"Backend:        {backend}")
    click.echo(f"Store:          {label}")
    state = "up to date" if version == newest else (
        "run `nac store migrate`" if version < newest else "newer than this nac")
    click.echo(f"Schema version: {version} (this nac: {newest}; {state})")
    click.echo("")
    table(sorted(counts.items()), ["table", "rows"])


def register(cli: click.Group) -> None:
    cli.add_command(store)
