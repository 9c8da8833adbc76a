"""The compact package inventory (PACKAGES_COMPACT): exact round trip, size, zip bombs refused,
IETF Installed Packages still answered, and the digest-only re-inspection in TncMethod."""

from __future__ import annotations

import base64
import json
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.agent.collectors.purl import make_purl
from eap_ext.tnc import packages_compact, pb_tnc, tnccs11
from eap_ext.tnc.eap_method import EapTncPeer
from eap_ext.tnc.errors import PaTncCodecError
from eap_ext.tnc.pa_tnc import (
    DEFAULT_VENDOR_ID,
    IETF_PEN,
    MAX_INFLATED_COMPACT,
    AssessmentResult,
    AttributeRequest,
    AttrType,
    InstalledPackages,
    PaErrorCode,
    PaTncError,
    PaTncMessage,
    RawAttribute,
    VendorAttribute,
    VendorAttrType,
    decode_message,
)
from eap_ext.tnc.posture_attrs import (
    attributes_for_request,
    attributes_to_posture,
    posture_attribute_types,
    posture_to_attributes,
)
from eap_ext.tnc.session import Evaluated, ImcSession, ImvSession
from nac.eap.config import EapConfig
from nac.eap.methods.base import MethodEnv, Outcome
from nac.eap.methods.tnc import TncMethod
from nac.posture.digest import posture_digest

try:
    from tests.test_tnc_posture_attrs import SCHEMA_EXAMPLE
except ImportError:  # tests/ collected as plain directories
    from test_tnc_posture_attrs import SCHEMA_EXAMPLE  # type: ignore[no-redef]

DATA = Path(__file__).parent / "data" / "packages" / "debian12_installed.tsv"
COMPACT = (DEFAULT_VENDOR_ID, int(VendorAttrType.PACKAGES_COMPACT))


def debian_packages() -> list[dict[str, str]]:
    """The 742 installed packages of a real Debian 12 machine, as the dpkg collector
    reports them."""
    out = []
    for line in DATA.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, version, arch, source, source_version = line.split("\t")
        out.append({"name": name, "version": version, "arch": arch, "source": source,
                    "source_version": source_version, "manager": "dpkg",
                    "purl": make_purl("deb", "debian", name, version, arch, "debian-12")})
    return out


def wire(attrs: list[Any]) -> bytes:
    return PaTncMessage(1, tuple(attrs)).encode()


def test_real_inventory_round_trips_at_about_11_bytes_a_package() -> None:
    pkgs = debian_packages()
    attr = VendorAttribute(VendorAttrType.PACKAGES_COMPACT, pkgs)
    raw = attr.encode()
    # every purl rebuilt from one template instead of carried
    text = packages_compact.encode(pkgs).decode()
    assert json.loads(text.partition("\n")[0])["t"] == [
        "pkg:deb/debian/{n}@{v}?arch={a}&distro=debian-12"]
    rows = text.split("\n")[1:]
    assert len(rows) == len(pkgs) and not any(r.startswith("=") for r in rows)
    assert decode_message(wire([attr])).attributes == (attr,)
    assert len(raw) / len(pkgs) < 14, len(raw)
    ietf = posture_to_attributes({"schema": 1, "packages": pkgs}, packages="ietf")
    ietf_bytes = sum(len(a.encode()) for a in ietf[1:])
    assert ietf_bytes > 3.5 * len(raw)  # what 1,500-package hosts could not get through


text = st.text(max_size=10)
full_package = st.fixed_dictionaries({
    "name": text, "version": text, "arch": st.sampled_from(["amd64", "all", "x86_64", "{a}"]),
    "source": text, "source_version": text, "manager": st.sampled_from(["dpkg", "rpm", "apk"]),
    "purl": text})


@st.composite
def packages(draw: st.DrawFn) -> list[Any]:
    pkgs = draw(st.lists(full_package | st.just("odd") | st.lists(text, max_size=2)
                         | st.dictionaries(text, text, max_size=2), max_size=6))
    for p in pkgs:
        if isinstance(p, dict) and set(p) == packages_compact.KEYS and draw(st.booleans()):
            p["purl"] = make_purl("deb", "debian", p["name"], p["version"], p["arch"],
                                  "debian-12")  # the usual case: a template carries it
    return pkgs


