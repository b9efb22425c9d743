"""Netlink helpers shared by the native plugins (the I/O boundary to the kernel).

Rules:
- Importing this package does not import pyroute2; the first call does (start-up budget), and
  then only pyroute2's message layer under ``rtnl.Rtnl`` (never ``IPRoute`` nor the package body).
- Sockets for a pod are opened inside ``cni.netns.entered`` and keep that namespace; nothing
  here calls setns itself.
- pyroute2's ``NetlinkError`` and ``OSError`` become CNI errors here (``translated``), with
  messages that say what was being done; callers never see a raw errno.
- Inside ``batched_link_deletes`` (a pod DEL, an ADD's rollback) ``delete_link_in_netns`` defers the
  deletion to the end of the block, where the pod's links are unregistered in one kernel batch.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


def delete_link_in_netns(path: str, ifname: str, *, before_next_step: bool = False) -> None:
    """Delete ``ifname`` in the namespace at ``path``. A missing netns or link is not an error.

    Inside ``batched_link_deletes`` the link is only registered: it goes with the batch's other
    links of that namespace in one group RTM_DELLINK when the batch is flushed (see ``LinkBatch``).
    ``before_next_step``: the caller's next step needs the link gone (bridge releases the address
    only after the pod end is gone): the batch is flushed now, this link and every one registered
    before it together, and this link's failure is raised here.
    """
    batch = _batch.get()
    if batch is None:
        _delete_one(path, ifname)
        return
    batch.add(path, ifname)
    if before_next_step:
        batch.flush()
        err = batch.failures.pop(ifname, None)
        if err is not None:
            raise err


def _delete_one(path: str, ifname: str) -> None:
    if not netns.exists(path):
        return
    try:
        with in_netns(path) as sock:
            # By name in the RTM_DELLINK itself: no lookup first (ENODEV when it is not there).
            with translated(f"failed to delete {ifname} in {path}"):
                sock.link("del", ifname=ifname)
    except CNIError as exc:
        # InvalidNetns: the namespace vanished between the check and the open; NotFound: no such link.
        if not isinstance(exc, InvalidNetns | NotFound):
            raise


# ---- batched link deletion: one pod operation's links, one unregistration ---------------------------
#
# Why: every RTM_DELLINK of a single link is its own unregister_netdevice_many() batch, which waits
# for RCU grace periods (synchronize_net, rcu_barrier) — ≈ 20–30 ms per link on this project's
# machines, most of a pod DEL. An RTM_DELLINK with ifi_index 0 and IFLA_GROUP (rtnl_group_dellink)
# unregisters every link of that group in ONE batch: one set of waits for all of a pod's links.
#
# Safety: the group is a number no link of the namespace has when the batch looks (so nothing else is
# deleted), the namespace is the pod's (the sandbox lock keeps other multinic operations out), and
# a crash between setting the group and deleting leaves links that keep their names: the retried DEL
# deletes them by name again (with a group chosen afresh, since G is then in use).

FIRST_GROUP = 0x6D6E6963  # "mnic": where the search for an unused device group starts
_U32 = 1 << 32

_batch: ContextVar[LinkBatch | None] = ContextVar("multinic_link_batch", default=None)


class LinkBatch:
    """Links registered for deletion during one pod operation, deleted by ``flush``.

    ``failures`` maps an interface name to the error of its deletion (after the per-link
    fallback also failed), for the caller that knows which attachment the interface belongs to.
    """

    def __init__(self) -> None:
        self._todo: dict[str, list[str]] = {}
        self.failures: dict[str, CNIError] = {}

    def add(self, path: str, ifname: str) -> None:
        names = self._todo.setdefault(path, [])
        if ifname not in names:
            names.append(ifname)

    def flush(self) -> None:
        todo, self._todo = self._todo, {}
        for path, names in todo.items():
            self.failures.update(delete_links_together(path, names))


@contextmanager
def batched_link_deletes() -> Iterator[LinkBatch]:
    """Collect the pod links that plugins delete in this block (this thread) and delete them at its end.

    The caller reads ``failures`` after the block (and after any ``flush`` it does earlier). Nested
    blocks join the outer batch. An exception leaving the block still flushes: a DEL never leaves
    links behind because another step failed.
    """
    outer = _batch.get()
    if outer is not None:
        yield outer
        return
    batch = LinkBatch()
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
        batch.flush()


def free_group(used: set[int]) -> int:
    """A device group number that is not in ``used`` (never 0, the default group every link is in)."""
    group = FIRST_GROUP
    while group in used or group == 0:
        group = (group + 1) % _U32
    return group


def delete_links_together(path: str, names: list[str]) -> dict[str, CNIError]:
    """Delete the links ``names`` in the namespace at ``path`` in one unregistration; their failures by name.

    One socket in the namespace, one link dump (indices and the groups in use), IFLA_GROUP set on
    each link (all requests sent before the answers are read), then one RTM_DELLINK by that group.
    A link or namespace that is gone is success. When the group delete fails (a link of the group
    cannot be deleted, e.g. one put in it by someone else meanwhile), each link is deleted by name.
    """
    from .. import faults

    if not netns.exists(path) or not names:
        return {}
    NetlinkError = netlink_error()
    failures: dict[str, CNIError] = {}
    try:
        with in_netns(path) as sock:
            with translated(f"failed to list the links in {path}"):
                links = sock.get_links()
            index: dict[str, int] = {}
            used: set[int] = set()
            for msg in links:
                used.add(int(msg.get_attr("IFLA_GROUP") or 0))
                index[str(msg.get_attr("IFLA_IFNAME"))] = int(msg["index"])
            group = free_group(used)
            sent = [(n, sock.link_send("set", index=index[n], group=group)) for n in names if n in index]
            grouped: list[str] = []
            one_by_one: list[str] = []  # still there but not in the group: deleted by name below
            for name, seq in sent:
                try:
                    sock.collect(seq)
                    grouped.append(name)
                except NetlinkError as exc:
                    if exc.code not in (errno.ENODEV, errno.ENOENT):  # ENODEV: gone meanwhile, nothing to do
                        one_by_one.append(name)
            if grouped:
                faults.point("after-link-group")
                try:
                    sock.link("del", index=0, group=group)
                except NetlinkError:
                    # EOPNOTSUPP: a link that cannot be deleted joined the group meanwhile (nothing was
                    # deleted then); ENODEV: ours vanished. Either way, by name below.
                    one_by_one.extend(grouped)
            for name in one_by_one:  # the fallback: one RTM_DELLINK per link, as without a batch
                try:
                    with translated(f"failed to delete {name} in {path}"):
                        sock.link("del", ifname=name)
                except NotFound:
                    pass
                except CNIError as exc:
                    failures[name] = exc
    except InvalidNetns:
        return {}  # the namespace vanished: its links went with it
    except CNIError as exc:
        return {name: exc for name in names}
    except OSError as exc:  # the socket itself (ENOBUFS, EMFILE): nothing was deleted
        return {name: KernelError(f"failed to delete {name} in {path}: {exc.strerror or exc}") for name in names}
    return failures
