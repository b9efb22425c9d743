"""ipvlan: give the pod an L3 (or L2) sub-interface sharing the MAC of a node uplink.

Rules (reference: containernetworking/plugins plugins/main/ipvlan; facts in shared/reference/cni.md):
- ``parse`` is pure. The master is ``master``; when empty and a prevResult with exactly one
  interface is present (chained after another interface plugin), that interface; when empty
  and unchained, the default-route interface (looked up in ``add``, not in ``parse``).
- No ``mac`` key: an ipvlan slave always has its master's MAC.
- No ``ipam`` + a prevResult with IPs: those IPs (and routes) are moved onto the ipvlan
  interface. No ``ipam`` and nothing to reuse is error 7 (the reference fails later with
  an exec error for IPAM type "").
- ADD creates the link directly in the pod netns under its final name; every step has its
  undo (IPAM released, link deleted) on failure. DEL: IPAM DEL, then the link; a missing
  netns/link is success. CHECK: IPAM CHECK, master, kind/mode/parent, MAC, MTU, addresses,
  routes in any table (sbr-tolerant).
- DNS: IPAM's (or prevResult's) DNS is kept; config ``dns`` overrides it field by field.
- The host kernel here has no ipvlan: behaviour is tested inside UML (tests/kernel/guest).
"""

from __future__ import annotations

import os
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from cni.plugin import Plugin
from cni.spec import args as cniargs
from cni.spec.errors import CNIError, InvalidConfig
from cni.spec.model import Model, validate
from cni.spec.request import Request
from cni.spec.result import DNS, Interface, Result

from . import _iface

TYPE = "ipvlan"

# IFLA_IPVLAN_MODE values (linux/if_link.h IPVLAN_MODE_*).
MODES: dict[str, int] = {"l2": 0, "l3": 1, "l3s": 2}


class IpvlanConf(Model):
    master: str = ""
    mode: str = "l2"
    mtu: int = Field(0, ge=0, le=65535)
    link_in_container: bool = Field(False, alias="linkInContainer")
    ipam: dict[str, Any] = Field(default_factory=dict)
    dns: _iface.DNSConf | None = None

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        v = v or "l2"
        if v not in MODES:
            raise ValueError(f"unknown ipvlan mode {v!r}, expected one of {', '.join(MODES)}")
        return v

    @field_validator("master")
    @classmethod
    def _master_name(cls, v: str) -> str:
        problem = cniargs.ifname_problem(v) if v else None
        if problem:
            raise ValueError(f"{v!r} is not an interface name: {problem}")
        return v


@dataclass(frozen=True)
class Conf:
    net: IpvlanConf
    master: str  # "" = the default-route interface, resolved in add/check
    ipam_type: str
    prev: Result | None


def parse(req: Request) -> Conf:
    net = validate(IpvlanConf, req.config)
    ipam_type = _iface.ipam_type(net.ipam)
    prev = _iface.prev_result(req)
    master = net.master
    # Only ADD derives the master from prevResult: in CHECK/DEL prevResult is our own result
    # (its one interface is the ipvlan itself), and DEL must not fail on config shape.
    if req.command == "ADD" and not master and prev is not None:
        if len(prev.interfaces) != 1 or not prev.interfaces[0].name:
            raise InvalidConfig(
                "chained master failure: no 'master' configured and prevResult does not have exactly one named interface",
                f"prevResult interfaces: {[i.name for i in prev.interfaces]}; set 'master' explicitly",
            )
        master = prev.interfaces[0].name
    if req.command == "ADD" and not ipam_type and (prev is None or not prev.ips):
        raise InvalidConfig(
            "ipvlan needs an 'ipam' section, or a prevResult with IPs to move onto the interface",
            "ipvlan has no L2-only mode: add e.g. {\"ipam\": {\"type\": \"host-local\", ...}}",
        )
    return Conf(net, master, ipam_type, prev)


def _master_socket(req: Request, conf: Conf) -> Any:
    from cni.netlink import in_netns, ipr

    if conf.net.link_in_container:
        return in_netns(req.netns)
    return closing(ipr())


def _where(conf: Conf) -> str:
    return "container network namespace" if conf.net.link_in_container else "host network namespace"


# ---- ADD -----------------------------------------------------------------------------------


def add(req: Request, conf: Conf) -> Result:
    from cni import netns

    fd = netns.open_fd(req.netns)
    try:
        with ExitStack() as undo:
            result = _add(req, conf, fd, undo)
            undo.pop_all()
        return result
    finally:
        os.close(fd)


