"""`nac-agent`: collect posture, show the last assessment, install the IMC, watch the host."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from . import state
from .collectors import collect_posture
from .hostroot import HostRoot
from .summary import posture_summary, status_summary


def _collect(token: str | None = None) -> dict[str, Any]:
    return collect_posture(HostRoot.from_env(), certificate_token=token)


def _last_token() -> str | None:
    cert = (state.load() or {}).get("certificate")
    return cert.get("token") if isinstance(cert, dict) else None


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def main(verbose: bool) -> None:
    """Quarantine inspection agent: reports this host's posture to the NAC server."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, force=True,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the posture document (JSON).")
def collect(as_json: bool) -> None:
    """Collect this host's posture (NAC_AGENT_ROOT=DIR reads an image instead)."""
    doc = _collect(_last_token())
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=False))
    else:
        click.echo(posture_summary(doc))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the state file as JSON.")
def status(as_json: bool) -> None:
    """Show the last assessment, recommendation and remediation the server sent."""
    path = state.state_path()
    data = state.load(path)
    if data is None:
        click.echo(f"No assessment yet: {path} does not exist or is unreadable. "
                   "It is written when the agent takes part in an 802.1X posture check.")
        sys.exit(1)
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else status_summary(data))


@main.command()
@click.option("--tnc-config", type=click.Path(path_type=Path), default="/etc/tnc_config",
              show_default=True, help="The TNC configuration file wpa_supplicant reads.")
@click.option("--prefix", type=click.Path(path_type=Path), default="/usr/local",
              show_default=True, help="The library goes to PREFIX/lib/nac-agent/.")
@click.option("--command", "agent_cmd", default=None,
              help="Shell command the plug-in runs (default: this Python's `-m eap_ext.agent"
                   " imc`).")
def install(tnc_config: Path, prefix: Path, agent_cmd: str | None) -> None:
    """Build the IF-IMC plug-in and register it in the TNC configuration (idempotent)."""
    from .imc.install import InstallError
    from .imc.install import install as do_install

    try:
        result = do_install(prefix, tnc_config, agent_cmd)
    except (InstallError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"built {result.library}")
    click.echo(f"{'registered in' if result.config_changed else 'already in'} "
               f"{result.tnc_config}")
    click.echo("wpa_supplicant.conf needs fast_reauth=0 for `nac-agent watch` to re-run the "
               "posture check (EAP-TTLS + EAP-TNC).")


@main.command()
@click.option("-i", "--interface", required=True, help="Interface wpa_supplicant controls.")
@click.option("-p", "--ctrl-dir", default=None, help="wpa_supplicant control socket dir.")
@click.option("--wpa-cli", default="wpa_cli", show_default=True)
@click.option("--interval", type=float, default=10.0, show_default=True,
              help="Seconds between checks.")
@click.option("--max-checks", type=int, default=None, help="Stop after N checks (tests).")
@click.option("--trigger", default=None,
              help="Shell command to run instead of `wpa_cli reauthenticate` (tests).")
def watch(interface: str, ctrl_dir: str | None, wpa_cli: str, interval: float,
          max_checks: int | None, trigger: str | None) -> None:
    """Re-authenticate when packages or security settings change (host-type monitor).

    Without a wpa_supplicant control socket for the interface, an EAPOL-Start is sent
    instead, so the authenticator restarts 802.1X on the port.
    """
    from .watch import reauth_runner, run_command, wpa_cli_command
    from .watch import watch as do_watch

    if trigger:
        argv, runner = ["/bin/sh", "-c", trigger], run_command
    else:
        argv = wpa_cli_command(interface, ctrl_dir, wpa_cli)
        runner = reauth_runner(interface, ctrl_dir, wpa_cli)
    from .collectors import updates

    count = do_watch(argv, interval=interval, max_checks=max_checks, runner=runner,
                     prepare=lambda: updates.collect(HostRoot.from_env()),
                     on_trigger=lambda code: click.echo(f"re-authentication requested "
                                                        f"(exit {code})"))
    click.echo(f"{count} re-authentication(s) requested")


@main.command(hidden=True)
def imc() -> None:
    """Speak the IF-IMC shim's framing on stdin/stdout (run by nac_imc.so)."""
    from .imc.relay import ImcAgent, run_stdio

    run_stdio(ImcAgent(_collect))


if __name__ == "__main__":
    main()
