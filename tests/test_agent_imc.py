"""The IF-IMC plug-in: framing, the `nac-agent imc` relay, and the C shim driven by a fake
TNCC through ctypes (the calls wpa_supplicant's tncc.c makes, in the same order)."""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eap_ext.agent import state
from eap_ext.agent.imc import framing
from eap_ext.agent.imc.codec import (
    NAC_PEN,
    POSTURE_MESSAGE_TYPE,
    FallbackCodec,
    ServerNews,
    default_codec,
)
from eap_ext.agent.imc.install import build_library
from eap_ext.agent.imc.relay import ImcAgent, serve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_fixtures import build_debian_root  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pa_tnc_server_message() -> bytes:
    """A server PA-TNC message: Assessment Result = major non-compliance (IETF type 9) and
    a string Remediation Instructions (IETF type 10), encoded by hand from RFC 5792."""
    text = b"Upgrade openssl"
    remediation = (struct.pack("!II", 0, 2) + struct.pack("!I", len(text)) + text
                   + bytes([2]) + b"en")
    attrs = (struct.pack("!BBHII", 0, 0, 0, 9, 16) + struct.pack("!I", 2)
             + struct.pack("!BBHII", 0, 0, 0, 10, 12 + len(remediation)) + remediation)
    return struct.pack("!BBHI", 1, 0, 0, 77) + attrs


def decode_posture(msg: bytes) -> dict:
    """The posture document inside one of our PA-TNC messages, read the server's way."""
    try:
        from eap_ext.tnc import pa_tnc, posture_attrs
    except ImportError:  # the agent's fallback: one JSON attribute after the headers
        return json.loads(msg[8 + 12:])
    decoded = pa_tnc.decode_message(msg, vendor_id=NAC_PEN)
    return posture_attrs.attributes_to_posture(decoded.attributes, vendor_id=NAC_PEN)


def fake_collect(token: str | None) -> dict:
    return {"schema": 1, "os": {"id": "debian"}, "certificate": token}


class RecordingCodec:
    def __init__(self) -> None:
        self.seen: list[tuple[int, bytes]] = []

    def posture_messages(self, doc: dict, *, digest_first: bool = False
                         ) -> list[tuple[int, bytes]]:
        return [(POSTURE_MESSAGE_TYPE, json.dumps(doc).encode())]

    def server_message(self, msg_type: int, data: bytes) -> ServerNews:
        self.seen.append((msg_type, data))
        return ServerNews(assessment="compliant", segment="normal",
                          replies=[(POSTURE_MESSAGE_TYPE, b"again")])


def test_framing_roundtrip() -> None:
    buf = io.BytesIO()
    framing.write_frame(buf, 0x1, b"abc")
    framing.write_frame(buf, framing.END)
    buf.seek(0)
    assert framing.read_frame(buf) == (1, b"abc")
    assert framing.read_frame(buf) == (framing.END, b"")
    assert framing.read_frame(buf) is None
    with pytest.raises(framing.FramingError):
        framing.read_frame(io.BytesIO(framing.encode(1, b"abc")[:-1]))
    assert framing.message_type(0, 1) == 1
    assert framing.message_type(32473, 0xFF) == 0x7ED9FF


def test_relay_answers_every_event(tmp_path: Path) -> None:
    codec = RecordingCodec()
    agent = ImcAgent(fake_collect, codec, tmp_path / "last.json")
    events = (framing.encode(framing.BEGIN, struct.pack("!I", 5))
              + framing.encode(0x1, b"server says")
              + framing.encode(framing.BATCH_ENDING, struct.pack("!I", 5))
              + framing.encode(framing.STATE, struct.pack("!II", 5, 3)))
    out = io.BytesIO()
    serve(agent, io.BytesIO(events), out)
    out.seek(0)
    frames = []
    while (frame := framing.read_frame(out)) is not None:
        frames.append(frame)
    assert frames[0] == (POSTURE_MESSAGE_TYPE, json.dumps(fake_collect(None)).encode())
    assert frames[1:] == [(framing.END, b""), (POSTURE_MESSAGE_TYPE, b"again"),
                          (framing.END, b""), (framing.END, b""), (framing.END, b"")]
    assert codec.seen == [(1, b"server says")]
    saved = state.load(tmp_path / "last.json")
    assert saved["assessment"] == "compliant" and saved["segment"] == "normal"
    assert saved["recommendation"] == "isolate"


