"""Shared pieces of the native interface plugins (macvlan, ipvlan; bridge may import them).

Rules:
- The pure half (config sub-models, MAC precedence, prevResult parsing, DNS merge) does no
  I/O and is unit-tested without root. The kernel half takes a netlink socket that the
  caller opened in the right namespace; nothing here enters a namespace except through
  ``cni.netns``/``cni.netlink``.
- pyroute2 is imported inside functions only (start-up budget: rule 10, cni/ARCHITECTURE.md).
- Undo helpers never raise: they run while another error is on its way to the runtime and
  must not replace it (they log instead).
- CHECK helpers raise ``CheckFailed`` (106) with a message naming the interface and what
  differs, so a node admin can tell which attachment drifted.
- The command steps at the bottom (``undo_on_failure``, ``create_in_pod``, ``finish_in_pod``,
  ``delete_ipam_then_link``, ``check_in_pod``) are the ADD/DEL/CHECK of a sub-interface of a
  master (macvlan, ipvlan): the plugins differ only in kind, mode and which inputs they take,
  so the order of steps and their undo live here once.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from typing import TYPE_CHECKING, Any

from cni import faults, log
from cni.plugin import prev_result as plugin_prev_result
from cni.spec import args as cniargs
from cni.spec.errors import CheckFailed, CNIError, InterfaceExists, InvalidConfig, NotFound
from cni.spec.request import Request
from cni.spec.result import DNS, Interface, IPConfig, Result, Route

if TYPE_CHECKING:
    from cni.netlink.rtnl import Rtnl

# ---- pure: config pieces ------------------------------------------------------------------


# IFLA_MACVLAN_MODE / IFLA_IPVLAN_MODE values (linux/if_link.h MACVLAN_MODE_*, IPVLAN_MODE_*).
MACVLAN_MODES: dict[str, int] = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IPVLAN_MODES: dict[str, int] = {"l2": 0, "l3": 1, "l3s": 2}
DEFAULT_BRIDGE = "cni0"  # bridge's default ``bridge`` key (here: its model lives in _confs, its commands in bridge)


def ipam_type(conf_ipam: dict[str, Any]) -> str:
    """The IPAM type, or "" when the config has no (or an empty) ``ipam`` section (L2 only)."""
    t = conf_ipam.get("type", "")
    if not isinstance(t, str):
        raise InvalidConfig("network config field 'ipam.type' must be a string", f"got {type(t).__name__}")
    return t


def ipam_type_for_delete(config: Mapping[str, Any]) -> str:
    """``ipam.type`` read for DEL without the plugin's pydantic model (``Plugin.delete_only``).

    DEL of macvlan/ipvlan needs nothing else (SPEC: DEL tolerates a missing or partial config;
    a thin DEL must not pay for pydantic). Keys fold as Go's decoder folds them (gojson); an
    ``ipam`` that is not an object or a ``type`` that is not a string is error 7, as in ``parse``:
    without it DEL cannot tell which IPAM holds the lease.
    """
    from cni.spec import gojson

    ipam = gojson.match_keys(config, {"ipam": True}).get("ipam")
    if ipam is None:
        return ""
    if not isinstance(ipam, dict):
        raise InvalidConfig("invalid network config field 'ipam': must be an object", f"got {type(ipam).__name__}")
    return ipam_type(gojson.match_keys(ipam, {"type": False}))


normalise_mac = cniargs.normalise_mac  # kept as a name here: bridge/macvlan import it from _iface


def requested_mac(req: Request, conf_mac: str) -> str:
    """The MAC to use: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC > config ``mac`` ("" = kernel's choice).

    Same precedence as the reference macvlan/bridge loadConf (the later assignment wins there).
    """
    rc = req.runtime_config().get("mac")
    if isinstance(rc, str) and rc:
        return normalise_mac(rc, "runtimeConfig.mac")
    args = req.config.get("args")
    if isinstance(args, dict):
        cni = args.get("cni")
        if isinstance(cni, dict):
            val = cni.get("mac")
            if isinstance(val, str) and val:
                return normalise_mac(val, "args.cni.mac")
    env = req.cni_args.get("MAC", "")
    if env:
        return normalise_mac(env, "CNI_ARGS MAC")
    if conf_mac:
        return normalise_mac(conf_mac, "mac")
    return ""


def prev_result(req: Request) -> Result | None:
    """``prevResult`` of a chained config in the canonical shape (error 7 when malformed)."""
    return plugin_prev_result(req)


def merge_dns(from_ipam: DNS, from_conf: DNS) -> DNS:
    """Config ``dns`` over the IPAM's, field by field.

    Intentional difference: the reference macvlan/ipvlan replace the result's DNS with the
    config's, dropping what IPAM returned (e.g. static's ``dns``). We keep IPAM's and let each
    non-empty config field win, so a config without ``dns`` no longer loses IPAM's servers.
    """
    return DNS(
        nameservers=from_conf.nameservers or from_ipam.nameservers,
        domain=from_conf.domain or from_ipam.domain,
        search=from_conf.search or from_ipam.search,
        options=from_conf.options or from_ipam.options,
    )


def own_interface(prev: Result, ifname: str, netns_path: str) -> Interface:
    """The interface of this attachment in a prevResult (name and sandbox match), for CHECK."""
    for iface in prev.interfaces:
        if iface.name == ifname and iface.sandbox == netns_path:
            return iface
    raise CheckFailed(
        f"prevResult has no interface {ifname!r} in sandbox {netns_path}",
        f"interfaces in prevResult: {[(i.name, i.sandbox) for i in prev.interfaces]}",
    )


def assign_to(result: Result, iface: Interface, dns: DNS) -> Result:
    """The ADD result: exactly ``iface``, every IP on it (index 0), IPAM's routes, merged DNS."""
    return result.with_(
        interfaces=(iface,),
        ips=tuple(IPConfig(ip.address, ip.gateway, 0) for ip in result.ips),
        dns=dns,
    )