def _add(req: Request, conf: Conf, fd: int, undo: ExitStack) -> Result:
    from cni import netns
    from cni.netlink import configure_iface, ipr, link_index

    net = conf.net
    with _master_socket(req, conf) as msock:
        master = conf.master or _iface.default_master(msock, where=_where(conf))
        midx, mmtu = _iface.master_link(msock, master, where=_where(conf))
        _iface.check_mtu(net.mtu, master, mmtu)
        spec: dict[str, Any] = {"link": midx, "ipvlan_mode": MODES[net.mode]}
        if net.mtu:
            spec["mtu"] = net.mtu
        _iface.create_link(msock, req.ifname, req.netns, None if net.link_in_container else fd, "ipvlan", **spec)
    undo.callback(_iface.delete_link_quietly, req.netns, req.ifname)

    if conf.ipam_type:
        base = _iface.ipam_add(req, undo)
    else:
        assert conf.prev is not None  # parse guarantees it
        base = conf.prev
    conf_dns = net.dns.to_dns() if net.dns else DNS()
    dns = _iface.merge_dns(base.dns, conf_dns)

    with netns.entered(req.netns):
        sock = ipr()
        try:
            idx = link_index(sock, req.ifname)
            if idx is None:
                raise CNIError(f"interface {req.ifname!r} disappeared from {req.netns} during ADD", code=105)
            (msg,) = sock.get_links(idx)
            iface = Interface(
                name=req.ifname,
                mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
                sandbox=req.netns,
                mtu=int(msg.get_attr("IFLA_MTU") or 0),
            )
            _iface.set_notify_sysctls(req.ifname)
            result = _iface.assign_to(base, iface, dns).with_(cni_version=req.cni_version)
            configure_iface(sock, idx, req.ifname, result, 0)
            _iface.settle_addresses(sock, idx, req.ifname, list(result.ips))
        finally:
            sock.close()
    return result


# ---- DEL -----------------------------------------------------------------------------------


def delete(req: Request, conf: Conf) -> None:
    from cni import invoke
    from cni.netlink import delete_link_in_netns

    errors: list[CNIError] = []
    if conf.ipam_type:
        try:
            invoke.ipam(req.with_(command="DEL"))
        except CNIError as exc:
            errors.append(exc.prefixed("IPAM DEL: "))
    if req.netns:
        try:
            delete_link_in_netns(req.netns, req.ifname)
        except CNIError as exc:
            errors.append(exc)
    invoke.raise_all(errors)


# ---- CHECK ---------------------------------------------------------------------------------


def check(req: Request, conf: Conf) -> None:
    from cni import invoke, netns
    from cni.netlink import ipr

    if conf.ipam_type:
        invoke.ipam(req.with_(command="CHECK"))
    prev = conf.prev
    if prev is None:
        raise InvalidConfig("CHECK needs prevResult: the runtime must send the result of ADD")
    mine = _iface.own_interface(prev, req.ifname, req.netns)
    iface_idx = prev.interfaces.index(mine)
    net = conf.net
    # In CHECK the prevResult is our own ADD result, so its single interface is the ipvlan
    # itself, not the master: without an explicit master we cannot tell whether ADD used a
    # chained master or the default route, so only an explicit master is checked.
    midx: int | None = None
    if net.master:
        with _master_socket(req, conf) as msock:
            midx, _ = _iface.master_link(msock, net.master, where=_where(conf))
    with netns.entered(req.netns):
        sock = ipr()
        try:
            idx = _iface.verify_link(
                sock, req.ifname, kind="ipvlan", mode_key="ifla_ipvlan_mode", mode=MODES[net.mode],
                mode_name=net.mode, master_index=midx, mac=mine.mac, mtu=net.mtu,
            )
            ips = [ip for ip in prev.ips if ip.interface == iface_idx]
            _iface.verify_addresses(sock, idx, req.ifname, ips)
            _iface.verify_routes(sock, idx, req.ifname, prev.routes, _iface.gateways(prev))
        finally:
            sock.close()


def status(req: Request, conf: Conf) -> None:
    from cni import invoke

    if conf.ipam_type:
        invoke.ipam(req)


def gc(req: Request, conf: Conf) -> None:
    from cni import invoke

    if conf.ipam_type:
        invoke.ipam(req)


PLUGIN = Plugin(TYPE, parse, add, delete, check, status, gc)
