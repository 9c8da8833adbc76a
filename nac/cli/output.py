"""Tables and JSON for CLI output."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import click


def fmt_time(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    cells = [[("-" if v is None else str(v)) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        widths = [max(w, len(v)) for w, v in zip(widths, r, strict=True)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def dump_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
