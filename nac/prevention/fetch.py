"""Read a feed source: a file, a directory, an OSV all.zip, or an HTTPS URL polled with
ETag / If-Modified-Since. Signed sources are verified here, before a byte is parsed."""

from __future__ import annotations

import io
import json
import ssl
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nac.prevention.cache import FeedSource
from nac.prevention.osv import OsvError, records_from_json
from nac.prevention.signing import SIG_SUFFIX, SignatureError, load_public_key, verify

ZIP_MAGIC = b"PK\x03\x04"
USER_AGENT = "quarantine-nac-feed/1"
MAX_FEED_BYTES = 2 * 1024**3  # OSV's all.zip of every ecosystem is about 1 GiB


class FeedError(Exception):
    """A source could not be read or verified; the message names the source and the file."""


@dataclass(frozen=True)
class FeedBlob:
    """One signed unit: a JSON file, a zip, or a URL's body."""

    label: str
    data: bytes


@dataclass
class Fetched:
    not_modified: bool = False
    blobs: list[FeedBlob] = field(default_factory=list)
    etag: str | None = None
    last_modified: str | None = None


def fetch(source: FeedSource, timeout: float = 60.0) -> Fetched:
    if source.url:
        fetched = _fetch_url(source, timeout)
    elif source.path:
        fetched = Fetched(blobs=_read_path(source, Path(source.path)))
    else:
        raise FeedError(f"source {source.name}: has neither url nor path")
    return fetched


def read_local(path: Path, source: FeedSource) -> list[FeedBlob]:
    """A one-off import of a local file or directory, verified if source has a key."""
    return _read_path(source, path)


def _read_path(source: FeedSource, path: Path) -> list[FeedBlob]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise FeedError(f"source {source.name}: {path} does not exist")
    blobs = []
    for f in files:
        data = f.read_bytes()
        if source.pubkey:
            sig = f.with_name(f.name + SIG_SUFFIX)
            _verify(source, str(f), data, sig.read_bytes() if sig.is_file() else None)
        blobs.append(FeedBlob(str(f), data))
    return blobs


def _verify(source: FeedSource, label: str, data: bytes, sig: bytes | None) -> None:
    assert source.pubkey is not None
    try:
        verify(load_public_key(source.pubkey), data, sig, f"source {source.name}: {label}")
    except SignatureError as exc:
        raise FeedError(str(exc)) from exc


def _ssl_context(source: FeedSource) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if source.cafile:
        ctx.load_verify_locations(cafile=source.cafile)
    return ctx


def _get(
    source: FeedSource, url: str, headers: dict[str, str], timeout: float
) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_ssl_context(source)) as resp:
            final = resp.geturl()
            if not final.startswith("https://") and not source.pubkey:
                # A redirect must not downgrade an unsigned feed to a plain channel.
                raise FeedError(f"source {source.name}: {url}: redirected to {final}")
            body = resp.read(MAX_FEED_BYTES + 1)
            if len(body) > MAX_FEED_BYTES:
                raise FeedError(f"source {source.name}: {url}: larger than {MAX_FEED_BYTES} bytes")
            return resp.status, body, resp.headers
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return 304, b"", exc.headers
        raise FeedError(f"source {source.name}: {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FeedError(f"source {source.name}: {url}: {exc}") from exc


def _fetch_url(source: FeedSource, timeout: float) -> Fetched:
    url = source.url
    assert url is not None
    # Draft 9.7: the channel must be protected. Plain HTTP is accepted only when a signature
    # authenticates the content anyway.
    if not url.startswith("https://") and not (url.startswith("http://") and source.pubkey):
        raise FeedError(f"source {source.name}: {url}: only https:// (or signed http://) feeds")
    headers = {}
    if source.etag:
        headers["If-None-Match"] = source.etag
    if source.last_modified:
        headers["If-Modified-Since"] = source.last_modified
    status, body, resp_headers = _get(source, url, headers, timeout)
    if status == 304:
        return Fetched(not_modified=True, etag=source.etag, last_modified=source.last_modified)
    if source.pubkey:
        sig_status, sig, _ = _get(source, url + SIG_SUFFIX, {}, timeout)
        _verify(source, url, body, sig if sig_status == 200 else None)
    return Fetched(
        blobs=[FeedBlob(url, body)],
        etag=resp_headers.get("ETag"),
        last_modified=resp_headers.get("Last-Modified"),
    )


def records(blob: FeedBlob) -> tuple[int, Iterator[tuple[str, Any]]]:
    """(count, iterator of (origin, record)): zip members are parsed lazily, one at a time,
    since OSV's all.zip holds tens of thousands of records."""
    if blob.data[:4] == ZIP_MAGIC:
        try:
            zf = zipfile.ZipFile(io.BytesIO(blob.data))
        except zipfile.BadZipFile as exc:
            raise FeedError(f"{blob.label}: bad zip: {exc}") from exc
        names = [n for n in zf.namelist() if n.endswith(".json")]

        def members() -> Iterator[tuple[str, Any]]:
            for n in names:
                origin = f"{blob.label}!{n}"
                try:
                    doc = json.loads(zf.read(n))
                except ValueError as exc:
                    raise FeedError(f"{origin}: not JSON: {exc}") from exc
                for rec in doc if isinstance(doc, list) else [doc]:
                    yield origin, rec

        return len(names), members()
    try:
        recs = records_from_json(blob.data, blob.label)
    except OsvError as exc:
        raise FeedError(str(exc)) from exc
    return len(recs), ((blob.label, r) for r in recs)