def test_new_handshake_forgets_the_old_answer(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    state.update({"assessment": "major-non-compliance", "remediation": ["Upgrade openssl"],
                  "recommendation": "isolate", "certificate": {"token": "Y2VydA=="}}, path)
    agent = ImcAgent(fake_collect, RecordingCodec(), path)
    agent.handle(framing.BEGIN, struct.pack("!I", 1))
    saved = state.load(path)
    assert "remediation" not in saved and "assessment" not in saved
    assert saved["certificate"] == {"token": "Y2VydA=="}


def test_relay_survives_a_failing_collector(tmp_path: Path) -> None:
    def broken(_token: str | None) -> dict:
        raise OSError("disk gone")

    out = io.BytesIO()
    serve(ImcAgent(broken, RecordingCodec(), tmp_path / "s.json"),
          io.BytesIO(framing.encode(framing.BEGIN, b"\0\0\0\1")), out)
    assert out.getvalue() == framing.encode(framing.END)


def test_server_message_decoding() -> None:
    pytest.importorskip("eap_ext.tnc.pa_tnc")
    news = FallbackCodec().server_message(1, pa_tnc_server_message())
    assert news.assessment == "major-non-compliance"
    assert news.remediation == ["Upgrade openssl"]


def test_fallback_codec_is_readable_by_posture_attrs() -> None:
    doc = {"schema": 1, "collected_at": "2026-11-27T23:30:00Z", "os": "unknown",
           "packages": [], "certificate": None}
    (mtype, msg), = FallbackCodec().posture_messages(doc)
    assert mtype == POSTURE_MESSAGE_TYPE
    assert decode_posture(msg) == doc


def test_tnc_codec_round_trip_and_requests(tmp_path: Path) -> None:
    pa_tnc = pytest.importorskip("eap_ext.tnc.pa_tnc")
    pytest.importorskip("eap_ext.tnc.posture_attrs")
    from eap_ext.agent.collectors import collect_posture
    from eap_ext.agent.hostroot import HostRoot

    doc = collect_posture(HostRoot(build_debian_root(tmp_path), rooted=True))
    codec = default_codec()
    (mtype, msg), = codec.posture_messages(doc)
    assert mtype == POSTURE_MESSAGE_TYPE
    from eap_ext.agent.collectors import posture_digest
    from nac.posture.digest import posture_digest as server_digest

    got = decode_posture(msg)  # exact round trip through the server's decoder
    assert got == {**doc, "stated_digest": posture_digest(doc)}
    assert server_digest(got) == server_digest(doc) == posture_digest(doc)
    # The server asks again for just the forwarding attribute (IETF type 11).
    request = pa_tnc.build_message(9, [pa_tnc.AttributeRequest(((0, 11),))])
    news = codec.server_message(1, request)
    (_, reply), = news.replies
    attrs = pa_tnc.decode_message(reply, vendor_id=NAC_PEN).attributes
    assert [type(a).__name__ for a in attrs] == ["ForwardingEnabled"]
    # Garbage from the server is answered with a PA-TNC Error attribute.
    news = codec.server_message(1, b"\x09\0\0\0\0\0\0\1")
    (_, reply), = news.replies
    (err,) = pa_tnc.decode_message(reply, vendor_id=NAC_PEN).attributes
    assert isinstance(err, pa_tnc.PaTncError) and err.error_code == 2  # version unsupported


def test_imc_subprocess_sends_posture(tmp_path: Path) -> None:
    root = build_debian_root(tmp_path / "host")
    env = {**os.environ, "PYTHONPATH": str(REPO), "NAC_AGENT_ROOT": str(root),
           "NAC_AGENT_STATE_DIR": str(tmp_path / "st")}
    events = (framing.encode(framing.BEGIN, struct.pack("!I", 0))
              + framing.encode(framing.STATE, struct.pack("!II", 0, 2)))
    proc = subprocess.run([sys.executable, "-m", "eap_ext.agent", "imc"], input=events,
                          env=env, capture_output=True, timeout=60, check=True)
    out = io.BytesIO(proc.stdout)
    mtype, msg = framing.read_frame(out)
    assert mtype == POSTURE_MESSAGE_TYPE
    assert msg[0] == 1  # PA-TNC version
    doc = decode_posture(msg)
    assert doc["os"]["pretty_name"] == "Debian GNU/Linux 12 (bookworm)"
    assert {"name": "openssl", "version": "3.0.11-1~deb12u2"}.items() <= next(
        p for p in doc["packages"] if p["name"] == "openssl").items()
    assert framing.read_frame(out) == (framing.END, b"")
    assert framing.read_frame(out) == (framing.END, b"")
    assert state.load(tmp_path / "st" / "last.json")["recommendation"] == "allow"


# --- the C shim, loaded and called the way tncc.c does -------------------------------

UL = ctypes.c_ulong
BindFn = ctypes.CFUNCTYPE(UL, UL, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p))
SendFn = ctypes.CFUNCTYPE(UL, UL, UL, ctypes.POINTER(ctypes.c_ubyte), UL, UL)
ReportFn = ctypes.CFUNCTYPE(UL, UL, ctypes.POINTER(UL), UL)


