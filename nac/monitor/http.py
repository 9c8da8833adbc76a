"""The little HTTP/1.1 the alert endpoint speaks: one request per connection, sans-I/O.

Only what a monitor needs: a request line, headers, a Content-Length body (no chunked
uploads), ``Expect: 100-continue`` (curl sends it for bodies over 1 KiB), and a JSON reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_HEAD = 16 * 1024
MAX_HEADERS = 64

REASONS = {
    100: "Continue", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    content_length: int
    expect_continue: bool


def parse_head(head: bytes, max_body: int) -> Request:
    """The bytes up to and including the blank line; raises HttpError with the status."""
    if len(head) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        if len(headers) >= MAX_HEADERS:
            raise HttpError(431, "too many headers")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise HttpError(400, "bad header line")
        name = name.lower()
        if name in headers:
            # Two Content-Length or two signatures would let two readers disagree.
            raise HttpError(400, f"header {name} repeated")
        headers[name] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(411, "send the body with Content-Length, not chunked")
    path = target.split("?", 1)[0]
    length = 0
    if method == "POST":
        raw = headers.get("content-length")
        if raw is None:
            raise HttpError(411, "Content-Length is required")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
            raise HttpError(400, "bad Content-Length")
        length = int(raw)
        if length > max_body:
            raise HttpError(413, f"body larger than {max_body} bytes")
    expect = headers.get("expect", "").lower() == "100-continue"
    return Request(method, path, headers, length, expect)


def response(status: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, sort_keys=True).encode() + b"\n"
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + payload


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
