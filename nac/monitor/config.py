"""The `[monitor]` section of the server config: where alerts come from and who may send them.

Example::

    [monitor]
    listen = "0.0.0.0"
    port = 8443                                 # HTTPS: POST /v1/alerts
    eve_file = "/var/log/suricata/eve.json"     # a local Suricata, followed like tail -F

    [[monitor.monitors]]
    name = "ids-core"
    hmac_key = "a long random shared secret"    # X-NAC-Signature, see nac/monitor/auth.py
    min_severity = 2                            # Suricata severity 1 and 2 isolate

    [[monitor.monitors]]
    name = "ids-dmz"
    cert_cn = "ids-dmz"                         # `nac pki client ids-dmz --out DIR`
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from nac.monitor.auth import DEFAULT_WINDOW, Credential
from nac.monitor.eve import MAX_LINE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MonitorEntry(_Strict):
    """One network-type quarantine monitor (an IDS) allowed to post alerts."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    hmac_key: SecretStr | None = Field(default=None, min_length=16)
    cert_cn: str | None = Field(default=None, min_length=1, max_length=64)
    # Suricata severities run 1 (most severe) .. 3/4; alerts with severity <= this isolate.
    min_severity: int = Field(default=1, ge=1, le=255)

    @model_validator(mode="after")
    def _some_credential(self) -> MonitorEntry:
        if self.hmac_key is None and self.cert_cn is None:
            raise ValueError("a monitor needs hmac_key, cert_cn or both")
        return self

    def credential(self) -> Credential:
        key = self.hmac_key.get_secret_value().encode() if self.hmac_key else None
        return Credential(self.name, key, self.cert_cn, self.min_severity)


class MonitorConfig(_Strict):
    listen: str = "0.0.0.0"
    https: bool = True  # false: only the local eve_file / eve_socket
    port: int = Field(default=8443, ge=0, le=65535)  # 0: any free port (tests)
    certificate: str | None = None  # PEM; default STATE/pki/server.pem (`nac pki init`)
    private_key: str | None = None  # default STATE/pki/server.key
    client_ca: str | None = None  # default STATE/pki/ca.pem when a monitor has cert_cn
    client_crl: str | None = None  # default STATE/pki/crl.pem along with the default CA
    replay_window: int = Field(default=DEFAULT_WINDOW, ge=10, le=3600)
    max_body: int = Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    max_line: int = Field(default=MAX_LINE, ge=1024, le=1024 * 1024)
    max_connections: int = Field(default=64, ge=1, le=10_000)
    # Also isolate the alert's destination when it is one of our nodes (e.g. for rules
    # written "from outside to the victim" where the victim is the suspect).
    match_destination: bool = False
    # How far an accounting session may have stopped before (or started after) the alert
    # and still be taken as the owner of the address.
    session_slack: float = Field(default=300.0, ge=0, le=86400)
    # Per monitor: more isolations than this within an hour are refused and logged as an
    # error (a broken or captured IDS must not isolate everyone). 0: no limit.
    max_isolations_per_hour: int = Field(default=100, ge=0)
    monitors: list[MonitorEntry] = Field(default_factory=list)
    eve_file: str | None = None  # a local eve.json to follow (rotation and truncation ok)
    eve_socket: str | None = None  # a Unix stream socket we listen on (Suricata unix_stream)
    local_name: str = Field(default="local-ids", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    local_min_severity: int = Field(default=1, ge=1, le=255)
    poll_interval: float = Field(default=0.5, gt=0, le=60)

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError as exc:
            raise ValueError(f"not an IP address: {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MonitorConfig:
        names = [m.name for m in self.monitors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"monitor names must differ: {', '.join(dup)}")
        cns = [m.cert_cn for m in self.monitors if m.cert_cn]
        dup = sorted({n for n in cns if cns.count(n) > 1})
        if dup:
            raise ValueError(f"cert_cn must differ between monitors: {', '.join(dup)}")
        if self.https and not self.monitors:
            raise ValueError("the HTTPS endpoint needs at least one [[monitor.monitors]] "
                             "entry (or https = false with eve_file / eve_socket)")
        if not self.https and not (self.eve_file or self.eve_socket):
            raise ValueError("nothing to monitor: https = false and no eve_file/eve_socket")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self

    def tls_paths(self, state_dir: Path | None) -> tuple[Path, Path, Path | None, Path | None]:
        """certificate, key, client CA (None: no certificate auth), CRL, defaults resolved."""
        from nac.pki import PkiPaths, ensure_pki

        wants_ca = any(m.cert_cn for m in self.monitors)
        pki: PkiPaths | None = None
        if self.certificate is None or (wants_ca and self.client_ca is None):
            if state_dir is None:
                raise ValueError("monitor: no certificate configured and no state directory "
                                 "for the default STATE/pki")
            pki = ensure_pki(state_dir)  # what `nac pki init` makes; created on first use
        cert = Path(self.certificate) if self.certificate else pki.server_cert  # type: ignore[union-attr]
        key = Path(self.private_key) if self.private_key else pki.server_key  # type: ignore[union-attr]
        ca = crl = None
        if self.client_ca:
            ca = Path(self.client_ca)
            crl = Path(self.client_crl) if self.client_crl else None
        elif wants_ca and pki is not None:
            ca = pki.ca_cert
            crl = Path(self.client_crl) if self.client_crl else pki.crl
        return cert, key, ca, crl
