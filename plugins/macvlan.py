"""macvlan: give the pod an L2 sub-interface of a node uplink (the ``master``).

Rules (reference: containernetworking/plugins plugins/main/macvlan; facts in shared/reference/cni.md):
- ``parse`` is pure: it validates keys and resolves the MAC precedence, but looks nothing up
  in the kernel. Whether the master exists and its MTU are checked in ``add``/``check``.
- ADD creates the link directly inside the pod netns under its final name (IFLA_NET_NS_FD),
  then IPAM, then addresses/routes. Every step registers its undo; on any failure the IPAM
  reservation is released and the link deleted (the reference leaves the link, plugins#29).
- An empty ``ipam`` (or none) means an L2-only interface: link up, result without IPs.
- DNS: IPAM's DNS is kept and the config's ``dns`` overrides it field by field (the
  reference drops IPAM's DNS; see ``_iface.merge_dns``).
- DEL: IPAM DEL first (released even when the netns is gone), then the link; a missing
  netns or link is success. DEL never needs the master (the reference fails DEL when the
  master is gone because its loadConf looks it up).
- CHECK: IPAM CHECK, master, kind/mode/parent, MAC, MTU, addresses, routes in any table.
- Capability ``mac`` (runtimeConfig.mac). runtimeConfig is passed to IPAM unchanged, so an
  IPAM that understands ``ips`` sees it when the runtime injected it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from cni.plugin import Plugin
from cni.spec import args as cniargs
from cni.spec.errors import CNIError
from cni.spec.model import Model, validate
from cni.spec.request import Request
from cni.spec.result import DNS, Interface, Result

from . import _iface

TYPE = "macvlan"

# IFLA_MACVLAN_MODE values (linux/if_link.h MACVLAN_MODE_*).
MODES: dict[str, int] = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}

# CNI_ARGS keys the reference's MacEnvArgs knows (others need IgnoreUnknown).
KNOWN_CNI_ARGS = frozenset({"MAC"})


class MacvlanConf(Model):
    """The macvlan network config (unknown keys are kept: other plugins/runtimes add their own)."""

    master: str = ""
    mode: str = "bridge"
    mtu: int = Field(0, ge=0, le=65535)
    mac: str = ""
    link_in_container: bool = Field(False, alias="linkInContainer")
    bcqueuelen: int = Field(0, ge=0, le=0xFFFFFFFF)
    ipam: dict[str, Any] = Field(default_factory=dict)
    dns: _iface.DNSConf | None = None

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        v = v or "bridge"  # the reference treats "" as the default
        if v not in MODES:
            raise ValueError(f"unknown macvlan mode {v!r}, expected one of {', '.join(MODES)}")
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
    """What ``parse`` hands to the commands: the validated model plus resolved request inputs."""

    net: MacvlanConf
    mac: str  # "" = let the kernel pick
    ipam_type: str  # "" = L2 only


def parse(req: Request) -> Conf:
    net = validate(MacvlanConf, req.config)
    ipam_type = _iface.ipam_type(net.ipam)
    mac = ""
    # DEL must not fail on inputs only ADD uses (a bad MAC or CNI_ARGS key would leak the IPAM lease).
    if req.command in ("ADD", "CHECK"):
        cniargs.check_known(req.cni_args, KNOWN_CNI_ARGS)
        mac = _iface.requested_mac(req, net.mac)
    return Conf(net, mac, ipam_type)


# ---- ADD -----------------------------------------------------------------------------------


def _master_socket(req: Request, conf: Conf) -> Any:
    """A netlink socket in the namespace where the master lives (pod netns with linkInContainer)."""
    from cni.netlink import in_netns, ipr

    if conf.net.link_in_container:
        return in_netns(req.netns)
    return closing(ipr())


def _where(conf: Conf) -> str:
    return "container network namespace" if conf.net.link_in_container else "host network namespace"


def _enable_bcqueuelen() -> None:
    """Teach pyroute2 (0.9) IFLA_MACVLAN_BC_QUEUE_LEN (7), which its macvlan attribute map lacks.

    Appending to the end keeps every existing index; it is idempotent. pyroute2 compiles a
    class's attribute map once, on first use, so the compiled flag is reset to make the
    longer map take effect in a process (daemon, tests) that already parsed macvlan links.
    """
    from pyroute2.netlink.rtnl import ifinfmsg

    cls = ifinfmsg.macvx_data
    names = [n[0] for n in cls.nla_map]
    if "IFLA_MACVLAN_BC_QUEUE_LEN" not in names and len(names) == 7:
        cls.nla_map = cls.nla_map + (
            ("IFLA_MACVLAN_BC_QUEUE_LEN", "uint32"),
            ("IFLA_MACVLAN_BC_QUEUE_LEN_USED", "uint32"),
        )
        # Subclasses (ifinfo.macvlan_data) inherit the map but carry their own compiled flag;
        # macvtap_data has its own (renamed) copy of the old map and is left alone.
        for sub in (cls, *cls.__subclasses__()):
            if "MACVTAP" not in str(sub.nla_map[1][0]):
                sub._nlmsg_base__compiled_nla = False


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
    from cni.netlink import configure_iface, ipr, link_index, translated

    net = conf.net
    with _master_socket(req, conf) as msock:
        master = net.master or _iface.default_master(msock, where=_where(conf))
        midx, mmtu = _iface.master_link(msock, master, where=_where(conf))
        _iface.check_mtu(net.mtu, master, mmtu)
        spec: dict[str, Any] = {"link": midx, "macvlan_mode": net.mode}
        if net.mtu:
            spec["mtu"] = net.mtu
        if conf.mac:
            spec["address"] = conf.mac
        if net.bcqueuelen:
            _enable_bcqueuelen()
            spec["macvlan_bc_queue_len"] = net.bcqueuelen
        # With linkInContainer the socket already lives in the pod netns: no IFLA_NET_NS_FD.
        _iface.create_link(msock, req.ifname, req.netns, None if net.link_in_container else fd, "macvlan", **spec)
    undo.callback(_iface.delete_link_quietly, req.netns, req.ifname)

    conf_dns = net.dns.to_dns() if net.dns else None
    ipam_res = _iface.ipam_add(req, undo) if conf.ipam_type else None

    with netns.entered(req.netns):
        sock = ipr()
        try:
            idx = link_index(sock, req.ifname)
            if idx is None:  # deleted behind our back between create and configure
                raise CNIError(f"interface {req.ifname!r} disappeared from {req.netns} during ADD", code=105)
            (msg,) = sock.get_links(idx)
            iface = Interface(
                name=req.ifname,
                mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
                sandbox=req.netns,
                mtu=int(msg.get_attr("IFLA_MTU") or 0),
            )
            _iface.set_notify_sysctls(req.ifname)
            if ipam_res is None:
                with translated(f"failed to set {req.ifname} up"):
                    sock.link("set", index=idx, state="up")
                result = Result(cni_version=req.cni_version, interfaces=(iface,), dns=conf_dns or DNS())
            else:
                dns = _iface.merge_dns(ipam_res.dns, conf_dns) if conf_dns else ipam_res.dns
                result = _iface.assign_to(ipam_res, iface, dns).with_(cni_version=req.cni_version)
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
    # The link goes even when IPAM DEL failed: a retried DEL then only has the lease left to free.
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
    from cni.spec.errors import InvalidConfig

    if conf.ipam_type:
        invoke.ipam(req.with_(command="CHECK"))
    prev = _iface.prev_result(req)
    if prev is None:
        raise InvalidConfig("CHECK needs prevResult: the runtime must send the result of ADD")
    mine = _iface.own_interface(prev, req.ifname, req.netns)
    iface_idx = prev.interfaces.index(mine)
    net = conf.net
    with _master_socket(req, conf) as msock:
        master = net.master or _iface.default_master(msock, where=_where(conf))
        midx, _ = _iface.master_link(msock, master, where=_where(conf))
    with netns.entered(req.netns):
        sock = ipr()
        try:
            idx = _iface.verify_link(
                sock, req.ifname, kind="macvlan", mode_key="ifla_macvlan_mode", mode=MODES[net.mode],
                mode_name=net.mode, master_index=midx, mac=mine.mac, mtu=net.mtu,
            )
            ips = [ip for ip in prev.ips if ip.interface == iface_idx]
            _iface.verify_addresses(sock, idx, req.ifname, ips)
            _iface.verify_routes(sock, idx, req.ifname, prev.routes, _iface.gateways(prev))
        finally:
            sock.close()


# ---- STATUS / GC ---------------------------------------------------------------------------


def status(req: Request, conf: Conf) -> None:
    """Ready when our IPAM is ready (SPEC-1.1 STATUS: delegate to IPAM)."""
    from cni import invoke

    if conf.ipam_type:
        invoke.ipam(req)


def gc(req: Request, conf: Conf) -> None:
    """Forward GC to IPAM; the links themselves vanish with their namespaces."""
    from cni import invoke

    if conf.ipam_type:
        invoke.ipam(req)


PLUGIN = Plugin(TYPE, parse, add, delete, check, status, gc, capabilities=frozenset({"mac"}))
