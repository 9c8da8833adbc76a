"""The engine's Access-Request fast path (handle_auth): which requests are MAB, which go on
to PAP or a reject, and what each records, in-process with signed packets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from fuzz import lab  # noqa: E402

from nac.authorize import Authorizer  # noqa: E402
from nac.events import DecisionRecord  # noqa: E402
from nac.radius import codec as c  # noqa: E402
from nac.radius.clients import ClientTable, NasClient, profile  # noqa: E402
from nac.radius.engine import Deferred, Engine  # noqa: E402


@pytest.fixture
def made() -> tuple[Engine, list[DecisionRecord]]:
    records: list[DecisionRecord] = []
    clients = ClientTable([NasClient(network=lab.NAS_ADDR, secret=lab.SECRET, name="sw1",
                                     profile=profile("generic"), group=None,
                                     require_message_authenticator=True)])
    eng = Engine(clients, Authorizer(lab.sample_policy(), lab.evaluator()), lab.accounts()[0],
                 on_decision=records.append)
    return eng, records


def _request(ident: int, *attrs: tuple[int, bytes]) -> bytes:
    return c.encode_request(c.ACCESS_REQUEST, ident, lab.SECRET,
                            b"".join(c.encode_attr(t, v) for t, v in attrs))


def _answer(eng: Engine, data: bytes, port: int = 50000) -> c.Packet | None:
    out: Any = eng.handle_auth(data, lab.NAS_ADDR, port, lab.NOW)
    if isinstance(out, Deferred):
        out = out.finish(out.work(), lab.NOW)
    return None if out is None else c.decode(out)


CALL_CHECK = c.SERVICE_TYPE_CALL_CHECK.to_bytes(4, "big")


@pytest.mark.parametrize("attrs", [
    # the same octets in User-Name and Calling-Station-Id, no Service-Type
    ((c.USER_NAME, b"02-00-00-00-00-2A"), (c.CALLING_STATION_ID, b"02-00-00-00-00-2A")),
    # another notation of the same MAC
    ((c.USER_NAME, b"02000000002a"),
     (c.CALLING_STATION_ID, b"02:00:00:00:00:2a")),
    # Call-Check, whatever the User-Name
    ((c.USER_NAME, b"switch-mab"), (c.CALLING_STATION_ID, b"0200.0000.002a"),
     (c.SERVICE_TYPE, CALL_CHECK)),
])
def test_mab_requests_accepted_into_quarantine_and_recorded(
        made: tuple[Engine, list[DecisionRecord]], attrs: tuple[tuple[int, bytes], ...]) -> None:
    eng, records = made
    reply = _answer(eng, _request(3, *attrs, (c.NAS_PORT, (7).to_bytes(4, "big"))))
    assert reply is not None and reply.code == c.ACCESS_ACCEPT
    assert reply.attrs[0][0] == c.MESSAGE_AUTHENTICATOR
    assert reply.get(c.TUNNEL_PRIVATE_GROUP_ID) == b"\x0110"
    assert [(r.mac, r.method, r.segment, r.nas_port_number) for r in records] == [
        ("02:00:00:00:00:2a", "mab", "quarantine", 7)]
    assert eng.counters["access_accept"] == 1 and eng.counters["decision_quarantine"] == 1


def test_not_a_mac_user_is_not_mab(made: tuple[Engine, list[DecisionRecord]]) -> None:
    """A Calling-Station-Id alone makes no MAB: a User-Name that is not that MAC, without
    Call-Check and without a password, is rejected and records nothing."""
    eng, records = made
    reply = _answer(eng, _request(4, (c.USER_NAME, b"alice"),
                                  (c.CALLING_STATION_ID, b"02-00-00-00-00-2b")))
    assert reply is not None and reply.code == c.ACCESS_REJECT
    assert records == []
    assert eng.counters["reject_unsupported"] == 1


def test_pap_with_calling_station_records_the_mac(
        made: tuple[Engine, list[DecisionRecord]]) -> None:
    eng, records = made
    auth = bytes(range(16))
    hidden = c.hide_password(lab.PASSWORD.encode(), lab.SECRET, auth)
    data = c.encode_request(c.ACCESS_REQUEST, 5, lab.SECRET, b"".join(
        c.encode_attr(t, v) for t, v in ((c.USER_NAME, lab.USER.encode()),
                                         (c.USER_PASSWORD, hidden),
                                         (c.CALLING_STATION_ID, b"02-00-00-00-00-2C"))),
        authenticator=auth)
    reply = _answer(eng, data)
    assert reply is not None and reply.code == c.ACCESS_ACCEPT
    assert [(r.mac, r.method, r.identity) for r in records] == [
        ("02:00:00:00:00:2c", "pap", lab.USER)]


def test_retransmission_answered_from_the_cache_once(
        made: tuple[Engine, list[DecisionRecord]]) -> None:
    eng, records = made
    data = _request(6, (c.USER_NAME, b"02-00-00-00-00-2d"),
                    (c.CALLING_STATION_ID, b"02-00-00-00-00-2d"))
    first = eng.handle_auth(data, lab.NAS_ADDR, 50000, lab.NOW)
    again = eng.handle_auth(data, lab.NAS_ADDR, 50000, lab.NOW + 1)
    other_port = eng.handle_auth(data, lab.NAS_ADDR, 50001, lab.NOW + 1)
    assert isinstance(first, bytes) and again == first
    assert isinstance(other_port, bytes)  # another source port: a request of its own
    assert len(records) == 2 and eng.counters["duplicates"] == 1
    # after the window it is a new request again
    assert eng.handle_auth(data, lab.NAS_ADDR, 50000, lab.NOW + 6) is not None
    assert len(records) == 3


def test_bad_message_authenticator_dropped_unrecorded(
        made: tuple[Engine, list[DecisionRecord]]) -> None:
    eng, records = made
    data = bytearray(_request(7, (c.USER_NAME, b"02-00-00-00-00-2e"),
                              (c.CALLING_STATION_ID, b"02-00-00-00-00-2e")))
    data[-1] ^= 1  # the last octet of Calling-Station-Id: signed, so the MA fails
    assert eng.handle_auth(bytes(data), lab.NAS_ADDR, 50000, lab.NOW) is None
    assert records == [] and eng.counters["drop_bad_message_authenticator"] == 1
