"""What EAP-TLS, PEAP and TTLS share: the TLS engine, fragmentation and the flow of flights.

Subclasses decide what to do when the handshake completes, when application data (the tunnel)
arrives, when the peer acknowledges our last flight and when there is nothing to send.
"""

from __future__ import annotations

from nac.eap.methods.base import Method, MethodEnv, Slow, Step, fail, request
from nac.eap.tls_engine import Framer, TlsError, TlsSession


class TlsMethodBase(Method):
    tls_name = "tls"  # which SSL context and key labels
    framer_version = 0

    def __init__(self, env: MethodEnv) -> None:
        super().__init__(env)
        if env.tls is None:
            raise ValueError("TLS methods need a certificate (EapConfig.cert_file/key_file)")
        env.tls.context(self.tls_name)  # ValueError now if this method is not configured
        # Made by the first response: a proposal the peer NAKs (a station's first contact
        # with another method in mind) costs no SSL object.
        self.tls: TlsSession = None  # type: ignore[assignment]
        self.framer = Framer(env.config.fragment_size, self.framer_version)
        self.msk: bytes | None = None
        self.resume_key: bytes | None = None  # the session the peer resumed, if it did
        self.issue_key: bytes | None = None  # the session this handshake leaves behind
        self.final: Step | None = None  # success waiting for the ACK of our last flight

    def start(self, ident: int) -> bytes:
        return self.framer.start()

    def process(self, ident: int, data: bytes) -> Step:
        if self.tls is None:
            assert self.env.tls is not None
            self.tls = TlsSession(self.env.tls, self.tls_name)
        message = self.framer.one_piece(data)
        if message is not None:  # the common round: no Frame to make
            try:
                step = self._message(message)
            except TlsError as exc:
                return fail(str(exc))
            return self._remember(step) if step.kind == "success" else step
        frame = self.framer.receive(data)
        if frame.kind == "error":
            return fail(frame.reason)
        if frame.kind == "partial":
            return request(self.framer.ack())
        if frame.kind == "ack":
            if self.framer.sending:
                return request(self.framer.next_fragment())
            if self.final is not None:
                return self._remember(self.final)
            return self._remember(self.on_flight_acked())
        try:
            step = self._message(frame.data)
        except TlsError as exc:
            return fail(str(exc))
        return self._remember(step)

    def _resumable(self, slow: Slow, handshake_out: bytes, app_out: bytes) -> Step:
        """The round stopped at slow work (a password hash): finish it once that is done."""
        def resume(result: object) -> Step:
            try:
                return self._remember(self._after_app(slow.resume(result), handshake_out,
                                                      app_out))
            except TlsError as exc:
                return fail(str(exc))

        return Step("slow", slow=Slow(slow.work, resume))

    def _remember(self, step: Step) -> Step:
        if step.kind == "success" and step.outcome and self.issue_key and self.env.tls:
            self.env.tls.resumption.put(self.issue_key, step.outcome.identity,
                                        step.outcome.method, self.env.now())
        return step

    def resumed_identity(self) -> tuple[str, str] | None:
        """(identity, method) that authenticated in the session the peer resumed."""
        if self.resume_key is None or self.env.tls is None:
            return None
        return self.env.tls.resumption.get(self.resume_key, self.env.now())

    def _message(self, data: bytes) -> Step:
        tls = self.tls
        handshaking = not tls.established
        done_now = tls.feed(data)
        if handshaking and self.resume_key is None and tls.resumed:
            # Read before this handshake issues new tickets, which replace the secret.
            self.resume_key = tls.session_key()
        # Once established, feed() only buffers the peer's bytes: nothing can be out yet.
        handshake_out = tls.outgoing() if handshaking else b""
        app_out = b""
        if done_now:
            if self.env.config.tls_resumption:  # only a resumable session needs its name
                self.issue_key = tls.session_key()
            self.msk = tls.key_material()[:64]
            result = self.on_established(bool(handshake_out))
            if isinstance(result, Step):
                return self._final(result, handshake_out)
            app_out = result or b""
        result: Step | bytes | Slow | None = None
        if self.tls.established:
            plain = self.tls.read_app()
            if plain:
                result = self.on_app(plain)
                if isinstance(result, Slow):
                    return self._resumable(result, handshake_out, app_out)
        return self._after_app(result, handshake_out, app_out)

    def _after_app(self, result: Step | bytes | None, handshake_out: bytes,
                   app_out: bytes) -> Step:
        if isinstance(result, Step):
            return self._final(result, handshake_out)
        app_out += result or b""
        if app_out:
            self.tls.write_app(app_out)
        out = handshake_out + self.tls.outgoing()
        if out:
            return self.send(out)
        return self.on_idle()

    def _final(self, step: Step, handshake_out: bytes) -> Step:
        """Success must not strand handshake bytes (TLS 1.3 session tickets): deliver them
        first and succeed on the peer's ACK."""
        if step.kind == "success" and handshake_out:
            self.final = step
            return self.send(handshake_out)
        return step

    def send(self, tls_bytes: bytes) -> Step:
        self.framer.queue(tls_bytes)
        return request(self.framer.next_fragment())

    def send_app(self, plain: bytes) -> Step:
        try:
            self.tls.write_app(plain)
        except TlsError as exc:
            return fail(str(exc))
        return self.send(self.tls.outgoing())

    @property
    def awaiting_posture(self) -> bool:
        inner = getattr(self, "inner", None)
        return bool(inner is not None and inner.awaiting_posture)

    # Hooks -------------------------------------------------------------------------------
    def on_established(self, flight_pending: bool) -> Step | bytes | None:
        """Handshake done (keys exported into self.msk). Return app data to send, a final
        Step, or None."""
        return None

    def on_app(self, plain: bytes) -> Step | bytes | Slow | None:
        """Application data from the tunnel: a Step, data to send back, a Slow (work for a
        thread, resuming to one of the others), or None."""
        return fail(f"{self.name}: unexpected application data")

    def on_flight_acked(self) -> Step:
        return fail(f"{self.name}: unexpected acknowledgement")

    def on_idle(self) -> Step:
        return fail(f"{self.name}: TLS handshake stalled")
