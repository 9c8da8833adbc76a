"""The server pieces harnesses drive, built once per process the way nac/app.py builds them:
demo secret and account, the sample policy, a PKI in a temporary directory, and the EAP
service with EAP-TNC posture inside the tunnels. No store: decisions go to no-ops."""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

SECRET = b"testing123"
NAS_ADDR = "127.0.0.1"
USER, PASSWORD = "demo", "demo-password"
NOW = 1_000_000.0


@functools.cache
def state_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="nac-fuzz-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.cache
def accounts() -> tuple[dict[str, Any], Any]:
    from nac.accounts import SecretBox, make_account

    box = SecretBox(state_dir() / "keys" / "accounts.key")
    acct = make_account(USER, PASSWORD, allow_md5=True, box=box)
    # Same scrypt$N$r$p format and verifier, tiny cost: a wrong PAP password in a fuzz
    # input must not cost the 0.2 s the production parameters are tuned for.
    salt = b"fuzz-salt-16byte"
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2, r=1, p=1, dklen=32)
    b64 = base64.b64encode
    acct.password_hash = f"scrypt$2$1$1${b64(salt).decode()}${b64(digest).decode()}"
    return {USER: acct}, box


def judge(posture: dict[str, Any], outcome: Any) -> tuple[str, int, list[str], bytes | None]:
    """The IMV verdict of app.Server.judge_posture, from the sample policy."""
    from nac.app import assessment, recommendation

    d = evaluator()(posture, outcome.role, outcome.identity, None, "generic")
    policy = sample_policy()
    return recommendation(policy, d.segment), assessment(policy, d.segment), list(
        d.remediation), None


@functools.cache
def sample_policy() -> Any:
    from nac.posture.policy import Policy

    return Policy.sample()


def evaluator() -> Any:
    from nac.posture.evaluate import evaluate

    policy = sample_policy()

    def run(posture: dict[str, Any] | None, role: str, *rest: Any) -> Any:
        # Authorizer passes (posture, role, identity, group, vendor); older code passed no
        # identity. Group and vendor are the last two either way. A fixed clock: the same
        # input must give the same decision on replay.
        group, vendor = rest[-2], rest[-1]
        return evaluate(policy, posture, role=role, index=None, now=NOW, nas_group=group,
                        vendor=vendor)

    return run


@functools.cache
def pki() -> Any:
    from nac.pki import ensure_pki

    return ensure_pki(state_dir())


def eap_service(**settings: Any) -> Any:
    """A fresh EapService (conversations do not leak between inputs)."""
    from nac.eap.methods.tnc import tnc_posture
    from nac.eap.service import EapService, config_from_settings

    accts, box = accounts()
    cfg = config_from_settings(_Settings(settings), pki())
    return EapService(cfg, accts.get, box, posture=tnc_posture(judge))


class _Settings:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


@functools.cache
def shared_eap_service() -> Any:
    """Building TLS contexts costs milliseconds; harnesses that only need a service reuse
    this one and expire every conversation before each input."""
    return eap_service()


def engine() -> Any:
    from nac.authorize import Authorizer
    from nac.radius.clients import ClientTable, NasClient, profile
    from nac.radius.engine import Engine

    clients = ClientTable([NasClient(network=NAS_ADDR, secret=SECRET, name="fuzz-nas",
                                     profile=profile("generic"), group=None,
                                     require_message_authenticator=True)])
    svc = shared_eap_service()
    svc.expire(float("inf"))
    return Engine(clients, Authorizer(sample_policy(), evaluator()), accounts()[0], eap=svc,
                  on_decision=lambda r: None, on_accounting=lambda r: None)
