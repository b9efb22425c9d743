"""The canonical CNI result and its conversion to and from every wire version. PURE.

Invariants:
- Inside multinic there is exactly one result shape, the 1.1.0 one (``Result``); plugins
  only ever build and read it. Wire shapes exist only in ``from_wire``/``to_wire``.
- Addresses are ``ipaddress`` objects inside; strings only on the wire.
- ``to_wire`` converts once, on output, to the caller's ``cniVersion``. Going down drops
  what the older shape cannot carry (SPEC-1.1 interface mtu/socketPath/pciID, route
  mtu/advmss/priority/table/scope); 0.3.x/0.4.0 add ``ips[].version``; 0.1.0/0.2.0 keep the
  first IPv4 and first IPv6 address and fail when there is none (libcni convert.go does the same).
- Go's encoding/json emits ``"dns": {}`` even when empty (omitempty has no effect on a
  struct); tools diff results, so we emit it too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from . import gojson, versions
from .errors import CNIError, DecodeFailure, IncompatibleVersion

IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

LEGACY = ("0.1.0", "0.2.0")
WITH_IP_VERSION = ("0.3.0", "0.3.1", "0.4.0")


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int = 0  # 1.1.0
    socket_path: str = ""  # 1.1.0
    pci_id: str = ""  # 1.1.0


@dataclass(frozen=True)
class IPConfig:
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None

    @property
    def version(self) -> int:
        return self.address.version


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None
    mtu: int = 0  # 1.1.0 (all five)
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None


@dataclass(frozen=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)


@dataclass(frozen=True)
class Result:
    """A CNI result in the newest shape. ``cni_version`` is the version it was produced for."""

    cni_version: str = versions.LATEST
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)

    def with_(self, **changes: Any) -> Result:
        return replace(self, **changes)

    def add_interface(self, iface: Interface) -> tuple[Result, int]:
        """Append an interface; returns the new result and the new interface's index."""
        return replace(self, interfaces=self.interfaces + (iface,)), len(self.interfaces)


# ---- parsing ----------------------------------------------------------------


def _err(err_cls: type[CNIError], what: str, detail: str) -> CNIError:
    return err_cls(f"invalid result: {what}", detail)


def _str(obj: dict[str, Any], key: str, where: str, err_cls: type[CNIError], *, required: bool = False) -> str:
    val = obj.get(key)
    if val is None:
        if required:
            raise _err(err_cls, f"{where}.{key} is missing", "")
        return ""
    if not isinstance(val, str):
        raise _err(err_cls, f"{where}.{key} must be a string", f"got {type(val).__name__}")
    return val


def _int(obj: dict[str, Any], key: str, where: str, err_cls: type[CNIError]) -> int | None:
    val = obj.get(key)
    if val is None:
        return None
    if not isinstance(val, int) or isinstance(val, bool):
        raise _err(err_cls, f"{where}.{key} must be an integer", f"got {val!r}")
    return val


def _list(obj: dict[str, Any], key: str, where: str, err_cls: type[CNIError]) -> list[Any]:
    val = obj.get(key)
    if val is None:
        return []
    if not isinstance(val, list):
        raise _err(err_cls, f"{where}.{key} must be a list", f"got {type(val).__name__}")
    return val


def _obj(val: Any, where: str, err_cls: type[CNIError]) -> dict[str, Any]:
    if not isinstance(val, dict):
        raise _err(err_cls, f"{where} must be an object", f"got {type(val).__name__}")
    return val


def parse_cidr(text: str, where: str, err_cls: type[CNIError] = DecodeFailure) -> IPInterface:
    try:
        if "/" not in text:
            raise ValueError("no prefix length")
        return ipaddress.ip_interface(text)
    except ValueError as exc:
        raise _err(err_cls, f"{where} {text!r} is not an address in CIDR notation", str(exc)) from None


def parse_ip(text: str, where: str, err_cls: type[CNIError] = DecodeFailure) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise _err(err_cls, f"{where} {text!r} is not an IP address", str(exc)) from None


def parse_net(text: str, where: str, err_cls: type[CNIError] = DecodeFailure) -> IPNetwork:
    try:
        if "/" not in text:
            raise ValueError("no prefix length")
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise _err(err_cls, f"{where} {text!r} is not a network in CIDR notation", str(exc)) from None


