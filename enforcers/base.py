"""The one interface every enforcement-point driver implements.

Modelled on NAPALM's ``NetworkDriver``: a driver is built from one inventory entry, opened
once, used for many calls and closed. Vendors differ only inside their driver; the
``Enforcer`` and the queue see this interface alone.

All methods are coroutines because the server is asyncio. Drivers whose client library is
blocking (netmiko) run it in a worker thread and serialise calls per switch.

Errors: every failure is a ``DriverError`` carrying ``retryable``. Retryable means "the same
call may succeed later" (timeouts, connection refused, NAS out of resources); not retryable
means "repeating it cannot help" (bad credentials, unknown port, NAK for an unsupported
attribute). ``NotSupportedError`` is a non-retryable ``DriverError`` for an operation the
driver cannot do at all (e.g. ``get_port_vlan`` over RADIUS CoA).
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from enforcers.inventory import Switch


class DriverError(Exception):
    """A driver operation failed.

    retryable: True when the same operation may succeed later (switch unreachable,
        timeout, NAS busy); the queue then backs off and retries. False when repeating it
        cannot help; the queue dead-letters the job or the enforcer falls back.
    switch: the inventory name of the switch, when known.
    error_cause: the RADIUS Error-Cause of a NAK (RFC 5176 section 3.6), when one came.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        switch: str | None = None,
        error_cause: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.switch = switch
        self.error_cause = error_cause


def check_readback(switch: str, port: str, got: int | None, vlan: int) -> None:
    """The port's VLAN read back from the switch after setting ``vlan``: the switch's own
    state is the proof, not the command's status. A mismatch is retried (the queue backs
    off), since a busy switch may apply a change late."""
    if got != vlan:
        raise DriverError(f"{switch}: {port} VLAN is {got} after setting {vlan}",
                          retryable=True, switch=switch)


class NotSupportedError(DriverError):
    """The driver cannot perform this operation at all (never retryable)."""

    def __init__(self, message: str, *, switch: str | None = None) -> None:
        super().__init__(message, retryable=False, switch=switch)


@dataclass(frozen=True, slots=True)
class ReauthResult:
    """Outcome of ``reauthenticate``.

    ok: the NAS accepted the request (CoA-ACK / Disconnect-ACK) or the port was bounced.
    method: what was done: "coa-reauthenticate", "coa-bounce", "disconnect", "bounce".
    code: the RADIUS reply code (41 Disconnect-ACK, 42 Disconnect-NAK, 44 CoA-ACK,
        45 CoA-NAK), or None when no RADIUS was involved.
    error_cause: the Error-Cause value of a NAK, if present (e.g. 503
        Session-Context-Not-Found, 401 Unsupported-Attribute).
    error_cause_name: its RFC 5176 name, for logs and the CLI.
    detail: one human-readable line.
    elapsed: seconds from first send to reply.
    """

    ok: bool
    method: str
    code: int | None = None
    error_cause: int | None = None
    error_cause_name: str | None = None
    detail: str = ""
    elapsed: float = 0.0
    attributes: dict[int, list[bytes]] = field(default_factory=dict, compare=False)


class NetworkDriver(abc.ABC):
    """Base class of the enforcement drivers.

    A driver instance serves one switch. ``open`` connects (or prepares transports) and may
    be called again after ``close``; the other methods open lazily if needed.
    ``port`` is always the interface name as the inventory resolves it (see
    ``enforcers.inventory.PortMapping.resolve``), e.g. "swp1" or "GigabitEthernet1/0/3".
    """

    #: inventory driver name, e.g. "snmp"
    name: ClassVar[str] = ""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch

    async def __aenter__(self) -> NetworkDriver:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect or prepare transports. Raises DriverError (retryable when unreachable)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Never raises."""

    async def get_port_vlan(self, port: str) -> int:
        """Return the access (untagged, PVID) VLAN ID of ``port``.

        Raises DriverError; NotSupportedError when the driver cannot read VLANs.
        """
        raise NotSupportedError(f"{self.name}: get_port_vlan not supported",
                                switch=self.switch.name)

    async def set_port_vlan(self, port: str, vlan: int) -> None:
        """Make ``vlan`` the access VLAN of ``port`` (untagged egress + PVID), removing the old.

        Idempotent: setting the current VLAN again succeeds. Returns once the switch
        confirmed the change. Raises DriverError; NotSupportedError if impossible.
        """
        raise NotSupportedError(f"{self.name}: set_port_vlan not supported",
                                switch=self.switch.name)

    async def bounce_port(self, port: str) -> None:
        """Take ``port`` administratively down and up again, so the host re-runs DHCP/802.1X.

        Raises DriverError; NotSupportedError if impossible.
        """
        raise NotSupportedError(f"{self.name}: bounce_port not supported",
                                switch=self.switch.name)

    async def reauthenticate(
        self,
        mac: str | None = None,
        port: str | None = None,
        session: str | None = None,
    ) -> ReauthResult:
        """Make the NAS re-authenticate the session identified by any of mac/port/session.

        Returns a ReauthResult; a NAK is a result with ok=False, not an exception.
        Raises DriverError for transport failures (retryable) and NotSupportedError.
        This default, used by the port drivers (SNMP, SSH), bounces ``port``: the link
        flap makes the switch's authenticator start 802.1X again. Without a port it
        raises NotSupportedError.
        """
        if port is None:
            raise NotSupportedError(f"{self.name}: reauthenticate needs a port",
                                    switch=self.switch.name)
        t0 = time.perf_counter()
        await self.bounce_port(port)
        return ReauthResult(ok=True, method="bounce", detail=f"bounced {port}",
                            elapsed=time.perf_counter() - t0)
