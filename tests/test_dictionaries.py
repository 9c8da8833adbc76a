"""The RADIUS dictionaries in radius_dict/: pyrad reads them, packets built
with them round-trip, and FreeRADIUS's own parser (radclient) accepts them
and decodes what pyrad encodes."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from pyrad import packet
from pyrad.dictionary import Dictionary

ROOT = Path(__file__).resolve().parent.parent
DICT_DIR = ROOT / "radius_dict"
TOP = DICT_DIR / "dictionary"
FR_DICT = Path("/usr/share/freeradius/dictionary")
SECRET = b"testing123"
RADCLIENT = shutil.which("radclient")

needs_radclient = pytest.mark.skipif(
    RADCLIENT is None, reason="radclient (freeradius-utils) is not installed"
)


@pytest.fixture(scope="module")
def rdict() -> Dictionary:
    return Dictionary(str(TOP))


def test_top_file_includes_every_file() -> None:
    included = {
        line.split()[1] for line in TOP.read_text().splitlines() if line.startswith("$INCLUDE")
    }
    on_disk = {p.name for p in DICT_DIR.glob("dictionary.*")}
    assert included == on_disk


def test_pyrad_loads_with_only_vsa_container_skipped(
    rdict: Dictionary, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pyrad"):
        d = Dictionary(str(TOP))
    # Vendor-Specific is FreeRADIUS's "vsa" container; pyrad decodes
    # attribute 26 itself and skips the definition. Nothing else is lost.
    assert d.skipped_attributes == {"Vendor-Specific"}
    assert not [r for r in caplog.records if "unknown attribute" in r.getMessage()]
    assert len(d.attributes) > 150


@pytest.mark.parametrize(
    ("name", "code", "dtype"),
    [
        ("User-Name", 1, "string"),
        ("User-Password", 2, "string"),
        ("Service-Type", 6, "integer"),
        ("Calling-Station-Id", 31, "string"),
        ("NAS-Port-Type", 61, "integer"),
        ("Tunnel-Private-Group-Id", 81, "string"),
        ("EAP-Message", 79, "octets"),
        ("Message-Authenticator", 80, "octets"),
        ("Chargeable-User-Identity", 89, "octets"),
        ("Error-Cause", 101, "integer"),
        ("Framed-IPv6-Prefix", 97, "ipv6prefix"),
        ("Framed-IPv6-Address", 168, "ipv6addr"),
        ("Delegated-IPv6-Prefix-Pool", 171, "string"),
        ("Egress-VLANID", 56, "integer"),
    ],
)
def test_standard_attributes(rdict: Dictionary, name: str, code: int, dtype: str) -> None:
    attr = rdict[name]
    assert (attr.code, attr.type, attr.vendor) == (code, dtype, "")


@pytest.mark.parametrize(
    ("name", "vendor", "vid", "code", "dtype"),
    [
        ("MS-MPPE-Send-Key", "Microsoft", 311, 16, "octets"),
        ("MS-MPPE-Recv-Key", "Microsoft", 311, 17, "octets"),
        ("MS-CHAP-Challenge", "Microsoft", 311, 11, "octets"),
        ("MS-CHAP2-Response", "Microsoft", 311, 25, "octets"),
        ("MS-CHAP2-Success", "Microsoft", 311, 26, "octets"),
        ("MS-CHAP-Error", "Microsoft", 311, 2, "string"),
        ("Cisco-AVPair", "Cisco", 9, 1, "string"),
        ("Aruba-User-Role", "Aruba", 14823, 1, "string"),
        ("Aruba-User-Vlan", "Aruba", 14823, 2, "integer"),
        ("Aruba-Named-User-Vlan", "Aruba", 14823, 9, "string"),
        ("Juniper-Local-User-Name", "Juniper", 2636, 1, "string"),
        ("Juniper-Switching-Filter", "Juniper", 2636, 48, "string"),
        ("Juniper-VoIP-Vlan", "Juniper", 2636, 49, "string"),
        ("HP-Port-Client-Limit-Dot1x", "HP", 11, 10, "integer"),
        ("HP-Port-Client-Limit-MA", "HP", 11, 11, "integer"),
        ("HP-Nas-Filter-Rule", "HP", 11, 61, "string"),
        ("HP-Egress-VLANID", "HP", 11, 64, "integer"),
        ("HP-Egress-VLAN-Name", "HP", 11, 65, "string"),
    ],
)
def test_vendor_attributes(
    rdict: Dictionary, name: str, vendor: str, vid: int, code: int, dtype: str
) -> None:
    attr = rdict[name]
    assert (attr.vendor, attr.code, attr.type) == (vendor, code, dtype)
    assert rdict.vendors.GetForward(vendor) == vid


def test_flags(rdict: Dictionary) -> None:
    for name in (
        "Tunnel-Type",
        "Tunnel-Medium-Type",
        "Tunnel-Private-Group-Id",
        "Tunnel-Password",
        "Tunnel-Preference",
    ):
        assert rdict[name].has_tag, name
    assert rdict["Tunnel-Password"].encrypt == 2
    assert rdict["MS-MPPE-Send-Key"].encrypt == 2
    assert rdict["MS-MPPE-Recv-Key"].encrypt == 2
    assert rdict["User-Password"].encrypt == 1
    assert not rdict["EAP-Message"].has_tag


@pytest.mark.parametrize(
    ("attr", "name", "value"),
    [
        ("Service-Type", "Framed-User", 2),
        ("Service-Type", "Call-Check", 10),
        ("Service-Type", "Authorize-Only", 17),
        ("NAS-Port-Type", "Ethernet", 15),
        ("NAS-Port-Type", "Wireless-802.11", 19),
        ("Termination-Action", "RADIUS-Request", 1),
        ("Acct-Status-Type", "Start", 1),
        ("Acct-Status-Type", "Stop", 2),
        ("Acct-Status-Type", "Interim-Update", 3),
        ("Acct-Status-Type", "Accounting-On", 7),
        ("Acct-Terminate-Cause", "Supplicant-Restart", 19),
        ("Tunnel-Type", "VLAN", 13),
        ("Tunnel-Medium-Type", "IEEE-802", 6),
        ("Error-Cause", "Residual-Session-Context-Removed", 201),
        ("Error-Cause", "Missing-Attribute", 402),
        ("Error-Cause", "Session-Context-Not-Found", 503),
        ("Error-Cause", "Multiple-Session-Selection-Unsupported", 508),
    ],
)
def test_values(rdict: Dictionary, attr: str, name: str, value: int) -> None:
    assert rdict[attr].values.GetForward(name) == value.to_bytes(4, "big")


def _accept_for(req: packet.AuthPacket, send_key: bytes) -> packet.AuthPacket:
    reply = req.CreateReply()
    reply["Tunnel-Type:1"] = "VLAN"
    reply["Tunnel-Medium-Type:1"] = "IEEE-802"
    reply["Tunnel-Private-Group-Id:1"] = "10"
    reply["Session-Timeout"] = 3600
    reply["Termination-Action"] = "RADIUS-Request"
    reply["MS-MPPE-Send-Key"] = send_key
    reply["MS-MPPE-Recv-Key"] = send_key[::-1]
    reply["Cisco-AVPair"] = "device-traffic-class=voice"
    reply["Aruba-User-Role"] = "quarantine"
    return reply


def test_tagged_and_salted_round_trip(rdict: Dictionary) -> None:
    req = packet.AuthPacket(code=packet.AccessRequest, secret=SECRET, dict=rdict)
    req["User-Name"] = "aa-bb-cc-dd-ee-ff"
    req["Service-Type"] = "Call-Check"
    req["EAP-Message"] = b"\x02\x01\x00\x06\x01a"
    req.RequestPacket()  # fixes the Request Authenticator the salt depends on
    key = bytes(range(32))
    raw = _accept_for(req, key).ReplyPacket()

    # on the wire: tag 1 in the first octet, VLAN (13) in the other three
    assert b"\x40\x06\x01\x00\x00\x0d" in raw
    assert b"\x41\x06\x01\x00\x00\x06" in raw
    assert b"\x51\x05\x0110" in raw
    assert key not in raw  # salted

    got = req.CreateReply(packet=raw)
    # decoding overwrote got.authenticator with the Response Authenticator;
    # the salt was keyed with the Request Authenticator (RFC 2548 2.4.2)
    got.request_authenticator = req.authenticator
    assert req.VerifyReply(got, raw)
    assert got["Tunnel-Type:1"] == ["VLAN"]
    assert got["Tunnel-Medium-Type:1"] == ["IEEE-802"]
    assert got["Tunnel-Private-Group-Id:1"] == ["10"]
    assert got["Session-Timeout"] == [3600]
    assert got["Termination-Action"] == ["RADIUS-Request"]
    assert got["MS-MPPE-Send-Key"] == [key]
    assert got["MS-MPPE-Recv-Key"] == [key[::-1]]
    assert got["Cisco-AVPair"] == ["device-traffic-class=voice"]

    # the request side: EAP-Message stays bytes
    back = packet.AuthPacket(packet=req.RequestPacket(), secret=SECRET, dict=rdict)
    assert back["EAP-Message"] == [b"\x02\x01\x00\x06\x01a"]
    assert back["Service-Type"] == ["Call-Check"]


def test_tunnel_password_round_trip(rdict: Dictionary) -> None:
    req = packet.AuthPacket(code=packet.AccessRequest, secret=SECRET, dict=rdict)
    req.RequestPacket()
    reply = req.CreateReply()
    reply["Tunnel-Password:2"] = "s3cret-for-the-tunnel-longer-than-16"
    raw = reply.ReplyPacket()
    got = req.CreateReply(packet=raw)
    got.request_authenticator = req.authenticator
    assert got["Tunnel-Password:2"] == ["s3cret-for-the-tunnel-longer-than-16"]


def _radclient(dict_dir: Path, request: str, port: int) -> subprocess.CompletedProcess[str]:
    assert RADCLIENT is not None
    return subprocess.run(
        [
            RADCLIENT,
            "-D",
            str(dict_dir),
            "-x",
            "-r",
            "1",
            "-t",
            "3",
            f"127.0.0.1:{port}",
            "auth",
            SECRET.decode(),
        ],
        input=request,
        capture_output=True,
        text=True,
        timeout=10,
    )


class _Responder:
    """A one-shot RADIUS server on loopback answering with pyrad, so that
    radclient decodes what pyrad encoded."""

    def __init__(self, rdict: Dictionary, bare: bool = False) -> None:
        self.rdict = rdict
        self.bare = bare
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.request: packet.AuthPacket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            data, peer = self.sock.recvfrom(4096)
        except TimeoutError:
            return
        req = packet.AuthPacket(packet=data, secret=SECRET, dict=self.rdict)
        self.request = req
        reply = req.CreateReply() if self.bare else _accept_for(req, bytes(range(16, 48)))
        self.sock.sendto(reply.ReplyPacket(), peer)

    def close(self) -> None:
        self.thread.join(6)
        self.sock.close()


@needs_radclient
def test_radclient_reads_our_dictionary_and_decodes_pyrad(rdict: Dictionary) -> None:
    srv = _Responder(rdict)
    try:
        proc = _radclient(
            DICT_DIR,
            "User-Name = aa-bb-cc-dd-ee-ff, Calling-Station-Id = aa-bb-cc-dd-ee-ff, "
            "Service-Type = Call-Check, NAS-Port-Type = Ethernet, "
            "Message-Authenticator = 0x00, Aruba-Named-User-Vlan = guests, "
            "Error-Cause = Invalid-Request",
            srv.port,
        )
    finally:
        srv.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "dict_init" not in out
    # radclient encoded by name with our dictionary, pyrad decoded it
    assert srv.request is not None
    assert srv.request["Service-Type"] == ["Call-Check"]
    assert srv.request["NAS-Port-Type"] == ["Ethernet"]
    assert srv.request["Aruba-Named-User-Vlan"] == ["guests"]
    assert srv.request["Error-Cause"] == ["Invalid-Request"]
    assert srv.request.verify_message_authenticator()
    # FreeRADIUS decoded pyrad's tags and salt encryption the same way
    assert "Received Access-Accept" in out
    assert "Tunnel-Type:1 = VLAN" in out
    assert "Tunnel-Medium-Type:1 = IEEE-802" in out
    assert 'Tunnel-Private-Group-Id:1 = "10"' in out
    assert "Termination-Action = RADIUS-Request" in out
    assert "MS-MPPE-Send-Key = 0x" + bytes(range(16, 48)).hex() in out
    assert "MS-MPPE-Recv-Key = 0x" + bytes(range(16, 48))[::-1].hex() in out
    assert 'Cisco-AVPair = "device-traffic-class=voice"' in out


@needs_radclient
@pytest.mark.skipif(not FR_DICT.exists(), reason="FreeRADIUS dictionaries not installed")
@pytest.mark.parametrize("name", sorted(p.name for p in DICT_DIR.glob("dictionary.*")))
def test_each_file_parses_on_top_of_freeradius(
    rdict: Dictionary, tmp_path: Path, name: str
) -> None:
    # FreeRADIUS's parser is stricter than pyrad's (flags, lengths) and refuses
    # a name it already has under another code. It lets a redefinition change
    # the type, which test_definitions_agree_with_freeradius checks instead.
    (tmp_path / "dictionary").write_text(f"$INCLUDE {FR_DICT}\n$INCLUDE {DICT_DIR / name}\n")
    srv = _Responder(rdict, bare=True)
    try:
        proc = _radclient(tmp_path, "User-Name = x", srv.port)
    finally:
        srv.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "dict_init" not in out, out
    assert "Received Access-Accept" in out, out


def _fr_parse(path: Path, out: dict[str, dict]) -> None:
    """Codes, types and values of a FreeRADIUS dictionary tree, enough to
    compare definitions."""
    vendors = out.setdefault("vendors", {})
    vendor = ""
    for line in path.read_text(errors="replace").splitlines():
        tok = line.split("#", 1)[0].split()
        if not tok:
            continue
        if tok[0].startswith("$INCLUDE"):
            inc = Path(tok[1]) if os.path.isabs(tok[1]) else path.parent / tok[1]
            if inc.exists():
                _fr_parse(inc, out)
        elif tok[0] == "VENDOR":
            vendors[tok[1]] = int(tok[2], 0)
        elif tok[0] == "BEGIN-VENDOR":
            vendor = tok[1]
        elif tok[0] == "END-VENDOR":
            vendor = ""
        elif tok[0] == "ATTRIBUTE":
            owner = vendor
            flags = tok[4] if len(tok) > 4 else ""
            if flags in vendors:
                owner, flags = flags, ""
            out.setdefault("attrs", {})[tok[1]] = (
                vendors.get(owner, 0),
                tok[2],
                tok[3].lower(),
                flags,
            )
        elif tok[0] == "VALUE":
            out.setdefault("values", {}).setdefault(tok[1], {})[tok[2]] = int(tok[3], 0)


@pytest.mark.skipif(not FR_DICT.exists(), reason="FreeRADIUS dictionaries not installed")
def test_definitions_agree_with_freeradius() -> None:
    ours: dict[str, dict] = {}
    theirs: dict[str, dict] = {}
    _fr_parse(TOP, ours)
    _fr_parse(FR_DICT, theirs)
    diffs = [
        (name, mine, theirs["attrs"][name])
        for name, mine in ours["attrs"].items()
        if name in theirs["attrs"] and theirs["attrs"][name] != mine
    ]
    assert diffs == []
    # a value number must mean the same thing (names may differ: aliases)
    for attr, values in ours["values"].items():
        fr_by_number = {v: k for k, v in theirs["values"].get(attr, {}).items()}
        for name, number in values.items():
            if name in theirs["values"].get(attr, {}):
                assert theirs["values"][attr][name] == number, (attr, name)
            elif attr in theirs["values"]:
                assert number in fr_by_number, (attr, name, number)
