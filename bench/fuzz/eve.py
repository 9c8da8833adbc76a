"""Suricata EVE alert intake (nac/monitor/eve.py): parse_line/parse_body raise only EveError,
and LineSplitter yields exactly the complete lines under its cap."""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.core import ROOT, Finding, Harness, Target, register
from nac.monitor import eve

EVE_DATA = ROOT / "tests" / "data" / "eve"
CAP = 512  # a small line cap so inputs reach the over-long-line paths


def _target() -> Target:
    def one(data: bytes) -> str | None:
        label = "none"
        try:
            alert = eve.parse_line(data, max_line=4096, max_depth=8)
            label = "alert" if alert is not None else "other"
            if alert is not None and not (1 <= alert.severity <= 255 and alert.src_ip):
                raise Finding(f"implausible alert accepted: {alert}")
        except eve.EveError as exc:
            label = "error:" + str(exc)[:20]
        try:
            eve.parse_body(data, max_line=4096, max_depth=8, max_lines=64)
        except eve.EveError:
            pass
        # The splitter, fed in two pieces, against a model of what it should yield.
        cut = len(data) // 3
        sp = eve.LineSplitter(CAP)
        got = sp.feed(data[:cut]) + sp.feed(data[cut:])
        want = []
        for line in data.split(b"\n")[:-1]:
            if len(line) <= CAP and line.rstrip(b"\r").strip():
                want.append(line.rstrip(b"\r"))
        if got != want:
            raise Finding(f"LineSplitter yielded {len(got)} lines, the model {len(want)}")
        return label
    return one


def _seeds() -> Iterator[bytes]:
    for p in sorted(EVE_DATA.iterdir()):
        text = p.read_bytes()
        yield text[:4096]
        yield from text.splitlines()[:3]


register(Harness("eve", "Suricata EVE alert parser: only EveError; LineSplitter matches a "
                 "model", _target, _seeds, max_len=8192))
