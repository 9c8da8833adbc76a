"""Entry point of `nac`; command groups register themselves from their own modules."""

from __future__ import annotations

import importlib

import click

# Each module defines register(cli: click.Group) -> None.
COMMAND_MODULES = [
    "nac.cli.enforce",
    "nac.cli.policy",
    "nac.cli.serve",
    "nac.cli.nodes",
    "nac.cli.config_cmd",
    "nac.cli.pki",
    "nac.cli.feed",
    "nac.cli.store",
    "nac.cli.lab",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quarantine-nac")
def cli() -> None:
    """Quarantine NAC: RADIUS/802.1X server, posture policy and switch enforcement."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
