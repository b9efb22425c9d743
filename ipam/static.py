"""static IPAM: hands out the addresses written in the config (or requested by the runtime).

Config (reference plugins/ipam/static): ``ipam.addresses[{address (CIDR), gateway}]``,
``ipam.routes``, ``ipam.dns``. CNI_ARGS ``IP=`` (comma list of CIDRs) is appended to the
configured addresses and ``GATEWAY=`` (comma list) sets the gateway of every address whose
subnet contains it; then ``args.cni.ips`` replaces the whole list, and runtimeConfig ``ips``
(capability ``ips``) replaces it again — the most specific source wins.

Rules:
- ``parse`` is pure; a malformed address is error 7 naming the field (4 for CNI_ARGS).
- No state: DEL is a no-op and does not even parse the config (reference), so it always succeeds.
- CHECK verifies that every address is on ``CNI_IFNAME`` in ``CNI_NETNS`` with its prefix
  length, and, when a prevResult is given, that it lists every address with the configured
  gateway (the reference compares prevResult only and passes when an address is missing).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from cni.plugin import Plugin
from cni.spec import versions
from cni.spec.args import check_known
from cni.spec.errors import IncompatibleVersion, InvalidConfig, InvalidEnvironment, NotFound
from cni.spec.request import Request
from cni.spec.result import DNS, IPConfig, Result, Route

from ._common import (
    STATIC_SCHEMA,
    bad_field,
    ipam_section,
    parse_address,
    parse_cidr,
    parse_dns,
    parse_routes,
    requested_ips,
)

TYPE = "static"
CNI_ARGS_KEYS = frozenset({"IP", "GATEWAY"})


@dataclass(frozen=True)
class Conf:
    addresses: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()


def _addresses(raw: object) -> list[IPConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_field("ipam.addresses", f"must be a list of {{address, gateway}}, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        where = f"ipam.addresses[{i}]"
        if not isinstance(item, dict):
            raise bad_field(where, f"must be an object {{address, gateway}}, got {type(item).__name__}")
        if item.get("address") in (None, ""):
            raise bad_field(f"{where}.address", "is missing")
        addr = parse_cidr(item["address"], f"{where}.address")
        gw = parse_address(item["gateway"], f"{where}.gateway") if item.get("gateway") not in (None, "") else None
        # A gateway outside the subnet is legitimate (on-link /32 setups): only the family must match.
        if gw is not None and gw.version != addr.version:
            raise bad_field(f"{where}.gateway", f"{gw} is not of the address family of {addr}")
        out.append(IPConfig(address=addr, gateway=gw))
    return out


def parse(req: Request) -> Conf:
    if req.command == "DEL":
        return Conf()  # nothing to release; never fail a DEL over config
    ipam = ipam_section(req.config, STATIC_SCHEMA)
    addresses = _addresses(ipam.get("addresses"))
    check_known(req.cni_args, CNI_ARGS_KEYS)
    wanted = requested_ips(req)
    for r in wanted.cni_args:
        if r.prefixlen is None:
            raise InvalidEnvironment(f"invalid CNI_ARGS IP: {r.ip} has no prefix length", "static needs CIDR notation, e.g. IP=10.1.0.5/24")
        addresses.append(IPConfig(address=r.interface()))
    gateways = req.cni_args.get("GATEWAY", "")
    for item in (g.strip() for g in gateways.split(",") if g.strip()):
        try:
            gw = ipaddress.ip_address(item)
        except ValueError:
            raise InvalidEnvironment(f"invalid CNI_ARGS GATEWAY: {item!r} is not an IP address") from None
        addresses = [replace(a, gateway=gw) if gw in a.address.network else a for a in addresses]
    override = wanted.overriding()
    if override is not None:
        addresses = [IPConfig(address=r.interface()) for r in override]
    if not versions.at_least(req.cni_version, "0.3.0"):
        fams = [a.version for a in addresses]
        if fams.count(4) > 1 or fams.count(6) > 1:
            raise IncompatibleVersion(f"cniVersion {req.cni_version} does not support more than 1 address per family", "use cniVersion 0.3.0 or later")
    return Conf(
        addresses=tuple(addresses),
        routes=parse_routes(ipam.get("routes"), "ipam.routes"),
        dns=parse_dns(ipam.get("dns"), "ipam.dns"),
    )


def add(req: Request, conf: Conf) -> Result:
    return Result(cni_version=req.cni_version, ips=conf.addresses, routes=conf.routes, dns=conf.dns)


def delete(req: Request, conf: Conf) -> None:
    return None


def check(req: Request, conf: Conf) -> None:
    from cni import netlink
    from cni.spec.result import from_wire

    prev = req.config.get("prevResult")
    if prev is not None:
        result = from_wire(prev, err_cls=InvalidConfig)
        for a in conf.addresses:
            match = next((ip for ip in result.ips if ip.address.ip == a.address.ip), None)
            if match is None:
                raise NotFound(f"static: address {a.address} is missing from prevResult of {req.ifname}")
            if a.gateway is not None and match.gateway != a.gateway:
                raise NotFound(f"static: address {a.address} has gateway {match.gateway} in prevResult, expected {a.gateway}")
    if not conf.addresses:
        return
    with netlink.in_netns(req.netns) as sock:
        with netlink.translated(f"static: cannot read the addresses of {req.ifname}"):
            idx = netlink.link_index(sock, req.ifname)
            if idx is None:
                raise NotFound(f"static: interface {req.ifname} not found in {req.netns}")
            present = set(netlink.addresses(sock, idx))
    for a in conf.addresses:
        if a.address not in present:
            raise NotFound(
                f"static: address {a.address} is not on {req.ifname} in {req.netns}",
                f"present: {', '.join(sorted(map(str, present))) or 'none'}",
            )


PLUGIN: Plugin[Conf] = Plugin(TYPE, parse, add, delete, check, capabilities=frozenset({"ips"}))
