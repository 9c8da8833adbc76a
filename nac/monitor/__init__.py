"""Quarantine monitor, network type (draft 4.5.2, 6.4.3): IDS alerts in, isolation out.

eve.py parses Suricata EVE alerts, auth.py authenticates monitors (draft 9.4), intake.py
maps an alert to a node and isolates it, server.py runs the HTTPS endpoint and the local
file/socket sources; config.py is the `[monitor]` section of the server config.
"""

from nac.monitor.config import MonitorConfig, MonitorEntry
from nac.monitor.server import MonitorHandle, start_monitor

__all__ = ["MonitorConfig", "MonitorEntry", "MonitorHandle", "start_monitor"]
