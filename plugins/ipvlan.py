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
from typing import TYPE_CHECKING

from cni.plugin import Plugin
from cni.spec.errors import InvalidConfig
from cni.spec.request import Request
from cni.spec.result import DNS, Result

from . import _iface

if TYPE_CHECKING:
    from ._confs import IpvlanConf  # pydantic: imported by ``parse`` only, never on DEL

TYPE = "ipvlan"

MODES = _iface.IPVLAN_MODES


@dataclass(frozen=True)
class Conf:
    net: IpvlanConf
    master: str  # "" = the default-route interface, resolved in add/check
    ipam_type: str
    prev: Result | None


def parse(req: Request) -> Conf:
    from cni.spec.model import validate

    from ._confs import IpvlanConf

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


def delete_only(req: Request) -> None:
    """DEL without ``parse``: it needs ``ipam.type`` and nothing else of the config (not the master,
    not prevResult)."""
    _iface.delete_ipam_then_link(req, _iface.ipam_type_for_delete(req.config))


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


PLUGIN = Plugin(TYPE, parse, add, delete, check, status, gc, delete_only=delete_only)
