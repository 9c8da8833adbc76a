"""A small private CA for EAP: the server certificate, client certificates and a CRL.

Layout under STATE/pki/: ca.pem ca.key server.pem server.key crl.pem, and issued/NAME.pem
(every client certificate issued, so `revoke NAME` can find its serial). Keys are ECDSA
P-256 by default (small handshakes, fewer EAP round trips) or RSA-2048 for old supplicants.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_DAYS, SERVER_DAYS, CLIENT_DAYS, CRL_DAYS = 3650, 825, 365, 365
SERVER_NAME = "nac-radius"


class PkiError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class PkiPaths:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    crl: Path
    issued: Path

    @classmethod
    def under(cls, state_dir: Path) -> PkiPaths:
        d = Path(state_dir) / "pki"
        return cls(d, d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key",
                   d / "crl.pem", d / "issued")

    def complete(self) -> bool:
        return all(p.exists() for p in (self.ca_cert, self.ca_key, self.server_cert,
                                        self.server_key, self.crl))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key(use_rsa: bool) -> PrivateKey:
    if use_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Quarantine NAC"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _load(paths: PkiPaths) -> tuple[x509.Certificate, PrivateKey]:
    if not (paths.ca_cert.exists() and paths.ca_key.exists()):
        raise PkiError(f"no CA in {paths.dir}: run `nac pki init` first")
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
    return ca, key


def _issue(ca: x509.Certificate, ca_key: PrivateKey, subject: x509.Name, key: PrivateKey,
           days: int, eku: x509.ObjectIdentifier, san: list[x509.GeneralName]
           ) -> x509.Certificate:
    now = _now()
    usage = x509.KeyUsage(
        digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        content_commitment=False, data_encipherment=False, key_agreement=False,
        key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _write_crl(paths: PkiPaths, ca: x509.Certificate, ca_key: PrivateKey,
               revoked: list[x509.RevokedCertificate]) -> None:
    now = _now()
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.subject)
               .last_update(now - dt.timedelta(minutes=5))
               .next_update(now + dt.timedelta(days=CRL_DAYS)))
    for r in revoked:
        builder = builder.add_revoked_certificate(r)
    crl = builder.sign(ca_key, hashes.SHA256())
    _write(paths.crl, crl.public_bytes(serialization.Encoding.PEM))


def init_pki(state_dir: Path, *, use_rsa: bool = False, force: bool = False,
             server_name: str = SERVER_NAME) -> PkiPaths:
    """Create the CA, the server certificate (serverAuth) and an empty CRL."""
    paths = PkiPaths.under(state_dir)
    if paths.ca_cert.exists() and not force:
        raise PkiError(f"a CA already exists in {paths.dir} (use --force to replace it)")
    now = _now()
    ca_key = _new_key(use_rsa)
    subject = _name("Quarantine NAC EAP CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, key_encipherment=False,
            content_commitment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _new_key(use_rsa)
    server = _issue(ca, ca_key, _name(server_name), server_key, SERVER_DAYS,
                    ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName(server_name)])
    _write_key(paths.ca_key, ca_key)
    _write(paths.ca_cert, _pem(ca))
    _write_key(paths.server_key, server_key)
    _write(paths.server_cert, _pem(server))
    if paths.issued.exists():
        shutil.rmtree(paths.issued)  # certificates of a replaced CA are void anyway
    paths.issued.mkdir(parents=True)
    _write_crl(paths, ca, ca_key, [])
    return paths


def ensure_pki(state_dir: Path) -> PkiPaths:
    """The PKI under state_dir, created on first use (what `nac serve` calls at start)."""
    paths = PkiPaths.under(state_dir)
    if not paths.complete():
        init_pki(state_dir, force=True)
    return paths


def _san_for(name: str) -> x509.GeneralName:
    return x509.RFC822Name(name) if "@" in name else x509.DNSName(name)


def issue_client(state_dir: Path, name: str, out_dir: Path, *, use_rsa: bool = False
                 ) -> tuple[Path, Path, Path]:
    """A client certificate (clientAuth, CN=name, SAN e-mail or DNS); returns cert, key, CA."""
    if not name or "/" in name or name.startswith("."):
        raise PkiError(f"bad client name {name!r}")
    paths = PkiPaths.under(state_dir)
    ca, ca_key = _load(paths)
    key = _new_key(use_rsa)
    cert = _issue(ca, ca_key, _name(name), key, CLIENT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH,
                  [_san_for(name)])
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path, ca_path = out_dir / f"{name}.pem", out_dir / f"{name}.key", \
        out_dir / "ca.pem"
    _write(cert_path, _pem(cert))
    _write_key(key_path, key)
    _write(ca_path, paths.ca_cert.read_bytes())
    _write(paths.issued / f"{name}.pem", _pem(cert))
    return cert_path, key_path, ca_path


def revoke(state_dir: Path, name: str) -> int:
    """Add the certificate issued to `name` to the CRL; returns its serial."""
    paths = PkiPaths.under(state_dir)
    ca, ca_key = _load(paths)
    issued = paths.issued / f"{name}.pem"
    if not issued.exists():
        raise PkiError(f"no certificate was issued to {name!r}")
    serial = x509.load_pem_x509_certificate(issued.read_bytes()).serial_number
    revoked = list(x509.load_pem_x509_crl(paths.crl.read_bytes())) if paths.crl.exists() else []
    if all(r.serial_number != serial for r in revoked):
        revoked.append(x509.RevokedCertificateBuilder().serial_number(serial)
                       .revocation_date(_now()).build())
    _write_crl(paths, ca, ca_key, revoked)
    return serial


def describe(state_dir: Path) -> list[str]:
    """Human-readable lines for `nac pki show`."""
    paths = PkiPaths.under(state_dir)
    if not paths.ca_cert.exists():
        return [f"no PKI in {paths.dir}"]
    lines = []
    for label, p in (("CA", paths.ca_cert), ("server", paths.server_cert)):
        cert = x509.load_pem_x509_certificate(p.read_bytes())
        lines.append(f"{label}: {cert.subject.rfc4514_string()} serial {cert.serial_number:x} "
                     f"until {cert.not_valid_after_utc:%Y-%m-%d} ({p})")
    revoked = {r.serial_number for r in x509.load_pem_x509_crl(paths.crl.read_bytes())} \
        if paths.crl.exists() else set()
    for p in sorted(paths.issued.glob("*.pem")) if paths.issued.exists() else []:
        cert = x509.load_pem_x509_certificate(p.read_bytes())
        state = "REVOKED" if cert.serial_number in revoked else "valid"
        lines.append(f"client {p.stem}: serial {cert.serial_number:x} until "
                     f"{cert.not_valid_after_utc:%Y-%m-%d} {state}")
    lines.append(f"CRL: {len(revoked)} revoked ({paths.crl})")
    return lines
