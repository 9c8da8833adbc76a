"""EAP-MD5 (RFC 3748 5.4): CHAP over EAP. Needs the cleartext secret, so only accounts that
keep a sealed md5_secret can use it; no keys are derived."""

from __future__ import annotations

import hashlib
import hmac
import os

from nac.eap import packet
from nac.eap.methods.base import Method, Outcome, Step, account_permits, fail


class Md5Method(Method):
    name = "md5"
    type = packet.MD5

    def start(self, ident: int) -> bytes:
        self._challenge = os.urandom(16)
        return bytes([16]) + self._challenge + self.env.config.server_name.encode()

    def process(self, ident: int, data: bytes) -> Step:
        if len(data) < 1 or data[0] != 16 or len(data) < 17:
            return fail("EAP-MD5: malformed response")
        account = self.env.lookup(self.env.identity)
        box = self.env.box
        if account is None or not account.md5_secret or box is None:
            return fail("EAP-MD5: unknown user or no MD5 secret")
        if not account_permits(account, self.name):
            return fail("EAP-MD5: method not allowed for account")
        secret = box.open(account.md5_secret)
        if secret is None:
            return fail("EAP-MD5: sealed secret unreadable")
        want = hashlib.md5(bytes([ident]) + secret.encode() + self._challenge).digest()
        if not hmac.compare_digest(want, data[1:17]):
            return fail("EAP-MD5: wrong password")
        return Step("success", outcome=Outcome(account.name, account.role, self.name))
