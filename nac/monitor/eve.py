"""Suricata EVE JSON alert records: a strict, bounded, sans-I/O parser.

EVE writes one JSON object per line. Only ``event_type: "alert"`` records matter here; other
event types (flow, dns, stats, ...) parse to None. Every field we use is type-checked, and the
line is bounded in length and nesting depth *before* ``json.loads`` sees it, so a hostile or
broken sensor cannot make the server recurse deeply or hold huge objects. Anything wrong
raises ``EveError`` naming the reason; nothing else escapes ``parse_line``.

``LineSplitter`` turns a byte stream (a followed file, a Unix socket) into lines with the
same length cap, dropping over-long lines instead of buffering them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_LINE = 64 * 1024  # bytes; alert records with payload/packet fields stay well under
MAX_DEPTH = 32  # EVE alerts nest ~5 deep (alert.metadata.KEY[...]); http/tls a few more
MAX_TEXT = 1024  # characters kept from signature/category: they end up in reasons and logs

# Only these characters matter for nesting; visiting just them keeps the scan linear.
_STRUCTURE = re.compile(r'[\[\]{}"\\]')


class EveError(ValueError):
    """A line that is not a usable EVE record; str() says why."""


@dataclass(frozen=True, slots=True)
class Alert:
    """The fields of one EVE alert record that intake needs."""

    timestamp: str  # as the sensor wrote it, for reasons and logs
    at: float  # the same instant, epoch seconds
    src_ip: str
    dest_ip: str
    proto: str
    signature_id: int
    signature: str
    severity: int  # Suricata: 1 is the most severe
    category: str = ""
    action: str = "allowed"
    src_port: int | None = None
    dest_port: int | None = None
    flow_id: int | None = None
    in_iface: str | None = None
    gid: int | None = None
    rev: int | None = None


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than `limit` (brackets inside JSON strings do not count)."""
    depth = 0
    in_string = False
    skip = -1  # index of a character escaped by a backslash
    for m in _STRUCTURE.finditer(text):
        i, c = m.start(), m.group()
        if i == skip:
            continue
        if in_string:
            if c == "\\":
                skip = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                raise EveError(f"nested deeper than {limit} levels")
        elif c in "]}":
            depth -= 1


def _no_constants(name: str) -> Any:
    raise EveError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "src_ip" keys would let two readers disagree about which host is meant.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise EveError(f"duplicate key {k!r}")
        out[k] = v
    return out


