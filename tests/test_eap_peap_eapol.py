"""PEAP without the inner Identity round (eap.peap_skip_inner_identity) with the real peer:
eapol_test (wpa_supplicant 2.10) against `nac serve`. wpa_supplicant's PEAP phase 2 takes
an MSCHAPv2 Challenge as its first inner request and answers with its phase 2 identity as
the MSCHAPv2 Name, which the server then authenticates (outer identity "anonymous")."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from nac.accounts import hash_password, nt_hash
from tests.conftest import SECRET, NacServer, need, start_server
from tests.test_eap_eapol import PHASE1
from tests.test_posture_e2e import rounds

pytestmark = pytest.mark.peer


def serve(tmp: Path, *, skip: bool) -> NacServer:
    need("eapol_test")
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "nac.toml"
    conf.write_text(textwrap.dedent(f"""\
        [[clients]]
        address = "127.0.0.1"
        secret = "{SECRET}"
        name = "localhost"

        [accounts.demo]
        password_hash = "{hash_password("demo-password")}"
        nt_hash = "{nt_hash("demo-password").hex()}"

        [accounts.alice]
        role = "staff"
        password_hash = "{hash_password("alice-pw")}"
        nt_hash = "{nt_hash("alice-pw").hex()}"

        [eap]
        peap_skip_inner_identity = {"true" if skip else "false"}
        """))
    # No posture method: the round trips counted are authentication's alone.
    return start_server(tmp, "--config", str(conf), "--posture", "off")


@pytest.fixture(scope="module")
def skip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NacServer]:
    srv = serve(tmp_path_factory.mktemp("peap-skip"), skip=True)
    yield srv
    srv.stop()


def peap(srv: NacServer, mac: str, *, tls: str = "1.2", identity: str = "alice",
         password: str = "alice-pw", outer: str = "anonymous", phase2: str = "auth=MSCHAPV2",
         reauths: int = 0, no_keys: bool = False) -> tuple[int, str]:
    conf = srv.state_dir.parent / f"peap-{mac.replace(':', '')}-{tls}.conf"
    conf.write_text(textwrap.dedent(f"""\
        network={{
          key_mgmt=IEEE8021X
          eap=PEAP
          identity="{identity}"
          anonymous_identity="{outer}"
          password="{password}"
          ca_cert="{srv.state_dir}/pki/ca.pem"
          phase1="{PHASE1[tls]}"
          phase2="{phase2}"
        }}
        """))
    cmd = ["eapol_test", "-c", str(conf), "-a", "127.0.0.1", "-p", str(srv.auth_port),
           "-s", SECRET, "-t", "20", "-M", mac] + ([f"-r{reauths}"] if reauths else [])
    cmd += ["-n"] if no_keys else []  # a reject then exits 253, not 252 (no keys)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    return proc.returncode, proc.stdout + proc.stderr


def decisions(srv: NacServer, mac: str) -> list[dict]:
    return list(json.loads(srv.nac("nodes", "show", mac, "--json").stdout)["decisions"])


def user_name_in_accept(log: str) -> str:
    accept = log[log.index("code=2 (Access-Accept)"):]
    line = accept[accept.index("Attribute 1 (User-Name)"):].splitlines()[1]
    return line.split("Value:")[1].strip()


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_six_round_trips_and_the_name_authenticates(skip: NacServer, tls: str) -> None:
    mac = f"02:00:00:00:5b:0{tls[-1]}"
    rc, log = peap(skip, mac, tls=tls)
    assert rc == 0 and log.rstrip().endswith("SUCCESS"), log[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in log
    assert f"Using TLS version TLSv{tls}" in log
    # The first inner request is the Challenge; wpa_supplicant never sees an Identity one.
    assert "EAP-PEAP: Phase 2 Request: type=26" in log
    assert "Phase 2 Request: type=1\n" not in log
    assert rounds(log) == 6
    assert user_name_in_accept(log) == "'alice'"  # not the outer "anonymous"
    last = decisions(skip, mac)[0]
    assert (last["identity"], last["role"], last["method"]) == ("alice", "staff",
                                                                "peap/mschapv2")


@pytest.mark.parametrize(("outer", "identity", "password"), [
    ("anonymous", "alice", "wrong"),
    ("demo", "alice", "demo-password"),  # a real outer account does not authenticate
    ("anonymous", "nobody", "alice-pw"),
])
def test_rejected(skip: NacServer, outer: str, identity: str, password: str) -> None:
    rc, log = peap(skip, "02:00:00:00:5b:10", identity=identity, password=password,
                   outer=outer, no_keys=True)
    assert rc == 253 and "Access-Reject" in log, log[-3000:]
    assert "EAP-MSCHAPV2: Received challenge" in log  # refused on the Name's account


def test_a_peer_that_naks_mschapv2_is_asked_its_identity(skip: NacServer) -> None:
    rc, log = peap(skip, "02:00:00:00:5b:11", phase2="auth=GTC", no_keys=True)
    assert rc == 253, log[-3000:]
    # NAK to the Challenge, then the Identity request as with the switch off, then the
    # Challenge again (the only inner method), refused again: rejected.
    nak = log.index("Phase 2 Request: Nak")
    asked = log.index("EAP-PEAP: Phase 2 Request: type=1\n")
    assert nak < asked and "Phase 2 Request: Nak" in log[asked:]
    assert "peer refused inner mschapv2" in skip.log()


def test_fast_reconnect_still_skips_the_inner_method(skip: NacServer) -> None:
    rc, log = peap(skip, "02:00:00:00:5b:12", tls="1.3", reauths=2)
    assert rc == 0, log[-3000:]
    assert "MPPE keys OK: 3  mismatch: 0" in log
    assert log.count("Handshake finished - resumed=1") >= 2
    assert log.count("EAP-MSCHAPV2: Received challenge") == 1
    assert [d["identity"] for d in decisions(skip, "02:00:00:00:5b:12")] == ["alice"] * 3


def test_off_asks_the_identity_in_seven_round_trips(tmp_path: Path) -> None:
    srv = serve(tmp_path, skip=False)
    try:
        rc, log = peap(srv, "02:00:00:00:5b:20")
        assert rc == 0, log[-3000:]
        assert "EAP-PEAP: Phase 2 Request: type=1\n" in log
        assert rounds(log) == 7
        assert user_name_in_accept(log) == "'alice'"
    finally:
        srv.stop()
