"""HTTPS feed polling against a real TLS server on loopback: ETag / If-Modified-Since, zip, sig."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import ipaddress
import ssl
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nac.prevention import cache
from nac.prevention.cache import FeedSource
from nac.prevention.index import load_index
from nac.prevention.signing import generate_keypair, load_private_key, sign_bytes
from nac.prevention.sync import sync

DATA = Path(__file__).parent / "data" / "osv"
LAST_MODIFIED = "Tue, 24 Oct 2023 12:00:00 GMT"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class FeedServer:
    """Serves in-memory files with strong ETags; records each request's conditional headers."""

    def __init__(self, cert: Path | None, key: Path | None) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, str | None, str | None, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                inm = self.headers.get("If-None-Match")
                ims = self.headers.get("If-Modified-Since")
                if body is None:
                    status = 404
                else:
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    status = 304 if inm == etag else 200
                server.requests.append((self.path, inm, ims, status))
                self.send_response(status)
                if body is not None:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", LAST_MODIFIED)
                if status == 200:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if cert is not None and key is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[FeedServer, Path]]:
    cert, key = self_signed(tmp_path)
    srv = FeedServer(cert, key)
    yield srv, cert
    srv.close()


def all_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(DATA.glob("*.json")):
            zf.writestr(f.name, f.read_bytes())
    return buf.getvalue()


def add(db: Path, name: str, url: str, cafile: Path | None, pubkey: str | None = None) -> None:
    with cache.opened(db) as conn:
        cache.add_source(
            conn,
            FeedSource(
                name, url, None, "vendor", pubkey, str(cafile) if cafile else None, None, None, None
            ),
        )


def test_etag_polling_second_sync_304_imports_nothing(
    server: tuple[FeedServer, Path], tmp_path: Path
) -> None:
    srv, cert = server
    srv.files["/osv/all.zip"] = all_zip()
    db = tmp_path / "nac.db"
    add(db, "osv", srv.url("/osv/all.zip"), cert)

    first = sync(db, "osv")
    assert first.errors == [] and len(first.added) == 3
    epoch = first.epoch
    second = sync(db, "osv")
    assert second.not_modified == ["osv"]
    assert (second.added, second.updated, second.withdrawn, second.unchanged) == ([], [], [], 0)
    assert second.epoch == epoch
    # The second request was conditional and answered 304.
    (_, inm1, ims1, st1), (_, inm2, ims2, st2) = srv.requests
    assert (inm1, ims1, st1) == (None, None, 200)
    assert inm2 is not None and ims2 == LAST_MODIFIED and st2 == 304

    # The feed changes: a new body, a new ETag, a real import.
    srv.files["/osv/all.zip"] = (
        (DATA / "DSA-5532-1.json")
        .read_bytes()
        .replace(b'"2023-10-25T14:01:56Z"', b'"2024-05-01T00:00:00Z"')
    )
    third = sync(db, "osv")
    assert third.updated == ["DSA-5532-1"] and third.epoch == epoch + 1
    assert load_index(db).epoch == epoch + 1


def test_untrusted_certificate_is_refused(server: tuple[FeedServer, Path], tmp_path: Path) -> None:
    srv, _ = server
    srv.files["/a.json"] = (DATA / "DSA-5532-1.json").read_bytes()
    db = tmp_path / "nac.db"
    add(db, "nocert", srv.url("/a.json"), None)  # system CAs do not know our test cert
    report = sync(db, "nocert")
    assert report.added == [] and "source nocert" in report.errors[0]
    assert "CERTIFICATE_VERIFY_FAILED" in report.errors[0]


def test_signed_url_feed_and_tampered_body(server: tuple[FeedServer, Path], tmp_path: Path) -> None:
    srv, cert = server
    priv, pub = generate_keypair(tmp_path / "keys")
    body = (DATA / "GHSA-j8r2-6x86-q33q.json").read_bytes()
    srv.files["/pypi.json"] = body
    srv.files["/pypi.json.sig"] = sign_bytes(load_private_key(priv), body)
    db = tmp_path / "nac.db"
    add(db, "pypi", srv.url("/pypi.json"), cert, pub.read_text())
    assert sync(db, "pypi").added == ["GHSA-j8r2-6x86-q33q"]

    srv.files["/pypi.json"] = body.replace(b"2.31.0", b"2.31.1")  # ETag changes too
    report = sync(db, "pypi")
    assert report.updated == []
    assert report.errors == [
        f"source pypi: {srv.url('/pypi.json')}: signature does not verify (feed altered?)"
    ]


def test_redirect_to_plain_http_refused_for_unsigned_feed(
    server: tuple[FeedServer, Path], tmp_path: Path
) -> None:
    srv, cert = server
    plain = FeedServer(None, None)
    try:
        plain.files["/a.json"] = (DATA / "DSA-5532-1.json").read_bytes()
        srv.redirects["/a.json"] = plain.url("/a.json")
        db = tmp_path / "nac.db"
        add(db, "redir", srv.url("/a.json"), cert)
        report = sync(db, "redir")
        assert report.added == []
        assert report.errors == [
            f"source redir: {srv.url('/a.json')}: redirected to {plain.url('/a.json')}"
        ]
    finally:
        plain.close()
