"""The quarantine monitor's intake points, in the server's asyncio loop.

* HTTPS (stdlib ssl): ``POST /v1/alerts`` with one or more EVE lines. 202 with
  ``{"accepted", "ignored", "isolated": [MAC...], "ignored_reasons"}``; 401 when the monitor
  is not authenticated, 400 for a malformed body (the whole body is refused), 413 when too
  big. Refusals are logged with the peer, the claimed monitor and the reason, and change
  nothing.
* A local eve.json followed like ``tail -F`` (rotation and truncation handled; it starts at
  the end, so alerts written while the server was down are not replayed).
* A Unix stream socket Suricata writes to (``filetype: unix_stream``).

Local sources are trusted by file-system permissions and act as the monitor `local_name`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nac.enforcement import Planner
from nac.monitor.auth import Authenticator, AuthError
from nac.monitor.config import MonitorConfig
from nac.monitor.eve import Alert, EveError, LineSplitter, parse_body, parse_line
from nac.monitor.http import CONTINUE, HttpError, parse_head, response
from nac.monitor.intake import Intake, NasProfile, PolicyLike
from nac.store.base import Store

log = logging.getLogger("nac.monitor")

HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
READ_CHUNK = 256 * 1024
MAX_CHUNKS = 16  # per file poll, so one huge append cannot stall the loop


def tls_context(cfg: MonitorConfig, state_dir: Path | None) -> ssl.SSLContext:
    cert, key, ca, crl = cfg.tls_paths(state_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        # Optional: monitors that sign with HMAC need not have a certificate.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        if crl is not None and crl.exists():
            ctx.load_verify_locations(cafile=str(crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_cn(peercert: dict[str, Any] | None) -> str | None:
    """The commonName of a verified peer certificate (ssl's getpeercert() dict)."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class AlertEndpoint:
    def __init__(self, cfg: MonitorConfig, auth: Authenticator, intake: Intake) -> None:
        self.cfg = cfg
        self.auth = auth
        self.intake = intake
        self._slots = asyncio.Semaphore(cfg.max_connections)
        self.refused = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if self._slots.locked():
            log.warning("monitor endpoint: %s refused: too many connections", peer_s)
            writer.close()
            return
        async with self._slots:
            try:
                status, body = await self._serve(reader, writer, peer_s)
                writer.write(response(status, body))
                await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT)
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            except Exception:  # never let one request take the server down
                log.exception("monitor endpoint: unexpected error serving %s", peer_s)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> tuple[int, dict[str, Any]]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return self._refuse(431, "request head too large", peer, None)
        except TimeoutError:
            return self._refuse(408, "no request within the timeout", peer, None)
        try:
            req = parse_head(head, self.cfg.max_body)
        except HttpError as exc:
            return self._refuse(exc.status, exc.reason, peer, None)
        claimed = req.headers.get("x-nac-monitor")
        if req.path != "/v1/alerts":
            return self._refuse(404, f"no such resource {req.path[:80]!r}", peer, claimed)
        if req.method != "POST":
            return self._refuse(405, "only POST", peer, claimed)
        if req.expect_continue:
            writer.write(CONTINUE)
        try:
            body = await asyncio.wait_for(reader.readexactly(req.content_length), BODY_TIMEOUT)
        except TimeoutError:
            return self._refuse(408, "body not received within the timeout", peer, claimed)
        cn = peer_cn(writer.get_extra_info("peercert"))
        try:
            cred = self.auth.authenticate(req.headers, body, cn)
        except AuthError as exc:
            return self._refuse(401, exc.reason, peer, exc.monitor or claimed, cn)
        try:
            records = parse_body(body, max_line=self.cfg.max_line)
        except EveError as exc:
            return self._refuse(400, f"malformed: {exc}", peer, cred.name)
        try:
            out = self.intake.handle(records, cred.name, cred.min_severity)
        except Exception as exc:
            log.exception("monitor %s (%s): could not act on alerts", cred.name, peer)
            return 503, {"error": f"cannot act on alerts now: {type(exc).__name__}"}
        log.info("monitor %s (%s): %d record(s), %d ignored, isolated %s", cred.name, peer,
                 out.accepted, out.ignored, ", ".join(out.isolated) or "none")
        return 202, out.as_json()

    def _refuse(self, status: int, reason: str, peer: str, monitor: str | None,
                cn: str | None = None) -> tuple[int, dict[str, Any]]:
        self.refused += 1
        who = f"monitor {monitor[:64]!r}" if monitor else "unidentified monitor"
        if cn:
            who += f" (certificate CN {cn[:64]!r})"
        log.warning("monitor endpoint: refused %s from %s: %s (HTTP %d)", who, peer, reason,
                    status)
        # Tell the sender why, except which credential check failed beyond "unauthorized".
        return status, {"error": reason if status != 401 else "unauthorized"}


class LocalFeed:
    """Lines from a local source (file or socket), parsed one by one: a bad line is logged
    and skipped, the good ones act as the monitor `name`."""

    def __init__(self, intake: Intake, name: str, min_severity: int, max_line: int,
                 source: str) -> None:
        self.intake = intake
        self.name = name
        self.min_severity = min_severity
        self.max_line = max_line
        self.source = source
        self.bad = 0
        self.isolated: list[str] = []

    def lines(self, lines: list[bytes]) -> None:
        records: list[Alert | None] = []
        for line in lines:
            try:
                records.append(parse_line(line, max_line=self.max_line))
            except EveError as exc:
                self.bad += 1
                if self.bad <= 10 or self.bad % 1000 == 0:  # a broken writer must not flood
                    log.warning("%s: malformed EVE line skipped (%d so far): %s", self.source,
                                self.bad, exc)
        if not records:
            return
        try:
            out = self.intake.handle(records, self.name, self.min_severity)
        except Exception:
            log.exception("%s: could not act on alerts", self.source)
            return
        self.isolated.extend(out.isolated)


