"""macvlan: give the pod an L2 sub-interface of a node uplink (the ``master``).

Rules (reference: containernetworking/plugins plugins/main/macvlan; its bugs we avoid: cni/ARCHITECTURE.md):
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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cni.plugin import Plugin
from cni.spec import args as cniargs
from cni.spec.request import Request
from cni.spec.result import DNS, Result

from . import _iface

if TYPE_CHECKING:
    from ._confs import MacvlanConf  # pydantic: imported by ``parse`` only, never on DEL

TYPE = "macvlan"

MODES = _iface.MACVLAN_MODES

# CNI_ARGS keys the reference's MacEnvArgs knows (others need IgnoreUnknown).
KNOWN_CNI_ARGS = frozenset({"MAC"})


@dataclass(frozen=True)
class Conf:
    """What ``parse`` hands to the commands: the validated model plus resolved request inputs."""

    net: MacvlanConf
    mac: str  # "" = let the kernel pick
    ipam_type: str  # "" = L2 only


def parse(req: Request) -> Conf:
    from cni.spec.model import validate

    from ._confs import MacvlanConf

    net = validate(MacvlanConf, req.config)
    ipam_type = _iface.ipam_type(net.ipam)
    mac = ""
    # DEL must not fail on inputs only ADD uses (a bad MAC or CNI_ARGS key would leak the IPAM lease).
    if req.command in ("ADD", "CHECK"):
        cniargs.check_known(req.cni_args, KNOWN_CNI_ARGS)
        mac = _iface.requested_mac(req, net.mac)
    return Conf(net, mac, ipam_type)


# ---- ADD -----------------------------------------------------------------------------------


def _enable_bcqueuelen() -> None:
    """Teach pyroute2 (0.9) IFLA_MACVLAN_BC_QUEUE_LEN (7), which its macvlan attribute map lacks.

    Appending to the end keeps every existing index; it is idempotent. pyroute2 compiles a
    class's attribute map once, on first use, so the compiled flag is reset to make the
    longer map take effect in a process (daemon, tests) that already parsed macvlan links.
    """
    from cni.netlink.rtnl import pyroute2_module

    cls = pyroute2_module("pyroute2.netlink.rtnl.ifinfmsg").macvx_data
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
    net = conf.net
    spec: dict[str, Any] = {"macvlan_mode": net.mode}
    if conf.mac:
        spec["address"] = conf.mac
    if net.bcqueuelen:
        _enable_bcqueuelen()
        spec["macvlan_bc_queue_len"] = net.bcqueuelen
    with _iface.undo_on_failure(req) as (fd, undo):
        _iface.create_in_pod(
            req, fd, undo, kind="macvlan", master=net.master, link_in_container=net.link_in_container, mtu=net.mtu, **spec
        )
        ipam_res = _iface.ipam_add(req, undo) if conf.ipam_type else None
        result = _iface.finish_in_pod(req, ipam_res, net.dns.to_dns() if net.dns else DNS())
    return result


# ---- DEL -----------------------------------------------------------------------------------


def delete(req: Request, conf: Conf) -> None:
    _iface.delete_ipam_then_link(req, conf.ipam_type)


def delete_only(req: Request) -> None:
    """DEL without ``parse``: it needs ``ipam.type`` and nothing else of the config."""
    _iface.delete_ipam_then_link(req, _iface.ipam_type_for_delete(req.config))


# ---- CHECK ---------------------------------------------------------------------------------


def check(req: Request, conf: Conf) -> None:
    prev, mine = _iface.check_prev(req, conf.ipam_type, _iface.prev_result(req))
    net = conf.net
    midx, _ = _iface.find_master(req, net.master, link_in_container=net.link_in_container)
    _iface.check_in_pod(
        req, prev, mine, kind="macvlan", mode_key="ifla_macvlan_mode", mode=MODES[net.mode],
        mode_name=net.mode, master_index=midx, mtu=net.mtu,
    )


# ---- STATUS / GC ---------------------------------------------------------------------------


def status(req: Request, conf: Conf) -> None:
    """Ready when our IPAM is ready (SPEC-1.1 STATUS: delegate to IPAM)."""
    _iface.ipam_only(req, conf.ipam_type)


def gc(req: Request, conf: Conf) -> None:
    """Forward GC to IPAM; the links themselves vanish with their namespaces."""
    _iface.ipam_only(req, conf.ipam_type)


PLUGIN = Plugin(TYPE, parse, add, delete, check, status, gc, capabilities=frozenset({"mac"}), delete_only=delete_only)
