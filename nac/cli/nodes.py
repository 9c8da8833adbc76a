"""`nac nodes`: the hosts the server has seen or an administrator registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nac.cli.common import fail, state_dir_option, store_option
from nac.cli.output import dump_json, fmt_time, table
from nac.mac import normalize_mac
from nac.posture.stored import StoredPostureError, unpack
from nac.store import open_store


def _mac(value: str) -> str:
    mac = normalize_mac(value)
    if mac is None:
        fail(f"not a MAC address: {value!r}")
    return mac  # type: ignore[return-value]


@click.group("nodes")
def nodes() -> None:
    """Hosts: list, show, register in a segment."""


@nodes.command("list")
@state_dir_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_nodes(state_dir: Path, store_url: str | None, as_json: bool) -> None:
    """All known nodes with their current segment."""
    store = open_store(store_url, state_dir)
    rows = store.list_nodes()
    if as_json:
        for r in rows:
            r["posture"] = _posture(r.get("posture"))
        dump_json(rows)
        return
    table(
        [(r["mac"], r["segment"], r["vlan"], r["registered_segment"], r["identity"],
          r["last_nas"], r["last_port"], fmt_time(r["last_seen"])) for r in rows],
        ["mac", "segment", "vlan", "registered", "identity", "nas", "port", "last seen"],
    )


@nodes.command("show")
@click.argument("mac")
@state_dir_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_node(mac: str, state_dir: Path, store_url: str | None, as_json: bool) -> None:
    """One node: segment and why, recent decisions, accounting sessions."""
    mac = _mac(mac)
    store = open_store(store_url, state_dir)
    node = store.get_node(mac)
    if node is None:
        fail(f"no node {mac} in {store.url}")
        return
    node["posture"] = _posture(node.get("posture"))
    decisions = store.decisions_for(mac)
    sessions = store.sessions_for(mac)
    if as_json:
        dump_json({"node": node, "decisions": decisions, "sessions": sessions})
        return
    click.echo(f"MAC:          {mac}")
    click.echo(f"Segment:      {node['segment'] or '-'} (VLAN {node['vlan'] or '-'})")
    click.echo(f"Why:          {node['reason'] or '-'}")
    click.echo(f"Registered:   {node['registered_segment'] or '-'}")
    click.echo(f"Identity:     {node['identity'] or '-'} (role {node['role'] or '-'})")
    click.echo(f"Last seen:    {fmt_time(node['last_seen'])} on {node['last_nas'] or '-'} "
               f"port {node['last_port'] or '-'}")
    click.echo(f"First seen:   {fmt_time(node['first_seen'])}")
    click.echo("\nDecisions (newest first):")
    table([(fmt_time(d["at"]), d["source"], d["segment"], d["vlan"], "; ".join(d["reasons"]))
           for d in decisions], ["at", "source", "segment", "vlan", "reasons"])
    click.echo("\nSessions:")
    table([(s["nas"], s["acct_session_id"], s["nas_port_id"] or s["nas_port"], s["framed_ip"],
            s["framed_ipv6_prefix"], fmt_time(s["started_at"]), fmt_time(s["stopped_at"]),
            s["input_octets"], s["output_octets"]) for s in sessions],
          ["nas", "session", "port", "ipv4", "ipv6 prefix", "started", "stopped", "in", "out"])


@nodes.command("set")
@click.argument("mac")
@click.argument("segment")
@click.option("--reason", default="registered by administrator", show_default=True)
@state_dir_option
@store_option
def set_node(mac: str, segment: str, reason: str, state_dir: Path, store_url: str | None) -> None:
    """Register MAC in SEGMENT (or 'none' to remove the registration)."""
    mac = _mac(mac)
    from nac.posture.policy import PolicyError, load_active_policy

    try:
        known = load_active_policy(state_dir).segments
    except PolicyError as exc:
        fail(str(exc))
        return
    seg = None if segment.lower() == "none" else segment
    if seg is not None and seg not in known:
        fail(f"unknown segment {seg!r}; the policy has: {', '.join(sorted(known))}")
    store = open_store(store_url, state_dir)
    store.register_node(mac, seg, reason)
    click.echo(f"{mac}: registered in {seg}" if seg else f"{mac}: registration removed")


@nodes.command("reinspect")
@click.argument("mac", required=False)
@click.option("--all", "all_nodes", is_flag=True, help="Every node with a live session.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Server config with the [[switches]] inventory.")
@state_dir_option
@store_option
def reinspect(mac: str | None, all_nodes: bool, config_path: Path, state_dir: Path,
              store_url: str | None) -> None:
    """Ask the switch to re-authenticate MAC (or --all), so it is inspected again now."""
    import time

    from nac.config import ConfigError, load_config
    from nac.enforcement import Target, load_planner, open_queue
    from nac.store.migrations import SchemaError

    if bool(mac) == all_nodes:
        fail("give a MAC or --all")
    try:
        cfg = load_config(config_path)
        store_url = store_url or cfg.store
        planner = load_planner(cfg.switches, lambda: open_queue(store_url, state_dir),
                               str(config_path))
    except (ConfigError, ValueError, SchemaError) as exc:
        fail(str(exc))
        return
    if planner is None:
        fail(f"{config_path}: no [[switches]] inventory: nothing can re-authenticate a host")
        return
    click.get_current_context().call_on_close(planner.close)
    store = open_store(store_url, state_dir)
    click.get_current_context().call_on_close(store.close)
    macs = [_mac(mac)] if mac else [n["mac"] for n in store.list_nodes()]
    queued = 0
    for m in macs:
        node = store.get_node(m)
        sess = store.live_session(m)
        if node is None and sess is None:
            click.echo(f"{m}: unknown node", err=True)
            continue
        target = Target(mac=m, nas=(sess or {}).get("nas") or (node or {}).get("last_nas"),
                        port=(sess or {}).get("nas_port_id") or (node or {}).get("last_port"),
                        session_id=(sess or {}).get("acct_session_id"))
        if mac is None and sess is None:
            continue  # --all: only nodes that are on the network now
        job = planner.reauth(target, decided_at=time.time())
        if job is None:
            click.echo(f"{m}: NAS {target.nas} is not in the switch inventory", err=True)
            continue
        queued += 1
        click.echo(f"{m}: re-authentication queued as job {job} on {target.nas}")
    click.echo(f"{queued} re-inspection(s) queued; the server's enforcer applies them")
    if mac and not queued:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(nodes)


def _posture(text: str | None) -> Any:
    """A stored posture as JSON output shows it: unpacked (nac/posture/stored.py); a row
    that does not decode is shown as the error, not fatal to the listing."""
    if not text:
        return None
    try:
        return unpack(json.loads(text))
    except (ValueError, StoredPostureError) as exc:
        return {"error": f"stored posture unreadable: {exc}"}
