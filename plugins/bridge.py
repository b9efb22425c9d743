"""bridge: plug the pod into a Linux bridge on the node through a veth pair.

Rules (reference: containernetworking/plugins plugins/main/bridge; its bugs we avoid: cni/ARCHITECTURE.md):
- ``parse`` is pure: keys, ranges (vlan 0–4094, vlanTrunk ids 1–4094, vlan and vlanTrunk are
  exclusive), ``ipMasqBackend``, MAC precedence (runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC).
  hairpinMode+promiscMode and IPAM+disableContainerInterface are refused by ADD (error 7), as in the
  reference; DEL of such a config still cleans up.
- ADD: ensure the bridge (created if missing, with ``mtu`` and, for vlan/vlanTrunk, vlan_filtering;
  never deleted — other pods share it, and the reference keeps it too), then create the veth pair
  with the container end created DIRECTLY in the pod netns under CNI_IFNAME (IFLA_NET_NS_FD on the
  peer: no create-then-move) and the host end ``veth<8 hex>`` enslaved to the bridge with hairpin,
  isolation and VLANs set. Then spoof check, IPAM, addresses/routes in the pod, gateway address on
  the bridge (isGateway) + forwarding, masquerade (ipMasq). Every step registers its undo; on any
  failure the veth, the IPAM reservation, the masquerade and spoof-check rules are removed (the
  reference leaves the veth, plugins#29). The bridge, its gateway address and ip_forward are node
  state shared with other pods and are not undone.
- Result: interfaces [bridge, host veth, container veth (+ the ``<bridge>.<vlan>`` gateway port
  with isGateway+vlan)], ips[].interface = 2, IPAM's routes (+ default route with
  isDefaultGateway) and IPAM's DNS with the config's ``dns`` fields over it.
- DEL: delete the pod end (the host end goes with it), IPAM DEL (also when the netns is gone),
  masquerade rules (found by chain name/comment: no addresses needed, so they are removed even
  when the netns is gone — the reference leaks them then), spoof-check rules. Every step runs
  even when an earlier one failed; "not found" is success.
- CHECK: IPAM CHECK, bridge (kind, MAC, promisc), pod veth (kind, MAC, MTU), its host peer
  enslaved to the bridge, addresses, routes (in any table: sbr moves them, plugins#297).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cni.plugin import Plugin, valid_attachments
from cni.spec import args as cniargs
from cni.spec.errors import CheckFailed, InterfaceExists, InvalidConfig, KernelError, NotFound
from cni.spec.request import Request
from cni.spec.result import DNS, Interface, IPConfig, Result, Route

from . import _delconf, _iface

if TYPE_CHECKING:
    from types import ModuleType


def _masq_mod() -> ModuleType:
    """plugins._masq pulls in subprocess and hashlib; only ipMasq/macspoofchk configs need it."""
    from . import _masq

    return _masq

if TYPE_CHECKING:
    from cni.netlink.rtnl import Rtnl

    from ._confs import BridgeConf, VlanTrunk  # pydantic: imported by ``parse`` only, never on DEL

TYPE = "bridge"
DEFAULT_BRIDGE = _iface.DEFAULT_BRIDGE
KNOWN_CNI_ARGS = frozenset({"MAC"})

IFF_UP = 0x1
IFF_PROMISC = 0x100
IF_OPER_UP = "UP"  # pyroute2 decodes IFLA_OPERSTATE to its name
BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
# The reference polls the host veth's operstate with these pauses (ms) before giving up.
_OPER_UP_WAITS = (0.0, 0.05, 0.5, 1.0, 1.0)


# ---- config (PURE) ----------------------------------------------------------------------------


def trunk_vlans(entries: list[VlanTrunk] | None) -> tuple[int, ...]:
    """The sorted set of VLAN ids a ``vlanTrunk`` list names (reference collectVlanTrunk). Error 7 on bad ranges."""
    if not entries:
        return ()
    vids: set[int] = set()
    for i, e in enumerate(entries):
        where = f"vlanTrunk[{i}]"
        if (e.min_id is None) != (e.max_id is None):
            missing = "minID" if e.min_id is None else "maxID"
            raise InvalidConfig(f"invalid network config field {where!r}: minID and maxID must be set together, {missing} is missing")
        if e.min_id is not None and e.max_id is not None:
            for key, v in (("minID", e.min_id), ("maxID", e.max_id)):
                if not 1 <= v <= 4094:
                    raise InvalidConfig(f"invalid network config field '{where}.{key}': {v} is not a VLAN id (1-4094)")
            if e.max_id < e.min_id:
                raise InvalidConfig(f"invalid network config field {where!r}: minID {e.min_id} is greater than maxID {e.max_id}")
            vids.update(range(e.min_id, e.max_id + 1))
        if e.id is not None:
            if not 1 <= e.id <= 4094:
                raise InvalidConfig(f"invalid network config field '{where}.id': {e.id} is not a VLAN id (1-4094)")
            vids.add(e.id)
    return tuple(sorted(vids))


@dataclass(frozen=True)
class Conf:
    """What ``parse`` hands to the commands."""

    net: BridgeConf
    name: str
    bridge: str
    is_gateway: bool  # isDefaultGateway implies isGateway
    trunk: tuple[int, ...]
    mac: str
    ipam_type: str
    dns: DNS | None

    @property
    def vlan_filtering(self) -> bool:
        return self.net.vlan != 0 or self.net.vlan_trunk is not None


def parse(req: Request) -> Conf:
    from cni.spec.model import validate

    from ._confs import BridgeConf

    net = validate(BridgeConf, req.config)
    trunk = trunk_vlans(net.vlan_trunk)
    if net.vlan and trunk:
        raise InvalidConfig("cannot set vlan and vlanTrunk at the same time", "use vlan for an access port or vlanTrunk for a trunk port")
    if req.command in ("ADD", "CHECK"):
        # DEL must not fail on inputs only ADD uses: refusing it would leak the veth and lease.
        cniargs.check_known(req.cni_args, KNOWN_CNI_ARGS)
    return Conf(
        net=net,
        name=req.network_name,
        bridge=net.bridge or DEFAULT_BRIDGE,
        is_gateway=net.is_gateway or net.is_default_gateway,
        trunk=trunk,
        mac=_iface.requested_mac(req, ""),
        ipam_type=_iface.ipam_type(net.ipam),
        dns=net.dns.to_dns() if net.dns is not None else None,
    )


def gateway_of(addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The first address of the subnet (reference calcGatewayIP)."""
    return addr.network.network_address + 1


