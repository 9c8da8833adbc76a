"""Switch inventory: how to reach each enforcement point and how its ports are named.

One ``Switch`` per managed switch. The lead's config loader holds ``switches: list[Switch]``;
``nac enforce --config FILE`` reads the same shape from a TOML file with ``[[switches]]``
tables (see ``nac.cli.enforce`` for an example).

Port mapping: RADIUS tells us NAS-Port (an integer) and/or NAS-Port-Id (a string, on most
switches the interface name); SNMP needs the ifIndex (and for Q-BRIDGE-MIB the
dot1dBasePort); SSH needs the interface name. ``PortMapping.resolve`` turns whichever is
known into all of them, from an explicit table first and then from patterns. Patterns are
parsed, never ``eval``-ed: ``name_pattern = "GigabitEthernet1/0/{nas_port}"`` and
``ifindex_pattern = "nas_port"`` or ``"nas_port + 10100"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DriverName = Literal["snmp", "ssh-linux-bridge", "ssh-cisco-ios", "coa"]


class _Model(BaseModel):
    # Unknown keys are typos in a config file: reject them with the key named.
    model_config = ConfigDict(extra="forbid")


class SnmpV2c(_Model):
    """SNMPv2c: a community string (read-write for set_port_vlan/bounce_port)."""

    version: Literal["2c"] = "2c"
    community: SecretStr
    port: int = 161
    timeout: float = 2.0
    retries: int = 1


class SnmpV3(_Model):
    """SNMPv3 USM user, authPriv (authNoPriv only if priv_key is absent)."""

    version: Literal["3"] = "3"
    user: str
    auth_protocol: Literal["SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5"] = "SHA"
    auth_key: SecretStr
    priv_protocol: Literal["AES", "AES192", "AES256", "DES"] = "AES"
    priv_key: SecretStr | None = None
    context: str = ""
    port: int = 161
    timeout: float = 2.0
    retries: int = 1


SnmpCredentials = Annotated[SnmpV2c | SnmpV3, Field(discriminator="version")]


class SshCredentials(_Model):
    """SSH login: user plus key file and/or password; enable secret for Cisco IOS."""

    username: str
    password: SecretStr | None = None
    key_file: str | None = None
    enable_secret: SecretStr | None = None
    port: int = 22
    timeout: float = 10.0

    @model_validator(mode="after")
    def _one_secret(self) -> SshCredentials:
        if self.password is None and self.key_file is None:
            raise ValueError("ssh needs password or key_file")
        return self


class CoaSettings(_Model):
    """RADIUS Dynamic Authorization (RFC 5176) client settings for this NAS.

    flavour: "generic" sends RFC 5176 attributes only; "cisco" adds
        cisco-avpair "subscriber:command=reauthenticate" / "bounce-host-port".
    vlan_method: how a VLAN change is attempted by CoA before falling back:
        "coa-vlan" sends a CoA-Request with Tunnel-* VLAN attributes,
        "reauthenticate" asks the NAS to re-authenticate (the new VLAN then comes in the
        Access-Accept), "disconnect" sends Disconnect-Request (the host re-authenticates),
        "none" skips CoA for VLAN changes.
    """

    secret: SecretStr
    address: str | None = None  # defaults to the switch's management address
    port: int = 3799
    timeout: float = 1.0
    retries: int = 2
    flavour: Literal["generic", "cisco"] = "generic"
    vlan_method: Literal["coa-vlan", "reauthenticate", "disconnect", "none"] = "coa-vlan"
    nas_ip: str | None = None  # NAS-IP-Address to put in requests, if the NAS wants one
    nas_identifier: str | None = None
    event_timestamp: bool = True


class LinuxBridgeOptions(_Model):
    """How a Linux-bridge switch models VLANs.

    vlan_mode "filtering": one bridge with vlan_filtering=1; a port's access VLAN is set
        with ``bridge vlan del/add dev PORT vid N pvid untagged``.
    vlan_mode "bridge-per-vlan": one bridge per VLAN (kernels without
        CONFIG_BRIDGE_VLAN_FILTERING); a port's VLAN is the bridge it is enslaved to, named
        by ``vlan_bridge_pattern`` (e.g. "vl{vlan}").
    """

    vlan_mode: Literal["filtering", "bridge-per-vlan"] = "filtering"
    bridge: str = "br0"
    vlan_bridge_pattern: str = "vl{vlan}"
    use_sudo: bool = False


class PortEntry(_Model):
    """One explicit row of the port table. base_port defaults to ifindex."""

    name: str
    ifindex: int | None = None
    base_port: int | None = None
    nas_port: int | None = None
    nas_port_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedPort:
    """Every identity of one switch port that we know."""

    name: str
    ifindex: int | None = None
    base_port: int | None = None
    nas_port: int | None = None


_IFINDEX_EXPR = re.compile(r"^\s*nas_port\s*(?:([+-])\s*(\d+))?\s*$")


class PortMapping(_Model):
    """RADIUS port identity -> interface name, ifIndex and dot1dBasePort."""

    table: list[PortEntry] = Field(default_factory=list)
    name_pattern: str | None = None
    ifindex_pattern: str | None = None
    base_port_pattern: str | None = None
    nas_port_id_is_name: bool = True

    @field_validator("name_pattern")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        if v is not None and v.count("{nas_port}") != 1:
            raise ValueError("name_pattern must contain {nas_port} exactly once")
        return v

    @field_validator("ifindex_pattern", "base_port_pattern")
    @classmethod
    def _check_expr(cls, v: str | None) -> str | None:
        if v is not None and not _IFINDEX_EXPR.match(v):
            raise ValueError("expected 'nas_port', 'nas_port + N' or 'nas_port - N'")
        return v

    @staticmethod
    def _apply(expr: str | None, nas_port: int | None) -> int | None:
        if expr is None or nas_port is None:
            return None
        m = _IFINDEX_EXPR.match(expr)
        assert m is not None  # validated
        sign, num = m.groups()
        if not sign:
            return nas_port
        return nas_port + int(num) if sign == "+" else nas_port - int(num)

    def _nas_port_from_name(self, name: str) -> int | None:
        if self.name_pattern is None:
            return None
        head, tail = self.name_pattern.split("{nas_port}")
        m = re.fullmatch(re.escape(head) + r"(\d+)" + re.escape(tail), name)
        return int(m.group(1)) if m else None

    def resolve(
        self,
        name: str | None = None,
        nas_port: int | None = None,
        nas_port_id: str | None = None,
    ) -> ResolvedPort:
        """Resolve a port from any of its identities. Raises LookupError if impossible."""
        for row in self.table:
            if (
                (name is not None and row.name == name)
                or (nas_port_id is not None and row.nas_port_id == nas_port_id)
                or (nas_port is not None and row.nas_port == nas_port)
            ):
                return ResolvedPort(
                    row.name,
                    row.ifindex,
                    row.base_port if row.base_port is not None else row.ifindex,
                    row.nas_port,
                )
        if name is None and nas_port_id is not None and self.nas_port_id_is_name:
            name = nas_port_id
        if nas_port is None and name is not None:
            nas_port = self._nas_port_from_name(name)
        if name is None and nas_port is not None and self.name_pattern is not None:
            name = self.name_pattern.replace("{nas_port}", str(nas_port))
        if name is None:
            raise LookupError(
                f"cannot resolve port (name={name!r}, nas_port={nas_port!r}, "
                f"nas_port_id={nas_port_id!r})"
            )
        ifindex = self._apply(self.ifindex_pattern, nas_port)
        base = self._apply(self.base_port_pattern, nas_port)
        return ResolvedPort(name, ifindex, base if base is not None else ifindex, nas_port)


class Switch(_Model):
    """One inventory entry.

    driver: the port driver used for VLAN changes and bounces ("snmp",
        "ssh-linux-bridge", "ssh-cisco-ios"), or "coa" for a switch managed by RADIUS CoA
        only. Independently, a ``coa`` section means the switch takes CoA, which the
        Enforcer tries first for live sessions.
    vendor: "generic", "cisco", "linux", ...; picks vendor flavours inside drivers (e.g.
        SNMP on "cisco" uses CISCO-VLAN-MEMBERSHIP-MIB vmVlan unless snmp_vlan_mib says).
    """

    name: str
    address: str
    driver: DriverName
    vendor: str = "generic"
    snmp: SnmpCredentials | None = None
    ssh: SshCredentials | None = None
    coa: CoaSettings | None = None
    ports: PortMapping = Field(default_factory=PortMapping)
    linux_bridge: LinuxBridgeOptions = Field(default_factory=LinuxBridgeOptions)
    snmp_vlan_mib: Literal["auto", "qbridge", "qbridge-static", "cisco-vmvlan"] = "auto"
    bounce_after_vlan: bool = True
    bounce_down_seconds: float = 1.0

    @model_validator(mode="after")
    def _credentials_for_driver(self) -> Switch:
        need = {
            "snmp": ("snmp", self.snmp),
            "ssh-linux-bridge": ("ssh", self.ssh),
            "ssh-cisco-ios": ("ssh", self.ssh),
            "coa": ("coa", self.coa),
        }[self.driver]
        if need[1] is None:
            raise ValueError(f"driver {self.driver!r} needs a [{need[0]}] section")
        return self

    @property
    def takes_coa(self) -> bool:
        return self.coa is not None

    def vlan_mib(self) -> str:
        """The SNMP VLAN MIB to use, after resolving "auto" by vendor."""
        if self.snmp_vlan_mib != "auto":
            return self.snmp_vlan_mib
        return "cisco-vmvlan" if self.vendor.lower() == "cisco" else "qbridge"


class Inventory(_Model):
    """The ``switches`` list of a config file, with lookup by name."""

    switches: list[Switch] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        names = [s.name for s in self.switches]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate switch names: {sorted(dup)}")
        return self

    def get(self, name: str) -> Switch:
        for s in self.switches:
            if s.name == name:
                return s
        raise KeyError(name)
