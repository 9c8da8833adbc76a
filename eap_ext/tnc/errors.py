"""Codec exceptions shared by the TNC protocol layers.

Every decoder in eap_ext.tnc raises a subclass of TncCodecError on bad input, so callers
that only care about "the peer sent garbage" catch one type.
"""

from __future__ import annotations


class TncCodecError(ValueError):
    """Malformed or unsupported input in any TNC layer."""


class PaTncCodecError(TncCodecError):
    """PA-TNC (RFC 5792) decode failure, carrying the PA-TNC error code to report back.

    `offset` is relative to the start of the PA-TNC message; `header` is its first 8 bytes
    (the PA-TNC Error attribute echoes them); `attr_info` is the 8-byte flags/vendor/type
    of an unsupported NOSKIP attribute.
    """

    def __init__(self, code: int, offset: int = 0, detail: str = "", *,
                 header: bytes = b"", attr_info: bytes = b"", refuse: bool = False) -> None:
        super().__init__(detail or f"PA-TNC error code {code} at offset {offset}")
        self.code = code
        self.offset = offset
        self.header = header
        self.attr_info = attr_info
        # the peer sent something no retry will fix (a deflate bomb): answer with the
        # error and end the handshake instead of asking again
        self.refuse = refuse


class PbTncCodecError(TncCodecError):
    """PB-TNC (RFC 5793) decode failure carrying the PB-Error code (and offset) to send."""

    def __init__(self, code: int, offset: int = 0, detail: str = "", *,
                 fatal: bool = True, bad_version: int | None = None) -> None:
        super().__init__(detail or f"PB-TNC error code {code} at offset {offset}")
        self.code = code
        self.offset = offset
        self.fatal = fatal
        self.bad_version = bad_version


class Tnccs11CodecError(TncCodecError):
    """IF-TNCCS 1.1 decode failure; `error_type` is a TNCCS-Error type name."""

    def __init__(self, detail: str, error_type: str = "malformed-batch") -> None:
        super().__init__(detail)
        self.error_type = error_type


class EapTncFramingError(TncCodecError):
    """Bad EAP-TNC / PT-EAP framing: flags, lengths or reassembly bounds."""
