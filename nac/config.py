"""The server configuration: a TOML file, validated, with errors that name the key.

Every key is documented in README.md ("Configuration reference"). With no file, `embedded()`
gives the demo default: loopback NAS clients with secret testing123, the demo account and
the sample policy's segments.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nac.monitor.config import MonitorConfig
from nac.radius.replies import PROFILES

DEMO_SECRET = "testing123"
DEMO_ACCOUNT = ("demo", "demo-password")


class ConfigError(Exception):
    """A configuration file is not valid; the message names the file, key and reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Client(_Strict):
    """A NAS (switch, access point) allowed to send requests."""

    address: str  # an address or a CIDR network
    secret: str = Field(min_length=1, repr=False)
    name: str | None = None
    vendor: str = "generic"
    group: str | None = None  # segment VLAN overrides are keyed by group
    # BlastRADIUS (CVE-2024-3596): requests without a valid Message-Authenticator are dropped.
    require_message_authenticator: bool = True

    @field_validator("address")
    @classmethod
    def _network(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP address or CIDR network: {v!r}") from exc

    @field_validator("vendor")
    @classmethod
    def _vendor(cls, v: str) -> str:
        if v not in PROFILES:
            raise ValueError(f"unknown vendor profile {v!r}; one of {', '.join(PROFILES)}")
        return v


class AccountEntry(_Strict):
    role: str = "default"
    password_hash: str | None = None
    nt_hash: str | None = None
    md5_secret: str | None = Field(default=None, repr=False)
    methods: list[str] = Field(default_factory=list)


class EapSettings(_Strict):
    idle_timeout: float = Field(default=30.0, gt=0)
    max_conversations: int = Field(default=10_000, ge=1)
    max_bytes_per_conversation: int = Field(default=262_144, ge=4096)
    fragment_size: int = Field(default=1020, ge=100, le=4000)
    default_method: str = "peap"
    methods: list[str] = Field(default_factory=list)  # empty: every method this server has
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    # "tnc": run EAP-TNC inside TTLS/PEAP after authentication (draft 5.3). wpa_supplicant
    # fails the whole authentication when it has no /etc/tnc_config at all (it NAKs when
    # the file exists without IMCs), so turn it off where hosts carry no agent config.
    posture: Literal["tnc", "off"] = "tnc"
    # Re-inspection with a valid quarantine certificate: the agent sends the certificate and
    # its posture digest, the inventory only when asked (draft 5.3 step 3). Off: agents send
    # the whole (compact) posture every time and the certified decision is still reused.
    posture_digest_first: bool = True
    # Offer a station (Calling-Station-Id) first the outer method it last succeeded with:
    # a TTLS station's re-authentication skips the round trip that refuses PEAP.
    remember_station_method: bool = True
    tls_resumption: bool = True  # TLS session resumption (tickets / session IDs)
    # PEAP over TLS 1.2: the inner Identity request rides with our Finished (one round trip
    # fewer). Off for a peer that only reads phase 2 after acknowledging Finished.
    peap_fast_start: bool = True
    # PEAP resumption of a remembered session skips the inner method (fast reconnect).
    peap_fast_reconnect: bool = True
    # PEAP peer without an EAP-TNC agent: ask for its Statement of Health (MS-SOH) and judge
    # that. Off by default: every PEAP peer without SoH pays one round trip more (its NAK).
    peap_soh: bool = False
    peap_skip_inner_identity: bool = False
    certificate: str | None = None  # PEM paths; default: STATE/pki/
    private_key: str | None = None
    ca_certificates: str | None = None
    crl: str | None = None


class SegmentSettings(_Strict):
    """Network settings of a policy segment, set by the server's operator (win over the
    policy file's): the VLAN plan belongs to the network, the rules to the policy."""

    vlan: int | None = Field(default=None, ge=1, le=4094)
    vlan_name: str | None = None
    vlan_overrides: dict[str, int] = Field(default_factory=dict)  # by client group or vendor
    reinspect_interval: int | None = Field(default=None, ge=60, le=86400)
    filter_id: str | None = None
    role: str | None = None

    @field_validator("vlan_overrides")
    @classmethod
    def _vlans(cls, v: dict[str, int]) -> dict[str, int]:
        for k, vid in v.items():
            if not 1 <= vid <= 4094:
                raise ValueError(f"VLAN {vid} for {k!r} is outside 1-4094")
        return v


class Config(_Strict):
    listen: list[str] = Field(default_factory=lambda: ["0.0.0.0", "::"])
    auth_port: int = Field(default=1812, ge=1, le=65535)
    acct_port: int = Field(default=1813, ge=1, le=65535)
    store: str | None = None  # sqlite:///path or postgresql://...; default STATE/nac.db
    policy_file: str | None = None  # default: STATE/policy.toml if present, else the sample
    clients: list[Client] = Field(default_factory=list)
    accounts: dict[str, AccountEntry] = Field(default_factory=dict)
    accounts_file: str | None = None
    eap: EapSettings = Field(default_factory=EapSettings)
    segments: dict[str, SegmentSettings] = Field(default_factory=dict)
    # Switch inventory for enforcement (enforcers/inventory.py); kept raw here and validated
    # by the enforcers package so the packet path does not import it.
    switches: list[dict[str, object]] = Field(default_factory=list)
    # Quarantine monitor (IDS alert intake, nac/monitor/README.md); absent: off.
    monitor: MonitorConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Prometheus /metrics and /healthz on ADDR:PORT (worker N of a pool: PORT + N).
    metrics: str | None = None
    embedded: bool = Field(default=False, exclude=True)
    source: str = Field(default="", exclude=True)

    @field_validator("listen")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            try:
                ipaddress.ip_address(a)
            except ValueError as exc:
                raise ValueError(f"not an IP address: {a!r}") from exc
        return v


def _key_path(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(data: dict[str, object], source: str) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{source}: {_key_path(err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None
    cfg.source = source
    return cfg


def load_config(path: Path) -> Config:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def embedded() -> Config:
    """The demo default: loopback clients with the FreeRADIUS demo secret."""
    cfg = Config(
        clients=[
            Client(address="127.0.0.1", secret=DEMO_SECRET, name="localhost"),
            Client(address="::1", secret=DEMO_SECRET, name="localhost6"),
        ]
    )
    cfg.embedded = True
    cfg.source = "embedded demo default"
    return cfg
