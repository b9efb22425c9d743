"""Netlink helpers shared by the native plugins (the I/O boundary to the kernel).

Rules:
- Importing this package does not import pyroute2; the first call does (start-up budget), and
  then only pyroute2's message layer under ``rtnl.Rtnl`` (never ``IPRoute`` nor the package body).
- Sockets for a pod are opened inside ``cni.netns.entered`` and keep that namespace; nothing
  here calls setns itself.
- pyroute2's ``NetlinkError`` and ``OSError`` become CNI errors here (``translated``), with
  messages that say what was being done; callers never see a raw errno.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import netns
from ..spec.errors import CNIError, InterfaceExists, InvalidNetns, KernelError, NotFound
from ..spec.result import IPConfig, Result, Route

if TYPE_CHECKING:
    from .rtnl import NetlinkErrorShape, Rtnl

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_TABLE_MAIN = 254


def netlink_error() -> type[NetlinkErrorShape]:
    """pyroute2's ``NetlinkError`` (for ``except``), without running pyroute2's package ``__init__``."""
    from .rtnl import netlink_error as cls

    return cls()


def ipr() -> Rtnl:
    """A netlink socket in the current thread's namespace."""
    from .rtnl import Rtnl

    return Rtnl()


@contextmanager
def in_netns(path: str) -> Iterator[Rtnl]:
    """A netlink socket bound to the namespace at ``path``; closed on exit."""
    with netns.entered(path):
        sock = ipr()
    try:
        yield sock
    finally:
        sock.close()


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Turn kernel errors raised in the block into CNI errors naming what was being done."""
    from .rtnl import netlink_error

    NetlinkError = netlink_error()
    try:
        yield
    except CNIError:
        raise
    except NetlinkError as exc:
        code = exc.code
        text = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
        if code == errno.EEXIST:
            raise InterfaceExists(f"{doing}: already exists", text) from None
        if code in (errno.ENODEV, errno.ENOENT):
            raise NotFound(f"{doing}: not found", text) from None
        raise KernelError(f"{doing}: {text}", f"netlink error {code}") from None
    except OSError as exc:
        raise KernelError(f"{doing}: {exc.strerror or exc}", f"errno {exc.errno}") from None


def link_index(sock: Rtnl, name: str) -> int | None:
    idx = sock.link_lookup(ifname=name)
    return idx[0] if idx else None


def link_by_name(sock: Rtnl, name: str) -> Any | None:
    """The link message of ``name`` (one RTM_GETLINK), or None when there is none.

    Index, MAC, MTU and flags come from this one message: decoding a link message costs ≈ 1 ms
    in pyroute2, so callers read it once instead of a lookup followed by a get.
    """
    NetlinkError = netlink_error()
    try:
        msgs = sock.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return msgs[0] if msgs else None


def link_attrs(sock: Rtnl, index: int) -> dict[str, Any]:
    """The attributes of a link as a plain dict (IFLA_* names lower-cased without the prefix)."""
    (msg,) = sock.get_links(index)
    out: dict[str, Any] = {"index": index, "flags": msg["flags"]}
    for name, value in msg["attrs"]:
        if name.startswith("IFLA_"):
            out[name[5:].lower()] = value
    info = msg.get_attr("IFLA_LINKINFO")
    if info is not None:
        out["kind"] = info.get_attr("IFLA_INFO_KIND")
        data = info.get_attr("IFLA_INFO_DATA")
        out["info_data"] = {k.lower(): v for k, v in (data["attrs"] if data is not None else [])}
    return out


def default_route_interface(sock: Rtnl) -> str | None:
    """The name of the interface of the IPv4 default route (macvlan/ipvlan default master)."""
    from socket import AF_INET, AF_INET6

    for fam in (AF_INET, AF_INET6):
        for r in sock.get_routes(family=fam, table=RT_TABLE_MAIN):
            if r["dst_len"] == 0 and r.get_attr("RTA_OIF"):
                return sock.link_name(r.get_attr("RTA_OIF"))
    return None


def write_sysctl(key: str, value: str) -> None:
    """Write ``/proc/sys/<key>`` (dots or slashes) in the current thread's namespace."""
    path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key.lstrip("/")
    with open(path, "w") as f:
        f.write(value)


