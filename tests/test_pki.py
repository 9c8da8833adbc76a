"""`nac pki`: CA, server and client certificates, CRL; through the library and the CLI."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from nac.cli.main import cli
from nac.pki import PkiPaths, ensure_pki


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def eku(c: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_init_client_revoke_show(tmp_path: Path) -> None:
    state = str(tmp_path / "st")
    run("pki", "init", "--state-dir", state)
    paths = PkiPaths.under(Path(state))
    assert paths.complete()
    assert (paths.ca_key.stat().st_mode & 0o777) == 0o600
    ca, server = cert(paths.ca_cert), cert(paths.server_cert)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert eku(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    server.verify_directly_issued_by(ca)

    out = tmp_path / "out"
    run("pki", "client", "alice@example.com", "--out", str(out), "--state-dir", state)
    run("pki", "client", "host1", "--out", str(out), "--state-dir", state)
    alice = cert(out / "alice@example.com.pem")
    alice.verify_directly_issued_by(ca)
    assert eku(alice) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = alice.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    host = cert(out / "host1.pem")
    san = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["host1"]
    assert (out / "ca.pem").read_bytes() == paths.ca_cert.read_bytes()

    run("pki", "revoke", "alice@example.com", "--state-dir", state)
    crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert [r.serial_number for r in crl] == [alice.serial_number]
    shown = run("pki", "show", "--state-dir", state)
    assert "client alice@example.com" in shown and "REVOKED" in shown
    assert "client host1" in shown and "CRL: 1 revoked" in shown


def test_rsa_and_force(tmp_path: Path) -> None:
    state = str(tmp_path)
    run("pki", "init", "--rsa", "--state-dir", state)
    paths = PkiPaths.under(tmp_path)
    key = cert(paths.server_cert).public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    again = CliRunner().invoke(cli, ["pki", "init", "--state-dir", state])
    assert again.exit_code == 1 and "already exists" in again.output
    old = paths.ca_cert.read_bytes()
    run("pki", "init", "--force", "--server-name", "radius.example.net", "--state-dir", state)
    assert paths.ca_cert.read_bytes() != old
    san = cert(paths.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["radius.example.net"]


def test_errors_are_clear(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["pki", "client", "x", "--out", str(tmp_path / "o"),
                                 "--state-dir", str(tmp_path)])
    assert r.exit_code == 1 and "nac pki init" in r.output
    run("pki", "init", "--state-dir", str(tmp_path))
    r = CliRunner().invoke(cli, ["pki", "revoke", "ghost", "--state-dir", str(tmp_path)])
    assert r.exit_code == 1 and "ghost" in r.output


def test_ensure_pki_creates_once(tmp_path: Path) -> None:
    p1 = ensure_pki(tmp_path)
    first = p1.ca_cert.read_bytes()
    p2 = ensure_pki(tmp_path)
    assert p2 == p1 and p2.ca_cert.read_bytes() == first