def _parse_route(raw: Any, where: str, err_cls: type[CNIError]) -> Route:
    obj = _obj(raw, where, err_cls)
    dst = parse_net(_str(obj, "dst", where, err_cls, required=True), f"{where}.dst", err_cls)
    gw_s = _str(obj, "gw", where, err_cls)
    gw = parse_ip(gw_s, f"{where}.gw", err_cls) if gw_s else None
    return Route(
        dst=dst,
        gw=gw,
        mtu=_int(obj, "mtu", where, err_cls) or 0,
        advmss=_int(obj, "advmss", where, err_cls) or 0,
        priority=_int(obj, "priority", where, err_cls) or 0,
        table=_int(obj, "table", where, err_cls),
        scope=_int(obj, "scope", where, err_cls),
    )


def _parse_dns(raw: Any, err_cls: type[CNIError]) -> DNS:
    if raw is None:
        return DNS()
    obj = _obj(raw, "dns", err_cls)

    def strs(key: str) -> tuple[str, ...]:
        items = _list(obj, key, "dns", err_cls)
        if not all(isinstance(i, str) for i in items):
            raise _err(err_cls, f"dns.{key} must be a list of strings", "")
        return tuple(items)

    return DNS(
        nameservers=strs("nameservers"),
        domain=_str(obj, "domain", "dns", err_cls),
        search=strs("search"),
        options=strs("options"),
    )


# The Go structs libcni decodes a result into (types/100, types/040, types/020): a plugin's
# stdout and a prevResult are read with encoding/json's key folding, so are ours.
_S, _N = gojson.SCALAR, gojson.NILABLE
DNS_SCHEMA: gojson.Schema = {"nameservers": _N, "domain": _S, "search": _N, "options": _N}
ROUTE_SCHEMA: gojson.Schema = {"dst": _S, "gw": _S, "mtu": _S, "advmss": _S, "priority": _S, "table": _N, "scope": _N}
_LEGACY_IP: gojson.Schema = {"ip": _S, "gateway": _S, "routes": gojson.ListOf(ROUTE_SCHEMA)}
RESULT_SCHEMA: gojson.Schema = {
    "cniVersion": _S,
    "interfaces": gojson.ListOf({"name": _S, "mac": _S, "mtu": _S, "sandbox": _S, "socketPath": _S, "pciID": _S}),
    "ips": gojson.ListOf({"version": _S, "interface": _N, "address": _S, "gateway": _S}),
    "routes": gojson.ListOf(ROUTE_SCHEMA),
    "dns": DNS_SCHEMA,
    "ip4": _LEGACY_IP,
    "ip6": _LEGACY_IP,
}


def from_wire(doc: Any, version: str | None = None, *, err_cls: type[CNIError] = DecodeFailure) -> Result:
    """Parse a result document of any supported version into the canonical ``Result``.

    ``version`` defaults to the document's own ``cniVersion``. ``err_cls`` picks the error class
    for malformed input (a plugin's stdout is a decode failure; a ``prevResult`` in a config is
    an invalid config).
    """
    obj = gojson.canonical(_obj(doc, "result", err_cls), RESULT_SCHEMA)
    ver = version or _str(obj, "cniVersion", "result", err_cls) or "0.1.0"
    if ver not in versions.ALL:
        raise IncompatibleVersion(f"unsupported result cniVersion {ver!r}", f"supported: {list(versions.ALL)}")
    dns = _parse_dns(obj.get("dns"), err_cls)
    if ver in LEGACY:
        ips: list[IPConfig] = []
        routes: list[Route] = []
        for fam in ("ip4", "ip6"):
            if obj.get(fam) is None:
                continue
            sub = _obj(obj[fam], fam, err_cls)
            addr = parse_cidr(_str(sub, "ip", fam, err_cls, required=True), f"{fam}.ip", err_cls)
            gw_s = _str(sub, "gateway", fam, err_cls)
            ips.append(IPConfig(addr, parse_ip(gw_s, f"{fam}.gateway", err_cls) if gw_s else None))
            routes.extend(_parse_route(r, f"{fam}.routes[{i}]", err_cls) for i, r in enumerate(_list(sub, "routes", fam, err_cls)))
        return Result(cni_version=ver, ips=tuple(ips), routes=tuple(routes), dns=dns)

    interfaces = []
    for i, raw in enumerate(_list(obj, "interfaces", "result", err_cls)):
        where = f"interfaces[{i}]"
        o = _obj(raw, where, err_cls)
        interfaces.append(
            Interface(
                name=_str(o, "name", where, err_cls, required=True),
                mac=_str(o, "mac", where, err_cls),
                sandbox=_str(o, "sandbox", where, err_cls),
                mtu=_int(o, "mtu", where, err_cls) or 0,
                socket_path=_str(o, "socketPath", where, err_cls),
                pci_id=_str(o, "pciID", where, err_cls),
            )
        )
    ips = []
    for i, raw in enumerate(_list(obj, "ips", "result", err_cls)):
        where = f"ips[{i}]"
        o = _obj(raw, where, err_cls)
        addr = parse_cidr(_str(o, "address", where, err_cls, required=True), f"{where}.address", err_cls)
        gw_s = _str(o, "gateway", where, err_cls)
        gw = parse_ip(gw_s, f"{where}.gateway", err_cls) if gw_s else None
        if gw is not None and gw.version != addr.version:
            raise _err(err_cls, f"{where}.gateway {gw} is not of the address family of {addr}", "")
        idx = _int(o, "interface", where, err_cls)
        if idx is not None and not 0 <= idx < len(interfaces):
            raise _err(err_cls, f"{where}.interface {idx} does not index into interfaces", f"{len(interfaces)} interface(s)")
        ver_field = o.get("version")
        if ver_field is not None and ver_field != str(addr.version):
            raise _err(err_cls, f"{where}.version {ver_field!r} does not match address {addr}", "")
        ips.append(IPConfig(addr, gw, idx))
    routes = [_parse_route(r, f"routes[{i}]", err_cls) for i, r in enumerate(_list(obj, "routes", "result", err_cls))]
    return Result(cni_version=ver, interfaces=tuple(interfaces), ips=tuple(ips), routes=tuple(routes), dns=dns)


