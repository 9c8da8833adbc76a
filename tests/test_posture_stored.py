"""Whole postures as the store keeps them (nac/posture/stored.py): the package list as the
deflated compact bytes the agent sent, restored exactly."""

from __future__ import annotations

import base64
import zlib
from typing import Any

import orjson
import pytest

from eap_ext.tnc.pa_tnc import PaTncMessage, decode_message
from eap_ext.tnc.packages_compact import PackageList
from eap_ext.tnc.posture_attrs import attributes_to_posture, posture_to_attributes
from nac.posture.digest import posture_digest
from nac.posture.stored import PACKED, StoredPostureError, pack, unpack
from nac.reevaluate import _stored_posture

try:
    from tests.test_tnc_packages_compact import debian_packages
    from tests.test_tnc_posture_attrs import SCHEMA_EXAMPLE
except ImportError:  # tests/ collected as plain directories
    from test_tnc_packages_compact import debian_packages  # type: ignore[no-redef]
    from test_tnc_posture_attrs import SCHEMA_EXAMPLE  # type: ignore[no-redef]


def reported() -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the agent collected, what the server decoded from its PA-TNC message)."""
    doc = dict(SCHEMA_EXAMPLE, packages=debian_packages())
    doc.pop("certificate", None)
    wire = PaTncMessage(1, tuple(posture_to_attributes(doc))).encode()
    return doc, attributes_to_posture(decode_message(wire).attributes)


def stored_text(posture: dict[str, Any]) -> str:
    return orjson.dumps(pack(posture)).decode()


def test_a_reported_posture_is_stored_as_the_bytes_it_came_in() -> None:
    doc, posture = reported()
    assert isinstance(posture["packages"], PackageList) and posture["packages"].wire
    text = stored_text(posture)
    plain = orjson.dumps(posture)
    assert len(text) < len(plain) / 10  # ~742 packages: ~10 kB instead of ~150 kB
    assert "packages" not in orjson.loads(text) and PACKED in orjson.loads(text)
    back = unpack(orjson.loads(text))
    assert back == posture and back["packages"] == doc["packages"]
    assert posture_digest(back) == posture_digest(doc)
    assert isinstance(back["packages"], PackageList)  # and it packs again as it came
    assert stored_text(back) == text


def test_lists_without_their_bytes_stay_json() -> None:
    doc, posture = reported()
    assert pack(doc) is doc  # built in code (or an IETF peer's): no compact bytes
    posture["packages"].append(dict(posture["packages"][0], version="9"))
    assert posture["packages"].wire is None  # changed: the bytes no longer say it
    assert pack(posture) is posture
    for change in (lambda p: p.__setitem__(0, {}), lambda p: p.pop(), lambda p: p.sort(
            key=str), lambda p: p.extend([]), lambda p: p.__delitem__(0)):
        _, fresh = reported()
        change(fresh["packages"])
        assert pack(fresh) is fresh


def test_other_stored_values_are_left_alone() -> None:
    doc, _ = reported()
    for value in (doc, {"schema": 1}, [], "x", None, {PACKED: 5}):
        assert unpack(value) is value
    # a host that reports a key of that name is stored plain, and read back as it was
    _, posture = reported()
    posture[PACKED] = "host's own"
    assert pack(posture) is posture
    assert unpack(orjson.loads(orjson.dumps(posture)))[PACKED] == "host's own"


@pytest.mark.parametrize("payload", [
    "not base64!",
    base64.b64encode(b"not deflate").decode(),
    base64.b64encode(zlib.compress(b"\x00" * (5 << 20))).decode(),  # inflates past the bound
    base64.b64encode(zlib.compress(b'{"v":1}')).decode(),  # not our format
])
def test_unreadable_packed_rows_raise(payload: str) -> None:
    with pytest.raises(StoredPostureError):
        unpack({"schema": 1, PACKED: payload})


class OneRow:
    def __init__(self, text: str | None) -> None:
        self.text = text

    def posture_of(self, mac: str) -> tuple[str, float] | None:
        return None if self.text is None else (self.text, 1000.0)


def test_reevaluation_reads_packed_and_plain_rows() -> None:
    doc, posture = reported()
    for text in (stored_text(posture), orjson.dumps(doc).decode()):
        got, at = _stored_posture(OneRow(text), "aa:bb:cc:dd:ee:ff")  # type: ignore[arg-type]
        assert got is not None and got["packages"] == doc["packages"] and at == 1000.0
    broken = orjson.dumps({"schema": 1, PACKED: "!!"}).decode()
    assert _stored_posture(OneRow(broken), "m")[0] is None  # type: ignore[arg-type]
    assert _stored_posture(OneRow(None), "m") == (None, None)  # type: ignore[arg-type]
