"""Durations in policy files: an integer number of seconds, or a string like "90m", "24h", "7d"."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(value: object) -> object:
    """Seconds for "24h"-style strings; other values pass through for the field's own check.

    Used as a pydantic before-validator, so a bad string raises ValueError naming the form.
    """
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"not a duration: {value!r} (use seconds, or a number with s, m, h, d or w)"
            )
        return int(float(match.group(1)) * _UNITS[match.group(2)])
    return value
