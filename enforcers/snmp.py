"""SNMP driver (pysnmp 7, asyncio): VLAN by Q-BRIDGE-MIB or CISCO-VLAN-MEMBERSHIP-MIB,
bounce by IF-MIB ifAdminStatus; SNMPv2c or SNMPv3 (USM, authPriv SHA/AES).

MIB objects (numeric, so no MIB files are needed at run time):
- Q-BRIDGE-MIB dot1qPvid.<dot1dBasePort>            1.3.6.1.2.1.17.7.1.4.5.1.1
- Q-BRIDGE-MIB dot1qVlanStaticEgressPorts.<vid>     1.3.6.1.2.1.17.7.1.4.3.1.2
- Q-BRIDGE-MIB dot1qVlanStaticUntaggedPorts.<vid>   1.3.6.1.2.1.17.7.1.4.3.1.4
- CISCO-VLAN-MEMBERSHIP-MIB vmVlan.<ifIndex>        1.3.6.1.4.1.9.9.68.1.2.2.1.2
- IF-MIB ifAdminStatus.<ifIndex>                    1.3.6.1.2.1.2.2.1.7 (up 1, down 2)
- IF-MIB ifName / ifDescr, walked once to map a port name missing from the inventory's
  port mapping to its ifIndex (dot1dBasePort is then assumed equal to the ifIndex)

``Switch.vlan_mib()`` picks: "qbridge" sets dot1qPvid only (switches that treat the PVID
of an access port as its VLAN); "qbridge-static" also moves the port's bit between the
static egress/untagged PortLists of the old and new VLAN (generic 802.1Q switches);
"cisco-vmvlan" sets vmVlan.

The SnmpEngine is expensive (USM key localisation, dispatcher) and is shared: one per
process, per event loop to be exact, because pysnmp binds its transport dispatcher to the
loop it first runs on (the server has one loop; tests create several).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    Integer,
    ObjectIdentity,
    ObjectType,
    OctetString,
    SnmpEngine,
    UdpTransportTarget,
    Unsigned32,
    UsmUserData,
    get_cmd,
    set_cmd,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
    walk_cmd,
)
from pysnmp.proto.rfc1905 import NoSuchInstance, NoSuchObject

from enforcers.base import DriverError, NetworkDriver, check_readback
from enforcers.inventory import ResolvedPort, SnmpV2c, SnmpV3, Switch

DOT1Q_PVID = "1.3.6.1.2.1.17.7.1.4.5.1.1"
DOT1Q_STATIC_EGRESS = "1.3.6.1.2.1.17.7.1.4.3.1.2"
DOT1Q_STATIC_UNTAGGED = "1.3.6.1.2.1.17.7.1.4.3.1.4"
CISCO_VMVLAN = "1.3.6.1.4.1.9.9.68.1.2.2.1.2"
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"

_AUTH = {
    "SHA": usmHMACSHAAuthProtocol, "SHA224": usmHMAC128SHA224AuthProtocol,
    "SHA256": usmHMAC192SHA256AuthProtocol, "SHA384": usmHMAC256SHA384AuthProtocol,
    "SHA512": usmHMAC384SHA512AuthProtocol, "MD5": usmHMACMD5AuthProtocol,
}
_PRIV = {
    "AES": usmAesCfb128Protocol, "AES192": usmAesCfb192Protocol,
    "AES256": usmAesCfb256Protocol, "DES": usmDESPrivProtocol,
}
# errorStatus names after which the same request may succeed later.
_RETRYABLE_STATUS = {"genErr", "resourceUnavailable", "commitFailed", "undoFailed"}

_ENGINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SnmpEngine] = (
    weakref.WeakKeyDictionary())


def shared_engine() -> SnmpEngine:
    """The process's SnmpEngine for the running event loop."""
    loop = asyncio.get_running_loop()
    engine = _ENGINES.get(loop)
    if engine is None:
        engine = SnmpEngine()
        _ENGINES[loop] = engine
    return engine


def _oid(engine: SnmpEngine, oid: str) -> ObjectIdentity:
    """The engine's ObjectIdentity for a numeric OID, kept once resolved: pysnmp resolves
    every request's OIDs through the MIB view again otherwise, about a third of the CPU of
    a request. Bounded by the ports and VLANs the inventory names."""
    ids: dict[str, ObjectIdentity] = engine.cache.setdefault("nac_oids", {})
    ident = ids.get(oid)
    if ident is None:
        ident = ids[oid] = ObjectIdentity(oid)
    return ident


