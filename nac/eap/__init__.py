"""The EAP server (RFC 3748), sans-I/O: the RADIUS layer hands it each EAP-Message.

- service.py: EapService.handle(state, eap, nas, now) -> EapResult; conversations keyed by the
  RADIUS State it mints, identifiers, NAK negotiation by policy (global, realm, NAS group,
  account), bounds (idle timeout, conversation count, bytes), the posture hook.
- methods/: one module per method behind methods/base.Method: md5, mschapv2, tls, peap, ttls
  (tnc: the posture method, run inside PEAP/TTLS after authentication).
- tls_engine.py: the one TLS engine (pyOpenSSL over memory BIOs, contexts built once), EAP-TLS
  fragmentation, key export per method and TLS version, the TTLS resumption cache.
- inner.py: the EAP server inside tunnels; avp.py: TTLS AVPs; mschap.py: RFC 2759/3079.
"""