@settings(max_examples=300, deadline=None)
@given(packages())
def test_any_package_list_round_trips_exactly(pkgs: list[Any]) -> None:
    assert packages_compact.decode(packages_compact.encode(pkgs)) == pkgs
    doc = {"schema": 1, "packages": pkgs}
    attrs = decode_message(wire(posture_to_attributes(doc))).attributes
    assert attributes_to_posture(attrs)["packages"] == pkgs
    assert posture_digest(attributes_to_posture(attrs)) == posture_digest(
        attributes_to_posture(posture_to_attributes(doc)))


agent_text = st.text(alphabet="ab+:~.-_%@/ é1\t\n=", max_size=6)
agent_package = st.builds(
    lambda n, v, a, s, sv: {"name": n, "version": v, "arch": a, "source": s or n,
                            "source_version": sv or v, "manager": "dpkg",
                            "purl": make_purl("deb", "debian", n, v, a, "debian-12")},
    agent_text, agent_text, st.sampled_from(["amd64", "all", "i386+x", "a:b"]),
    agent_text, agent_text)


@settings(max_examples=300, deadline=None)
@given(st.lists(agent_package, max_size=8))
def test_column_decoding_is_row_decoding(pkgs: list[Any]) -> None:
    """What the agent sends goes through the column-wise fast path when it can; whichever
    path decodes it, the packages come back exactly."""
    raw = packages_compact.encode(pkgs)
    assert packages_compact.decode(raw) == pkgs
    header, newline, body = raw.decode().partition("\n")
    h = json.loads(header)
    lines = body.split("\n") if newline else []
    fast = packages_compact._decode_columns(body, lines, h["m"], h["t"])
    if fast is not None:
        assert fast == pkgs
        # the columns the server's package matching reads instead of the dicts
        assert fast.columns == ("dpkg", [p["source"] for p in pkgs],
                                [p["source_version"] for p in pkgs])
    safe = all(set(p["name"]) <= set("ab+~.-_1")
               and set(p["version"] + p["source"] + p["source_version"]) <= set("ab+:~.-_1")
               for p in pkgs)
    if safe and pkgs:  # the agent's usual packages do take it
        assert fast is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["{n}", "{v}", "{a}", "{", "}", "x", "{{n}}", "@", "{b}"]),
                max_size=8).map("".join), st.lists(st.tuples(text, text, text), max_size=3))
def test_template_expansion_is_str_format(template: str, rows: list[tuple[str, ...]]) -> None:
    names, versions, arches = ([r[i] for r in rows] for i in range(3))
    fmt = packages_compact._formatter(template)
    assert packages_compact._expand_all(template, names, versions, arches) == [
        fmt(*r) for r in rows]


def test_a_changed_package_list_forgets_its_wire_and_columns() -> None:
    pkgs = debian_packages()[:20]
    attr = VendorAttribute(VendorAttrType.PACKAGES_COMPACT, pkgs, DEFAULT_VENDOR_ID)
    decoded = decode_message(wire([attr])).attributes[0].data
    assert decoded == pkgs and decoded.wire is not None and decoded.columns is not None
    assert decoded.columns[1] == [p["source"] for p in pkgs]
    decoded.append(dict(pkgs[0], source="other"))
    assert decoded.wire is None and decoded.columns is None


def test_column_decoding_takes_the_real_inventory() -> None:
    pkgs = debian_packages()
    raw = packages_compact.encode(pkgs).decode()
    header, _, body = raw.partition("\n")
    h = json.loads(header)
    assert packages_compact._decode_columns(body, body.split("\n"), h["m"], h["t"]) == pkgs