def set_portlist_bit(octets: bytes, port: int, on: bool) -> bytes:
    """PortList (RFC 2674/4363): port 1 is the high bit of the first octet."""
    idx, bit = (port - 1) // 8, 0x80 >> ((port - 1) % 8)
    buf = bytearray(octets)
    if len(buf) <= idx:
        buf.extend(bytes(idx + 1 - len(buf)))
    buf[idx] = (buf[idx] | bit) if on else (buf[idx] & ~bit & 0xFF)
    return bytes(buf)


class SnmpDriver(NetworkDriver):
    name = "snmp"

    def __init__(self, switch: Switch) -> None:
        super().__init__(switch)
        if switch.snmp is None:
            raise DriverError(f"{switch.name}: no [snmp] credentials", retryable=False,
                              switch=switch.name)
        self.creds: SnmpV2c | SnmpV3 = switch.snmp
        self._target: UdpTransportTarget | None = None
        self._names: dict[str, int] | None = None
        self._auth: Any = self._auth_data()

    def _auth_data(self) -> Any:
        c = self.creds
        if isinstance(c, SnmpV2c):
            return CommunityData(c.community.get_secret_value(), mpModel=1)
        return UsmUserData(
            c.user,
            authKey=c.auth_key.get_secret_value(),
            privKey=c.priv_key.get_secret_value() if c.priv_key else None,
            authProtocol=_AUTH[c.auth_protocol],
            privProtocol=_PRIV[c.priv_protocol] if c.priv_key else None,
        )

    async def open(self) -> None:
        if self._target is None:
            try:
                self._target = await UdpTransportTarget.create(
                    (self.switch.address, self.creds.port), timeout=self.creds.timeout,
                    retries=self.creds.retries)
            except Exception as exc:  # noqa: BLE001 - name resolution and socket errors
                raise DriverError(f"{self.switch.name}: SNMP target: {exc}", retryable=True,
                                  switch=self.switch.name) from exc

    async def close(self) -> None:
        self._target = None

    def _context(self) -> ContextData:
        ctx = self.creds.context if isinstance(self.creds, SnmpV3) else ""
        return ContextData(contextName=ctx) if ctx else ContextData()

    def _check(self, op: str, result: tuple[Any, Any, Any, Any]) -> list[Any]:
        err_ind, err_status, err_index, binds = result
        if err_ind:
            text = str(err_ind)
            # USM failures (wrong key, unknown user) cannot heal by waiting.
            auth = any(w in text.lower() for w in ("digest", "unknown user", "decrypt",
                                                   "unsupported security"))
            raise DriverError(f"{self.switch.name}: SNMP {op}: {text}", retryable=not auth,
                              switch=self.switch.name)
        if err_status:
            name = err_status.prettyPrint()
            raise DriverError(f"{self.switch.name}: SNMP {op}: {name} at {err_index}",
                              retryable=name in _RETRYABLE_STATUS, switch=self.switch.name)
        for oid, val in binds:
            if isinstance(val, NoSuchInstance | NoSuchObject):
                raise DriverError(f"{self.switch.name}: SNMP {op}: no such object {oid}",
                                  retryable=False, switch=self.switch.name)
        return list(binds)

    async def _get(self, *oids: str) -> list[Any]:
        await self.open()
        # lookupMib=False: the OIDs are numeric and stay so; resolving each reply through
        # the MIB view costs ~0.5 ms CPU per request for nothing.
        engine = shared_engine()
        res = await get_cmd(engine, self._auth, self._target, self._context(),
                            *(ObjectType(_oid(engine, o)) for o in oids), lookupMib=False)
        return [v for _, v in self._check("get", res)]

    async def _set(self, *pairs: tuple[str, Any]) -> None:
        await self.open()
        engine = shared_engine()
        res = await set_cmd(engine, self._auth, self._target, self._context(),
                            *(ObjectType(_oid(engine, o), v) for o, v in pairs),
                            lookupMib=False)
        self._check("set", res)

    async def _walk_names(self) -> dict[str, int]:
        """ifName -> ifIndex from IF-MIB (ifName, else ifDescr), read once per driver."""
        if self._names is not None:
            return self._names
        await self.open()
        names: dict[str, int] = {}
        for column in (IF_NAME, IF_DESCR):
            async for res in walk_cmd(shared_engine(), self._auth, self._target,
                                      self._context(), ObjectType(ObjectIdentity(column)),
                                      lexicographicMode=False):
                err_ind, err_status = res[0], res[1]
                if err_ind or err_status:
                    self._check("walk", res)  # raises for transport/auth errors
                    break
                for oid, val in res[3]:
                    names.setdefault(str(val), int(tuple(oid)[-1]))
            if names:
                break
        self._names = names
        return names

    async def _resolve(self, port: str) -> ResolvedPort:
        try:
            rp = self.switch.ports.resolve(name=port)
        except LookupError:
            rp = ResolvedPort(port)
        if rp.ifindex is None and port.isdigit():
            rp = ResolvedPort(port, int(port), rp.base_port or int(port), rp.nas_port)
        if rp.ifindex is None:
            # Not in the inventory: ask the switch (IF-MIB ifName/ifDescr).
            ifindex = (await self._walk_names()).get(port)
            if ifindex is not None:
                rp = ResolvedPort(port, ifindex, rp.base_port or ifindex, rp.nas_port)
        if rp.ifindex is None:
            raise DriverError(f"{self.switch.name}: no ifIndex for port {port!r} (not in the "
                              "port table or patterns, nor in the switch's ifName)",
                              retryable=False, switch=self.switch.name)
        return rp

    async def get_port_vlan(self, port: str) -> int:
        rp = await self._resolve(port)
        if self.switch.vlan_mib() == "cisco-vmvlan":
            (val,) = await self._get(f"{CISCO_VMVLAN}.{rp.ifindex}")
        else:
            (val,) = await self._get(f"{DOT1Q_PVID}.{rp.base_port}")
        return int(val)

    async def set_port_vlan(self, port: str, vlan: int) -> None:
        if not 1 <= int(vlan) <= 4094:
            raise DriverError(f"invalid VLAN {vlan}", retryable=False, switch=self.switch.name)
        rp = await self._resolve(port)
        mib = self.switch.vlan_mib()
        if mib == "cisco-vmvlan":
            await self._set((f"{CISCO_VMVLAN}.{rp.ifindex}", Integer(vlan)))
        elif mib == "qbridge-static":
            await self._move_static(rp, vlan)
        else:
            await self._set((f"{DOT1Q_PVID}.{rp.base_port}", Unsigned32(vlan)))
        check_readback(self.switch.name, port, await self.get_port_vlan(port), vlan)

    async def _move_static(self, rp: ResolvedPort, vlan: int) -> None:
        """Generic 802.1Q: join the new VLAN untagged, set PVID, then leave the old VLAN."""
        assert rp.base_port is not None
        bp = rp.base_port
        (old,) = await self._get(f"{DOT1Q_PVID}.{bp}")
        old = int(old)
        eg, ut = await self._get(f"{DOT1Q_STATIC_EGRESS}.{vlan}",
                                 f"{DOT1Q_STATIC_UNTAGGED}.{vlan}")
        await self._set(
            (f"{DOT1Q_STATIC_EGRESS}.{vlan}", OctetString(set_portlist_bit(bytes(eg), bp, True))),
            (f"{DOT1Q_STATIC_UNTAGGED}.{vlan}",
             OctetString(set_portlist_bit(bytes(ut), bp, True))))
        await self._set((f"{DOT1Q_PVID}.{bp}", Unsigned32(vlan)))
        if old != vlan:
            eg, ut = await self._get(f"{DOT1Q_STATIC_EGRESS}.{old}",
                                     f"{DOT1Q_STATIC_UNTAGGED}.{old}")
            await self._set(
                (f"{DOT1Q_STATIC_UNTAGGED}.{old}",
                 OctetString(set_portlist_bit(bytes(ut), bp, False))),
                (f"{DOT1Q_STATIC_EGRESS}.{old}",
                 OctetString(set_portlist_bit(bytes(eg), bp, False))))

    async def bounce_port(self, port: str) -> None:
        rp = await self._resolve(port)
        oid = f"{IF_ADMIN_STATUS}.{rp.ifindex}"
        await self._set((oid, Integer(2)))
        await asyncio.sleep(max(0.0, float(self.switch.bounce_down_seconds)))
        # If "up" fails after "down" the port stays down: retry the up a few times here
        # rather than leave a host cut off until the job's next attempt.
        for attempt in range(3):
            try:
                await self._set((oid, Integer(1)))
                return
            except DriverError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.5)
