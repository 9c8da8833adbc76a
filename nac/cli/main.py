"""Entry point of `nac`; command groups register themselves from their own modules.

A command's module is imported only when that command runs (or for the help listing), so
`nac feed import` does not pay for the server, the lab or the PKI: start-up is part of the
time between a new advisory and an isolated host (issue #7, scenario 4).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# Each module defines register(cli: click.Group) -> None; these are the names it adds.
COMMANDS = {
    "enforce": "nac.cli.enforce",
    "policy": "nac.cli.policy",
    "serve": "nac.cli.serve",
    "nodes": "nac.cli.nodes",
    "config": "nac.cli.config_cmd",
    "clients": "nac.cli.config_cmd",
    "pki": "nac.cli.pki",
    "feed": "nac.cli.feed",
    "store": "nac.cli.store",
    "lab": "nac.cli.lab",
}
COMMAND_MODULES = list(dict.fromkeys(COMMANDS.values()))


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | COMMANDS.keys())

    def get_command(self, ctx: click.Context, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name]).register(self)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quarantine-nac")
def cli() -> None:
    """Quarantine NAC: RADIUS/802.1X server, posture policy and switch enforcement."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
