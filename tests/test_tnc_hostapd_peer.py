"""Real peers for IF-TNCCS 1.1: wpa_supplicant's TNCC (eapol_test) against hostapd's TNCS.

Two throw-away IF-IMC/IF-IMV plug-ins, compiled here, carry bytes made by our sessions:
the IMC sends ImcSession's posture PA-TNC message, the IMV answers with ImvSession's result
PA message and then recommends "allow". hostapd (driver=none, eap_server=1, tnc=1, RADIUS
on loopback) logs every batch both ways; the test decodes those real batches with our
codec, compares our encoder with hostapd's spelling byte for byte, and replays the real
batches into fresh ImcSession/ImvSession objects.

/etc/tnc_config is a fixed path in both programs, so everything runs in a private mount
namespace with an overlay on /etc (the real /etc is never written).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from eap_ext.tnc import tnccs11
from eap_ext.tnc.pa_tnc import AssessmentResult, decode_message
from eap_ext.tnc.session import ImcSession, ImvSession

try:
    from tests.test_tnc_posture_attrs import SCHEMA_EXAMPLE
except ImportError:  # tests/ collected as plain directories
    from test_tnc_posture_attrs import SCHEMA_EXAMPLE  # type: ignore[no-redef]

pytestmark = pytest.mark.peer
SECRET = "testing123"
PROGRAMS = ("hostapd", "eapol_test", "gcc", "openssl", "unshare", "mount")
CERT = b"quarantine-certificate-bytes"

_COMMON_C = r"""
#include <stdio.h>
#include <stdlib.h>
typedef unsigned long UL;
typedef UL (*bind_t)(UL id, char *name, void **out);
static unsigned char *slurp(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); *len = ftell(f); fseek(f, 0, SEEK_SET);
    buf = malloc(*len ? *len : 1);
    if (fread(buf, 1, *len, f) != (size_t) *len) { free(buf); buf = NULL; }
    fclose(f);
    return buf;
}
static void record(const char *path, const unsigned char *msg, UL len) {
    FILE *f = fopen(path, "ab");
    unsigned char hdr[4] = {len >> 24, len >> 16, len >> 8, len};
    if (!f) return;
    fwrite(hdr, 1, 4, f); fwrite(msg, 1, len, f); fclose(f);
}
"""

# IF-IMC side: send the posture once per handshake, record whatever the IMV sends.
_IMC_C = _COMMON_C + r"""
static UL (*report)(UL, UL *, UL);
static UL (*send_msg)(UL, UL, unsigned char *, UL, UL);
UL TNC_IMC_Initialize(UL id, UL minv, UL maxv, UL *actual) { *actual = 1; return 0; }
UL TNC_IMC_ProvideBindFunction(UL id, bind_t bind) {
    UL types[1] = {1};
    bind(id, "TNC_TNCC_ReportMessageTypes", (void **) &report);
    bind(id, "TNC_TNCC_SendMessage", (void **) &send_msg);
    return report && send_msg ? report(id, types, 1) : 1;
}
UL TNC_IMC_BeginHandshake(UL id, UL conn) {
    long len; unsigned char *msg = slurp(SEND_FILE, &len);
    if (!msg) return 1;
    send_msg(id, conn, msg, (UL) len, 1);
    free(msg);
    return 0;
}
UL TNC_IMC_ReceiveMessage(UL id, UL conn, unsigned char *msg, UL len, UL type) {
    record(RECV_FILE, msg, len);
    return 0;
}
"""

# IF-IMV side: record the posture, answer once, then recommend "allow" (0).
_IMV_C = _COMMON_C + r"""
static UL (*report)(UL, UL *, UL);
static UL (*send_msg)(UL, UL, unsigned char *, UL, UL);
static UL (*recommend)(UL, UL, UL, UL);
static int answered;
UL TNC_IMV_Initialize(UL id, UL minv, UL maxv, UL *actual) { *actual = 1; return 0; }
UL TNC_IMV_ProvideBindFunction(UL id, bind_t bind) {
    UL types[1] = {1};
    bind(id, "TNC_TNCS_ReportMessageTypes", (void **) &report);
    bind(id, "TNC_TNCS_SendMessage", (void **) &send_msg);
    bind(id, "TNC_TNCS_ProvideRecommendation", (void **) &recommend);
    return report && send_msg && recommend ? report(id, types, 1) : 1;
}
UL TNC_IMV_ReceiveMessage(UL id, UL conn, unsigned char *msg, UL len, UL type) {
    long rlen; unsigned char *reply;
    record(RECV_FILE, msg, len);
    if (answered++) return 0;
    reply = slurp(SEND_FILE, &rlen);
    if (!reply) return 1;
    send_msg(id, conn, reply, (UL) rlen, 1);
    free(reply);
    return 0;
}
UL TNC_IMV_SolicitRecommendation(UL id, UL conn) { return recommend(id, conn, 0, 0); }
"""


def _check_environment() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"missing programs: {', '.join(missing)}")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace: {probe.stderr.decode().strip()}")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _build(src: str, out: Path, send: Path, recv: Path) -> None:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f'-DSEND_FILE="{send}"',
                    f'-DRECV_FILE="{recv}"', "-o", str(out), str(c)], check=True,
                   capture_output=True)


def _certs(d: Path) -> None:
    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=tnc test CA")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2")


def _hexdumps(log: str, title: str) -> list[bytes]:
    """Every wpa_hexdump_ascii block whose header line contains `title`."""
    out: list[bytes] = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if title not in line or "hexdump_ascii" not in line:
            continue
        data = bytearray()
        for row in lines[i + 1:]:
            if not row.startswith("     "):
                break
            data += bytes(int(tok, 16) for tok in row[5:5 + 48].split())
        out.append(bytes(data))
    return out


def _trimmed(wire: bytes) -> bytes:
    """hostapd's batch spelling as our encoder writes it."""
    text = wire.decode().replace('<?xml version="1.0"?>', "").replace("\n", "")
    text = re.sub(r' xmlns:xsi="[^"]*" xsi:schemaLocation="[^"]*"', "", text)
    return re.sub(r"(<TNCCS-Recommendation [^>]*)>\s*</TNCCS-Recommendation>", r"\1/>",
                  text).encode()


