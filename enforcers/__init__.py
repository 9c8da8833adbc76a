"""Policy enforcer (draft 4.4, 6.3): switch drivers, the durable job queue, the Enforcer.

- ``enforcers.base``: ``NetworkDriver`` (open, close, get_port_vlan, set_port_vlan,
  bounce_port, reauthenticate), ``DriverError(retryable=...)``, ``ReauthResult``.
- ``enforcers.inventory``: ``Switch`` / ``Inventory`` pydantic models and port mapping.
- drivers: ``enforcers.coa.CoaDriver`` (RFC 5176), ``enforcers.snmp.SnmpDriver``,
  ``enforcers.ssh.LinuxBridgeDriver`` / ``CiscoIosDriver``.
- ``enforcers.queue.JobQueue``: SQLite queue (table ``enforcement_jobs``).
- ``enforcers.enforcer.Enforcer``: producer API + asyncio worker (CoA first, then
  SNMP/SSH VLAN change and port bounce).

Submodules are imported explicitly; importing this package loads no driver library.
"""