def decode(line: bytes | str, *, max_line: int = MAX_LINE,
           max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """One line as a JSON object, within the bounds."""
    if len(line) > max_line:
        raise EveError(f"line longer than {max_line} bytes")
    if isinstance(line, bytes):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EveError(f"not UTF-8 (byte {exc.start})") from None
    else:
        text = line
    if len(text.encode("utf-8", "surrogatepass")) > max_line:
        raise EveError(f"line longer than {max_line} bytes")
    check_depth(text, max_depth)
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except EveError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EveError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EveError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _str(obj: dict[str, Any], key: str, where: str, *, required: bool = True,
         limit: int | None = None) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise EveError(f"{where}{key} is missing")
        return None
    if not isinstance(v, str):
        raise EveError(f"{where}{key} must be a string, not {type(v).__name__}")
    return v[:limit] if limit is not None else v


def _int(obj: dict[str, Any], key: str, where: str, lo: int, hi: int, *,
         required: bool = True) -> int | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise EveError(f"{where}{key} is missing")
        return None
    if isinstance(v, bool) or not isinstance(v, int):  # bool is an int subclass in Python
        raise EveError(f"{where}{key} must be an integer, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise EveError(f"{where}{key} {v} is outside {lo}..{hi}")
    return v


def _ip(obj: dict[str, Any], key: str) -> str:
    raw = _str(obj, key, "")
    assert raw is not None
    try:
        # Canonical text, so "10.0.0.05"-style tricks and IPv6 spellings compare equal.
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise EveError(f"{key} {raw[:64]!r} is not an IP address") from None


def parse_timestamp(text: str) -> float:
    """Suricata writes 2024-01-15T10:22:33.123456+0000; ISO 8601 variants are accepted."""
    if len(text) > 64:
        raise EveError("timestamp is too long")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return dt.datetime.strptime(text, fmt).timestamp()
        except ValueError:
            continue
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise EveError(f"timestamp {text!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise EveError(f"timestamp {text!r} has no UTC offset")
    return parsed.timestamp()


def alert_from(obj: dict[str, Any]) -> Alert | None:
    """An alert from a decoded EVE object; None for other event types."""
    event_type = _str(obj, "event_type", "")
    if event_type != "alert":
        return None
    body = obj.get("alert")
    if not isinstance(body, dict):
        raise EveError("alert must be an object")
    timestamp = _str(obj, "timestamp", "")
    assert timestamp is not None
    proto = obj.get("proto")
    if isinstance(proto, int) and not isinstance(proto, bool) and 0 <= proto <= 255:
        proto = str(proto)
    elif not isinstance(proto, str) or not 0 < len(proto) <= 16:
        raise EveError("proto must be a short string")
    return Alert(
        timestamp=timestamp,
        at=parse_timestamp(timestamp),
        src_ip=_ip(obj, "src_ip"),
        dest_ip=_ip(obj, "dest_ip"),
        proto=proto,
        src_port=_int(obj, "src_port", "", 0, 65535, required=False),
        dest_port=_int(obj, "dest_port", "", 0, 65535, required=False),
        flow_id=_int(obj, "flow_id", "", 0, 2**64 - 1, required=False),
        in_iface=_str(obj, "in_iface", "", required=False, limit=64),
        signature_id=_int(body, "signature_id", "alert.", 0, 2**32 - 1),  # type: ignore[arg-type]
        signature=_str(body, "signature", "alert.", limit=MAX_TEXT),  # type: ignore[arg-type]
        severity=_int(body, "severity", "alert.", 1, 255),  # type: ignore[arg-type]
        category=_str(body, "category", "alert.", required=False, limit=MAX_TEXT) or "",
        action=_str(body, "action", "alert.", required=False, limit=32) or "allowed",
        gid=_int(body, "gid", "alert.", 0, 2**32 - 1, required=False),
        rev=_int(body, "rev", "alert.", 0, 2**32 - 1, required=False),
    )


def parse_line(line: bytes | str, *, max_line: int = MAX_LINE,
               max_depth: int = MAX_DEPTH) -> Alert | None:
    """One EVE line: an Alert, or None for a non-alert event. Raises EveError only."""
    try:
        return alert_from(decode(line, max_line=max_line, max_depth=max_depth))
    except EveError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Belt and braces: whatever slipped past the checks above is still "malformed".
        raise EveError(f"unusable record: {exc}") from None


def parse_body(body: bytes, *, max_line: int = MAX_LINE, max_depth: int = MAX_DEPTH,
               max_lines: int = 10_000) -> list[Alert | None]:
    """A request body of EVE lines (blank lines skipped), all-or-nothing: the first bad
    line raises EveError naming its line number, so a half-understood batch changes nothing."""
    out: list[Alert | None] = []
    for n, line in enumerate(body.split(b"\n"), 1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        if len(out) >= max_lines:
            raise EveError(f"more than {max_lines} records")
        try:
            out.append(parse_line(line, max_line=max_line, max_depth=max_depth))
        except EveError as exc:
            raise EveError(f"line {n}: {exc}") from None
    return out


class LineSplitter:
    """Bytes in, complete lines out; a line over the cap is dropped (counted in `dropped`)
    up to its newline rather than buffered."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            piece = data[start:nl]
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + len(piece) > self.max_line:
                self.dropped += 1
            else:
                self._buf += piece
                line = bytes(self._buf).rstrip(b"\r")
                if line.strip():
                    lines.append(line)
            self._buf.clear()
            start = nl + 1
        rest = data[start:]
        if not self._skipping:
            if len(self._buf) + len(rest) > self.max_line:
                self._buf.clear()
                self._skipping = True
                self.dropped += 1
            else:
                self._buf += rest
        return lines

    def reset(self) -> None:
        """Forget a partial line (the file was truncated or replaced)."""
        self._buf.clear()
        self._skipping = False
