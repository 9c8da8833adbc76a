"""`nac serve --workers 2`: both processes answer on one port, and EAP conversations
(many rounds, one State) complete because each NAS flow stays on one worker."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nac.radius import codec
from tests.conftest import SECRET, need, radclient, start_server

pytestmark = pytest.mark.peer


def test_two_workers_share_the_port_and_keep_eap_flows(tmp_path: Path) -> None:
    need("eapol_test")
    srv = start_server(tmp_path, "--workers", "2")
    try:
        # start_server returns at the first worker's "ready": a request hashed to the other
        # worker's socket would wait there for it (a busy machine: longer than radclient)
        deadline = time.monotonic() + 30
        while len(re.findall(r"\bready: ", srv.log())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Each radclient run is a new source port: the kernel spreads them over both.
        for i in range(24):
            mac = f"02:00:00:00:01:{i:02x}"
            r = radclient(srv.auth_port, "auth",
                          f'User-Name = "{mac}", Calling-Station-Id = "{mac}", '
                          "Service-Type = Call-Check, Message-Authenticator = 0x00")
            assert r.code == "Access-Accept"
        log = srv.log()
        assert re.search(r"\[w0\].*decision", log) and re.search(r"\[w1\].*decision", log)

        conf = tmp_path / "peap.conf"
        conf.write_text(
            'network={\n key_mgmt=IEEE8021X\n eap=PEAP\n identity="demo"\n'
            ' password="demo-password"\n'
            f' ca_cert="{srv.state_dir}/pki/ca.pem"\n phase2="auth=MSCHAPV2"\n}}\n')

        def peap(_: int) -> int:
            return subprocess.run(
                ["eapol_test", "-c", str(conf), "-a", "127.0.0.1", "-p", str(srv.auth_port),
                 "-s", SECRET, "-t", "20"], capture_output=True, timeout=60).returncode

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(peap, range(16)))
        assert codes == [0] * 16
    finally:
        srv.stop()
    assert "all workers stopped" in srv.log()


def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    """SIGKILL one worker of two: the supervisor says so once and starts it again after
    its backoff; the port answers throughout (a request that hashed to the dead worker's
    socket waits there for its successor, so the NAS's retransmissions get an answer)."""
    import os
    import signal

    srv = start_server(tmp_path, "--workers", "2")
    mab = ('User-Name = "020000000e01", Calling-Station-Id = "02:00:00:00:0e:01", '
           "Service-Type = Call-Check, Message-Authenticator = 0x00")
    try:
        pids = dict(re.findall(r"worker (\d) started \(pid (\d+)\)", srv.log()))
        assert set(pids) == {"0", "1"}, srv.log()
        os.kill(int(pids["1"]), signal.SIGKILL)
        deadline = time.monotonic() + 15
        again: list[str] = []
        while time.monotonic() < deadline:
            again = re.findall(r"worker 1 started \(pid (\d+)\)", srv.log())
            if len(again) == 2 and re.search(r"\[w1\].*ready: ", srv.log().split(
                    f"worker 1 started (pid {again[1]})")[1]):
                break
            assert radclient(srv.auth_port, "auth", mab, timeout=3,
                             retries=5).code == "Access-Accept"
            time.sleep(0.2)
        assert len(again) == 2, srv.log()
        os.kill(int(again[1]), 0)  # the new worker runs
        assert srv.log().count("worker 1 (pid") == 1  # its death reported once
        assert radclient(srv.auth_port, "auth", mab).code == "Access-Accept"
    finally:
        srv.stop()


def _eap_md5_round(sock: socket.socket, port: int, ident: int, eap: bytes,
                   state: bytes | None) -> codec.Packet | None:
    """One Access-Request carrying `eap` from this socket's source port; the reply or None."""
    attrs = (codec.encode_attr(1, b"demo") + codec.encode_attr(31, b"02-00-00-00-0f-01")
             + codec.encode_attr(4, bytes([127, 0, 0, 1])) + codec.split_eap(eap))
    if state is not None:
        attrs += codec.encode_attr(24, state)
    sock.sendto(codec.encode_request(1, ident, SECRET.encode(), attrs), ("127.0.0.1", port))
    try:
        return codec.decode(sock.recv(4096))
    except TimeoutError:
        return None


def test_a_restarted_worker_leaves_the_other_workers_flows_in_place(tmp_path: Path) -> None:
    """EAP-MD5 conversations are half-way (challenge sent, State issued) on both workers when
    worker 0 is SIGKILLed and restarted. The survivor's conversations must still complete:
    the supervisor holds every worker's socket, so no flow moves to another worker. (With
    sockets that close and reopen, the kernel swaps the group's slots and *every* flow
    lands on the other worker: none would complete.) The dead worker's conversations are
    lost with its memory, and start again from the identity on its successor."""
    import hashlib
    import os
    import signal

    srv = start_server(tmp_path, "--workers", "2")
    socks = []
    try:
        pids = dict(re.findall(r"worker (\d) started \(pid (\d+)\)", srv.log()))
        assert set(pids) == {"0", "1"}, srv.log()
        identity = b"\x02\x01\x00\x09\x01demo"
        half: list[tuple[socket.socket, bytes, int, bytes]] = []
        for _ in range(16):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(3)
            socks.append(s)
            reply = _eap_md5_round(s, srv.auth_port, 1, identity, None)
            assert reply is not None and reply.code == 11, "no Access-Challenge"
            eap = codec.join_eap(reply)
            state = reply.get(24)
            assert eap is not None and state is not None
            if eap[4] != 4:  # the server proposed another method: NAK it, ask for MD5
                reply = _eap_md5_round(s, srv.auth_port, 2,
                                       bytes([2, eap[1], 0, 6, 3, 4]), state)
                assert reply is not None and reply.code == 11
                eap, state = codec.join_eap(reply), reply.get(24)
                assert eap is not None and state is not None and eap[4] == 4
            half.append((s, eap, eap[1], state))

        os.kill(int(pids["0"]), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            again = re.findall(r"worker 0 started \(pid (\d+)\)", srv.log())
            if len(again) == 2 and re.search(r"\[w0\].*ready: ", srv.log().split(
                    f"worker 0 started (pid {again[1]})")[1]):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(srv.log())

        completed, lost = 0, []
        for s, eap, eap_id, state in half:
            challenge = eap[6:6 + eap[5]]
            digest = hashlib.md5(bytes([eap_id]) + b"demo-password" + challenge).digest()
            resp = bytes([2, eap_id, 0, 22, 4, 16]) + digest
            reply = _eap_md5_round(s, srv.auth_port, 3, resp, state)
            if reply is not None and reply.code == 2:
                completed += 1
            else:
                lost.append(s)
        # The chance that all 16 flows hashed to worker 0 is 2**-16.
        assert completed >= 1, "every conversation moved worker: the flows were reshuffled"
        assert srv.log().count("[w1]") and completed + len(lost) == 16
        for s in lost:  # worker 0's successor serves its flows from the identity on
            reply = _eap_md5_round(s, srv.auth_port, 4, identity, None)
            assert reply is not None and reply.code == 11
    finally:
        for s in socks:
            s.close()
        srv.stop()
