"""`nac enforce ...`: queue and inspect switch enforcement jobs.

The queue lives in STATE/nac.db (table ``enforcement_jobs``), or in the store named by
``--store`` (sqlite:///PATH, or postgresql://... once `nac store migrate` ran); the switch
inventory comes
from ``--config FILE`` (env NAC_CONFIG), a TOML file whose ``[[switches]]`` tables are
``enforcers.inventory.Switch`` entries. Other top-level keys are ignored, so the server's
own config file works too. Keys of one ``[[switches]]`` table:

    name = "access-1"                 # unique; used on the command line
    address = "192.0.2.10"            # management address (SNMP, SSH, and CoA by default)
    driver = "snmp"                   # snmp | ssh-linux-bridge | ssh-cisco-ios | coa
    vendor = "generic"                # generic | cisco | linux ... (vendor flavours)
    snmp_vlan_mib = "auto"            # auto | qbridge | qbridge-static | cisco-vmvlan
    bounce_after_vlan = true          # bounce the port after a VLAN change by SNMP/SSH
    bounce_down_seconds = 1.0

    [switches.snmp]                   # v2c:  version = "2c", community = "..."
    version = "3"                     # v3:   user, auth_protocol (SHA...), auth_key,
    user = "nac"                      #       priv_protocol (AES...), priv_key, context
    auth_key = "..."                  # both: port = 161, timeout = 2.0, retries = 1
    priv_key = "..."

    [switches.ssh]                    # username, password and/or key_file,
    username = "nac"                  # enable_secret (Cisco), port = 22, timeout = 10
    key_file = "/etc/nac/id_ed25519"

    [switches.coa]                    # present = the switch takes RFC 5176 CoA
    secret = "..."                    # address (default: switch address), port = 3799,
    flavour = "generic"               # timeout = 1.0, retries = 2, generic | cisco,
    vlan_method = "coa-vlan"          # coa-vlan | reauthenticate | disconnect | none,
                                      # nas_ip, nas_identifier, event_timestamp = true

    [switches.linux_bridge]           # ssh-linux-bridge only
    vlan_mode = "filtering"           # filtering | bridge-per-vlan
    bridge = "br0"
    vlan_bridge_pattern = "vl{vlan}"
    use_sudo = false

    [switches.ports]                  # RADIUS NAS-Port / NAS-Port-Id -> name, ifIndex
    name_pattern = "GigabitEthernet1/0/{nas_port}"
    ifindex_pattern = "nas_port + 10100"
    base_port_pattern = "nas_port"    # dot1dBasePort for Q-BRIDGE-MIB (default: ifIndex)
    nas_port_id_is_name = true
    [[switches.ports.table]]          # explicit rows win over patterns
    name = "swp1"
    ifindex = 3
    nas_port = 1
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from nac.cli.common import fail, state_dir_option, store_option

if TYPE_CHECKING:
    from enforcers.enforcer import Enforcer


def _load_inventory(config: Path | None):  # noqa: ANN202 - lazy imports keep CLI start fast
    from enforcers.inventory import Inventory

    if config is None:
        return Inventory()
    try:
        data = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        fail(f"{config}: {exc}")
    try:
        return Inventory.model_validate({"switches": data.get("switches", [])})
    except ValidationError as exc:
        fail(f"{config}: {exc}")
    raise AssertionError  # unreachable: fail() exits


def _queue(state_dir: Path, store_url: str | None = None):  # noqa: ANN202
    """The queue in the store: STATE/nac.db by default, sqlite:///PATH, or PostgreSQL.

    Closed when the command ends (a PostgreSQL pool must not be left to the GC)."""
    queue = _open_queue(state_dir, store_url)
    click.get_current_context().call_on_close(queue.close)
    return queue


def _open_queue(state_dir: Path, store_url: str | None):  # noqa: ANN202
    from enforcers.wake import announce_on
    from nac.enforcement import open_queue
    from nac.store.migrations import SchemaError

    try:
        queue = open_queue(store_url, state_dir)
    except (SchemaError, ValueError) as exc:
        fail(str(exc))
        raise AssertionError from None  # unreachable: fail() exits
    announce_on(queue)  # a job queued here starts at once in the running server
    return queue


def _config_option(func):  # noqa: ANN001, ANN202
    return click.option(
        "--config", "config", type=click.Path(dir_okay=False, path_type=Path),
        default=lambda: os.environ.get("NAC_CONFIG"),
        help="TOML file with [[switches]] tables (env NAC_CONFIG).")(func)


def _wait_option(func):  # noqa: ANN001, ANN202
    return click.option(
        "--wait/--no-wait", default=True, show_default=True,
        help="Work the queue from this process until the job is done, dead or --timeout "
             "(other due jobs are applied meanwhile); --no-wait only queues it for the "
             "server's worker.")(func)


def _apply_now(inv, queue, job_id: int, timeout: float) -> None:  # noqa: ANN001
    from enforcers.enforcer import Enforcer

    enf = Enforcer(inv.switches, queue)

    async def go() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(enf.run(stop))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = queue.get(job_id)
            if job is None or job.state in ("done", "dead", "superseded"):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await runner
        await enf.close()

    asyncio.run(go())
    job = queue.get(job_id)
    assert job is not None
    if job.state == "done":
        click.echo(f"job {job.id} done: {job.result} ({(job.latency or 0) * 1000:.0f} ms "
                   "from decision to applied)")
    elif job.state == "dead":
        fail(f"job {job.id} dead after {job.attempts} attempt(s): {job.last_error}")
    else:
        click.echo(f"job {job.id} {job.state} after {job.attempts} attempt(s)"
                   + (f": {job.last_error}" if job.last_error else "")
                   + " (left in the queue)")


def _submit(inv, queue, queue_it: Callable[[Enforcer], int], what: str,  # noqa: ANN001
            wait: bool, timeout: float) -> None:
    """Queue one job through an Enforcer; a refusal (unknown switch or port) is a clean error."""
    from enforcers.base import DriverError
    from enforcers.enforcer import Enforcer

    try:
        job_id = queue_it(Enforcer(inv.switches, queue))
    except DriverError as exc:
        fail(str(exc))
        return
    click.echo(f"queued job {job_id}: {what}")
    if wait:
        _apply_now(inv, queue, job_id, timeout)


@click.group("enforce")
def enforce() -> None:
    """Queue and inspect enforcement jobs (VLAN changes, re-authentication) for switches."""


@enforce.command("set-vlan")
@click.argument("switch")
@click.argument("port")
@click.argument("vlan", type=click.IntRange(1, 4094))
@click.option("--mac", default=None, help="MAC of the host on the port (enables CoA first).")
@click.option("--session", "session_id", default=None, help="Acct-Session-Id of the session.")
@click.option("--reason", default="admin", show_default=True)
@click.option("--timeout", type=float, default=30.0, show_default=True)
@_wait_option
@_config_option
@state_dir_option
@store_option
def set_vlan(switch: str, port: str, vlan: int, mac: str | None, session_id: str | None,
             reason: str, timeout: float, wait: bool, config: Path | None,
             state_dir: Path, store_url: str | None) -> None:
    """Put PORT of SWITCH in VLAN (PORT: interface name, or NAS-Port number)."""

    nas_port = int(port) if port.isdigit() else None

    def queue_it(enf: Enforcer) -> int:
        if nas_port is not None:
            return enf.set_vlan(switch, None, vlan, nas_port=nas_port, mac=mac,
                                session_id=session_id, reason=reason)
        return enf.set_vlan(switch, port, vlan, mac=mac, session_id=session_id, reason=reason)

    _submit(_load_inventory(config), _queue(state_dir, store_url), queue_it,
            f"{switch} {port} -> VLAN {vlan}", wait, timeout)


@enforce.command("reauth")
@click.argument("mac")
@click.option("--switch", default=None,
              help="Switch holding the session (default: the only CoA-capable switch).")
@click.option("--session", "session_id", default=None)
@click.option("--port", default=None, help="Port to bounce if CoA is refused.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@_wait_option
@_config_option
@state_dir_option
@store_option
def reauth(mac: str, switch: str | None, session_id: str | None, port: str | None,
           timeout: float, wait: bool, config: Path | None, state_dir: Path,
           store_url: str | None) -> None:
    """Make the switch re-authenticate the host MAC (CoA, or a port bounce)."""
    inv = _load_inventory(config)
    if switch is None:
        coa = [s.name for s in inv.switches if s.coa is not None]
        if len(coa) != 1:
            fail("give --switch (the inventory has "
                 f"{len(coa)} CoA-capable switches)")
        switch = coa[0]
    chosen = switch
    _submit(inv, _queue(state_dir, store_url),
            lambda enf: enf.reauth(chosen, mac=mac, session_id=session_id, port=port),
            f"re-authenticate {mac} on {switch}", wait, timeout)


@enforce.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--state", "states", multiple=True,
              type=click.Choice(["pending", "claimed", "done", "dead", "superseded"]))
@click.option("--limit", type=int, default=100, show_default=True)
@state_dir_option
@store_option
def list_jobs(as_json: bool, states: tuple[str, ...], limit: int, state_dir: Path,
              store_url: str | None) -> None:
    """List enforcement jobs, newest first."""
    from nac.cli.output import dump_json, fmt_time, table

    jobs = _queue(state_dir, store_url).list_jobs(states or None, limit)
    if as_json:
        dump_json([j.as_dict() for j in jobs])
        return
    rows = [(j.id, j.kind, j.switch, j.port or "-", j.vlan, j.mac, j.state, j.attempts,
             fmt_time(j.decided_at),
             f"{j.latency * 1000:.0f}ms" if j.latency is not None else "-",
             (j.result or j.last_error or "")[:60]) for j in jobs]
    table(rows, ["id", "kind", "switch", "port", "vlan", "mac", "state", "tries", "decided",
                 "latency", "result"])


@enforce.command("retry")
@click.argument("job_id", metavar="JOB", type=int)
@state_dir_option
@store_option
def retry(job_id: int, state_dir: Path, store_url: str | None) -> None:
    """Put a dead (or finished) job back in the queue with fresh attempts."""
    queue = _queue(state_dir, store_url)
    job = queue.get(job_id)
    if job is None:
        fail(f"no job {job_id}")
        return
    if not queue.retry(job_id):
        fail(f"job {job_id} is {job.state}: cannot retry it now")
    click.echo(f"job {job_id} queued again (was {job.state})")


@enforce.command("run")
@click.option("--once", is_flag=True, help="Process what is due, then exit.")
@click.option("--concurrency", type=int, default=16, show_default=True)
@_config_option
@state_dir_option
@store_option
def run(once: bool, concurrency: int, config: Path | None, state_dir: Path,
        store_url: str | None) -> None:
    """Run the enforcement worker on the queue (the server runs one itself)."""
    from enforcers.enforcer import Enforcer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    inv = _load_inventory(config)
    enf = Enforcer(inv.switches, _queue(state_dir, store_url), concurrency=concurrency)

    async def go() -> None:
        try:
            if once:
                await enf.drain(timeout=300)
            else:
                await enf.run()
        finally:
            await enf.close()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass


def register(cli: click.Group) -> None:
    cli.add_command(enforce)
