"""The EVE JSON parser: real-shaped Suricata records, strictness, bounds, and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nac.monitor.eve import MAX_LINE, Alert, EveError, LineSplitter, parse_body, parse_line

DATA = Path(__file__).parent / "data" / "eve"


def base() -> dict[str, object]:
    return json.loads((DATA / "alert.json").read_text())


def test_alert_record_fields() -> None:
    a = parse_line((DATA / "alert.json").read_bytes().strip())
    assert isinstance(a, Alert)
    assert (a.src_ip, a.src_port, a.dest_ip, a.dest_port, a.proto) == (
        "10.99.0.5", 49822, "198.51.100.23", 443, "TCP")
    assert (a.signature_id, a.severity, a.action, a.gid, a.rev) == (2999101, 1, "allowed", 1, 3)
    assert a.signature.startswith("LOCAL MALWARE Beacon")
    assert a.category == "A Network Trojan was detected"
    assert a.flow_id == 1187265347229813 and a.in_iface == "eth1"
    assert a.at == pytest.approx(1795814045.482113)


def test_mixed_stream_ignores_other_event_types() -> None:
    out = parse_body((DATA / "mixed.json").read_bytes())
    kinds = [None if a is None else a.signature_id for a in out]
    assert kinds == [None, 2999101, 2999102, 2999230, None, None]


def test_ipv6_is_canonicalised_and_icmp_has_no_ports() -> None:
    (a,) = parse_body((DATA / "icmp_ipv6.json").read_bytes())
    assert a is not None and a.src_ip == "2001:db8:99::5" and a.src_port is None
    assert a.action == "blocked"


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda d: d["alert"].__setitem__("signature_id", "2999101"), "signature_id must be an int"),
    (lambda d: d["alert"].__setitem__("severity", True), "severity must be an integer"),
    (lambda d: d["alert"].__setitem__("severity", 0), "severity 0 is outside"),
    (lambda d: d["alert"].pop("signature"), "alert.signature is missing"),
    (lambda d: d.__setitem__("src_ip", "10.99.0.256"), "not an IP address"),
    (lambda d: d.pop("dest_ip"), "dest_ip is missing"),
    (lambda d: d.__setitem__("src_port", 70000), "src_port 70000 is outside"),
    (lambda d: d.__setitem__("alert", []), "alert must be an object"),
    (lambda d: d.__setitem__("timestamp", "yesterday"), "not ISO 8601"),
    (lambda d: d.__setitem__("timestamp", "2026-11-27T21:14:05"), "no UTC offset"),
    (lambda d: d.__setitem__("proto", None), "proto must be"),
    (lambda d: d.__setitem__("event_type", 7), "event_type must be a string"),
])
def test_type_errors_name_the_field(mutate: object, reason: str) -> None:
    d = base()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(EveError, match=reason):
        parse_line(json.dumps(d))


@pytest.mark.parametrize(("line", "reason"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"event_type": "alert", "event_type": "dns"}', "duplicate key"),
    (b'{"event_type": "flow", "x": NaN}', "NaN is not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 40 + b"]" * 40, "nested deeper than 32"),
])
def test_malformed_lines(line: bytes, reason: str) -> None:
    with pytest.raises(EveError, match=reason):
        parse_line(line)


def test_brackets_inside_strings_are_not_nesting() -> None:
    d = base()
    d["alert"]["signature"] = "[" * 200 + '\\"{' * 50  # type: ignore[index]
    a = parse_line(json.dumps(d))
    assert a is not None and a.signature.startswith("[[[")


def test_line_cap() -> None:
    d = base()
    d["pad"] = "x" * MAX_LINE
    with pytest.raises(EveError, match="longer than"):
        parse_line(json.dumps(d))


def test_body_error_names_the_line() -> None:
    body = (DATA / "alert.json").read_bytes() + b"\n\n" + (DATA / "malformed.json").read_bytes()
    with pytest.raises(EveError, match=r"^line 4: alert.signature_id"):
        parse_body(body)


def test_splitter_joins_partial_writes_and_drops_long_lines() -> None:
    sp = LineSplitter(max_line=10)
    assert sp.feed(b"abc") == []
    assert sp.feed(b"de\r\nfg") == [b"abcde"]
    assert sp.feed(b"h\n" + b"y" * 30) == [b"fgh"]
    assert sp.feed(b"yyy\nok\n") == [b"ok"]
    assert sp.dropped == 1
    assert sp.feed(b"0123456789ABC\nz\n") == [b"z"]
    assert sp.dropped == 2


def test_unterminated_escapes_scan_fast() -> None:
    # A line of escaped quotes used to be a quadratic case for regex-based scanners.
    with pytest.raises(EveError):
        parse_line('"' + '\\"' * 30000)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=3),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes_only_raise_eve_error(data: bytes) -> None:
    try:
        parse_line(data)
        parse_body(data)
    except EveError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["event_type", "timestamp", "src_ip", "dest_ip", "proto", "src_port",
                     "dest_port", "flow_id", "in_iface", "alert"]),
    json_values | st.sampled_from(["alert", "10.0.0.1", "::1", "TCP"]), max_size=10),
    st.dictionaries(st.sampled_from(["signature_id", "signature", "severity", "category",
                                     "action", "gid", "rev"]), json_values, max_size=7))
def test_fuzz_near_alerts_only_raise_eve_error(top: dict[str, object],
                                               alert: dict[str, object]) -> None:
    text = json.dumps({**top, "event_type": "alert", "alert": alert})
    try:
        parse_line(text)
    except EveError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["timestamp", "src_ip", "dest_ip", "proto", "src_port",
                                        "flow_id", "in_iface"]),
                       json_values, max_size=7))
def test_fuzz_fields_of_a_real_alert(over: dict[str, object]) -> None:
    d = {**base(), **over}
    try:
        text = json.dumps(d)
    except ValueError:
        return
    try:
        parse_line(text)
    except EveError:
        pass