@pytest.mark.parametrize("bad", [
    b'{"v":1,"m":[],"t":[]}',
    b'{"v":2,"m":["dpkg"],"t":[]}\na\t1\tall\t\t\t1\tp',          # manager index
    b'{"v":2,"m":["dpkg"],"t":[]}\na\t1\tall\t\t\t\t#3',          # template index
    b'{"v":2,"m":["dpkg"],"t":[]}\na\t1\tall\t\t\t\t',            # no template 0
    b'{"v":2,"m":["dpkg"],"t":[]}\na\t1\tall\t\t\t\xc2\xb2\tp', # unicode digit
    b'{"v":2,"m":["dpkg"],"t":[]}\na\t1',
    b'{"v":2,"m":["dpkg"],"t":[]}\n=[1',
    b'{"v":2,"m":[1],"t":[]}',
    b'{"v":2,"x":1}\nrow',
    b'{"v":2,"m":[],"t":[]}\n\xff',
    b'[' * 100_000,
])
def test_malformed_compact_value_is_a_pa_tnc_error_not_a_refusal(bad: bytes) -> None:
    value = zlib.compress(bad)
    body = wire([RawAttribute(DEFAULT_VENDOR_ID, VendorAttrType.PACKAGES_COMPACT, value)])
    with pytest.raises(PaTncCodecError) as err:
        decode_message(body)
    assert err.value.code == PaErrorCode.INVALID_PARAMETER and not err.value.refuse


def _bomb(size: int) -> bytes:
    """Valid deflate data of `size` inflated bytes, built without holding them."""
    z = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    out = [z.compress(b"[")]
    for _ in range(size >> 20):
        out.append(z.compress(chunk))
    out.append(z.compress(b"]"))
    out.append(z.flush())
    return b"".join(out)


