"""IF-TNCCS 1.1 codec: round trips, hostapd's spelling, hostile XML rejected quickly."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.tnc.errors import TncCodecError, Tnccs11CodecError
from eap_ext.tnc.tnccs11 import (
    ERROR_TYPES,
    RECOMMENDATIONS,
    ImcImvMessage,
    Tnccs11Batch,
    TnccsError,
    TnccsOther,
    TnccsPreferredLanguage,
    TnccsReasonStrings,
    TnccsRecommendation,
    decode_batch,
    pa_message_type,
)

# XML 1.0 can carry these; control characters are refused by the encoder (tested below).
xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                 blacklist_characters="\ufffe\uffff") | st.sampled_from(
    ["\n", "\t", "\r"]), max_size=30)
lang = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                             blacklist_characters="\ufffe\uffff"), max_size=8)

messages = st.one_of(
    st.builds(ImcImvMessage, st.integers(0, 0xFFFFFFFF), st.binary(max_size=60)),
    st.builds(TnccsRecommendation, st.sampled_from(RECOMMENDATIONS)),
    st.builds(TnccsError, st.sampled_from(ERROR_TYPES), xml_text),
    st.builds(TnccsPreferredLanguage, lang),
    st.builds(TnccsReasonStrings, st.lists(st.tuples(lang, xml_text), max_size=3).map(tuple)),
    st.builds(TnccsOther, st.integers(5, 0xFFFFFFFF), st.binary(max_size=20)),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["TNCS", "TNCC"]),
       st.lists(messages, max_size=6))
def test_round_trip(batch_id: int, recipient: str, msgs: list) -> None:
    batch = Tnccs11Batch(batch_id, recipient, tuple(msgs))
    assert decode_batch(batch.encode()) == batch


def test_spelling_matches_what_wpa_supplicant_scans_for() -> None:
    wire = Tnccs11Batch(2, "TNCC", (ImcImvMessage(pa_message_type(0, 1), b"\1\2"),
                                    TnccsRecommendation("isolate"))).encode().decode()
    # tncc.c finds these with strstr(): the element name followed by a space, BatchId=,
    # the 8-digit upper-case hex Type, and `type=` inside TNCCS-Recommendation.
    # No XML declaration, schema location or newlines: bytes only, in ~1 kB EAP pieces.
    assert wire.startswith('<TNCCS-Batch BatchId="2" ')
    assert "<IMC-IMV-Message><Type>00000001</Type><Base64>AQI=</Base64></IMC-IMV-Message>" in wire
    # tncc.c reads the recommendation from ` type=` up to the closing quote
    assert re.search(r'<TNCCS-Recommendation type="isolate"/>', wire)
    assert wire.endswith("</TNCCS-Batch>") and "\n" not in wire and "xsi" not in wire


def test_decodes_a_batch_as_hostapd_writes_it() -> None:
    # hostapd's tncs labels its own batches Recipient="TNCS" and wraps Base64 at 72 columns.
    b64 = "QUFB" * 30
    wrapped = "\n".join(b64[i:i + 72] for i in range(0, len(b64), 72))
    wire = ('<?xml version="1.0"?>\n<TNCCS-Batch BatchId="2" Recipient="TNCS" '
            'xmlns="http://www.trustedcomputinggroup.org/IWG/TNC/1_0/IF_TNCCS#">\n'
            f"<IMC-IMV-Message><Type>00000001</Type><Base64>{wrapped}</Base64>"
            "</IMC-IMV-Message><TNCC-TNCS-Message><Type>00000001</Type><XML>"
            '<TNCCS-Recommendation type="allow"></TNCCS-Recommendation></XML>'
            "</TNCC-TNCS-Message>\n</TNCCS-Batch>").encode()
    batch = decode_batch(wire)
    assert batch.batch_id == 2 and batch.recipient == "TNCS"
    assert batch.messages == (ImcImvMessage(1, b"AAA" * 30), TnccsRecommendation("allow"))


def test_encoder_refuses_unencodable_text() -> None:
    with pytest.raises(ValueError):
        Tnccs11Batch(1, "TNCS", (TnccsError("other", "bell\x07"),)).encode()
    with pytest.raises(ValueError):
        Tnccs11Batch(1, "nobody").encode()


BOMB = (b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(b'<!ENTITY a%d "' % i + (b"&a%d;" % (i - 1) if i else b"&a;") * 10 + b'">'
                   for i in range(1, 10))
        + b']><TNCCS-Batch BatchId="1" Recipient="TNCS">&a9;</TNCCS-Batch>')


@pytest.mark.parametrize("data,kind", [
    (BOMB, "malformed-batch"),
    (b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><TNCCS-Batch BatchId="1" Recipient="TNCS"/>',
     "malformed-batch"),
    (b'<TNCCS-Batch BatchId="1" Recipient="TNCS">&ext;</TNCCS-Batch>', "malformed-batch"),
    (b"<TNCCS-Batch BatchId=\"1\" Recipient=\"TNCS\">", "malformed-batch"),
    (b"<" + b"<a>" * 5, "malformed-batch"),
    (b'<TNCCS-Batch BatchId="x" Recipient="TNCS"/>', "invalid-batch-id"),
    (b'<TNCCS-Batch BatchId="99999999999" Recipient="TNCS"/>', "invalid-batch-id"),
    (b'<TNCCS-Batch BatchId="1" Recipient="Bob"/>', "invalid-recipient-type"),
    (b'<TNCCS-Batch BatchId="1" Recipient="TNCS"><Foo/></TNCCS-Batch>', "malformed-batch"),
    (b'<TNCCS-Batch BatchId="1" Recipient="TNCS"><IMC-IMV-Message><Type>zz</Type>'
     b"<Base64>AA==</Base64></IMC-IMV-Message></TNCCS-Batch>", "malformed-batch"),
    (b'<TNCCS-Batch BatchId="1" Recipient="TNCS"><IMC-IMV-Message><Type>1</Type>'
     b"<Base64>A!==</Base64></IMC-IMV-Message></TNCCS-Batch>", "malformed-batch"),
    (b'<TNCCS-Batch BatchId="1" Recipient="TNCS"><TNCC-TNCS-Message><Type>1</Type><XML>'
     b'<TNCCS-Recommendation type="maybe"/></XML></TNCC-TNCS-Message></TNCCS-Batch>',
     "malformed-batch"),
    (b'<TNCCS-Batch BatchId="1" Recipient="TNCS">' + b"<a>" * 50 + b"</a>" * 50
     + b"</TNCCS-Batch>", "malformed-batch"),
    (b"\xff\xfe<\x00", "malformed-batch"),
    (b"", "malformed-batch"),
])
def test_hostile_or_broken_xml(data: bytes, kind: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(Tnccs11CodecError) as ei:
        decode_batch(data)
    assert ei.value.error_type == kind
    assert time.monotonic() - t0 < 1


def test_size_bound_and_element_bound() -> None:
    big = b'<TNCCS-Batch BatchId="1" Recipient="TNCS">' + b" " * 2000 + b"</TNCCS-Batch>"
    with pytest.raises(Tnccs11CodecError) as ei:
        decode_batch(big, max_size=1000)
    assert ei.value.error_type == "batch-too-long"
    many = (b'<TNCCS-Batch BatchId="1" Recipient="TNCS">'
            + b"<TNCC-TNCS-Message/>" * 30000 + b"</TNCCS-Batch>")
    t0 = time.monotonic()
    with pytest.raises(Tnccs11CodecError):
        decode_batch(many)
    assert time.monotonic() - t0 < 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_only_codec_errors(data: bytes) -> None:
    try:
        decode_batch(b'<TNCCS-Batch BatchId="1" Recipient="TNCS">' + data + b"</TNCCS-Batch>")
    except TncCodecError:
        pass
