"""`nac config check` and `nac clients list`."""

from __future__ import annotations

from pathlib import Path

import click

from nac.cli.common import fail
from nac.cli.output import dump_json, table
from nac.config import ConfigError, embedded, load_config


@click.group("config")
def config() -> None:
    """Server configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate FILE; exit 1 with every error (file, key, reason)."""
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    click.echo(f"{file}: OK ({len(cfg.clients)} client(s), {len(cfg.accounts)} account(s))")


@click.group("clients")
def clients() -> None:
    """NAS clients (switches, access points)."""


@clients.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def list_clients(config_path: Path | None, as_json: bool) -> None:
    """The NAS clients of the configuration (secrets are never printed)."""
    try:
        cfg = load_config(config_path) if config_path else embedded()
    except ConfigError as exc:
        fail(str(exc))
        return
    rows = [c.model_dump(exclude={"secret"}) for c in cfg.clients]
    if as_json:
        dump_json(rows)
        return
    table([(r["name"], r["address"], r["vendor"], r["group"],
            "required" if r["require_message_authenticator"] else "OPTIONAL (BlastRADIUS risk)")
           for r in rows], ["name", "address", "vendor", "group", "message-authenticator"])


def register(cli: click.Group) -> None:
    cli.add_command(config)
    cli.add_command(clients)
