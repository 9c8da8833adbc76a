"""The one interface every EAP method implements (after hostapd's eap_server method table).

A method sees only type-data: the service owns codes, identifiers and RADIUS State.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from nac.accounts import Account, SecretBox
from nac.eap.config import EapConfig

if TYPE_CHECKING:
    from nac.eap.tls_engine import TlsContexts


@dataclass(frozen=True, slots=True)
class Outcome:
    """A successful authentication."""

    identity: str
    role: str
    method: str
    msk: bytes | None = None  # 64 octets when the method derives keys
    posture: dict | None = None  # what a posture method inside the tunnel reported

    def with_msk(self, msk: bytes | None) -> Outcome:
        """The inner method's outcome with the tunnel's keys (PEAP, TTLS); built directly,
        as dataclasses.replace costs several times more, once per tunnel."""
        return Outcome(self.identity, self.role, self.method, msk, self.posture)


@dataclass(frozen=True, slots=True)
class Slow:
    """Work too slow for the event loop (a password hash): `work()` is pure and may run in
    another thread; `resume(result)` continues where the method stopped, back on the
    thread that runs the conversation."""

    work: Callable[[], Any]
    resume: Callable[[Any], Any]


@dataclass(slots=True)  # not frozen: a few per round, and frozen init costs twice as much
class Step:
    kind: Literal["request", "success", "failure", "slow"]
    data: bytes = b""  # type-data of the next Request
    outcome: Outcome | None = None
    reason: str = ""
    slow: Slow | None = None  # kind "slow": run slow.work, then slow.resume(result) -> Step


def request(data: bytes) -> Step:
    return Step("request", data)


def fail(reason: str) -> Step:
    return Step("failure", reason=reason)


PostureFactory = Callable[["MethodEnv", Outcome], "Method | None"]


@dataclass(slots=True)
class MethodEnv:
    """What a method may consult: never I/O, only lookups the caller provided."""

    config: EapConfig
    lookup: Callable[[str], Account | None]
    box: SecretBox | None
    identity: str  # the EAP-Response/Identity (outer identity)
    tls: TlsContexts | None = None
    inner_allowed: Callable[[str], bool] = field(default=lambda _name: True)
    # After a tunnel authenticates, posture(env, outcome) may return a further inner EAP
    # method (e.g. EAP-TNC) to run inside the same tunnel; None skips posture.
    posture: PostureFactory | None = None
    # The `now` of the handle() call being served: the only clock methods may read.
    now: Callable[[], float] = field(default=lambda: 0.0)
    # Password check with the service's short-lived memo (scrypt costs ~0.2 s a try). A
    # service that runs on the event loop answers a Slow (the hash, for a thread) when its
    # memo does not know the password: the method returns it up, wrapped to resume itself.
    check_password: Callable[[Account, str], bool | Slow] = field(
        default=lambda account, password: account.check_password(password))

    def with_identity(self, identity: str) -> MethodEnv:
        """The same environment for another identity (an inner method's); built directly,
        as dataclasses.replace costs several times more, once per tunnel."""
        return MethodEnv(self.config, self.lookup, self.box, identity, self.tls,
                         self.inner_allowed, self.posture, self.now, self.check_password)


class Method(ABC):
    name: ClassVar[str]
    type: ClassVar[int]

    def __init__(self, env: MethodEnv) -> None:
        self.env = env

    @abstractmethod
    def start(self, ident: int) -> bytes:
        """Type-data of the first Request, sent with EAP identifier `ident`."""

    @abstractmethod
    def process(self, ident: int, data: bytes) -> Step:
        """Handle the type-data of a Response to the Request sent with `ident`."""

    # A posture method sets this before it returns its final Step("success").
    posture: dict | None = None


def account_permits(account: Account | None, method: str) -> bool:
    """Account.methods lists outer names ("peap"), full names ("ttls/pap") or inner names
    ("pap"); empty means every method the account holds keys for."""
    if account is None or not account.methods:
        return True
    parts = method.split("/")
    return method in account.methods or any(p in account.methods for p in parts)
