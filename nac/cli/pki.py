"""`nac pki`: the private CA for EAP-TLS, PEAP and TTLS."""

from __future__ import annotations

from pathlib import Path

import click

from nac.cli.common import fail, state_dir_option
from nac.pki import SERVER_NAME, PkiError, describe, init_pki, issue_client, revoke


@click.group("pki")
def pki() -> None:
    """Certificates for EAP: CA, server certificate, client certificates, CRL."""


@pki.command("init")
@state_dir_option
@click.option("--rsa", "use_rsa", is_flag=True, help="RSA-2048 keys instead of ECDSA P-256.")
@click.option("--force", is_flag=True, help="Replace an existing CA (voids issued certificates).")
@click.option("--server-name", default=SERVER_NAME, show_default=True,
              help="CN and DNS name of the server certificate (what supplicants may check).")
def init_cmd(state_dir: Path, use_rsa: bool, force: bool, server_name: str) -> None:
    """Create STATE/pki/: ca.pem ca.key server.pem server.key crl.pem."""
    try:
        paths = init_pki(state_dir, use_rsa=use_rsa, force=force, server_name=server_name)
    except PkiError as exc:
        fail(str(exc))
        return
    click.echo(f"CA and server certificate written to {paths.dir}")


@pki.command("client")
@state_dir_option
@click.argument("name")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for NAME.pem, NAME.key and ca.pem.",
)
@click.option("--rsa", "use_rsa", is_flag=True, help="RSA-2048 key instead of ECDSA P-256.")
def client_cmd(state_dir: Path, name: str, out_dir: Path, use_rsa: bool) -> None:
    """Issue a client certificate for EAP-TLS (CN=NAME; SAN e-mail if NAME has @, else DNS)."""
    try:
        cert, key, ca = issue_client(state_dir, name, out_dir, use_rsa=use_rsa)
    except PkiError as exc:
        fail(str(exc))
        return
    click.echo(f"certificate {cert}\nkey {key}\nCA {ca}")


@pki.command("revoke")
@state_dir_option
@click.argument("name")
def revoke_cmd(state_dir: Path, name: str) -> None:
    """Revoke the certificate issued to NAME (rewrites crl.pem; restart or reload the server)."""
    try:
        serial = revoke(state_dir, name)
    except PkiError as exc:
        fail(str(exc))
        return
    click.echo(f"revoked {name} (serial {serial:x})")


@pki.command("show")
@state_dir_option
def show_cmd(state_dir: Path) -> None:
    """CA, server certificate, issued client certificates and the CRL."""
    for line in describe(state_dir):
        click.echo(line)


def register(cli: click.Group) -> None:
    cli.add_command(pki)
