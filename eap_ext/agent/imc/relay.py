"""`nac-agent imc`: the agent side of the IF-IMC shim, one process per TNC handshake.

Reads framing events from the shim, answers each with the PA-TNC messages to send (the
posture on BEGIN, replies to server messages), and records what the server said in the state
file for `nac-agent status`.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .. import state
from . import framing
from .codec import PostureCodec, default_codec

log = logging.getLogger(__name__)

# Which interface this supplicant serves (set it in the supplicant's unit, e.g.
# Environment=NAC_AGENT_INTERFACE=%I); IF-IMC itself does not say.
INTERFACE_ENV = "NAC_AGENT_INTERFACE"
# IF-IMC connection states after the handshake -> the TNCS recommendation they mean.
STATE_RECOMMENDATION = {2: "allow", 3: "isolate", 4: "none"}


class ImcAgent:
    def __init__(self, collect: Callable[[str | None], dict[str, Any]],
                 codec: PostureCodec | None = None, state_file: Path | None = None,
                 interface: str | None = None) -> None:
        self.collect = collect
        self.codec = codec or default_codec()
        self.state_file = state_file
        self.interface = interface if interface is not None else os.environ.get(INTERFACE_ENV)
        self.connection: int | None = None
        self._remediation: list[str] = []

    def _record(self, changes: dict[str, Any]) -> None:
        state.update(changes, self.state_file, interface=self.interface)

    def _certificate(self) -> dict[str, Any]:
        cert = (state.load(self.state_file) or {}).get("certificate")
        return cert if isinstance(cert, dict) else {}

    def handle(self, ftype: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Messages to send in answer to one shim event."""
        if ftype == framing.BEGIN:
            (self.connection,) = struct.unpack("!I", payload[:4])
            self._remediation = []
            cert = self._certificate()
            state.begin_handshake(self.state_file, self.interface)
            token = cert.get("token")
            doc = self.collect(token if isinstance(token, str) else None)
            log.debug("connection %s: sending posture", self.connection)
            # lead with certificate + digest only where the issuing server said it takes that
            return self.codec.posture_messages(doc, digest_first=cert.get("digest_first") is True)
        if ftype == framing.STATE:
            conn, new_state = struct.unpack("!II", payload[:8])
            rec = STATE_RECOMMENDATION.get(new_state)
            if rec is not None:
                self._record({"recommendation": rec, "connection": conn})
            return []
        if ftype == framing.BATCH_ENDING:
            return []
        if ftype < framing.CONTROL_MIN:
            news = self.codec.server_message(ftype, payload)
            changes = news.state_changes()
            if "remediation" in changes:  # several server messages may each carry some
                self._remediation += changes["remediation"]
                changes["remediation"] = list(self._remediation)
            if changes:
                self._record(changes)
            return news.replies
        log.debug("ignoring unknown control frame %#x", ftype)
        return []


def serve(agent: ImcAgent, reader: BinaryIO, writer: BinaryIO) -> None:
    """Answer events until the shim closes the connection."""
    while True:
        frame = framing.read_frame(reader)
        if frame is None:
            return
        try:
            replies = agent.handle(*frame)
        except Exception as exc:  # noqa: BLE001 - an answer (END) must always go back
            log.warning("IMC event %#x failed: %r", frame[0], exc)
            replies = []
        for mtype, msg in replies:
            framing.write_frame(writer, mtype, msg)
        framing.write_frame(writer, framing.END)
        writer.flush()


def run_stdio(agent: ImcAgent) -> None:
    """Serve over stdin/stdout; stdout is moved aside first so no stray print corrupts it."""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with os.fdopen(0, "rb", buffering=0) as reader, os.fdopen(out_fd, "wb") as writer:
        serve(agent, reader, writer)
