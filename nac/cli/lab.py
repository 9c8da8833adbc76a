"""`nac lab ...`: the end-to-end lab in network namespaces (root only); see nac/lab/README.md."""

from __future__ import annotations

from pathlib import Path

import click

from nac.cli.common import fail
from nac.lab import SCENARIO_NAMES

DIR_HELP = "Lab directory: configs, logs, the lab server's state and lab.json."


def _dir_option(func):  # type: ignore[no-untyped-def]
    return click.option("--dir", "lab_dir", type=click.Path(file_okay=False, path_type=Path),
                        default="/tmp/nac-lab", show_default=True, envvar="NAC_LAB_DIR",
                        help=DIR_HELP)(func)


@click.group()
def lab() -> None:
    """End-to-end lab: a namespace switch, 802.1X hosts and a `nac serve` (root only)."""


@lab.command("up")
@_dir_option
@click.option("--enforcer", type=click.Choice(["ssh", "snmp"]), default="ssh",
              show_default=True, help="How the server sets the switch's port VLANs.")
def up_cmd(lab_dir: Path, enforcer: str) -> None:
    """Build the switch, hosts, servers and the lab's `nac serve`."""
    from nac.lab import topology

    try:
        topology.up(lab_dir, enforcer=enforcer, say=click.echo)
    except topology.LabError as exc:
        fail(str(exc))
        return
    click.echo(f"lab up in {lab_dir}; try `nac lab run all`, then `nac lab down`")


@lab.command("down")
@_dir_option
def down_cmd(lab_dir: Path) -> None:
    """Stop every lab process, delete the namespaces and veths."""
    from nac.lab import topology

    removed = topology.down(lab_dir)
    click.echo(f"removed {len(removed)} item(s)" if removed else f"no lab in {lab_dir}")
    for item in removed:
        click.echo(f"  {item}")


@lab.command("status")
@_dir_option
def status_cmd(lab_dir: Path) -> None:
    """What runs: processes, hosts, ports and their VLANs now."""
    from nac.lab import topology

    try:
        for line in topology.status(lab_dir):
            click.echo(line)
    except topology.LabError as exc:
        fail(str(exc))


@lab.command("run")
@click.argument("scenario", type=click.Choice([*SCENARIO_NAMES, "all"]))
@_dir_option
@click.option("--keep", is_flag=True,
              help="Leave a lab this command built up afterwards (a lab that was already "
                   "up is always left up).")
@click.option("--enforcer", type=click.Choice(["ssh", "snmp"]), default="ssh",
              show_default=True, help="For a lab this command builds.")
def run_cmd(scenario: str, lab_dir: Path, keep: bool, enforcer: str) -> None:
    """Run SCENARIO (or all of them) and tell what happens, step by step."""
    from nac.lab import scenarios, topology
    from nac.lab.story import ScenarioFailed

    built = False
    try:
        if (lab_dir / "lab.json").exists():
            the_lab = topology.Lab.load(lab_dir)
        else:
            click.echo(f"no lab in {lab_dir}: building one")
            the_lab = topology.up(lab_dir, enforcer=enforcer, say=click.echo)
            built = True
    except topology.LabError as exc:
        fail(str(exc))
        return
    names = list(scenarios.SCENARIOS) if scenario == "all" else [scenario]
    failed: list[str] = []
    try:
        for name in names:
            try:
                story = scenarios.run(the_lab, name, out=click.echo)
            except ScenarioFailed as exc:
                click.echo(f"!! scenario {name} failed: {exc}")
                failed.append(name)
                continue
            if story.timings:
                click.echo("   timings: " + ", ".join(f"{k} {v:.2f} s"
                                                      for k, v in story.timings.items()))
    finally:
        if built and not keep:
            topology.down(lab_dir)
            click.echo(f"lab in {lab_dir} taken down (--keep leaves it up)")
    if failed:
        fail(f"{len(failed)} scenario(s) failed: {', '.join(failed)}")
    click.echo(f"{len(names)} scenario(s) passed")


def register(cli: click.Group) -> None:
    cli.add_command(lab)
