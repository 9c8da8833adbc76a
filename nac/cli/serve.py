"""`nac serve`: the RADIUS server."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

import click

from nac.cli.common import fail, state_dir_option, store_option
from nac.config import ConfigError, embedded, load_config


def setup_logging(level: str, worker_id: int | None = None, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from nac.logfmt import JsonFormatter

        handler.setFormatter(JsonFormatter(worker_id))
    else:
        who = "" if worker_id is None else f"[w{worker_id}] "
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def state_dir_problem(state_dir: Path) -> str | None:
    """Why the server could not keep its state in ``state_dir`` (keys, PKI, SQLite store,
    run files), or None: read-only, full, or not a directory."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=state_dir)
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return f"the state dir {state_dir} is not writable: {exc.strerror or exc}"
    return None


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML configuration file. Without it: the embedded demo default.")
@state_dir_option
@store_option
@click.option("--auth-port", type=click.IntRange(1, 65535), help="Authentication port (1812).")
@click.option("--acct-port", type=click.IntRange(1, 65535), help="Accounting port (1813).")
@click.option("--listen", multiple=True, help="Address to listen on (repeatable).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one object per line, with decision fields.")
@click.option("--posture", type=click.Choice(["tnc", "off"]), default=None,
              help="Posture method inside EAP tunnels (overrides [eap] posture).")
@click.option("--metrics", "metrics_addr", default=None, metavar="ADDR:PORT",
              help="Serve Prometheus /metrics and /healthz (for all the workers of a pool).")
@click.option("--workers", type=click.IntRange(0, 256), default=0,
              help="Worker processes on the same ports (SO_REUSEPORT). 0: one per core.")
@click.option("--job-lease", type=click.FloatRange(1.0, 3600.0), default=30.0,
              show_default=True, metavar="SECONDS",
              help="How long an enforcement job's claim holds without renewal: a server that "
                   "dies holding a job leaves it to another server after this long.")
@click.option("--reuse-port", is_flag=True, hidden=True)
@click.option("--worker-id", type=int, default=None, hidden=True)
def serve(config_path: Path | None, state_dir: Path, store_url: str | None,
          auth_port: int | None, acct_port: int | None, listen: tuple[str, ...],
          log_level: str | None, log_format: str, posture: str | None,
          metrics_addr: str | None, workers: int, job_lease: float,
          reuse_port: bool,
          worker_id: int | None) -> None:
    """Run the RADIUS server (authentication and accounting)."""
    try:
        cfg = load_config(config_path) if config_path else embedded()
    except ConfigError as exc:
        fail(str(exc))
        return
    setup_logging(log_level or cfg.log_level, worker_id, log_format)
    log = logging.getLogger("nac")
    from nac.workers import default_workers, supervise, worker_argv

    count = workers or default_workers()
    if worker_id is not None:
        pass  # a worker: the supervisor already said what runs
    elif cfg.embedded:
        log.info(
            "running the embedded demo default (no --config): NAS clients 127.0.0.1 and ::1 "
            "with the demo secret, the demo account (both in README.md), the sample policy "
            "(quarantine VLAN 10, isolated VLAN 20, normal VLAN 30), state in %s", state_dir)
    else:
        log.info("configuration %s, state in %s", cfg.source, state_dir)
    if auth_port:
        cfg.auth_port = auth_port
    if acct_port:
        cfg.acct_port = acct_port
    if listen:
        cfg.listen = list(listen)
    if store_url:
        cfg.store = store_url
    if posture:
        cfg.eap.posture = posture  # type: ignore[assignment]
    if metrics_addr:
        cfg.metrics = metrics_addr
    from nac.app import prepare_state, run_server

    problem = state_dir_problem(state_dir)
    if problem:
        # Said once and the exit is final: a supervisor (systemd, or ours) restarting a
        # server that cannot write its state would only loop.
        fail(f"cannot start: {problem}")
        return
    try:
        if count > 1 and worker_id is None:
            shared_sqlite = prepare_state(cfg, state_dir)
            log.info("starting %d worker processes on the same ports", count)
            listen = [(a, p) for a in cfg.listen for p in (cfg.auth_port, cfg.acct_port)]
            raise SystemExit(supervise(worker_argv(sys.argv[1:]), count, state_dir,
                                       metrics=cfg.metrics, listen=listen,
                                       shared_sqlite=shared_sqlite))
        run_server(cfg, state_dir, reuse_port=reuse_port, worker_id=worker_id,
                   job_lease=job_lease)
    except OSError as exc:
        fail(f"cannot start: {exc}")
    except sqlite3.Error as exc:
        fail(f"cannot start: the store in {state_dir}: {exc}")
    except ValueError as exc:
        fail(str(exc))


def register(cli: click.Group) -> None:
    cli.add_command(serve)
