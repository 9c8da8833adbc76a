"""Options every `nac` command shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STATE_DIR = "./nac-state"


def state_dir_option(func: F) -> F:
    """--state-dir DIR: where the SQLite store, PKI and generated files live."""
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_STATE_DIR,
        show_default=True,
        envvar="NAC_STATE_DIR",
        help="Directory holding the store, PKI and generated files.",
    )(func)


def store_option(func: F) -> F:
    """--store URL: sqlite:///path or postgresql://...; default SQLite in the state dir."""
    return click.option(
        "--store",
        "store_url",
        default=None,
        envvar="NAC_STORE",
        help="Store URL (sqlite:///PATH or postgresql://...). Default: SQLite in --state-dir.",
    )(func)


def fail(message: str) -> None:
    """Print a clear error and exit 1."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)