def test_zip_bomb_is_refused_within_the_inflate_bound() -> None:
    bomb = _bomb(256 << 20)
    assert len(bomb) < 300_000  # 256 MiB of JSON whitespace, a quarter megabyte on the wire
    body = wire([RawAttribute(DEFAULT_VENDOR_ID, VendorAttrType.PACKAGES_COMPACT, bomb)])
    tracemalloc.start()
    try:
        with pytest.raises(PaTncCodecError) as err:
            decode_message(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.refuse and err.value.code == PaErrorCode.INVALID_PARAMETER
    assert peak < 3 * MAX_INFLATED_COMPACT, peak


def _first_batch(protocol: str, body: bytes) -> bytes:
    if protocol == "tnccs11":
        return tnccs11.Tnccs11Batch(1, "TNCS", (tnccs11.ImcImvMessage(1, body),)).encode()
    return pb_tnc.PbBatch(pb_tnc.BatchType.CDATA, (pb_tnc.PbPa(0, 1, 5, 0xFFFF, body),)).encode()


@pytest.mark.parametrize("protocol", ["tnccs11", "pb-tnc"])
def test_imv_refuses_a_zip_bomb_with_pa_tnc_error_and_no_access(protocol: str) -> None:
    calls: list[dict[str, Any]] = []
    imv = ImvSession(lambda doc, _id: calls.append(doc) or ("allow", 0, [], None))
    meta = VendorAttribute(VendorAttrType.DOCUMENT_META, {"schema": 1, "rest": {}})
    bomb = RawAttribute(DEFAULT_VENDOR_ID, VendorAttrType.PACKAGES_COMPACT,
                        _bomb(MAX_INFLATED_COMPACT + (1 << 20)))
    reply, events = imv.receive(_first_batch(protocol, wire([meta, bomb])))
    assert reply is not None and imv.failed and not calls
    assert Evaluated("none", 3, (), None) in events
    if protocol == "tnccs11":
        msgs = tnccs11.decode_batch(reply).messages
        assert tnccs11.TnccsRecommendation("none") in msgs and imv.done
        body = next(m.body for m in msgs if isinstance(m, tnccs11.ImcImvMessage))
    else:
        batch = pb_tnc.decode_batch(reply)
        assert batch.batch_type == pb_tnc.BatchType.SDATA
        body = batch.messages[0].body  # type: ignore[union-attr]
        result, _ = imv.receive(pb_tnc.PbBatch(pb_tnc.BatchType.CDATA).encode())
        rec = [m for m in pb_tnc.decode_batch(result).messages  # type: ignore[arg-type]
               if isinstance(m, pb_tnc.PbAccessRecommendation)]
        assert rec[0].recommendation == pb_tnc.AccessRecommendation.DENIED
    attrs = decode_message(body).attributes
    assert isinstance(attrs[0], PaTncError) and attrs[0].offset is not None
    assert attrs[1] == AssessmentResult(3)


def test_ietf_installed_packages_still_answered_and_accepted() -> None:
    doc = SCHEMA_EXAMPLE
    # another vendor's IMV asks for the IETF attribute only: it gets that, uncompressed
    only_ietf = attributes_for_request(doc, [(IETF_PEN, AttrType.INSTALLED_PACKAGES)])
    assert [type(a) for a in only_ietf] == [InstalledPackages]
    # our IMV asks for everything: the package list goes once, compact
    ours = attributes_for_request(doc, posture_attribute_types())
    kinds = {(a.vendor_id, a.attr_type) for a in ours}
    assert COMPACT in kinds and (IETF_PEN, AttrType.INSTALLED_PACKAGES) not in kinds
    assert attributes_to_posture(ours) == doc
    # and an IMC that speaks only IETF is still read
    got = attributes_to_posture(decode_message(wire(only_ietf)).attributes)
    assert got["packages"] == [{"name": "openssl", "version": "3.0.11-1~deb12u2"}]


# -- digest-only re-inspection through the server's TncMethod -----------------------------

TOKEN = "qc1.claims.signature"


class Judge:
    """The app's judge: relies on the certificate (returns no new one) when told to."""

    def __init__(self, rely: bool) -> None:
        self.rely = rely
        self.docs: list[dict[str, Any]] = []

    def __call__(self, doc: dict[str, Any], outcome: Outcome) -> tuple:
        self.docs.append(doc)
        if doc.get("digest_only"):
            assert posture_digest(doc) == doc["certificate"]["posture_digest"]
            if self.rely:
                return "allow", 0, [], None
        return "allow", 0, [], b"qc1.new.certificate"


def _host() -> dict[str, Any]:
    doc = dict(SCHEMA_EXAMPLE, packages=debian_packages())
    doc["certificate"] = {"token": base64.b64encode(TOKEN.encode()).decode(),
                          "posture_digest": posture_digest(doc)}
    return doc


def _converse(method: TncMethod, imc: ImcSession) -> tuple[Any, int, int]:
    """Run the method against an EapTncPeer; (last step, round trips, peer bytes)."""
    peer = EapTncPeer(imc, max_fragment=1398)  # wpa_supplicant's default fragment_size
    req, rounds, sent = method.start(1), 0, 0
    while True:
        resp = peer.process(req)
        rounds += 1
        sent += len(resp.data)
        step = method.process(1, resp.data)
        if step.kind != "request":
            return step, rounds, sent
        req = step.data


def _method(judge: Judge, digest_first: bool = True) -> TncMethod:
    env = MethodEnv(config=EapConfig(), lookup=lambda _n: None, box=None, identity="demo")
    return TncMethod(env, Outcome("demo", "default", "ttls/eap-mschapv2"), judge,
                     digest_first=digest_first)


def test_certificate_fast_path_carries_no_inventory() -> None:
    host = _host()
    judge = Judge(rely=True)
    method = _method(judge)
    imc = ImcSession(host, certificate_only=True)
    step, rounds, sent = _converse(method, imc)
    assert step.kind == "success" and not imc.sent_inventory
    assert len(judge.docs) == 1 and judge.docs[0]["digest_only"]
    assert judge.docs[0]["certificate"]["token"] == TOKEN  # unwrapped: fewer bytes
    assert method.posture == judge.docs[0]
    assert rounds == 2 and sent < 1398  # one fragment, then the ack of the result


def test_refused_certificate_makes_the_server_ask_for_the_inventory() -> None:
    host = _host()
    judge = Judge(rely=False)
    method = _method(judge)
    imc = ImcSession(host, certificate_only=True)
    step, rounds, sent = _converse(method, imc)
    assert step.kind == "success" and imc.sent_inventory
    assert [bool(d.get("digest_only")) for d in judge.docs] == [True, False]
    assert judge.docs[1]["packages"] == host["packages"] and method.posture == judge.docs[1]
    assert imc.certificate == b"qc1.new.certificate"
    assert imc.certificate_data and imc.certificate_data["digest_first"] is True
    assert rounds <= 3 + sent // 1397  # fragments of the two messages, plus acks
    # ~11 bytes a package, base64 in the IF-TNCCS 1.1 XML: far from the ~55 of the IETF form
    assert sent < 20 * len(host["packages"])


def test_a_peer_that_never_sends_its_inventory_gets_no_posture() -> None:
    host = _host()
    method = _method(Judge(rely=False))

    class Stubborn(ImcSession):
        def _server_attributes(self, attrs: list[Any], events: list[Any]) -> list[Any]:
            super()._server_attributes(attrs, events)
            return []  # asked for the inventory, answers with an empty batch

    step, _, _ = _converse(method, Stubborn(host, certificate_only=True))
    assert step.kind == "failure" and method.posture is None


def test_attribute_request_lists_the_compact_type() -> None:
    imv = ImvSession(lambda d, i: ("allow", 0, [], None))
    reply, _ = imv.receive(_first_batch("tnccs11", wire([AssessmentResult(0)])))
    body = tnccs11.decode_batch(reply).messages[0].body  # type: ignore[union-attr]
    req = decode_message(body).attributes[0]
    assert isinstance(req, AttributeRequest) and COMPACT in req.entries


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12) | st.from_regex(r"[a-z0-9+.~:-]{0,12}", fullmatch=True),
       st.booleans())