# ---- output -----------------------------------------------------------------


def _dns_wire(dns: DNS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if dns.nameservers:
        out["nameservers"] = list(dns.nameservers)
    if dns.domain:
        out["domain"] = dns.domain
    if dns.search:
        out["search"] = list(dns.search)
    if dns.options:
        out["options"] = list(dns.options)
    return out


def _route_wire(r: Route, rich: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(r.dst)}
    if r.gw is not None:
        out["gw"] = str(r.gw)
    if rich:
        if r.mtu:
            out["mtu"] = r.mtu
        if r.advmss:
            out["advmss"] = r.advmss
        if r.priority:
            out["priority"] = r.priority
        if r.table is not None:
            out["table"] = r.table
        if r.scope is not None:
            out["scope"] = r.scope
    return out


def to_wire(result: Result, version: str) -> dict[str, Any]:
    """Render ``result`` in the wire shape of ``version``."""
    versions.require_supported(version)
    rich = versions.at_least(version, "1.1.0")
    if version in LEGACY:
        out: dict[str, Any] = {"cniVersion": version}
        found = False
        for fam, tag in ((4, "ip4"), (6, "ip6")):
            first = next((ip for ip in result.ips if ip.version == fam), None)
            if first is None:
                continue
            found = True
            sub: dict[str, Any] = {"ip": str(first.address)}
            if first.gateway is not None:
                sub["gateway"] = str(first.gateway)
            fam_routes = [_route_wire(r, False) for r in result.routes if r.dst.version == fam]
            if fam_routes:
                sub["routes"] = fam_routes
            out[tag] = sub
        if not found:
            raise IncompatibleVersion(
                f"cannot convert result to cniVersion {version}",
                "a 0.1.0/0.2.0 result needs at least one IP address",
            )
        out["dns"] = _dns_wire(result.dns)
        return out

    out = {"cniVersion": version}
    if result.interfaces:
        ifaces = []
        for iface in result.interfaces:
            o: dict[str, Any] = {"name": iface.name}
            if iface.mac:
                o["mac"] = iface.mac
            if rich and iface.mtu:
                o["mtu"] = iface.mtu
            if iface.sandbox:
                o["sandbox"] = iface.sandbox
            if rich and iface.socket_path:
                o["socketPath"] = iface.socket_path
            if rich and iface.pci_id:
                o["pciID"] = iface.pci_id
            ifaces.append(o)
        out["interfaces"] = ifaces
    if result.ips:
        ips = []
        for ip in result.ips:
            o = {}
            if version in WITH_IP_VERSION:
                o["version"] = str(ip.version)
            if ip.interface is not None:
                o["interface"] = ip.interface
            o["address"] = str(ip.address)
            if ip.gateway is not None:
                o["gateway"] = str(ip.gateway)
            ips.append(o)
        out["ips"] = ips
    if result.routes:
        out["routes"] = [_route_wire(r, rich) for r in result.routes]
    out["dns"] = _dns_wire(result.dns)
    return out


def convert(doc: dict[str, Any], to_version: str) -> dict[str, Any]:
    """Convert a wire result document to another wire version (through the canonical model)."""
    return to_wire(from_wire(doc), to_version)
