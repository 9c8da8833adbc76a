"""MS-CHAPv2 arithmetic against the test vectors of RFC 2759 section 9.2 and RFC 3079 3.5.3."""

from __future__ import annotations

from nac.accounts import nt_hash
from nac.eap import mschap

USER = "User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")


def test_rfc2759_vectors() -> None:
    ph = nt_hash(PASSWORD)
    assert ph.hex().upper() == "44EBBA8D5312B8D611474411F56989AE"
    assert mschap.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER).hex().upper() == (
        "D02E4386BCE91226")
    nt = mschap.nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, ph)
    assert nt.hex().upper() == "82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"
    assert mschap.authenticator_response(ph, nt, PEER_CHALLENGE, AUTH_CHALLENGE, USER) == (
        "S=407A5589115FD0D6209F510FE9C04566932CDA56")
    assert mschap.verify_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, ph, nt)
    assert not mschap.verify_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER,
                                         nt_hash("other"), nt)


def test_domain_prefix_is_not_hashed() -> None:
    assert mschap.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, "CORP\\User") == (
        mschap.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER))


def test_rfc3079_master_key() -> None:
    ph = nt_hash(PASSWORD)
    nt = mschap.nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, ph)
    assert mschap.master_key(ph, nt).hex().upper() == "FDECE3717A8C838CB388E527AE3CDD31"


def test_server_keys_mirror_client_keys() -> None:
    # The server's receive key is the client's send key and vice versa (RFC 3079 3.4).
    ph = nt_hash(PASSWORD)
    nt = mschap.nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, ph)
    mk = mschap.master_key(ph, nt)
    recv, send = mschap.server_keys(ph, nt)
    assert recv == mschap.asymmetric_start_key(mk, send=True, server=False)
    assert send == mschap.asymmetric_start_key(mk, send=False, server=False)
    assert recv != send
