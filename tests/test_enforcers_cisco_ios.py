"""Cisco IOS SSH driver against fake-switches (an IOS CLI emulator) on loopback.

fake-switches pins an old Twisted, so it lives in its own virtualenv:
    python3 -m venv /opt/fake-switches-venv
    /opt/fake-switches-venv/bin/pip install --no-deps fake-switches==1.5.0
    /opt/fake-switches-venv/bin/pip install 'Twisted[conch]' netaddr tftpy
Point NAC_FAKE_SWITCHES_PYTHON at another interpreter if it lives elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcers.base import DriverError
from enforcers.inventory import Switch
from enforcers.ssh import CiscoIosDriver, SshPool
from tests.lab.daemons import _stop

pytestmark = [pytest.mark.peer]
FAKE_PY = os.environ.get("NAC_FAKE_SWITCHES_PYTHON", "/opt/fake-switches-venv/bin/python")
SCRIPT = Path(__file__).parent / "lab" / "fake_ios.py"


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fake_ios() -> Iterator[int]:
    if not Path(FAKE_PY).exists() or subprocess.run(
            [FAKE_PY, "-c", "import fake_switches, twisted.conch"],
            capture_output=True).returncode != 0:
        pytest.skip(f"fake-switches not installed for {FAKE_PY}")
    port = _free_tcp_port()
    proc = subprocess.Popen([FAKE_PY, str(SCRIPT), str(port), "admin", "admin-pw", "enable-pw"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        line = b""
        while time.monotonic() < deadline and b"READY" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail("fake-switches exited")
        yield port
    finally:
        _stop(proc)


def entry(port: int, enable: str = "enable-pw") -> Switch:
    return Switch.model_validate({
        "name": "ios1", "address": "127.0.0.1", "driver": "ssh-cisco-ios", "vendor": "cisco",
        "ssh": {"username": "admin", "password": "admin-pw", "enable_secret": enable,
                "port": port, "timeout": 5},
        "bounce_down_seconds": 0.1,
        "ports": {"name_pattern": "FastEthernet0/{nas_port}"},
    })


def test_set_get_bounce(fake_ios: int) -> None:
    pool = SshPool()

    async def scenario() -> None:
        drv = CiscoIosDriver(entry(fake_ios), pool=pool)
        port = drv.switch.ports.resolve(nas_port=4).name
        assert port == "FastEthernet0/4"
        assert await drv.get_port_vlan(port) == 1  # IOS default, not shown in the config
        t0 = time.perf_counter()
        await drv.set_port_vlan(port, 20)
        print(f"ios set_port_vlan {(time.perf_counter() - t0) * 1000:.0f} ms")
        assert await drv.get_port_vlan(port) == 20
        await drv.bounce_port(port)
        await drv.set_port_vlan(port, 30)
        assert await drv.get_port_vlan(port) == 30
        with pytest.raises(DriverError) as exc:
            await drv.get_port_vlan("FastEthernet9/99")
        assert exc.value.retryable is False
        await drv.close()

    asyncio.run(scenario())


def test_wrong_password_is_not_retryable(fake_ios: int) -> None:
    bad = entry(fake_ios).model_copy(deep=True)
    assert bad.ssh is not None
    bad.ssh.password = type(bad.ssh.password)("nope")  # type: ignore[misc]

    async def scenario() -> None:
        with pytest.raises(DriverError) as exc:
            await CiscoIosDriver(bad, pool=SshPool()).get_port_vlan("FastEthernet0/1")
        assert exc.value.retryable is False

    asyncio.run(scenario())