class FileTail:
    """Follow an eve.json: new lines as they are appended; a new file at the path (rotation)
    is read from its start after the rest of the old one; a shrunk file from its start."""

    def __init__(self, path: Path, feed: LocalFeed, max_line: int,
                 interval: float = 0.5) -> None:
        self.path = path
        self.feed = feed
        self.interval = interval
        self.split = LineSplitter(max_line)
        self._f: Any = None
        self._ino: tuple[int, int] | None = None

    def _open(self, at_end: bool) -> None:
        try:
            f = self.path.open("rb")
        except OSError:
            return
        st = os.fstat(f.fileno())
        self._f, self._ino = f, (st.st_dev, st.st_ino)
        if at_end:
            f.seek(0, os.SEEK_END)
        self.split.reset()

    def _drain(self, chunks: int = MAX_CHUNKS) -> None:
        assert self._f is not None
        for _ in range(chunks):  # the rest waits for the next poll: the loop stays live
            data = self._f.read(READ_CHUNK)
            if data:
                self.feed.lines(self.split.feed(data))
            if len(data) < READ_CHUNK:
                break

    def poll(self) -> None:
        """One step; run() calls it every interval (tests may call it directly)."""
        if self._f is None:
            self._open(at_end=False)  # appeared after start: everything in it is new
            if self._f is None:
                return
        self._drain()
        try:
            st = self.path.stat()
        except OSError:
            return  # rotated away, the new file not there yet: keep the old one
        if (st.st_dev, st.st_ino) != self._ino:
            # Whatever the writer added to the old file before it moved: all of it, since
            # the old file is not looked at again.
            self._drain(chunks=1 << 30)
            self._f.close()
            self._f = None
            self._open(at_end=False)
            if self._f is not None:
                self._drain()
        elif st.st_size < self._f.tell():
            log.info("%s was truncated; reading it from the start", self.path)
            self._f.seek(0)
            self.split.reset()
            self._drain()

    async def run(self) -> None:
        self._open(at_end=True)
        while True:
            try:
                self.poll()
            except Exception:
                log.exception("following %s", self.path)
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


async def serve_unix(path: Path, feed: LocalFeed, max_line: int) -> asyncio.AbstractServer:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # a stale socket of a previous run; never remove anything else

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        split = LineSplitter(max_line)
        try:
            while data := await reader.read(65536):
                feed.lines(split.feed(data))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, path=str(path))
    os.chmod(path, 0o660)  # the IDS's group may write, nobody else
    return server


class MonitorHandle:
    """What start_monitor returns: the bound port and `await close()`."""

    def __init__(self, intake: Intake, auth: Authenticator) -> None:
        self.intake = intake
        self.auth = auth
        self.port: int | None = None
        self.endpoint: AlertEndpoint | None = None
        self.tail: FileTail | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in self._servers:
            s.close()
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 5.0)
        if self.tail is not None:
            self.tail.close()


async def start_monitor(cfg: MonitorConfig, store: Store,
                        policy_getter: Callable[[], PolicyLike], planner: Planner | None, *,
                        state_dir: Path | None = None, nas_profile: NasProfile | None = None,
                        ) -> MonitorHandle:
    """Start every configured intake point in the running loop."""
    auth = Authenticator([m.credential() for m in cfg.monitors], window=cfg.replay_window)
    intake = Intake(store, policy_getter, planner, match_destination=cfg.match_destination,
                    session_slack=cfg.session_slack, nas_profile=nas_profile,
                    max_per_hour=cfg.max_isolations_per_hour)
    handle = MonitorHandle(intake, auth)
    try:
        if cfg.https:
            ctx = tls_context(cfg, state_dir)
            handle.endpoint = AlertEndpoint(cfg, auth, intake)
            srv = await asyncio.start_server(handle.endpoint.handle, cfg.listen, cfg.port,
                                             ssl=ctx, limit=16 * 1024,
                                             ssl_handshake_timeout=HEAD_TIMEOUT)
            handle._servers.append(srv)
            handle.port = srv.sockets[0].getsockname()[1]
            log.info("monitor: HTTPS alert endpoint on %s:%d, %d monitor(s)%s", cfg.listen,
                     handle.port, len(cfg.monitors),
                     ", client certificates accepted" if auth.wants_certificates else "")
        if cfg.eve_file:
            feed = LocalFeed(intake, cfg.local_name, cfg.local_min_severity, cfg.max_line,
                             cfg.eve_file)
            handle.tail = FileTail(Path(cfg.eve_file), feed, cfg.max_line, cfg.poll_interval)
            handle._tasks.append(asyncio.ensure_future(handle.tail.run()))
            log.info("monitor: following %s as %s", cfg.eve_file, cfg.local_name)
        if cfg.eve_socket:
            feed = LocalFeed(intake, cfg.local_name, cfg.local_min_severity, cfg.max_line,
                             cfg.eve_socket)
            handle._servers.append(await serve_unix(Path(cfg.eve_socket), feed, cfg.max_line))
            log.info("monitor: EVE socket %s as %s", cfg.eve_socket, cfg.local_name)
    except BaseException:
        await handle.close()
        raise
    return handle
