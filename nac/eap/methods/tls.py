"""EAP-TLS (RFC 5216; RFC 9190 for TLS 1.3): the client certificate is the credential.

The chain is verified by OpenSSL against ca_file; revocation against the CA-signed CRL.
The identity is the certificate's SAN (e-mail, then DNS name) or else its CN.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from nac.eap import packet
from nac.eap.methods.base import Outcome, Step, account_permits, fail
from nac.eap.methods.tlsbase import TlsMethodBase


def certificate_identity(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.RFC822Name, x509.DNSName):
            names = san.get_values_for_type(kind)
            if names:
                return str(names[0])
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


class TlsMethod(TlsMethodBase):
    name = "tls"
    type = packet.TLS
    tls_name = "tls"

    outcome: Outcome | None = None

    def on_established(self, flight_pending: bool) -> Step | bytes | None:
        cert = self.tls.peer_certificate()
        if cert is None:
            return fail("EAP-TLS: no client certificate")
        assert self.env.tls is not None
        if cert.serial_number in self.env.tls.revoked:
            return fail(f"EAP-TLS: certificate {cert.serial_number:x} is revoked")
        identity = certificate_identity(cert)
        if not identity:
            return fail("EAP-TLS: certificate names no identity")
        account = self.env.lookup(identity)
        if account is None and self.env.config.tls_require_account:
            return fail(f"EAP-TLS: no account for {identity}")
        if not account_permits(account, self.name):
            return fail("EAP-TLS: method not allowed for account")
        role = account.role if account else "default"
        self.outcome = Outcome(identity, role, self.name, self.msk)
        # RFC 9190 2.5: with TLS 1.3 a one-octet 0x00 record commits to "no more handshake".
        return b"\x00" if self.tls.version == "1.3" else None

    def on_app(self, plain: bytes) -> Step | bytes | None:
        return None  # nothing is expected from the peer inside EAP-TLS; ignore it

    def _done(self) -> Step:
        if self.outcome is None:
            return fail("EAP-TLS: handshake not complete")
        return Step("success", outcome=self.outcome)

    def on_flight_acked(self) -> Step:
        return self._done()

    def on_idle(self) -> Step:
        return self._done()
