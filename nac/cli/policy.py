"""`nac policy`: check, show, test, explain and apply the site policy (nac/posture/POLICY.md)."""

from __future__ import annotations

import json
import os
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
    ACTIVE_POLICY_FILE,
    Policy,
    PolicyError,
    active_policy_path,
    load_active_policy,
    load_policy,
    sample_policy_text,
)
from nac.posture.stored import unpack

DB_NAME = "nac.db"  # the store and the feed cache share it (nac.store, nac.prevention.cache)


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
def show_cmd(state_dir: Path, config_path: Path | None, normalized: bool) -> None:
    """Print the active policy as TOML: the config's policy_file, else the one last applied
    to the state dir (STATE/policy.toml), else the built-in sample."""
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
    inspected node: those whose segment changes are listed and queued for enforcement."""
    loaded = _load_or_exit(file)
    text = file.read_bytes()
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / ACTIVE_POLICY_FILE
    tmp = state_dir / f".{ACTIVE_POLICY_FILE}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)  # readers see the old file or the new one, never half of one
    click.echo(
        f"{file}: ok (digest {loaded.digest[:16]}); installed as {target}; "
        "the running server reloads it within a second"
    )
    from nac.config import ConfigError
    from nac.reevaluate import after_change
    from nac.runtime import wait_until_enforced

    done, total = wait_until_enforced(state_dir, loaded.digest, timeout=wait)
    if total and done < total:
        fail(
            f"only {done} of {total} server process(es) enforce it after {wait:g} s; "
            "the others keep the previous policy (see the server log)"
        )
    if total:
        click.echo(f"enforced by {done} server process(es)")
    try:
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


def register(cli: click.Group) -> None:
    cli.add_command(policy)