def plan_l3(ipam: Result, conf: Conf) -> Result:
    """The result's IPs/routes after the gateway rules (reference calcGateways). PURE.

    Every IP is on the container veth (index 2); with isGateway an IP without gateway gets the
    subnet's first address; with isDefaultGateway each family without a default route via a
    gateway gets one via its first IP's gateway.
    """
    ips: list[IPConfig] = []
    routes = list(ipam.routes)
    has_default: set[int] = set()
    for ip in ipam.ips:
        gw = ip.gateway
        if gw is None and conf.is_gateway:
            gw = gateway_of(ip.address)
        ips.append(IPConfig(ip.address, gw, 2))
        if conf.net.is_default_gateway and ip.version not in has_default:
            if not any(r.gw is not None and r.dst.prefixlen == 0 and r.dst.version == ip.version for r in routes):
                routes.append(Route(dst=ipaddress.ip_network("0.0.0.0/0" if ip.version == 4 else "::/0"), gw=gw))
            has_default.add(ip.version)
    return ipam.with_(ips=tuple(ips), routes=tuple(routes))


def bridge_gateways(ips: tuple[IPConfig, ...]) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The gateway addresses (with the pod's prefix) to put on the bridge, in order, without repeats."""
    out: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    for ip in ips:
        if ip.gateway is None:
            continue
        gw = ipaddress.ip_interface(f"{ip.gateway}/{ip.address.network.prefixlen}")
        if gw not in out:
            out.append(gw)
    return out


def random_veth_name() -> str:
    # "veth" prefix: NetworkManager ignores such devices (same naming as the reference).
    # os.urandom is what secrets.token_hex(4) reads, without importing hmac/random (start-up: rule 10).
    return "veth" + os.urandom(4).hex()


# ---- kernel helpers (host side) -----------------------------------------------------------------


def _get(sock: Rtnl, name: str) -> Any | None:
    """The link message of ``name`` (one targeted RTM_GETLINK, not a dump), or None when absent.

    Every netlink round trip costs ~1.5 ms through pyroute2, so ADD reads each link as few times
    as it can and takes index, kind, flags, MAC and MTU from the same message.
    """
    from cni.netlink import netlink_error

    NetlinkError = netlink_error()

    try:
        return sock.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _as_interface(msg: Any, name: str, sandbox: str = "") -> Interface:
    """A result interface with the kernel's MAC and MTU (the MTU reaches the wire only for 1.1.0)."""
    return Interface(name=name, mac=str(msg.get_attr("IFLA_ADDRESS") or ""), sandbox=sandbox, mtu=int(msg.get_attr("IFLA_MTU") or 0))


def _quiet_sysctl(key: str, value: str) -> None:
    from cni.netlink import write_sysctl

    try:
        write_sysctl(key, value)
    except OSError:
        pass  # e.g. IPv6 disabled: the key does not exist


def ensure_bridge(sock: Rtnl, conf: Conf) -> int:
    """The bridge's index; created (mtu, vlan_filtering) when missing, set promisc/up either way."""
    from cni.netlink import netlink_error, translated

    NetlinkError = netlink_error()

    name = conf.bridge
    with translated(f"failed to look up bridge {name!r}"):
        msg = _get(sock, name)
    if msg is None:
        spec: dict[str, Any] = {}
        if conf.net.mtu:
            spec["mtu"] = conf.net.mtu
        if conf.vlan_filtering:
            spec["br_vlan_filtering"] = 1
        with translated(f"failed to create bridge {name!r}"):
            try:
                sock.link("add", ifname=name, kind="bridge", **spec)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # another ADD created it concurrently — use it
                    raise
            msg = _get(sock, name)
        if msg is None:
            raise NotFound(f"bridge {name!r} vanished right after it was created")
    kind = _kind(msg)
    if kind != "bridge":
        raise InvalidConfig(
            f"{name!r} already exists but is not a bridge (it is a {kind or 'plain'} interface)",
            "set 'bridge' to the name of a Linux bridge, or to a free name for the plugin to create one",
        )
    idx = int(msg["index"])
    if conf.net.promisc_mode and not msg["flags"] & IFF_PROMISC:
        with translated(f"failed to set promiscuous mode on {name!r}"):
            sock.link("set", index=idx, flags=IFF_PROMISC, change=IFF_PROMISC)
    _quiet_sysctl(f"net/ipv6/conf/{name}/accept_ra", "0")  # we own the routes of this interface
    if not msg["flags"] & IFF_UP:
        with translated(f"failed to set bridge {name!r} up"):
            sock.link("set", index=idx, state="up")
    return idx


def port_vlans(sock: Rtnl, index: int) -> list[int]:
    """The VLAN ids configured on bridge port ``index``."""
    out: list[int] = []
    for msg in sock.get_vlans():
        if msg["index"] != index:
            continue
        spec = msg.get_attr("IFLA_AF_SPEC")
        if spec is None:
            continue
        for name, value in spec["attrs"]:
            if name == "IFLA_BRIDGE_VLAN_INFO":
                out.append(int(value["vid"]))
    return out


def setup_port(sock: Rtnl, host_idx: int, host_name: str, br_idx: int, br_name: str, *, hairpin: bool, isolated: bool,
               vlan: int, trunk: tuple[int, ...], preserve_default_vlan: bool) -> None:
    """Enslave the host veth (just created: a new port) to the bridge, set its port flags and VLANs, bring it up."""
    from cni.netlink import translated

    with translated(f"failed to connect {host_name!r} to bridge {br_name!r}"):
        # Up in the same request: the port starts forwarding once VLANs/flags below are set,
        # and no frame can pass before the peer in the pod is up and addressed anyway.
        sock.link("set", index=host_idx, master=br_idx, state="up")
    if hairpin or isolated:
        # IFLA_BRPORT_MODE is the hairpin flag; set both as the reference does. Both off is what the kernel
        # gives a new port (br_add_if: new_nbp), so then the request would change nothing (≈ 0.3 ms saved).
        with translated(f"failed to set hairpin mode / port isolation on {host_name!r}"):
            sock.brport("set", index=host_idx, mode=int(hairpin), isolated=int(isolated))
    if (vlan or trunk) and not preserve_default_vlan:
        with translated(f"failed to remove default vlan on interface {host_name!r}"):
            for vid in port_vlans(sock, host_idx):
                sock.vlan_filter("del", index=host_idx, vlan_info={"vid": vid})
    with translated(f"failed to setup vlan tag on interface {host_name!r}"):
        if vlan:
            sock.vlan_filter("add", index=host_idx, vlan_info={"vid": vlan, "flags": BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED})
        for vid in trunk:
            sock.vlan_filter("add", index=host_idx, vlan_info={"vid": vid})
    _quiet_sysctl(f"net/ipv6/conf/{host_name}/accept_ra", "0")


def create_veth(sock: Rtnl, ifname: str, netns_path: str, netns_fd: int, mtu: int, mac: str) -> str:
    """Create the pair: host end ``veth<hex>`` here, peer ``ifname`` directly in the pod netns. Returns the host name."""
    from cni.netlink import netlink_error, translated

    NetlinkError = netlink_error()

    peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": netns_fd}
    spec: dict[str, Any] = {}
    if mtu:
        spec["mtu"] = peer["mtu"] = mtu
    if mac:
        peer["address"] = mac
    for _ in range(10):
        host = random_veth_name()
        with translated(f"failed to create veth pair {host!r} <-> {ifname!r} in {netns_path}"):
            try:
                sock.link("add", ifname=host, kind="veth", peer=peer, **spec)
                return host
            except NetlinkError as exc:
                # EEXIST: the random host name is taken (retry) — the pod name was checked free before.
                if exc.code != errno.EEXIST or _get(sock, host) is None:
                    raise
    raise KernelError("failed to find a free name for the host end of the veth pair")


def ensure_gateway_address(sock: Rtnl, idx: int, name: str, gw: ipaddress.IPv4Interface | ipaddress.IPv6Interface, force: bool) -> None:
    """Put ``gw`` on the bridge (reference ensureAddr).

    IPv4: one address per bridge — a different one is an error unless forceAddress replaces it.
    IPv6: several are fine unless their subnets overlap.
    """
    import socket

    from cni.netlink import netlink_error, translated

    NetlinkError = netlink_error()

    family = socket.AF_INET if gw.version == 4 else socket.AF_INET6
    with translated(f"could not get the IP addresses of {name!r}"):
        existing = [
            ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in sock.get_addr(index=idx, family=family)
        ]
    for a in existing:
        if a == gw:
            return
        if gw.version == 4 or a.ip in gw.network or gw.ip in a.network:
            if not force:
                raise InvalidConfig(
                    f"{name!r} already has an IP address different from {gw}",
                    f"it has {a}; set forceAddress to replace it, or use another bridge for this subnet",
                )
            with translated(f"could not remove IP address {a} from {name!r}"):
                sock.addr("del", index=idx, address=str(a.ip), prefixlen=a.network.prefixlen)
    with translated(f"could not add IP address {gw} to {name!r}"):
        kw: dict[str, Any] = {}
        if gw.version == 4:
            kw["broadcast"] = str(gw.network.broadcast_address)
        try:
            sock.addr("add", index=idx, address=str(gw.ip), prefixlen=gw.network.prefixlen, **kw)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    # Pin the bridge's MAC: otherwise it follows the lowest port MAC and changes as pods come and go.
    with translated(f"could not set the MAC of {name!r}"):
        (msg,) = sock.get_links(idx)
        sock.link("set", index=idx, address=msg.get_attr("IFLA_ADDRESS"))


def enable_forwarding(version: int) -> None:
    from cni.netlink import read_sysctl, translated, write_sysctl

    key = "net/ipv4/ip_forward" if version == 4 else "net/ipv6/conf/all/forwarding"
    with translated("failed to enable forwarding"):
        if read_sysctl(key) != "1":
            write_sysctl(key, "1")


def ensure_vlan_gateway_port(sock: Rtnl, conf: Conf, br_idx: int) -> tuple[int, str]:
    """isGateway with vlan: the gateway lives on ``<bridge>.<vlan>``, a veth whose peer is an access port of that VLAN.

    Shared by every pod of the VLAN, so like the bridge it is never removed by us.
    """
    from cni.netlink import link_index, translated

    name = f"{conf.bridge}.{conf.net.vlan}"
    problem = cniargs.ifname_problem(name)
    if problem:
        raise InvalidConfig(f"cannot create the VLAN gateway interface {name!r}: {problem}", "use a shorter bridge name")
    idx = link_index(sock, name)
    if idx is None:
        peer_name = None
        for _ in range(10):
            cand = random_veth_name()
            if link_index(sock, cand) is None:
                peer_name = cand
                break
        if peer_name is None:
            raise KernelError("failed to find a free name for the VLAN gateway veth")
        spec: dict[str, Any] = {}
        if conf.net.mtu:
            spec["mtu"] = conf.net.mtu
        with translated(f"failed to create vlan gateway {name!r}"):
            sock.link("add", ifname=peer_name, kind="veth", peer={"ifname": name, **spec}, **spec)
        peer_idx = link_index(sock, peer_name)
        idx = link_index(sock, name)
        if peer_idx is None or idx is None:
            raise NotFound(f"vlan gateway {name!r} vanished right after it was created")
        setup_port(sock, peer_idx, peer_name, br_idx, conf.bridge, hairpin=False, isolated=False, vlan=conf.net.vlan,
                   trunk=(), preserve_default_vlan=conf.net.preserve_default_vlan)
        with translated(f"failed to set {name!r} up"):
            sock.link("set", index=idx, state="up")
    return idx, name


def _wait_oper_up(sock: Rtnl, idx: int, name: str) -> Any:
    """Poll the host veth until it is operationally up (as the reference does); returns its last message."""
    for pause in _OPER_UP_WAITS:
        if pause:
            time.sleep(pause)
        (msg,) = sock.get_links(idx)
        if msg.get_attr("IFLA_OPERSTATE") == IF_OPER_UP:
            return msg
    raise KernelError(f"bridge port {name!r} did not come up", f"operstate {msg.get_attr('IFLA_OPERSTATE')}")


def _delete_link(sock: Rtnl, idx: int) -> None:
    sock.link("del", index=idx)


def _iface_of(sock: Rtnl, idx: int, name: str, sandbox: str = "") -> Interface:
    (msg,) = sock.get_links(idx)
    return _as_interface(msg, name, sandbox)


# ---- commands ---------------------------------------------------------------------------------


def add(req: Request, conf: Conf) -> Result:
    """ADD in the reference's steps: the pod side is free, the bridge, the veth on it, L3 in the pod, the gateway."""
    from cni import netns
    from cni.netlink import ipr, link_index, translated

    net = conf.net
    if net.hairpin_mode and net.promisc_mode:
        raise InvalidConfig("cannot set hairpin mode and promiscuous mode at the same time", "set only one of hairpinMode and promiscMode")
    if conf.ipam_type and net.disable_container_interface:
        raise InvalidConfig("cannot use IPAM when disableContainerInterface is set", "remove the ipam section or disableContainerInterface")

    with ExitStack() as res, ExitStack() as undo:
        # The pod side first: a missing netns or a taken CNI_IFNAME must fail before the node
        # is touched (not even the bridge gets created then).
        with netns.entered(req.netns):
            pod = ipr()
        res.callback(pod.close)
        if link_index(pod, req.ifname) is not None:  # existence only: no link message to decode
            raise InterfaceExists(
                f"interface {req.ifname!r} already exists in network namespace {req.netns}",
                "CNI ADD needs a free CNI_IFNAME: pick another interface name or remove the old attachment",
            )
        host = ipr()
        res.callback(host.close)
        br_idx = ensure_bridge(host, conf)
        fd = netns.open_fd(req.netns)
        res.callback(os.close, fd)
        veth = _setup_veth(req, conf, host, pod, fd, br_idx, undo)
        result = Result(cni_version=req.cni_version)
        extra: list[Interface] = []
        if conf.ipam_type:
            result = _setup_l3(req, conf, pod, veth, undo)
            if conf.is_gateway:
                extra = _setup_gateway(host, conf, br_idx, result)
            if net.ip_masq:
                addrs = [ip.address for ip in result.ips]
                undo.callback(_iface.quietly, "masquerade teardown", _masq_mod().teardown, conf.name, req.ifname, req.container_id)
                _masq_mod().setup(net.ip_masq_backend, addrs, conf.name, req.ifname, req.container_id)
        elif not net.disable_container_interface:
            with translated(f"failed to set {req.ifname!r} up"):
                pod.link("set", index=veth.cont_idx, state="up")

        if not net.disable_container_interface:
            host_msg = _wait_oper_up(host, veth.host_idx, veth.host_name)
        else:
            (host_msg,) = host.get_links(veth.host_idx)
        # The bridge's MAC can change while ports come and go (until a gateway address pins it): read it last.
        interfaces = (_iface_of(host, br_idx, conf.bridge), _as_interface(host_msg, veth.host_name), veth.cont, *extra)
        dns = _iface.merge_dns(result.dns, conf.dns) if conf.dns is not None else result.dns
        result = result.with_(cni_version=req.cni_version, interfaces=interfaces, dns=dns)
        undo.pop_all()
        return result
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


@dataclass(frozen=True)
class _Veth:
    """The pair ``_setup_veth`` made: the host end (on the bridge) and the pod end (``CNI_IFNAME``)."""

    host_idx: int
    host_name: str
    cont_idx: int
    cont: Interface


def _setup_veth(req: Request, conf: Conf, host: Rtnl, pod: Rtnl, fd: int, br_idx: int, undo: ExitStack) -> _Veth:
    """The veth pair, its host end a port of the bridge (hairpin, isolation, VLANs), and the MAC spoof check
    (reference setupVeth); its deletion is registered on ``undo``."""
    net = conf.net
    from cni.netlink import link_index

    host_name = create_veth(host, req.ifname, req.netns, fd, net.mtu, conf.mac)
    host_idx = link_index(host, host_name)  # the index only: its link message is read once it is up
    if host_idx is None:
        raise NotFound(f"host veth {host_name!r} vanished right after it was created")
    # Deleting one end deletes both: this also removes the pod end.
    undo.callback(_iface.quietly, f"deleting {host_name}", _delete_link, host, host_idx)
    cont_msg = _get(pod, req.ifname)
    if cont_msg is None:
        raise NotFound(f"interface {req.ifname!r} vanished from {req.netns} right after it was created")
    veth = _Veth(host_idx, host_name, int(cont_msg["index"]), _as_interface(cont_msg, req.ifname, req.netns))
    setup_port(host, host_idx, host_name, br_idx, conf.bridge, hairpin=net.hairpin_mode, isolated=net.port_isolation,
               vlan=net.vlan, trunk=conf.trunk, preserve_default_vlan=net.preserve_default_vlan)
    if net.macspoofchk:
        # Undo registered first: a setup that fails half-way leaves rules too (teardown is idempotent).
        undo.callback(_iface.quietly, "spoof-check teardown", _masq_mod().spoofcheck_teardown, req.container_id, req.ifname)
        _masq_mod().spoofcheck_setup(host_name, veth.cont.mac, req.container_id, req.ifname)
    return veth


def _setup_l3(req: Request, conf: Conf, pod: Rtnl, veth: _Veth, undo: ExitStack) -> Result:
    """IPAM ADD (its DEL registered on ``undo``), the gateways (reference calcGateways), and the addresses and
    routes on the pod end, with DAD and ARP notify as configured."""
    from cni import netns
    from cni.netlink import configure_iface

    result = plan_l3(_iface.ipam_add(req, undo), conf)
    with netns.entered(req.netns):
        if conf.net.enabledad:
            _quiet_sysctl(f"net/ipv6/conf/{req.ifname}/enhanced_dad", "1")
            _quiet_sysctl(f"net/ipv6/conf/{req.ifname}/accept_dad", "1")
        else:
            _quiet_sysctl(f"net/ipv6/conf/{req.ifname}/accept_dad", "0")
        _quiet_sysctl(f"net/ipv4/conf/{req.ifname}/arp_notify", "1")
        configure_iface(pod, veth.cont_idx, req.ifname, result, 2)
    return result


def _setup_gateway(host: Rtnl, conf: Conf, br_idx: int, result: Result) -> list[Interface]:
    """isGateway: the gateway addresses on the bridge (or on ``<bridge>.<vlan>``) and forwarding on.

    Node state shared with other pods: not undone. Returns the extra interface of a VLAN gateway port.
    """
    gws = bridge_gateways(result.ips)
    extra: list[Interface] = []
    gw_idx, gw_name = br_idx, conf.bridge
    if gws and conf.net.vlan:
        gw_idx, gw_name = ensure_vlan_gateway_port(host, conf, br_idx)
        extra.append(_iface_of(host, gw_idx, gw_name))
    for gw in gws:
        ensure_gateway_address(host, gw_idx, gw_name, gw, conf.net.force_address)
    for version in sorted({gw.version for gw in gws}):
        enable_forwarding(version)
    return extra


@dataclass(frozen=True)
class DelConf:
    """What DEL acts on: the network name (masquerade rules are named from it), the IPAM, and
    whether ADD set up ipMasq and the spoof check (their teardown reads the tables: skipped when off)."""

    name: str
    ipam_type: str
    macspoofchk: bool
    ip_masq: bool


# JSON field → Go nilable, of the keys DEL reads (_delconf; ``ipam`` is read by _iface).
_DEL_FIELDS = {"ipMasq": False, "macspoofchk": False}


def read_for_delete(req: Request) -> DelConf:
    """``DelConf`` read without the pydantic model; ``_delconf.Malformed`` when a key is bad."""
    doc = _delconf.fields(req.config, _DEL_FIELDS)
    try:
        ipam_type = _iface.ipam_type_for_delete(req.config)
    except InvalidConfig as exc:
        raise _delconf.Malformed(str(exc)) from None
    return DelConf(req.network_name, ipam_type, _delconf.get_bool(doc, "macspoofchk", False),
                   _delconf.get_bool(doc, "ipMasq", False))


def del_conf(conf: Conf) -> DelConf:
    """The same values taken from the full parse."""
    return DelConf(conf.name, conf.ipam_type, conf.net.macspoofchk, conf.net.ip_masq)


def delete_only(req: Request) -> None:
    """DEL without ``parse``: the bridge itself stays (it is shared), so its name, VLANs and MTU are not needed."""
    _delete(req, _delconf.read_or_parse(req, read_for_delete, lambda r: del_conf(parse(r))))


def delete(req: Request, conf: Conf) -> None:
    _delete(req, del_conf(conf))


def _delete(req: Request, conf: DelConf) -> None:
    steps = _iface.Steps()
    # The pod end first (its host peer goes with it), then IPAM: an address is never handed out
    # again while still configured in a pod. A gone netns took the veth with it. In a pod DEL's batch
    # the pod's links registered so far go with it (one kernel batch) before the address is released.
    steps.run(lambda: _iface.delete_pod_link(req, before_next_step=bool(conf.ipam_type)))
    if conf.ipam_type:
        steps.run(_iface.ipam_del, req)
    if conf.macspoofchk:
        steps.run(_masq_mod().spoofcheck_teardown, req.container_id, req.ifname)
    if conf.ipam_type and conf.ip_masq:
        steps.run(_masq_mod().teardown, conf.name, req.ifname, req.container_id, _masq_mod().prev_addrs(req))
    steps.raise_all()


def check(req: Request, conf: Conf) -> None:
    """CHECK: IPAM, then the bridge, the pod end with its addresses and routes, and its host peer on the bridge."""
    from cni import invoke, netns
    from cni.netlink import in_netns, ipr

    if conf.ipam_type:
        invoke.ipam(req.with_(command="CHECK"))
    prev = _iface.prev_result(req)
    if prev is None:
        raise InvalidConfig("required prevResult missing", "CHECK needs the ADD result as prevResult")
    cont = _iface.own_interface(prev, req.ifname, req.netns)
    br_prev = next((i for i in prev.interfaces if i.name == conf.bridge and not i.sandbox), None)
    if br_prev is None:
        raise CheckFailed(f"prevResult has no interface for bridge {conf.bridge!r}")

    with closing(ipr()) as host:
        br_idx = _check_bridge(host, conf, br_prev)
        if not netns.exists(req.netns):
            raise CheckFailed(f"network namespace {req.netns} does not exist")
        with in_netns(req.netns) as pod:
            ca = _iface.verified_link(pod, req.ifname, kind="veth", mac=cont.mac, mtu=conf.net.mtu)
            _check_host_peer(host, conf, req, prev, br_idx, ca.get("link"))
            cont_pos = prev.interfaces.index(cont)
            mine = [ip for ip in prev.ips if ip.interface in (cont_pos, None)]
            _iface.verify_addresses(pod, ca["index"], req.ifname, mine)
            _iface.verify_routes(pod, ca["index"], req.ifname, prev.routes, _iface.gateways(prev))


def _check_bridge(host: Rtnl, conf: Conf, br_prev: Interface) -> int:
    """The bridge is there, a bridge, with prevResult's MAC and the configured promiscuous mode; its index."""
    br = _iface.verified_link(host, conf.bridge, kind="bridge", mac=br_prev.mac, where="the host network namespace",
                              what="bridge")
    if bool(br["flags"] & IFF_PROMISC) != conf.net.promisc_mode:
        raise CheckFailed(f"bridge {conf.bridge!r} promiscuous mode is {bool(br['flags'] & IFF_PROMISC)}, the config says {conf.net.promisc_mode}")
    return int(br["index"])


def _check_host_peer(host: Rtnl, conf: Conf, req: Request, prev: Result, br_idx: int, peer_idx: Any) -> None:
    """The pod end's peer is a host interface of prevResult: a veth enslaved to the bridge, with its MAC and MTU."""
    from cni.netlink import link_index

    for iface in prev.interfaces:
        if iface.sandbox or iface.name in (conf.bridge, req.ifname):
            continue
        idx = link_index(host, iface.name)
        if idx is None or idx != peer_idx:
            continue
        ha = _iface.verified_link(host, iface.name, kind="veth", mac=iface.mac, mtu=conf.net.mtu,
                                  where="the host network namespace", what="host veth")
        if ha.get("master") != br_idx:
            raise CheckFailed(f"host veth {iface.name!r} (the peer of {req.ifname!r}) is not enslaved to bridge {conf.bridge!r}")
        return
    raise CheckFailed(f"the host end of {req.ifname!r} enslaved to bridge {conf.bridge!r} was not found")


def status(req: Request, conf: Conf) -> None:
    from cni import invoke

    if conf.ipam_type:
        invoke.ipam(req.with_(command="STATUS"))


def gc(req: Request, conf: Conf) -> None:
    from cni import invoke

    steps = _iface.Steps()
    if conf.ipam_type:
        steps.run(invoke.ipam, req.with_(command="GC"))
    valid = valid_attachments(req.config)
    if valid is not None and conf.ipam_type and conf.net.ip_masq:
        steps.run(_masq_mod().gc, conf.name, valid)
    steps.raise_all()


PLUGIN = Plugin(TYPE, parse, add, delete, check, status, gc, capabilities=frozenset({"mac"}), delete_only=delete_only)
