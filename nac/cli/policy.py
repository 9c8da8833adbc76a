"""`nac policy`: check, show, test, explain and apply the site policy (nac/posture/POLICY.md)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import click

from nac.cli.common import fail, state_dir_option, store_option
from nac.posture.decision import Decision
from nac.posture.evaluate import VulnIndexLike, evaluate
from nac.posture.policy import (
    Policy,
    PolicyError,
    active_policy_path,
    install_policy_text,
    load_active_policy,
    load_policy,
    loads_policy,
    sample_policy_text,
)
from nac.posture.stored import unpack

DB_NAME = "nac.db"  # the store and the feed cache share it (nac.store, nac.prevention.cache)


def site_store(store_url: str | None) -> str | None:
    """A PostgreSQL store's URL (its policy is the site's), None for SQLite."""
    from nac.runtime import site_store as pick  # imported late: the CLI starts faster

    return pick(store_url)


def _load_or_exit(path: Path) -> Any:
    try:
        return load_policy(path)
    except PolicyError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None


def load_feeds(state_dir: Path) -> tuple[VulnIndexLike | None, str]:
    """The prevention index of STATE/nac.db when feeds were imported, else None and why."""
    db = state_dir / DB_NAME
    try:
        from nac.prevention.index import load_index
    except ImportError:
        return None, "prevention module not installed"
    if not db.is_file():
        return None, f"no feed cache at {db}"
    try:
        index = load_index(db)
    except (sqlite3.Error, OSError) as exc:  # a store-only db has no feed tables yet
        return None, f"no feeds in {db} ({exc})"
    if not getattr(index, "advisory_count", 1):
        return None, f"no advisories in {db}"
    return index, f"feeds of {db}, epoch {index.epoch}"


def decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "segment": decision.segment,
        "vlan": decision.vlan,
        "reasons": list(decision.reasons),
        "remediation": list(decision.remediation),
        "expires": decision.expires,
        "source": decision.source,
        "extra": dict(decision.extra),
    }


def _print_decision(decision: Decision) -> None:
    click.echo(f"segment: {decision.segment}")
    click.echo(f"vlan: {decision.vlan}")
    click.echo("reasons:")
    for reason in decision.reasons:
        click.echo(f"  - {reason}")
    click.echo("remediation:" + ("" if decision.remediation else " none"))
    for step in decision.remediation:
        click.echo(f"  - {step}")
    if decision.expires is not None:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(decision.expires))
        click.echo(f"re-inspect by: {expires}")


@click.group("policy")
def policy() -> None:
    """The site policy: segments, roles and posture rules."""


@policy.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def check_cmd(file: Path) -> None:
    """Validate FILE; on errors print each (file: key: reason) and exit 1."""
    loaded = _load_or_exit(file)
    click.echo(
        f"{file}: ok (policy {loaded.name!r}: {len(loaded.segments)} segments, "
        f"{len(loaded.rules)} rules, digest {loaded.digest[:16]})"
    )


@policy.command("show")
@state_dir_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Server config: show its policy_file when it names one.")
@click.option(
    "--normalized", is_flag=True, help="Print the parsed policy with defaults, not the file."
)
@store_option
def show_cmd(state_dir: Path, config_path: Path | None, normalized: bool,
             store_url: str | None) -> None:
    """Print the active policy as TOML: the config's policy_file, else the one last applied
    to the state dir (STATE/policy.toml), else the built-in sample. With a PostgreSQL
    --store: the site policy's newest version, once one is published (which servers
    enforce it: `nac policy status`)."""
    site = site_store(store_url)
    if site is not None:
        text = _site_text(site)
        if text is not None:
            try:
                click.echo(loads_policy(text, "site policy").to_toml() if normalized
                           else text, nl=False)
            except PolicyError as exc:
                fail(str(exc))
            return
        click.echo("no site policy published in the store yet: the state dir's policy",
                   err=True)
    path = active_policy_path(state_dir)
    if config_path is not None:
        from nac.config import ConfigError, load_config

        try:
            cfg = load_config(config_path)
        except ConfigError as exc:
            fail(str(exc))
            return
        if cfg.policy_file:
            path = Path(cfg.policy_file)  # what `nac serve --config` enforces, same lookup
    if normalized:
        try:
            click.echo((load_policy(path) if path else Policy.sample()).to_toml(), nl=False)
        except PolicyError as exc:
            fail(str(exc))
        return
    if path is None:
        click.echo(sample_policy_text(), nl=False)
        return
    try:
        click.echo(path.read_text("utf-8"), nl=False)
    except OSError as exc:
        fail(f"{path}: cannot read the policy file: {exc.strerror or exc}")


def _site_text(url: str) -> str | None:
    import psycopg

    from nac.store import pg_policy
    from nac.store.postgres import redact

    try:
        with pg_policy.connect(url) as conn:
            newest = pg_policy.newest(conn)
    except psycopg.Error as exc:
        fail(f"cannot read the site policy of {redact(url)}: {str(exc).strip()}")
        return None
    return newest.text if newest is not None else None


@policy.command("test")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--posture",
    "posture_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    required=True,
    help="Posture document (nac-agent collect --json; - reads stdin); null means none.",
)
@click.option("--role", default=None, help="Account role (default: the policy's default_role).")
@click.option("--nas-group", default=None, help="Switch group, for per-group VLANs.")
@click.option("--vendor", default=None, help="Switch vendor profile, for per-vendor VLANs.")
@click.option("--now", type=float, default=None, help="Evaluate at this epoch time.")
@click.option(
    "--first-seen",
    multiple=True,
    metavar="RULE=EPOCH",
    help="When a minor failure of RULE was first seen (for grace periods).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@state_dir_option
def test_cmd(
    file: Path,
    posture_file: Path,
    role: str | None,
    nas_group: str | None,
    vendor: str | None,
    now: float | None,
    first_seen: tuple[str, ...],
    as_json: bool,
    state_dir: Path,
) -> None:
    """Evaluate a posture document against FILE with the feeds in --state-dir."""
    loaded = _load_or_exit(file)
    try:
        text = (
            sys.stdin.read()
            if str(posture_file) == "-"
            else (posture_file.read_text("utf-8"))
        )
        posture = json.loads(text)
    except (ValueError, OSError) as exc:
        fail(f"{posture_file}: not a JSON posture document: {exc}")
    if posture is not None and not isinstance(posture, dict):
        fail(f"{posture_file}: a posture document is a JSON object (or null for none)")
    seen: dict[str, float] = {}
    for item in first_seen:
        rule, _, when = item.partition("=")
        try:
            seen[rule] = float(when)
        except ValueError:
            fail(f"--first-seen {item!r}: expected RULE=EPOCH")
    index, feeds = load_feeds(state_dir)
    decision = evaluate(
        loaded,
        posture,
        role=role or loaded.default_role,
        index=index,
        now=time.time() if now is None else now,
        first_seen=seen,
        nas_group=nas_group,
        vendor=vendor,
    )
    if as_json:
        out = decision_json(decision) | {"policy": loaded.name, "feeds": feeds}
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        _print_decision(decision)
        click.echo(f"feeds: {feeds}")


@policy.command("explain")
@click.argument("mac")
@state_dir_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def explain_cmd(mac: str, state_dir: Path, store_url: str | None, as_json: bool) -> None:
    """Why a node is in its segment: its last stored decision."""
    from nac.mac import normalize_mac

    norm = normalize_mac(mac)
    if norm is None:
        fail(f"not a MAC address: {mac!r}")
    if store_url is None and not (state_dir / DB_NAME).is_file():
        fail(f"no store yet: {state_dir / DB_NAME} does not exist (has the server run?)")
    try:
        from nac.store import open_store
    except ImportError:
        fail("no store yet: the store module is not installed")
    store = open_store(store_url, state_dir)
    try:
        rows = store.decisions_for(norm, limit=1)
        node = store.get_node(norm) or {}
    except sqlite3.Error as exc:
        fail(f"no store yet: cannot read decisions ({exc})")
    finally:
        store.close()
    if not rows:
        fail(f"no decision recorded for {norm}")
    row = dict(rows[0])
    for key in ("reasons", "remediation"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    now_decision = _reevaluate(node, row, state_dir)
    if as_json:
        if now_decision is not None:
            row["current_policy"] = decision_json(now_decision)
        click.echo(json.dumps(row, indent=2, sort_keys=True, default=str))
        return
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["at"]))
    click.echo(f"{norm}: {row['segment']} (VLAN {row['vlan']}) by {row['source']} at {when}")
    for key in ("identity", "role", "nas", "nas_port", "method"):
        if row.get(key):
            click.echo(f"{key}: {row[key]}")
    _print_decision(
        Decision(
            segment=row["segment"],
            vlan=row["vlan"],
            reasons=tuple(row.get("reasons") or ()),
            remediation=tuple(row.get("remediation") or ()),
        )
    )
    if now_decision is not None:
        click.echo("with the active policy and feeds, its last posture would now get:")
        _print_decision(now_decision)


def _reevaluate(node: dict[str, Any], row: dict[str, Any], state_dir: Path) -> Decision | None:
    """The stored posture evaluated again under today's policy and feeds, if one is stored."""
    if row.get("source") != "posture" or not node.get("posture"):
        return None
    try:
        posture = unpack(json.loads(node["posture"]))
        active = load_active_policy(state_dir)
    except (ValueError, PolicyError):
        return None
    index, _ = load_feeds(state_dir)
    return evaluate(
        active,
        posture,
        role=row.get("role") or active.default_role,
        index=index,
        now=time.time(),
    )


