"""The IF-IMC plug-in: a C shim (nac_imc.c) loaded by wpa_supplicant, relaying to `nac-agent imc`.

See nac_imc.c for why the native part is only a relay, and framing.py for the wire format
between the two.
"""
