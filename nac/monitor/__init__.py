"""Quarantine monitor, network type (draft 4.5.2, 6.4.3): IDS alerts in, isolation out.

eve.py parses Suricata EVE alerts, auth.py authenticates monitors (draft 9.4), intake.py
maps an alert to a node and isolates it, server.py runs the HTTPS endpoint and the local
file/socket sources (``start_monitor``); config.py is the `[monitor]` section of the server
config. This package file imports nothing, so the config module stays light: nac/config.py
uses MonitorConfig without pulling in the store or the enforcers.
"""