@policy.command("apply")
@click.argument("file", type=click.Path(path_type=Path))
@state_dir_option
@click.option(
    "--wait",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds to wait for running server processes to enforce it.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Server config: its switch inventory gets the enforcement jobs.")
@store_option
def apply_cmd(file: Path, state_dir: Path, wait: float, config_path: Path | None,
              store_url: str | None) -> None:
    """Validate FILE, install it as STATE/policy.toml (atomically), and re-evaluate every
    inspected node: those whose segment changes are listed and queued for enforcement.

    With a PostgreSQL --store it becomes the site's policy: a new version in the database,
    which every server on it installs within a second (and a server started later at
    start); --wait then waits for every live server of the site."""
    loaded = _load_or_exit(file)
    text = file.read_bytes()
    site = site_store(store_url or _config_store(config_path))
    published = _publish_site(site, text, loaded) if site is not None else None
    target, _ = install_policy_text(state_dir, text)
    if published is None:
        click.echo(
            f"{file}: ok (digest {loaded.digest[:16]}); installed as {target}; "
            "the running server reloads it within a second"
        )
    from nac.config import ConfigError
    from nac.reevaluate import after_change
    from nac.runtime import wait_until_enforced

    behind: list[Any] = []
    if site is not None:
        behind = _wait_site(site, loaded.digest, wait)
    else:
        done, total = wait_until_enforced(state_dir, loaded.digest, timeout=wait)
        if total and done < total:
            fail(
                f"only {done} of {total} server process(es) enforce it after {wait:g} s; "
                "the others keep the previous policy (see the server log)"
            )
        if total:
            click.echo(f"enforced by {done} server process(es)")
    try:
        # Nodes are the site's: re-evaluated once, here, not by every server.
        result = after_change(state_dir, "policy", config_path=config_path,
                              store_url=store_url)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
        return
    click.echo(result.summary())
    for ch in result.changes:
        job = f", job {ch.job}" if ch.job else ""
        click.echo(f"  {ch.mac}: {ch.old_segment or '-'} -> {ch.new_segment} (VLAN {ch.vlan}"
                   f"{job}): {'; '.join(ch.reasons[1:]) or ch.reasons[0]}")
    if behind:
        names = "; ".join(f"{s.server} (enforces {_server_policy(s)}, last heard from "
                          f"{s.age:.1f} s ago)" for s in behind)
        fail(f"{len(behind)} live server process(es) do not enforce it after {wait:g} s "
             f"(see their logs): {names}")


def _config_store(config_path: Path | None) -> str | None:
    """The config's store URL, when --store is not given (what after_change uses too)."""
    if config_path is None:
        return None
    from nac.config import ConfigError, load_config

    try:
        return load_config(config_path).store
    except ConfigError as exc:
        fail(str(exc))
        return None


def _publish_site(url: str, text: bytes, loaded: Policy) -> Any:
    """A new site policy version in the PostgreSQL store, or exit 1 saying why not."""
    import psycopg

    from nac.store import pg_policy
    from nac.store.postgres import redact

    try:
        version = pg_policy.publish(url, text.decode("utf-8"), loaded.name, loaded.digest)
    except psycopg.errors.UndefinedTable:
        fail(f"the store {redact(url)} has no site policy table: run `nac store migrate "
             "--store URL` once, then apply again (nothing was published)")
    except psycopg.Error as exc:
        fail(f"cannot publish the site policy in {redact(url)}: {str(exc).strip()} "
             "(nothing was published)")
    click.echo(f"ok (digest {loaded.digest[:16]}); published as {version.describe()} in "
               f"{redact(url)}; every server on it installs it within a second")
    return version


def _server_policy(s: Any) -> str:
    if s.digest is None:
        return "nothing yet"
    return f"version {s.version}" if s.version is not None else f"digest {s.digest[:16]}"


def _wait_site(url: str, digest: str, wait: float) -> list[Any]:
    """Wait for every live server on the store; returns those that did not follow."""
    import psycopg

    from nac.store import pg_policy

    try:
        ok, behind = pg_policy.wait_for_servers(url, digest, wait)
    except psycopg.Error as exc:
        click.echo(f"warning: cannot tell which servers enforce it: {str(exc).strip()}",
                   err=True)
        return []
    if ok:
        click.echo(f"enforced by {len(ok)} server process(es): "
                   + ", ".join(s.server for s in ok))
    elif not behind:
        click.echo("no live server on this store yet: each installs it at start")
    return behind


@policy.command("status")
@store_option
@click.option("--history", "limit", type=int, default=10, show_default=True,
              help="How many versions of the site policy to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(store_url: str | None, limit: int, as_json: bool) -> None:
    """The site policy of a PostgreSQL store: its versions (who applied what, when) and
    the version each server enforces."""
    import psycopg

    from nac.store import pg_policy
    from nac.store.postgres import redact

    url = site_store(store_url)
    if url is None:
        fail("nac policy status needs a PostgreSQL --store (a SQLite store's server "
             "enforces its state dir's policy: `nac policy show`)")
        return
    try:
        versions = pg_policy.history(url, limit)
        with pg_policy.connect(url) as conn:
            servers = pg_policy.servers(conn)
    except psycopg.Error as exc:
        fail(f"cannot read the site policy of {redact(url)}: {str(exc).strip()}")
        return
    if as_json:
        click.echo(json.dumps({
            "versions": [{"version": v.version, "name": v.name, "digest": v.digest,
                          "applied_at": v.applied_at.isoformat(),
                          "applied_by": f"{v.applied_by_user}@{v.applied_by_host}"}
                         for v in versions],
            "servers": [{"server": s.server, "host": s.host, "pid": s.pid,
                         "state_dir": s.state_dir, "digest": s.digest, "version": s.version,
                         "live": s.live, "seen_seconds_ago": round(s.age, 1)}
                        for s in servers]}, indent=2))
        return
    if not versions:
        click.echo(f"{redact(url)}: no site policy published yet (servers enforce their own)")
    else:
        click.echo(f"{redact(url)}: {versions[0].describe()}")
        for v in versions[1:]:
            click.echo(f"  earlier: {v.describe()}")
    for s in servers:
        state = "live" if s.live else f"not heard from for {s.age:.0f} s"
        click.echo(f"server {s.server}: enforces {_server_policy(s)} ({state})")


def register(cli: click.Group) -> None:
    cli.add_command(policy)
