"""Records as the rows both store backends write: one definition of each column order."""

from __future__ import annotations

import functools
import json
from typing import Any

import orjson

from nac.events import AccountingRecord, DecisionRecord
from nac.posture.stored import pack


@functools.lru_cache(maxsize=4096)
def json_list(items: tuple[str, ...]) -> str:
    """Most decisions repeat the same reasons: encode each distinct tuple once."""
    return json.dumps(list(items))


def decision_row(d: DecisionRecord) -> tuple[object, ...]:
    """decisions (at, mac, identity, role, nas, nas_port, method, source, segment, vlan,
    reasons, remediation)."""
    return (d.at, d.mac, d.identity, d.role, d.nas, d.nas_port, d.method, d.source,
            d.segment, d.vlan, json_list(d.reasons), json_list(d.remediation))


NODE_DECIDED_AT = 10  # node_row's decided_at: which of two rows for a MAC is the newer
POSTURE_AT = 1  # posture_row's posture_at, likewise


def keep_latest(rows: dict[str, tuple[object, ...]], key: str, row: tuple[object, ...],
                at: int) -> None:
    """Put `row` in one batch's rows under `key` unless the row held there is newer by
    its field `at`: latest by time, not by place in the batch (a shared writer's batch
    joins several servers' batches, each in its own order)."""
    held = rows.get(key)
    if held is None or held[at] <= row[at]:  # type: ignore[operator]
        rows[key] = row


def node_row(d: DecisionRecord) -> tuple[object, ...]:
    """nodes (mac, first_seen, last_seen, segment, vlan, reason, identity, role, last_nas,
    last_port, decided_at) after this decision."""
    return (d.mac, d.at, d.at, d.segment, d.vlan, "; ".join(d.reasons), d.identity, d.role,
            d.nas, d.nas_port, d.at)


def encode_posture(posture: dict[str, Any] | str | None) -> str | None:
    """A whole posture as the JSON text the store keeps; None for none or a digest-only one.

    The package list is kept as the deflated bytes the agent sent when it still has them
    (nac/posture/stored.py: 14 kB instead of ~310 kB for 1,500 packages); readers unpack().
    orjson: the rest encodes in a tenth of json.dumps's time. Already-encoded text passes
    through (the SQLite store encodes before its records cross to the writer process: a str
    pickles for nothing)."""
    if posture is None or isinstance(posture, str):
        return posture
    if posture.get("digest_only") is True:
        return None
    posture = pack(posture)
    try:
        return orjson.dumps(posture).decode()
    except TypeError:  # what orjson refuses (non-str keys, huge ints) json still writes
        return json.dumps(posture)


def posture_row(d: DecisionRecord) -> tuple[object, ...] | None:
    """node_postures (mac, posture_at, posture) when the decision brought a whole posture.

    None for none, and for a digest-only posture (an agent that proved by its quarantine
    certificate that nothing changed): the whole posture already stored stays, with its date
    (posture_at is when that posture arrived: the fleet cache keys on it), because the
    re-evaluation after a feed change needs it."""
    text = encode_posture(d.posture)
    return None if text is None else (d.mac, d.at, text)


def session_row(a: AccountingRecord) -> tuple[object, ...]:
    """sessions (nas, acct_session_id, mac, user_name, nas_port, nas_port_id, framed_ip,
    framed_ipv6_prefix, started_at, updated_at, stopped_at, input_octets, output_octets,
    session_time, terminate_cause); Start dates the session, Stop closes it."""
    started = a.at - (a.session_time or 0) if a.status == 1 else None
    stopped = a.at if a.status == 2 else None
    return (a.nas, a.session_id, a.mac, a.user_name, a.nas_port, a.nas_port_id, a.framed_ip,
            a.framed_ipv6_prefix, started, a.at, stopped, a.input_octets, a.output_octets,
            a.session_time, a.terminate_cause)



def put_node(nodes: dict[str, tuple[object, ...]], postures: dict[str, tuple[object, ...]],
             mac: str, d: DecisionRecord) -> None:
    """Fold decision `d` into one batch's rows (one upsert per MAC and table): the latest
    decision's node row, the latest whole posture (a later decision without one keeps it),
    both by time (keep_latest)."""
    keep_latest(nodes, mac, node_row(d), NODE_DECIDED_AT)
    row = posture_row(d)
    if row is not None:
        keep_latest(postures, mac, row, POSTURE_AT)
