"""Configuration pieces every IPAM plugin shares: routes, DNS, resolv.conf, requested IPs. PURE.

Rules:
- No I/O here (a resolv.conf is parsed from text the caller has read), no pyroute2, no
  pydantic: IPAM plugins are exec'd standalone as drop-ins for the reference binaries, one
  process per call, and pydantic costs ≈ 90 ms to import, ≈ 200 ms with a first validation
  (cni/ARCHITECTURE.md, "Start-up costs"). Values are
  validated by hand into frozen ``cni.spec.result`` objects; every failure is error 7 naming
  the field the way a node admin reads it (``ipam.routes[1].dst``).
- This module is imported by host-local, static and whereabouts: keep its functions stable.
- Requested IPs come from three places (CONVENTIONS.md "ips" capability / args / CNI_ARGS);
  ``RequestedIPs`` keeps them apart so each plugin can apply its reference's rule:
  host-local takes their union (CNI_ARGS, then ``args.cni.ips``, then runtimeConfig), static
  lets the highest-precedence non-empty source replace its list (runtimeConfig > args >
  CNI_ARGS appended to the config).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cni.spec import gojson
from cni.spec.config import RANGE_SCHEMA
from cni.spec.errors import InvalidConfig, InvalidEnvironment
from cni.spec.request import Request
from cni.spec.result import DNS, DNS_SCHEMA, ROUTE_SCHEMA, IPAddress, IPInterface, IPNetwork, Route

__all__ = [
    "RequestedIP",
    "RequestedIPs",
    "bad_field",
    "ipam_section",
    "opt_str",
    "parse_address",
    "parse_cidr",
    "parse_dns",
    "parse_ip_or_cidr",
    "parse_resolv_conf",
    "parse_routes",
    "parse_subnet",
    "requested_ips",
]


_S, _N = gojson.SCALAR, gojson.NILABLE
ROUTES: Final = gojson.ListOf(ROUTE_SCHEMA)
# plugins/ipam/host-local/backend/allocator/config.go IPAMConfig (with its embedded *Range)
HOST_LOCAL_SCHEMA: gojson.Schema = {
    **RANGE_SCHEMA, "Name": _S, "type": _S, "routes": ROUTES, "dataDir": _S, "resolvConf": _S,
    "ranges": gojson.ListOf(gojson.ListOf(RANGE_SCHEMA)),
}
# plugins/ipam/static/main.go IPAMConfig
STATIC_SCHEMA: gojson.Schema = {
    "Name": _S, "type": _S, "routes": ROUTES, "addresses": gojson.ListOf({"address": _S, "gateway": _S}),
    "dns": DNS_SCHEMA,
}


def bad_field(path: str, problem: str, details: str = "") -> InvalidConfig:
    """Error 7 naming ``path``; the message reads "invalid network config field 'x': problem"."""
    return InvalidConfig(f"invalid network config field {path!r}: {problem}", details)


def ipam_section(config: Mapping[str, Any], schema: gojson.Schema) -> dict[str, Any]:
    """The ``ipam`` object of a plugin config (IPAM plugins receive the whole config), its keys
    spelled as ``schema`` (the reference's Go IPAMConfig struct) names them: Go's decoder
    folds key case, so ``"RangeStart"`` is ``rangeStart`` to the reference and to us."""
    raw = config.get("ipam")
    if raw is None:
        raise InvalidConfig("network config field 'ipam' is missing", "an IPAM plugin needs an 'ipam' object")
    if not isinstance(raw, dict):
        raise bad_field("ipam", f"must be an object, got {type(raw).__name__}")
    out: dict[str, Any] = gojson.canonical(raw, schema)
    return out


def opt_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    """An optional string field ('' when absent or null)."""
    val = obj.get(key)
    if val is None:
        return ""
    if not isinstance(val, str):
        raise bad_field(f"{where}.{key}" if where else key, f"must be a string, got {type(val).__name__}")
    return val


def _text(val: Any, path: str) -> str:
    if not isinstance(val, str) or not val.strip():
        raise bad_field(path, "must be a non-empty string" if isinstance(val, str) else f"must be a string, got {type(val).__name__}")
    return val.strip()


def parse_address(val: Any, path: str) -> IPAddress:
    """A plain IP address (no prefix)."""
    text = _text(val, path)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise bad_field(path, f"{text!r} is not an IP address") from None


def parse_cidr(val: Any, path: str) -> IPInterface:
    """An address with its prefix length, e.g. ``10.1.0.5/24`` (static addresses)."""
    text = _text(val, path)
    if "/" not in text:
        raise bad_field(path, f"{text!r} is not in CIDR notation", "write the address with its prefix length, e.g. 10.1.0.5/24")
    try:
        return ipaddress.ip_interface(text)
    except ValueError as exc:
        raise bad_field(path, f"{text!r} is not an address in CIDR notation", str(exc)) from None


def parse_subnet(val: Any, path: str) -> IPNetwork:
    """A network in CIDR notation; host bits are masked off (the reference accepts ``10.1.0.7/24``)."""
    text = _text(val, path)
    if "/" not in text:
        raise bad_field(path, f"{text!r} is not a subnet in CIDR notation", "e.g. 10.1.0.0/24")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise bad_field(path, f"{text!r} is not a subnet in CIDR notation", str(exc)) from None


def parse_ip_or_cidr(val: Any, path: str) -> tuple[IPAddress, int | None]:
    """An address with an optional prefix (the reference ``ip.IP`` type of the ``ips`` capability)."""
    text = _text(val, path)
    if "/" in text:
        iface = parse_cidr(text, path)
        return iface.ip, iface.network.prefixlen
    return parse_address(text, path), None


def parse_routes(raw: Any, where: str) -> tuple[Route, ...]:
    """``[{dst, gw?}]`` (SPEC "Well-known structures"); ``where`` is the list's field path."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_field(where, f"must be a list of routes, got {type(raw).__name__}")
    out: list[Route] = []
    for i, item in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise bad_field(path, f"must be an object {{dst, gw}}, got {type(item).__name__}")
        if item.get("dst") is None:
            raise bad_field(f"{path}.dst", "is missing")
        dst = parse_subnet(item["dst"], f"{path}.dst")
        gw = parse_address(item["gw"], f"{path}.gw") if item.get("gw") not in (None, "") else None
        if gw is not None and gw.version != dst.version:
            raise bad_field(f"{path}.gw", f"{gw} is not of the address family of dst {dst}")
        out.append(Route(dst=dst, gw=gw))
    return tuple(out)


def parse_dns(raw: Any, where: str) -> DNS:
    """``{nameservers, domain, search, options}``; ``where`` is the object's field path."""
    if raw is None:
        return DNS()
    if not isinstance(raw, dict):
        raise bad_field(where, f"must be an object, got {type(raw).__name__}")

    def strs(key: str) -> tuple[str, ...]:
        val = raw.get(key)
        if val is None:
            return ()
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise bad_field(f"{where}.{key}", "must be a list of strings")
        return tuple(val)

    return DNS(nameservers=strs("nameservers"), domain=opt_str(raw, "domain", where), search=strs("search"), options=strs("options"))


def parse_resolv_conf(text: str) -> DNS:
    """resolv.conf(5) → DNS, the way the reference host-local reads it (later ``domain`` wins; lists append)."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    domain = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        key, rest = fields[0], fields[1:]
        if key == "nameserver":
            nameservers.append(rest[0])
        elif key == "domain":
            domain = rest[0]
        elif key == "search":
            search.extend(rest)
        elif key == "options":
            options.extend(rest)
    return DNS(nameservers=tuple(nameservers), domain=domain, search=tuple(search), options=tuple(options))


# ---- requested IPs -----------------------------------------------------------------


@dataclass(frozen=True)
class RequestedIP:
    """One requested address; ``prefixlen`` is None when it was given without one."""

    ip: IPAddress
    prefixlen: int | None
    source: str  # the field path it came from, for error messages

    def interface(self) -> IPInterface:
        if self.prefixlen is None:
            raise bad_field(self.source, f"{self.ip} has no prefix length", "write it in CIDR notation, e.g. 10.1.0.5/24")
        return ipaddress.ip_interface(f"{self.ip}/{self.prefixlen}")


@dataclass(frozen=True)
class RequestedIPs:
    """Requested IPs by source, each in the order given."""

    cni_args: tuple[RequestedIP, ...] = ()  # CNI_ARGS IP=a,b
    args: tuple[RequestedIP, ...] = ()  # config args.cni.ips
    runtime: tuple[RequestedIP, ...] = ()  # runtimeConfig.ips (capability "ips")

    def union(self) -> tuple[RequestedIP, ...]:
        """All sources, CNI_ARGS first, duplicates (same address) dropped (reference host-local)."""
        seen: set[IPAddress] = set()
        out: list[RequestedIP] = []
        for r in self.cni_args + self.args + self.runtime:
            if r.ip not in seen:
                seen.add(r.ip)
                out.append(r)
        return tuple(out)

    def overriding(self) -> tuple[RequestedIP, ...] | None:
        """The list that replaces a configured one: runtimeConfig, else args.cni.ips, else None (reference static)."""
        if self.runtime:
            return self.runtime
        if self.args:
            return self.args
        return None


def _ip_list(raw: Any, path: str) -> tuple[RequestedIP, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_field(path, f"must be a list of IP addresses, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        ip, plen = parse_ip_or_cidr(item, f"{path}[{i}]")
        out.append(RequestedIP(ip, plen, f"{path}[{i}]"))
    return tuple(out)


def requested_ips(req: Request, *, cni_args_key: str = "IP") -> RequestedIPs:
    """Collect requested IPs from CNI_ARGS ``IP=`` (comma list), ``args.cni.ips`` and runtimeConfig ``ips``."""
    env: list[RequestedIP] = []
    raw_env = req.cni_args.get(cni_args_key, "")
    for i, item in enumerate(p for p in raw_env.split(",") if p.strip()):
        path = f"CNI_ARGS {cni_args_key}[{i}]"
        try:
            ip, plen = parse_ip_or_cidr(item, path)
        except InvalidConfig as exc:  # it came from the environment, not the config: error 4
            raise InvalidEnvironment(f"invalid CNI_ARGS {cni_args_key}={raw_env!r}: {item.strip()!r} is not an IP address", exc.details) from None
        env.append(RequestedIP(ip, plen, path))
    args = req.config.get("args")
    cni_args = args.get("cni") if isinstance(args, dict) else None
    from_args = _ip_list(cni_args.get("ips"), "args.cni.ips") if isinstance(cni_args, dict) else ()
    from_rc = _ip_list(req.runtime_config().get("ips"), "runtimeConfig.ips")
    return RequestedIPs(cni_args=tuple(env), args=from_args, runtime=from_rc)
