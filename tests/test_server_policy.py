"""The running server follows `nac policy apply` and keeps its last good policy on errors."""

from __future__ import annotations

import time

import pytest

from tests.conftest import NacServer, radclient

pytestmark = pytest.mark.peer

PAP = 'User-Name = "demo", User-Password = "demo-password", Message-Authenticator = 0x00'


def wait_vlan(srv: NacServer, want: str, timeout: float = 8.0) -> list[str] | None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = radclient(srv.auth_port, "auth", PAP).attrs.get("Tunnel-Private-Group-Id:1")
        if got == [want]:
            return got
        time.sleep(0.4)
    return got


def test_policy_apply_hot_reload(nac_server: NacServer) -> None:
    assert wait_vlan(nac_server, "10") == ["10"]  # sample policy: no posture -> quarantine
    sample = nac_server.nac("policy", "show").stdout
    relaxed = sample.replace("require_posture = true", "require_posture = false")
    assert relaxed != sample
    site = nac_server.state_dir.parent / "site.toml"
    site.write_text(relaxed)
    nac_server.nac("policy", "apply", str(site))
    assert wait_vlan(nac_server, "30") == ["30"]
    assert "policy reloaded" in nac_server.log()

    # A broken policy file is refused by `apply`; written behind its back, the server keeps
    # enforcing the last good policy and says why.
    bad = nac_server.state_dir / "policy.toml"
    bad.write_text(relaxed.replace("vlan = 30", "vlan = 9999"))
    time.sleep(2.5)
    assert wait_vlan(nac_server, "30") == ["30"]
    assert "new policy rejected" in nac_server.log()
