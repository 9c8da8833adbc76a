"""EAP service settings; validated so a bad file names the offending key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Outer method names, in the order we prefer them when the default is not allowed.
OUTER_METHODS = ("peap", "ttls", "tls", "mschapv2", "md5")
# Inner (tunneled) method names, as "outer/inner" in EapResult.method.
INNER_METHODS = ("peap/mschapv2", "ttls/pap", "ttls/mschapv2", "ttls/eap-mschapv2")


class EapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idle_timeout: float = Field(30.0, gt=0)
    max_conversations: int = Field(10000, ge=1)
    max_bytes_per_conversation: int = Field(256 * 1024, ge=1024)
    # Largest EAP packet we send (header included); the NAS/peer MTU bounds it.
    fragment_size: int = Field(1020, ge=64, le=65535)
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    tls_max_version: Literal["1.2", "1.3"] = "1.3"
    tls_resumption: bool = True
    # How long a TLS session (ticket or cache entry) and its phase 2 result may be resumed.
    tls_session_lifetime: float = Field(3600.0, gt=0)
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    crl_file: Path | None = None
    # EAP-TLS: a certificate alone authenticates; True also demands a local account.
    tls_require_account: bool = False
    methods: list[str] = Field(default_factory=lambda: list(OUTER_METHODS))
    inner_methods: list[str] = Field(default_factory=lambda: list(INNER_METHODS))
    realm_methods: dict[str, list[str]] = Field(default_factory=dict)
    nas_group_methods: dict[str, list[str]] = Field(default_factory=dict)
    default_method: str = "peap"
    # Tunnels after which the posture method (EAP-TNC) is offered, by full method name.
    posture_methods: list[str] = Field(default_factory=lambda: list(INNER_METHODS))
    # A station that abandoned the posture method's first request (no agent, and a peer that
    # fails instead of NAKing) is authenticated without posture for this long.
    posture_fallback_seconds: float = Field(3600.0, ge=0)
    server_name: str = "nac"  # MSCHAPv2 authenticator name
    # Offer a station (Calling-Station-Id) the outer method it last succeeded with first:
    # a TTLS station then skips the round trip that NAKs the default PEAP proposal.
    remember_station_method: bool = True
    # PEAP over TLS 1.2: send the inner Identity request in the same flight as our Finished
    # instead of waiting for the peer's ACK of Finished (one round trip fewer; wpa_supplicant
    # takes application data that follows the handshake). Off: wait for the ACK, as
    # FreeRADIUS and hostapd do.
    peap_fast_start: bool = True
    # PEAP peer resuming a TLS session whose inner authentication this server remembers:
    # Result TLV at once, no inner Identity and MSCHAPv2 (three round trips fewer). Off: the
    # inner method runs again on every resumption.
    peap_fast_reconnect: bool = True
    # PEAP peer that NAKs the posture method (no EAP-TNC agent): ask for its Statement of
    # Health (MS-SOH, wpa_supplicant phase1 "tnc=soh2") and judge that. Off by default: a
    # peer without SoH pays one more round trip (its NAK), 8 -> 9 per PEAP conversation.
    peap_soh: bool = False
    # PEAP: open phase 2 with the MSCHAPv2 Challenge instead of an inner Identity request
    # (one round trip fewer); the MSCHAPv2 Name then is the inner identity. Off by default:
    # [MS-PEAP] has the server ask for the inner Identity first and a Windows peer ignores
    # any other request at that point; wpa_supplicant takes it. A peer that NAKs the
    # Challenge is asked for its Identity, as with the switch off.
    peap_skip_inner_identity: bool = False

    @model_validator(mode="after")
    def _check(self) -> EapConfig:
        if self.tls_min_version > self.tls_max_version:
            raise ValueError("tls_min_version is above tls_max_version")
        unknown = [m for m in [*self.methods, self.default_method] if m not in OUTER_METHODS]
        if unknown:
            raise ValueError(f"unknown EAP method(s) {unknown}; known: {list(OUTER_METHODS)}")
        bad_inner = [m for m in [*self.inner_methods, *self.posture_methods]
                     if m not in INNER_METHODS]
        if bad_inner:
            raise ValueError(f"unknown inner method(s) {bad_inner}; known: {list(INNER_METHODS)}")
        return self