class FakeTncc:
    def __init__(self, lib_path: Path) -> None:
        self.lib = ctypes.CDLL(str(lib_path))
        for name in ("Initialize", "ProvideBindFunction", "BeginHandshake", "ReceiveMessage",
                     "NotifyConnectionChange", "BatchEnding", "Terminate"):
            getattr(self.lib, f"TNC_IMC_{name}").restype = UL
        self.sent: list[tuple[int, int, bytes]] = []
        self.senders: list[int] = []
        self.reported: list[int] = []
        self._send = SendFn(self._on_send)
        self._report = ReportFn(self._on_report)
        self._bind = BindFn(self._on_bind)

    def _on_send(self, imc: int, conn: int, buf, length: int, mtype: int) -> int:
        self.sent.append((conn, mtype, ctypes.string_at(buf, length)))
        self.senders.append(imc)
        return 0

    def _on_report(self, imc: int, types, count: int) -> int:
        self.reported = [types[i] for i in range(count)]
        return 0

    def _on_bind(self, imc: int, name: bytes, out) -> int:
        table = {b"TNC_TNCC_SendMessage": self._send,
                 b"TNC_TNCC_ReportMessageTypes": self._report}
        fn = table.get(name)
        out[0] = ctypes.cast(fn, ctypes.c_void_p).value if fn else None
        return 0

    def start(self, imc_id: int = 0) -> None:
        version = UL(0)
        assert self.lib.TNC_IMC_Initialize(UL(imc_id), UL(1), UL(1), ctypes.byref(version)) == 0
        assert version.value == 1
        assert self.lib.TNC_IMC_ProvideBindFunction(UL(imc_id), self._bind) == 0


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    return build_library(tmp_path / "nac_imc.so", command="false")


