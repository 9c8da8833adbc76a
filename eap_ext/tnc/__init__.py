"""TNC posture protocols shared by the server (IMV role) and the host agent (IMC role).

    pa_tnc         PA-TNC (RFC 5792) messages and attributes, our vendor attributes
    pb_tnc         PB-TNC (RFC 5793) batches and messages
    tnccs11        IF-TNCCS 1.1 XML batches (wpa_supplicant/hostapd EAP-TNC)
    eap_tnc        EAP-TNC / PT-EAP framing: fragmenter, reassembler, detect_tnccs()
    posture_attrs  posture document <-> PA-TNC attributes
    session        ImcSession / ImvSession TNCCS state machines (either protocol)
    eap_method     EapTncServer / EapTncPeer: framing + session on EAP Type-Data
    errors         TncCodecError and its per-layer subclasses

Everything here is sans-I/O and imports nothing from nac/ or enforcers/.
"""
