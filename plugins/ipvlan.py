"""ipvlan: give the pod an L3 (or L2) sub-interface sharing the MAC of a node uplink.

Rules (reference: containernetworking/plugins plugins/main/ipvlan; its bugs we avoid: cni/ARCHITECTURE.md):
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

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from cni.plugin import Plugin
from cni.spec.errors import InvalidConfig
from cni.spec.model import Model, validate
from cni.spec.request import Request
from cni.spec.result import DNS, Result

from . import _iface

TYPE = "ipvlan"

# IFLA_IPVLAN_MODE values (linux/if_link.h IPVLAN_MODE_*).
MODES: dict[str, int] = {"l2": 0, "l3": 1, "l3s": 2}


class IpvlanConf(Model):
    master: _iface.MasterName = ""
    mode: Annotated[str, _iface.mode_of("ipvlan", MODES, default="l2")] = "l2"
    mtu: int = Field(0, ge=0, le=65535)
    link_in_container: bool = Field(False, alias="linkInContainer")
    ipam: dict[str, Any] = Field(default_factory=dict)
    dns: _iface.DNSConf | None = None


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


# ---- ADD -----------------------------------------------------------------------------------


def add(req: Request, conf: Conf) -> Result:
    net = conf.net
    with _iface.undo_on_failure(req) as (fd, undo):
        _iface.create_in_pod(
            req, fd, undo, kind="ipvlan", master=conf.master, link_in_container=net.link_in_container, mtu=net.mtu,
            ipvlan_mode=MODES[net.mode],
        )
        if conf.ipam_type:
            base = _iface.ipam_add(req, undo)
        else:
            assert conf.prev is not None  # parse guarantees it
            base = conf.prev
        result = _iface.finish_in_pod(req, base, net.dns.to_dns() if net.dns else DNS())
    return result


# ---- DEL -----------------------------------------------------------------------------------


def delete(req: Request, conf: Conf) -> None:
    _iface.delete_ipam_then_link(req, conf.ipam_type)


# ---- CHECK ---------------------------------------------------------------------------------


def check(req: Request, conf: Conf) -> None:
    prev, mine = _iface.check_prev(req, conf.ipam_type, conf.prev)
    net = conf.net
    # In CHECK the prevResult is our own ADD result, so its single interface is the ipvlan
    # itself, not the master: without an explicit master we cannot tell whether ADD used a
    # chained master or the default route, so only an explicit master is checked.
    midx: int | None = None
    if net.master:
        midx, _ = _iface.find_master(req, net.master, link_in_container=net.link_in_container)
    _iface.check_in_pod(
        req, prev, mine, kind="ipvlan", mode_key="ifla_ipvlan_mode", mode=MODES[net.mode],
        mode_name=net.mode, master_index=midx, mtu=net.mtu,
    )


def status(req: Request, conf: Conf) -> None:
    _iface.ipam_only(req, conf.ipam_type)


def gc(req: Request, conf: Conf) -> None:
    _iface.ipam_only(req, conf.ipam_type)


PLUGIN = Plugin(TYPE, parse, add, delete, check, status, gc)