def test_shim_relays_a_handshake(shim: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_debian_root(tmp_path / "host")
    st = tmp_path / "st"
    monkeypatch.setenv("NAC_IMC_COMMAND",
                       f"PYTHONPATH={REPO} exec {sys.executable} -m eap_ext.agent imc")
    monkeypatch.setenv("NAC_AGENT_ROOT", str(root))
    monkeypatch.setenv("NAC_AGENT_STATE_DIR", str(st))
    tncc = FakeTncc(shim)
    tncc.start()
    assert tncc.reported == [0xFFFFFFFF]
    lib = tncc.lib
    assert lib.TNC_IMC_NotifyConnectionChange(UL(0), UL(7), UL(0)) == 0  # CREATE
    assert lib.TNC_IMC_NotifyConnectionChange(UL(0), UL(7), UL(1)) == 0  # HANDSHAKE
    assert lib.TNC_IMC_BeginHandshake(UL(0), UL(7)) == 0
    assert len(tncc.sent) == 1
    conn, mtype, msg = tncc.sent[0]
    assert (conn, mtype, msg[0]) == (7, 1, 1)
    assert decode_posture(msg)["forwarding"] == {"ipv4": False, "ipv6": False, "bridges": [],
                                                  "tunnels": []}
    server = pa_tnc_server_message()
    buf = (ctypes.c_ubyte * len(server)).from_buffer_copy(server)
    assert lib.TNC_IMC_ReceiveMessage(UL(0), UL(7), buf, UL(len(server)), UL(1)) == 0
    assert lib.TNC_IMC_BatchEnding(UL(0), UL(7)) == 0
    assert lib.TNC_IMC_NotifyConnectionChange(UL(0), UL(7), UL(3)) == 0  # ISOLATED
    assert lib.TNC_IMC_NotifyConnectionChange(UL(0), UL(7), UL(5)) == 0  # DELETE
    assert lib.TNC_IMC_Terminate(UL(0)) == 0
    saved = state.load(st / "last.json")
    assert saved["recommendation"] == "isolate"
    try:
        import eap_ext.tnc.pa_tnc  # noqa: F401
    except ImportError:
        return
    assert saved["assessment"] == "major-non-compliance"
    assert saved["remediation"] == ["Upgrade openssl"]


def test_shim_checks_versions_and_ids(shim: Path) -> None:
    lib = FakeTncc(shim).lib
    version = UL(0)
    assert lib.TNC_IMC_BeginHandshake(UL(0), UL(0)) == 1  # not initialized
    assert lib.TNC_IMC_Initialize(UL(0), UL(2), UL(3), ctypes.byref(version)) == 3
    assert lib.TNC_IMC_Initialize(UL(4), UL(1), UL(1), ctypes.byref(version)) == 0
    assert lib.TNC_IMC_Initialize(UL(4), UL(1), UL(1), ctypes.byref(version)) == 2
    assert lib.TNC_IMC_BatchEnding(UL(5), UL(0)) == 1    # an IMC ID never initialized
    assert lib.TNC_IMC_BatchEnding(UL(1000), UL(0)) == 6  # an IMC ID out of range
    assert lib.TNC_IMC_Initialize(UL(1), UL(1), UL(1), None) == 6
    assert lib.TNC_IMC_Terminate(UL(4)) == 0
    assert lib.TNC_IMC_Terminate(UL(4)) == 1


def test_shim_serves_two_imc_ids_at_once(shim: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Two interfaces authenticating at once load the IMC twice into one supplicant: the
    same library, two IMC IDs, one agent process each."""
    monkeypatch.setenv("NAC_IMC_COMMAND",
                       f"PYTHONPATH={REPO} exec {sys.executable} -m eap_ext.agent imc")
    monkeypatch.setenv("NAC_AGENT_ROOT", str(build_debian_root(tmp_path / "host")))
    monkeypatch.setenv("NAC_AGENT_STATE_DIR", str(tmp_path / "st"))
    tncc = FakeTncc(shim)
    tncc.start(0)
    tncc.start(1)
    lib = tncc.lib
    assert lib.TNC_IMC_BeginHandshake(UL(0), UL(10)) == 0
    assert lib.TNC_IMC_BeginHandshake(UL(1), UL(11)) == 0
    assert lib.TNC_IMC_Terminate(UL(0)) == 0
    assert lib.TNC_IMC_BatchEnding(UL(1), UL(11)) == 0  # IMC 1's agent is still there
    assert lib.TNC_IMC_Terminate(UL(1)) == 0
    assert tncc.senders == [0, 1]
    assert [(conn, mtype) for conn, mtype, _ in tncc.sent] == [(10, 1), (11, 1)]


def test_shim_survives_a_dead_agent(shim: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAC_IMC_COMMAND", "exit 3")
    tncc = FakeTncc(shim)
    tncc.start()
    assert tncc.lib.TNC_IMC_BeginHandshake(UL(0), UL(1)) == 10  # FATAL, no crash
    assert tncc.lib.TNC_IMC_BatchEnding(UL(0), UL(1)) == 9      # no agent: OTHER
    assert tncc.sent == []
    assert tncc.lib.TNC_IMC_Terminate(UL(0)) == 0


def test_shim_times_out_a_hung_agent(shim: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAC_IMC_COMMAND", "exec sleep 30")
    monkeypatch.setenv("NAC_IMC_TIMEOUT_MS", "200")
    tncc = FakeTncc(shim)
    tncc.start()
    started = time.monotonic()
    assert tncc.lib.TNC_IMC_BeginHandshake(UL(0), UL(1)) == 10
    # 0.2 s for the answer, then up to 2 s grace before SIGKILL.
    assert time.monotonic() - started < 5
    assert tncc.lib.TNC_IMC_Terminate(UL(0)) == 0


def test_agent_against_the_servers_imv_session(tmp_path: Path) -> None:
    """Contract with eap_ext.tnc.session.ImvSession (the server's side), batches carried as
    wpa_supplicant's TNCC and hostapd's TNCS would carry them (IF-TNCCS 1.1)."""
    session = pytest.importorskip("eap_ext.tnc.session")
    tnccs11 = pytest.importorskip("eap_ext.tnc.tnccs11")
    from eap_ext.agent.collectors import collect_posture
    from eap_ext.agent.hostroot import HostRoot

    doc = collect_posture(HostRoot(build_debian_root(tmp_path / "host"), rooted=True))
    agent = ImcAgent(lambda _token: doc, default_codec(), tmp_path / "last.json")
    seen: dict = {}

    def evaluate(document: dict, identity: str | None) -> tuple:
        seen["doc"] = document
        return "isolate", 2, ["Upgrade openssl to 3.0.15", "https://nac.example/fix"], b"cert"

    imv = session.ImvSession(evaluate, protocol="tnccs11")
    sent = agent.handle(framing.BEGIN, struct.pack("!I", 0))
    batch = tnccs11.Tnccs11Batch(1, "TNCS", tuple(tnccs11.ImcImvMessage(t, b) for t, b in sent))
    out, _events = imv.receive(batch.encode())
    assert {k: v for k, v in seen["doc"].items() if k != "stated_digest"} == doc
    for msg in tnccs11.decode_batch(out).messages:
        if isinstance(msg, tnccs11.ImcImvMessage):
            assert agent.handle(msg.msg_type, msg.body) == []
    saved = state.load(tmp_path / "last.json")
    assert saved["assessment"] == "major-non-compliance"
    assert saved["remediation"] == ["Upgrade openssl to 3.0.15", "https://nac.example/fix"]
    assert saved["certificate"]["token"] == "Y2VydA=="


def test_shim_terminates_fast_when_host_ignores_sigchld(
        shim: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host process with SIGCHLD ignored has its children reaped by the kernel; the shim
    must not wait out its grace period for an exit status it can never collect."""
    import signal

    # A minimal agent: answer the BEGIN event with END, then wait for EOF.
    monkeypatch.setenv("NAC_IMC_COMMAND",
                       "printf '\\377\\377\\377\\000\\000\\000\\000\\000'; exec cat >/dev/null")
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        tncc = FakeTncc(shim)
        tncc.start()
        assert tncc.lib.TNC_IMC_BeginHandshake(UL(0), UL(1)) == 0
        assert tncc.sent == []
        started = time.monotonic()
        assert tncc.lib.TNC_IMC_Terminate(UL(0)) == 0
        assert time.monotonic() - started < 1.0
    finally:
        signal.signal(signal.SIGCHLD, previous)


@pytest.mark.parametrize("digest_first", [True, False])
def test_agent_leads_with_its_digest_only_where_the_server_said_so(
        tmp_path: Path, digest_first: bool) -> None:
    """A certificate whose server takes digest-only documents: the first message holds the
    certificate and the posture digest, no inventory; any other: the whole posture."""
    pytest.importorskip("eap_ext.tnc.posture_attrs")
    from eap_ext.agent.collectors import collect_posture, posture_digest
    from eap_ext.agent.hostroot import HostRoot

    root = HostRoot(build_debian_root(tmp_path / "host"), rooted=True)
    cert = {"token": "cWMxLnRva2Vu", "posture_digest": None,
            **({"digest_first": True} if digest_first else {})}
    state.save({"certificate": cert}, tmp_path / "last.json")
    agent = ImcAgent(lambda token: collect_posture(root, certificate_token=token),
                     default_codec(), tmp_path / "last.json")
    (_, msg), = agent.handle(framing.BEGIN, struct.pack("!I", 1))
    got = decode_posture(msg)
    full = collect_posture(root, certificate_token="cWMxLnRva2Vu")
    if digest_first:
        assert got == {"schema": 1, "digest_only": True,
                       "certificate": {**full["certificate"], "token": "qc1.token"}}
        assert full["certificate"]["posture_digest"] == posture_digest(full)
        assert len(msg) < 300
    else:
        assert got["packages"] == full["packages"] and got["certificate"]["token"] == \
            "cWMxLnRva2Vu"