def read_sysctl(key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key.lstrip("/")
    with open(path) as f:
        return f.read().strip()


def _gateways_for(result: Result, iface_idx: int) -> dict[int, Any]:
    gws: dict[int, Any] = {}
    for ip in result.ips:
        if ip.interface == iface_idx and ip.gateway is not None and ip.version not in gws:
            gws[ip.version] = ip.gateway
    return gws


def configure_iface(sock: Rtnl, ifindex: int, ifname: str, result: Result, iface_idx: int | None) -> None:
    """Assign the result's addresses for interface ``iface_idx``, bring the link up, add routes.

    Must run with ``sock`` bound to the pod namespace and the thread inside it (the IPv6
    sysctl is per namespace). Mirrors the reference ``ipam.ConfigureIface``: a route without
    ``gw`` goes via the gateway of its family on this interface.
    """
    mine = [ip for ip in result.ips if ip.interface == iface_idx or (iface_idx is not None and ip.interface is None)]
    if any(ip.version == 6 for ip in mine):
        try:
            write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "0")
        except OSError:
            pass
    with translated(f"failed to add addresses to {ifname}"):
        for ip in mine:
            add_address(sock, ifindex, ip)
    with translated(f"failed to set {ifname} up"):
        sock.link("set", index=ifindex, state="up")
    gws = _gateways_for(result, iface_idx) if iface_idx is not None else {}
    for route in result.routes:
        gw = route.gw if route.gw is not None else gws.get(route.dst.version)
        with translated(f"failed to add route {route.dst} via {gw} dev {ifname}"):
            add_route(sock, ifindex, route, gw)


def add_address(sock: Rtnl, ifindex: int, ip: IPConfig) -> None:
    kw: dict[str, Any] = {}
    if ip.version == 4:
        kw["broadcast"] = str(ip.address.network.broadcast_address)
    # IFA_F_NODAD (0x02) would skip DAD; the reference waits for DAD instead. Keep the kernel default.
    sock.addr("add", index=ifindex, address=str(ip.address.ip), prefixlen=ip.address.network.prefixlen, **kw)


def add_route(sock: Rtnl, ifindex: int, route: Route, gw: Any, *, table: int | None = None) -> None:
    # RTPROT_BOOT (3), as netlink libraries default to and the reference plugins' routes carry;
    # pyroute2 would say "static", which makes ``ip route`` output differ from the reference.
    spec: dict[str, Any] = {"dst": str(route.dst), "oif": ifindex, "proto": 3}
    if gw is not None:
        spec["gateway"] = str(gw)
    if route.priority:
        spec["priority"] = route.priority
    tbl = table if table is not None else route.table
    if tbl is not None:
        spec["table"] = tbl
    if route.scope is not None:
        spec["scope"] = route.scope
    metrics: dict[str, int] = {}
    if route.mtu:
        metrics["RTAX_MTU"] = route.mtu
    if route.advmss:
        metrics["RTAX_ADVMSS"] = route.advmss
    if metrics:
        spec["metrics"] = metrics
    sock.route("add", **spec)


def addresses(sock: Rtnl, ifindex: int) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Global-scope addresses on a link."""
    out: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    for a in sock.get_addr(index=ifindex):
        if a["scope"] != RT_SCOPE_UNIVERSE:
            continue
        out.append(ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
    return out


def delete_link_in_netns(path: str, ifname: str) -> bool:
    """Delete ``ifname`` in the namespace at ``path``; True if it was there. A missing netns or link is not an error."""
    if not netns.exists(path):
        return False
    try:
        with in_netns(path) as sock:
            # By name in the RTM_DELLINK itself: no lookup first (ENODEV when it is not there).
            with translated(f"failed to delete {ifname}"):
                sock.link("del", ifname=ifname)
            return True
    except CNIError as exc:
        # InvalidNetns: the namespace vanished between the check and the open; NotFound: no such link.
        if isinstance(exc, InvalidNetns | NotFound):
            return False
        raise