def test_fast_quoting_is_quote(value: str, colon: bool) -> None:
    from urllib.parse import quote

    assert packages_compact._q(value, colon) == quote(value, safe=":" if colon else "")


def test_without_digest_first_a_digest_only_document_is_never_relied_on() -> None:
    """Where the server cannot take digest-only documents (it must store whole postures) it
    asks for the inventory without consulting the certificate first, and its certificates
    do not invite agents to lead with the digest."""
    host = _host()
    judge = Judge(rely=True)
    method = _method(judge, digest_first=False)
    imc = ImcSession(host, certificate_only=True)
    step, _, _ = _converse(method, imc)
    assert step.kind == "success" and imc.sent_inventory
    assert [bool(d.get("digest_only")) for d in judge.docs] == [False]
    assert method.posture is not None and method.posture["packages"] == host["packages"]
    assert imc.certificate_data is not None and "digest_first" not in imc.certificate_data


def test_zip_bomb_through_the_server_method_leaves_no_posture() -> None:
    """The EAP method fails, so InnerEap ends the tunnel with unknown posture: quarantine.
    The judge never sees the document."""
    from eap_ext.tnc.eap_tnc import Fragmenter, TncFrame

    judge = Judge(rely=False)
    method = _method(judge)
    meta = VendorAttribute(VendorAttrType.DOCUMENT_META, {"schema": 1, "rest": {}})
    bomb = RawAttribute(DEFAULT_VENDOR_ID, VendorAttrType.PACKAGES_COMPACT,
                        _bomb(64 << 20))
    batch = _first_batch("tnccs11", wire([meta, bomb]))
    assert TncFrame.decode(method.start(1)).start
    frames = Fragmenter(batch, max_fragment=1398)
    step = method.process(1, frames.next_frame())
    while not frames.done:
        assert step.kind == "request"
        step = method.process(1, frames.next_frame())
    assert step.kind == "request"  # the PA-TNC Error and recommendation "none"
    reply = TncFrame.decode(step.data).data
    msgs = tnccs11.decode_batch(reply).messages
    assert tnccs11.TnccsRecommendation("none") in msgs
    step = method.process(1, b"\x01")  # the peer's acknowledgement
    assert step.kind == "failure" and method.posture is None and not judge.docs