# ---- IPAM delegation ----------------------------------------------------------------------


def ipam_add(req: Request, undo: ExitStack) -> Result:
    """IPAM ADD through ``cni.invoke`` (in-process or exec); registers the IPAM DEL as undo."""
    from cni import invoke

    res = invoke.ipam(req.with_(command="ADD"))
    undo.callback(quietly, "IPAM DEL after a failed ADD", invoke.ipam, req.with_(command="DEL"))
    if res is None or not res.ips:
        raise InvalidConfig(
            f"IPAM plugin {ipam_type(req.config.get('ipam') or {})!r} returned no IP configuration",
            "configure at least one range/address, or remove the ipam section for an L2-only interface",
        )
    return res


def quietly(what: str, fn: Any, *args: Any) -> None:
    """Run an undo step; log (never raise) its failure so the original error reaches the runtime."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - undo must not mask the error being reported
        log.error(f"undo: {what} failed: {exc}")


# ---- kernel: links ------------------------------------------------------------------------


def master_link(sock: Rtnl, name: str, *, where: str, with_mtu: bool = True) -> tuple[int, int]:
    """(index, mtu) of the master ``name`` in the socket's namespace; NotFound (103) when absent.

    Without ``with_mtu`` the MTU is 0 and the index comes from a name lookup, not a link message
    (≈ 0.3–0.5 ms of pyroute2 decoding saved per attachment that sets no MTU).
    """
    from cni.netlink import link_by_name, link_index, translated

    with translated(f"failed to look up master {name!r}"):
        if with_mtu:
            msg = link_by_name(sock, name)
            found = None if msg is None else (int(msg["index"]), int(msg.get_attr("IFLA_MTU")))
        else:
            idx = link_index(sock, name)
            found = None if idx is None else (idx, 0)
        if found is None:
            raise NotFound(
                f"master interface {name!r} not found in the {where}",
                "set 'master' to an existing interface of the node (ip link show), or leave it empty for the default-route interface",
            )
        return found


def default_master(sock: Rtnl, *, where: str) -> str:
    """The default-route interface (the reference's default ``master``)."""
    from cni.netlink import default_route_interface

    name = default_route_interface(sock)
    if not name:
        raise NotFound(
            f"no 'master' configured and no default route in the {where} to pick one from",
            "set 'master' in the network config",
        )
    return name


def check_mtu(mtu: int, master: str, master_mtu: int) -> None:
    if mtu > master_mtu:
        raise InvalidConfig(
            f"invalid MTU {mtu}: it must be at most the MTU of master {master!r} ({master_mtu})",
            "lower 'mtu' or raise the master's MTU (0 means: the master's MTU)",
        )


def create_link(sock: Rtnl, ifname: str, netns_path: str, netns_fd: int | None, kind: str, **spec: Any) -> None:
    """Create ``ifname`` of ``kind``; directly inside the pod netns when ``netns_fd`` is given.

    Creating with IFLA_NET_NS_FD registers the device in the target namespace under its
    final name in one call (the kernel checks the name there, not in the host): no
    temporary name, no rename, no move (≈0.3 ms instead of ≈13 ms).
    """
    from cni.netlink import netlink_error, translated

    NetlinkError = netlink_error()

    if netns_fd is not None:
        spec["net_ns_fd"] = netns_fd
    try:
        with translated(f"failed to create {kind} interface {ifname!r} in {netns_path}"):
            try:
                sock.link("add", ifname=ifname, kind=kind, **spec)
                faults.point("after-link")
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:  # the name is taken in the target namespace
                    raise InterfaceExists(
                        f"interface {ifname!r} already exists in network namespace {netns_path}",
                        "CNI ADD needs a free CNI_IFNAME: pick another interface name or remove the old attachment",
                    ) from None
                raise
    except NotFound as exc:
        raise NotFound(f"{exc.msg} (the master interface vanished?)", exc.details) from None


def set_notify_sysctls(ifname: str) -> None:
    """arp_notify/ndisc_notify=1 so peers learn the new MAC at once (thread must be in the pod netns).

    Missing keys are ignored: ndisc_notify does not exist when IPv6 is disabled.
    """
    from cni.netlink import write_sysctl

    for key in (f"net/ipv4/conf/{ifname}/arp_notify", f"net/ipv6/conf/{ifname}/ndisc_notify"):
        try:
            write_sysctl(key, "1")
        except OSError:
            pass


IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40


def settle_addresses(sock: Rtnl, ifindex: int, ifname: str, ips: list[IPConfig], timeout: float = 10.0) -> None:
    """Wait until IPv6 DAD has finished for ``ips`` (the reference ConfigureIface does the same).

    A tentative address cannot be used as a source yet: a pod that starts talking right
    after ADD would fail to connect. A DAD failure means another host has the address.
    Without carrier the kernel postpones DAD until the link comes up: then we do not wait
    (the reference would time out after 10 s).
    """
    import time
    from socket import AF_INET6

    from cni.netlink import translated
    from cni.spec.errors import KernelError

    want = {str(ip.address.ip) for ip in ips if ip.version == 6}
    if not want:
        return
    (link,) = sock.get_links(ifindex)
    if not link["flags"] & 0x10000:  # IFF_LOWER_UP
        return
    deadline = time.monotonic() + timeout
    while True:
        pending = []
        with translated(f"failed to list addresses of {ifname}"):
            for a in sock.get_addr(family=AF_INET6, index=ifindex):
                addr = a.get_attr("IFA_ADDRESS")
                if addr not in want:
                    continue
                flags = a.get_attr("IFA_FLAGS") or a["flags"]
                if flags & IFA_F_DADFAILED:
                    raise KernelError(
                        f"IPv6 address {addr} on {ifname} failed duplicate address detection",
                        "another host on the network already uses it; check the IPAM ranges",
                    )
                if flags & IFA_F_TENTATIVE:
                    pending.append(addr)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise KernelError(f"{ifname} still has tentative IPv6 addresses {pending} after {timeout:g}s")
        time.sleep(0.05)


def link_mac(sock: Rtnl, index: int) -> str:
    (msg,) = sock.get_links(index)
    return str(msg.get_attr("IFLA_ADDRESS") or "")


def delete_link_quietly(netns_path: str, ifname: str) -> None:
    from cni.netlink import delete_link_in_netns

    quietly(f"deleting {ifname} in {netns_path}", delete_link_in_netns, netns_path, ifname)


# ---- kernel: CHECK ------------------------------------------------------------------------


def verified_link(
    sock: Rtnl,
    ifname: str,
    *,
    kind: str,
    mode_key: str = "",
    mode: int = 0,
    mode_name: str = "",
    master_index: int | None = None,
    mac: str = "",
    mtu: int = 0,
    where: str = "the container",
    what: str = "interface",
) -> dict[str, Any]:
    """CHECK one link: it exists in ``where``, and its kind, mode (when ``mode_key``), parent link (when
    ``master_index``), MAC and MTU (when given) are as expected. Returns its attributes (``link_attrs``)."""
    from cni.netlink import link_attrs, link_index

    idx = link_index(sock, ifname)
    if idx is None:
        raise CheckFailed(f"{what} {ifname!r} is missing from {where}")
    attrs = link_attrs(sock, idx)
    if attrs.get("kind") != kind:
        raise CheckFailed(f"{what} {ifname!r} is of kind {attrs.get('kind')!r}, expected {kind!r}")
    got_mode = attrs.get("info_data", {}).get(mode_key) if mode_key else None
    # pyroute2 decodes macvlan modes to names and ipvlan modes to numbers: accept either.
    if got_mode is not None and got_mode not in (mode, mode_name):
        raise CheckFailed(f"{what} {ifname!r} has {kind} mode {got_mode}, expected {mode_name} ({mode})")
    if master_index is not None and attrs.get("link") not in (None, master_index):
        raise CheckFailed(f"{what} {ifname!r} is not a {kind} of the configured master (parent index {attrs.get('link')}, expected {master_index})")
    if mac and str(attrs.get("address", "")).lower() != mac.lower():
        raise CheckFailed(f"{what} {ifname!r} has MAC {attrs.get('address')}, prevResult says {mac}")
    if mtu and attrs.get("mtu") != mtu:
        raise CheckFailed(f"{what} {ifname!r} has MTU {attrs.get('mtu')}, the config says {mtu}")
    return attrs


def verify_addresses(sock: Rtnl, ifindex: int, ifname: str, ips: list[IPConfig]) -> None:
    from cni.netlink import addresses

    present = set(addresses(sock, ifindex))
    for ip in ips:
        if ip.address not in present:
            raise CheckFailed(
                f"address {ip.address} from prevResult is missing on {ifname!r}",
                f"addresses present: {sorted(str(a) for a in present)}",
            )


def verify_routes(sock: Rtnl, ifindex: int, ifname: str, routes: tuple[Route, ...], gws: dict[int, Any]) -> None:
    """Every prevResult route exists on the link — in ANY table.

    A later chained plugin (sbr) legitimately moves the interface's routes from main into
    its own table; the reference CHECK looks only in main and fails (plugins#297).
    """
    found: set[tuple[Any, Any]] = set()
    from socket import AF_INET, AF_INET6

    for fam in (AF_INET, AF_INET6):
        for r in sock.get_routes(family=fam):  # no table filter: the dump covers every table
            if r.get_attr("RTA_OIF") != ifindex:
                continue
            dst = r.get_attr("RTA_DST")
            net = ipaddress.ip_network(f"{dst}/{r['dst_len']}" if dst else ("0.0.0.0/0" if fam == AF_INET else "::/0"), strict=False)
            gw = r.get_attr("RTA_GATEWAY")
            found.add((net, ipaddress.ip_address(gw) if gw else None))
    for route in routes:
        gw = route.gw if route.gw is not None else gws.get(route.dst.version)
        if (route.dst, gw) in found or (gw is None and any(n == route.dst for n, _ in found)):
            continue
        raise CheckFailed(
            f"route {route.dst}{' via ' + str(gw) if gw else ''} from prevResult is missing on {ifname!r}",
            "looked in every routing table",
        )


def gateways(result: Result) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for ip in result.ips:
        if ip.gateway is not None and ip.version not in out:
            out[ip.version] = ip.gateway
    return out


# ---- command steps: macvlan/ipvlan ADD, DEL, CHECK (bridge shares the DEL ones) ---------------


@contextmanager
def undo_on_failure(req: Request) -> Iterator[tuple[int, ExitStack]]:
    """The pod netns fd and an undo stack for one ADD; the undo steps run when the block raises.

    The netns is opened before anything is made, so a missing one is error 8 with nothing to undo.
    """
    from cni import netns

    fd = netns.open_fd(req.netns)
    try:
        with ExitStack() as undo:
            yield fd, undo
            undo.pop_all()
    finally:
        os.close(fd)


def master_where(link_in_container: bool) -> str:
    return "container network namespace" if link_in_container else "host network namespace"


def master_socket(req: Request, link_in_container: bool) -> AbstractContextManager[Rtnl]:
    """A netlink socket in the namespace where the master lives (pod netns with linkInContainer)."""
    from cni.netlink import in_netns, ipr

    if link_in_container:
        return in_netns(req.netns)
    return closing(ipr())


def find_master(req: Request, name: str, *, link_in_container: bool) -> tuple[int, int]:
    """(index, mtu) of the master ``name``, or of the default-route interface when ``name`` is empty."""
    where = master_where(link_in_container)
    with master_socket(req, link_in_container) as msock:
        return master_link(msock, name or default_master(msock, where=where), where=where)


def create_in_pod(
    req: Request, fd: int, undo: ExitStack, *, kind: str, master: str, link_in_container: bool, mtu: int, **spec: Any
) -> None:
    """Create ``CNI_IFNAME`` of ``kind`` on the master (default route when empty) and register its deletion as undo.

    The master's MTU is checked before the link exists, so a too large ``mtu`` leaves nothing behind.
    """
    where = master_where(link_in_container)
    with master_socket(req, link_in_container) as msock:
        master = master or default_master(msock, where=where)
        midx, mmtu = master_link(msock, master, where=where, with_mtu=bool(mtu))  # the MTU matters only when set
        if mtu:
            check_mtu(mtu, master, mmtu)
            spec["mtu"] = mtu
        # With linkInContainer the socket already lives in the pod netns: no IFLA_NET_NS_FD.
        create_link(msock, req.ifname, req.netns, None if link_in_container else fd, kind, link=midx, **spec)
    undo.callback(delete_link_quietly, req.netns, req.ifname)


def finish_in_pod(req: Request, base: Result | None, conf_dns: DNS) -> Result:
    """Configure the new ``CNI_IFNAME`` in the pod and return the ADD result.

    ``base`` is the IPAM result (or the reused prevResult) whose IPs and routes go on the link,
    with ``conf_dns`` over its DNS; None means L2 only: the link is just set up and the result
    carries the config's DNS alone.
    """
    from cni import netns
    from cni.netlink import configure_iface, ipr, link_by_name, translated

    # Entered, not just a socket in the pod netns: the notify sysctls are per-thread /proc paths.
    with netns.entered(req.netns):
        sock = ipr()
        try:
            with translated(f"failed to read {req.ifname} in {req.netns}"):
                msg = link_by_name(sock, req.ifname)
            if msg is None:  # deleted behind our back between create and configure
                raise CNIError(f"interface {req.ifname!r} disappeared from {req.netns} during ADD", code=105)
            idx = int(msg["index"])
            iface = Interface(
                name=req.ifname,
                mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
                sandbox=req.netns,
                mtu=int(msg.get_attr("IFLA_MTU") or 0),
            )
            set_notify_sysctls(req.ifname)
            if base is None:
                with translated(f"failed to set {req.ifname} up"):
                    sock.link("set", index=idx, state="up")
                return Result(cni_version=req.cni_version, interfaces=(iface,), dns=conf_dns)
            result = assign_to(base, iface, merge_dns(base.dns, conf_dns)).with_(cni_version=req.cni_version)
            configure_iface(sock, idx, req.ifname, result, 0)
            settle_addresses(sock, idx, req.ifname, list(result.ips))
            return result
        finally:
            sock.close()


class Steps:
    """DEL/GC steps that all run even when an earlier one failed; ``raise_all`` reports every failure.

    A DEL that stopped at its first error would leave the later steps' state (a lease, a rule)
    behind for good when the runtime gives up retrying.
    """

    def __init__(self) -> None:
        self.errors: list[CNIError] = []

    def run(self, fn: Callable[..., object], *args: Any, prefix: str = "") -> None:
        try:
            fn(*args)
        except CNIError as exc:
            self.errors.append(exc.prefixed(prefix) if prefix else exc)

    def raise_all(self) -> None:
        from cni import invoke

        invoke.raise_all(self.errors)


def ipam_del(req: Request) -> None:
    from cni import invoke

    invoke.ipam(req.with_(command="DEL"))


def delete_pod_link(req: Request, *, before_next_step: bool = False) -> None:
    """Delete ``CNI_IFNAME`` in the pod netns; no netns (already gone) or no link is success.

    When the delegator has opened a batch (``cni.netlink.batched_link_deletes``: a pod DEL or an ADD's
    rollback) the link is registered and unregistered with the pod's other links at the end of the
    operation, in one kernel batch; ``before_next_step`` flushes that batch now, for a plugin whose next
    step needs the link gone. Without a batch (a plugin exec'd alone) the link is deleted at once.
    """
    from cni.netlink import delete_link_in_netns

    if req.netns:
        delete_link_in_netns(req.netns, req.ifname, before_next_step=before_next_step)


def delete_ipam_then_link(req: Request, ipam_type: str) -> None:
    """macvlan/ipvlan DEL: IPAM DEL first (released even when the netns is gone), then the link."""
    steps = Steps()
    if ipam_type:
        steps.run(ipam_del, req, prefix="IPAM DEL: ")
    # The link goes even when IPAM DEL failed: a retried DEL then only has the lease left to free.
    steps.run(delete_pod_link, req)
    steps.raise_all()


def check_prev(req: Request, ipam_type: str, prev: Result | None) -> tuple[Result, Interface]:
    """CHECK's first steps: IPAM CHECK, then prevResult and this attachment's interface in it."""
    from cni import invoke

    if ipam_type:
        invoke.ipam(req.with_(command="CHECK"))
    if prev is None:
        raise InvalidConfig("CHECK needs prevResult: the runtime must send the result of ADD")
    return prev, own_interface(prev, req.ifname, req.netns)


def check_in_pod(
    req: Request, prev: Result, mine: Interface, *, kind: str, mode_key: str, mode: int, mode_name: str,
    master_index: int | None, mtu: int,
) -> None:
    """CHECK in the pod: kind/mode/parent/MAC/MTU of the link, then prevResult's addresses and routes."""
    from cni import netns
    from cni.netlink import ipr

    iface_idx = prev.interfaces.index(mine)
    with netns.entered(req.netns):
        sock = ipr()
        try:
            idx = int(verified_link(
                sock, req.ifname, kind=kind, mode_key=mode_key, mode=mode,
                mode_name=mode_name, master_index=master_index, mac=mine.mac, mtu=mtu,
            )["index"])
            ips = [ip for ip in prev.ips if ip.interface == iface_idx]
            verify_addresses(sock, idx, req.ifname, ips)
            verify_routes(sock, idx, req.ifname, prev.routes, gateways(prev))
        finally:
            sock.close()


def ipam_only(req: Request, ipam_type: str) -> None:
    """STATUS/GC of a sub-interface plugin: only its IPAM has state (the links go with their netns)."""
    from cni import invoke

    if ipam_type:
        invoke.ipam(req)


__all__ = [
    "IPVLAN_MODES", "MACVLAN_MODES", "Steps", "assign_to", "check_in_pod", "check_mtu", "check_prev", "create_in_pod", "create_link",
    "default_master", "delete_ipam_then_link", "delete_link_quietly", "delete_pod_link", "find_master", "finish_in_pod",
    "gateways", "ipam_add", "ipam_del", "ipam_only", "ipam_type", "ipam_type_for_delete", "link_mac", "master_link", "master_socket", "master_where",
    "merge_dns", "normalise_mac", "own_interface", "prev_result", "quietly", "requested_mac", "set_notify_sysctls",
    "settle_addresses", "undo_on_failure", "verified_link", "verify_addresses", "verify_routes",
]
