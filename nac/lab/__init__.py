"""The end-to-end lab behind `nac lab`: a namespace switch, 802.1X hosts and `nac serve`.

See README.md in this directory.
"""