def _records(path: Path) -> list[bytes]:
    raw = path.read_bytes() if path.exists() else b""
    out, pos = [], 0
    while pos + 4 <= len(raw):
        n = int.from_bytes(raw[pos:pos + 4], "big")
        out.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _evaluate(doc: dict[str, Any], identity: str | None) -> tuple:
    return "allow", 1, ["https://remediation.example/"], CERT


def test_tncc_and_tncs_batches_against_our_sessions(tmp_path: Path) -> None:
    _check_environment()
    # Bytes our sessions produce: the IMC's posture and the IMV's results (tnccs11).
    ref_imc = ImcSession(SCHEMA_EXAMPLE)
    posture_pa = _pa(tnccs11.decode_batch(ref_imc.begin()))
    ref_imv = ImvSession(_evaluate)
    ref_reply, _ = ref_imv.receive(ImcSession(SCHEMA_EXAMPLE).begin())
    assert ref_reply is not None
    results_pa = _pa(tnccs11.decode_batch(ref_reply))
    (tmp_path / "posture.bin").write_bytes(posture_pa)
    (tmp_path / "results.bin").write_bytes(results_pa)
    _build(_IMC_C, tmp_path / "imc.so", tmp_path / "posture.bin", tmp_path / "imc_recv.bin")
    _build(_IMV_C, tmp_path / "imv.so", tmp_path / "results.bin", tmp_path / "imv_recv.bin")
    _certs(tmp_path)

    port = _free_udp_port()
    (tmp_path / "clients").write_text(f"127.0.0.1/32 {SECRET}\n")
    (tmp_path / "eap_user").write_text('* TTLS\n"host1" MSCHAPV2 "secret-pw" [2]\n')
    (tmp_path / "hostapd.conf").write_text(textwrap.dedent(f"""\
        driver=none
        interface=tnc0
        logger_stdout=-1
        logger_stdout_level=0
        eap_server=1
        eap_user_file={tmp_path}/eap_user
        ca_cert={tmp_path}/ca.pem
        server_cert={tmp_path}/server.pem
        private_key={tmp_path}/server.key
        tnc=1
        radius_server_clients={tmp_path}/clients
        radius_server_auth_port={port}
        """))
    (tmp_path / "eapol.conf").write_text(textwrap.dedent(f"""\
        network={{
          ssid="nac"
          key_mgmt=WPA-EAP
          eap=TTLS
          identity="host1"
          anonymous_identity="anonymous"
          password="secret-pw"
          ca_cert="{tmp_path}/ca.pem"
          phase2="autheap=MSCHAPV2"
        }}
        """))
    for d in ("upper", "work"):
        (tmp_path / d).mkdir()
    (tmp_path / "run.sh").write_text(textwrap.dedent(f"""\
        set -e
        mount -t overlay overlay \\
          -o lowerdir=/etc,upperdir={tmp_path}/upper,workdir={tmp_path}/work /etc
        printf 'IMC "tnc-test-imc" {tmp_path}/imc.so\\nIMV "tnc-test-imv" {tmp_path}/imv.so\\n' \\
          > /etc/tnc_config
        hostapd -dd {tmp_path}/hostapd.conf > {tmp_path}/hostapd.log 2>&1 &
        hp=$!
        i=0
        until grep -q AP-ENABLED {tmp_path}/hostapd.log; do
          i=$((i+1)); [ $i -lt 100 ] || {{ kill $hp; exit 90; }}; sleep 0.05
        done
        set +e
        eapol_test -c {tmp_path}/eapol.conf -a 127.0.0.1 -p {port} -s {SECRET} -t 20 \\
          > {tmp_path}/eapol.log 2>&1
        rc=$?
        kill $hp; wait $hp
        exit $rc
        """))
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh",
                           str(tmp_path / "run.sh")], capture_output=True, text=True,
                          timeout=90, check=False)
    hostapd_log = (tmp_path / "hostapd.log").read_text(errors="replace")
    eapol_log = ((tmp_path / "eapol.log").read_text(errors="replace")
                 if (tmp_path / "eapol.log").exists() else "")
    assert proc.returncode == 0, (proc.stderr, eapol_log[-3000:], hostapd_log[-3000:])

    client = _hexdumps(hostapd_log, "EAP-TNC: Received payload")
    server = _hexdumps(hostapd_log, "EAP-TNC: Request")
    assert len(client) == 2 and len(server) == 2, (len(client), len(server))
    c1, c3 = (tnccs11.decode_batch(b) for b in client)
    s2, s4 = (tnccs11.decode_batch(b) for b in server)
    assert [c1.batch_id, s2.batch_id, c3.batch_id, s4.batch_id] == [1, 2, 3, 4]
    assert c1.recipient == c3.recipient == s2.recipient == s4.recipient == "TNCS"
    assert c1.messages == (tnccs11.ImcImvMessage(1, posture_pa),)
    assert s2.messages == (tnccs11.ImcImvMessage(1, results_pa),)
    assert c3.messages == () and s4.messages == (tnccs11.TnccsRecommendation("allow"),)
    # Our encoder writes what hostapd and wpa_supplicant write, byte for byte, less what
    # no parser reads (XML declaration, schema location, newlines, a closing tag).
    for ours, theirs in ((tnccs11.Tnccs11Batch(3, "TNCS"), client[1]),
                         (tnccs11.Tnccs11Batch(4, "TNCS", s4.messages), server[1])):
        assert ours.encode() == _trimmed(theirs)
        assert tnccs11.decode_batch(ours.encode()) == tnccs11.decode_batch(theirs)
        assert len(ours.encode()) < len(theirs) - 180
    # The plug-ins saw exactly our PA-TNC bytes.
    assert _records(tmp_path / "imv_recv.bin") == [posture_pa]
    assert _records(tmp_path / "imc_recv.bin") == [results_pa]
    assert "TNC: TNCCS-Recommendation: 'allow'" in eapol_log

    # Replay: our IMC copes with hostapd's TNCS (including its Recipient="TNCS").
    imc = ImcSession(SCHEMA_EXAMPLE)
    assert tnccs11.decode_batch(imc.begin()) == tnccs11.decode_batch(client[0])
    third, _ = imc.receive(server[0])
    assert third == _trimmed(client[1])
    assert imc.assessment == 1 and imc.certificate == CERT
    assert imc.remediation == ["https://remediation.example/"]
    last, _ = imc.receive(server[1])
    assert last is None and imc.recommendation == "allow" and imc.done
    # Replay: our IMV copes with the real TNCC's first batch and decides at once.
    seen: list[dict[str, Any]] = []
    imv = ImvSession(lambda doc, ident: (seen.append(doc), _evaluate(doc, ident))[1])
    reply, _ = imv.receive(client[0])
    assert seen == [SCHEMA_EXAMPLE] and imv.done
    out = tnccs11.decode_batch(reply)  # type: ignore[arg-type]
    assert out.batch_id == 2 and out.messages[0] == tnccs11.TnccsRecommendation("allow")
    results = decode_message(_pa(out)).attributes
    assert results[0] == AssessmentResult(1)


def _pa(batch: tnccs11.Tnccs11Batch) -> bytes:
    """The PA-TNC bytes of a batch's IMC-IMV message (TNCC-TNCS messages come first)."""
    return next(m.body for m in batch.messages if isinstance(m, tnccs11.ImcImvMessage))
