"""sbr: source-based routing for an interface that an earlier plugin configured (chained).

Rules:
- For each IP of ``CNI_IFNAME`` in ``prevResult``: a routing table (the first id from 100 that
  no rule and no route uses, a different one per IP, as the reference does), a rule
  ``from <ip>/32|128 lookup <table>`` with the priority the kernel would pick (one below the
  lowest non-zero priority, i.e. 32765 on a fresh namespace, like the reference), a default
  route via the gateway in that table, and the interface's routes of that IP moved out of
  ``main`` into it (reference rule: a route whose prefsrc or gateway lies in the IP's subnet,
  or that has neither). IPv6 link-local ``fe80::/64`` is copied but stays in main as well,
  so link-local neighbours keep working for sockets not bound to the IP.
- The gateway of an IP comes from the IP's ``gateway`` in prevResult, else the first entry of
  the config's ``gateways`` of the same family (one inside the IP's subnet preferred), else a
  default route of that family in prevResult. No gateway at all is error 7 before anything is
  touched: a table without a default route is the silent black hole of plugins#654/#1213.
- ``table``: only add the rules (``from <ip> lookup <table>``) to that fixed table; routes are
  left where the interface plugin put them (SPEC-1.1 ``routes[].table``); no gateway needed.
- ``dataDir`` (default ``/run/cni/sbr``): a 0600 state file per (container, ifname) records
  the rules, tables and moved routes, so DEL removes exactly those even when the addresses
  are already gone. Without a state file, DEL falls back to rules whose source is one of the
  interface's prevResult or current addresses.
- DEL removes the rules, flushes the tables it created, and puts moved routes back into main
  when the link still exists (the reference leaves the tables; they die with the link).
- CHECK verifies, for each IP, the rule and (without ``table``) the default route via the
  gateway on the link in the rule's table.
- The result passes through unchanged.

Contract with the interface plugins' CHECK (plugins#297): after sbr, a prevResult route of an
interface lives in an sbr table (>= 100), not in main. An interface plugin's CHECK must look
for each prevResult route on its link in ANY table (dump all tables, filter by oif and dst),
never only in main. sbr itself keeps every route it moved on the same link.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cni import log, netns
from cni.netlink import in_netns, link_index, translated
from cni.plugin import Plugin
from cni.spec.errors import CheckFailed, CNIError, InvalidConfig, InvalidNetns, NotFound
from cni.spec.request import Request
from cni.spec.result import IPAddress, IPInterface, Result

from . import _delconf
from ._chained import (
    SBR_RESERVED_TABLES,
    ips_of,
    locked,
    prev_result,
    read_state,
    remove_state,
    state_path,
    write_state,
)

if TYPE_CHECKING:
    from cni.netlink.rtnl import Rtnl

    from ._confs import SbrConf  # pydantic: imported by ``parse`` only, never on DEL

TYPE = "sbr"
FIRST_TABLE = 100
MAIN = 254
DEFAULT_DATA_DIR = "/run/cni/sbr"  # the model's default too (plugins/_confs.py)
_RESERVED_TABLES = SBR_RESERVED_TABLES


@dataclass(frozen=True)
class Conf:
    """What ``parse`` hands to the commands."""

    net: SbrConf
    prev: Result | None


@dataclass(frozen=True)
class SourceRoute:
    """One IP of the interface and the gateway its table's default route goes through."""

    ip: IPInterface
    gateway: IPAddress | None


# ---- pure -----------------------------------------------------------------------------------


def parse(req: Request) -> Conf:
    from cni.spec.model import validate

    from ._confs import SbrConf

    net = validate(SbrConf, req.config)
    prev = prev_result(req, TYPE, required=req.command in ("ADD", "CHECK"))
    return Conf(net, prev)


def pick_gateway(ip: IPInterface, net: SbrConf, prev: Result) -> IPAddress | None:
    """The gateway for ``ip``'s table when prevResult gave the IP none (module rules: order)."""
    cands = [ipaddress.ip_address(g) for g in net.gateways]
    fam = [g for g in cands if g.version == ip.version]
    inside = [g for g in fam if g in ip.network]
    if inside:
        return inside[0]
    if fam:
        return fam[0]
    for r in prev.routes:
        if r.dst.prefixlen == 0 and r.dst.version == ip.version and r.gw is not None:
            return r.gw
    return None


def plan(net: SbrConf, prev: Result, ifname: str) -> list[SourceRoute]:
    """What ADD will do, decided from config and prevResult alone (error 7 before any change)."""
    ips = ips_of(prev, ifname)
    if not ips:
        raise InvalidConfig(
            f"sbr: prevResult has no IP address for interface {ifname}",
            "sbr needs the addresses the interface plugin/IPAM assigned",
        )
    out = []
    for ipc in ips:
        gw = ipc.gateway if ipc.gateway is not None else pick_gateway(ipc.address, net, prev)
        if gw is None and net.table is None:
            raise InvalidConfig(
                f"sbr: no gateway for {ipc.address} on {ifname}",
                "IPAM returned no gateway; set a gateway in the IPAM config or list one in sbr's 'gateways' "
                "(a routing table without a default route would black-hole traffic from this address)",
            )
        out.append(SourceRoute(ipc.address, gw))
    return out


def pick_tables(used: set[int], count: int, first: int = FIRST_TABLE) -> list[int]:
    """``count`` table ids from ``first`` up that are not in ``used`` (reference getNextTableID)."""
    out: list[int] = []
    t = first
    while len(out) < count:
        if t not in used and t not in _RESERVED_TABLES:
            out.append(t)
        t += 1
    return out


def default_rule_priority(priorities: list[int]) -> int:
    """The priority the kernel gives a rule added without one: one below the lowest non-zero
    priority (fib_default_rule_pref); 32765 on a fresh namespace."""
    nonzero = [p for p in priorities if p > 0]
    return (min(nonzero) - 1) if nonzero else 0


def route_belongs(ip: IPInterface, route: dict[str, Any]) -> bool:
    """Reference rule for moving a main-table route into ``ip``'s table."""
    if route["family"] != ip.version:
        return False
    src, gw = route.get("prefsrc"), route.get("gateway")
    if src is None and gw is None:
        return True
    if src is not None and ipaddress.ip_address(src) in ip.network:
        return True
    return gw is not None and ipaddress.ip_address(gw) in ip.network


def keep_in_main(route: dict[str, Any]) -> bool:
    """IPv6 link-local stays reachable from main (it is copied, not moved)."""
    return bool(route["family"] == 6 and route["dst"] == "fe80::/64")


# ---- kernel helpers ---------------------------------------------------------------------------

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_FAM = {socket.AF_INET: 4, socket.AF_INET6: 6}


def _rules(sock: Rtnl) -> list[dict[str, Any]]:
    out = []
    # One AF_UNSPEC dump answers for every family (fib_nl_dumprule); multicast routing's rules are skipped.
    for r in sock.get_rules(family=socket.AF_UNSPEC):
        fam = r["family"]
        if fam not in _FAM:
            continue
        table = r.get_attr("FRA_TABLE") or r["table"]
        out.append({
            "family": _FAM[fam],
            "src": r.get_attr("FRA_SRC"),
            "src_len": r["src_len"],
            "table": table,
            "priority": r.get_attr("FRA_PRIORITY") or 0,
        })
    return out


def _route_dict(msg: Any) -> dict[str, Any]:
    fam = _FAM.get(msg["family"], 0)
    dst = msg.get_attr("RTA_DST")
    dst_s = f"{dst}/{msg['dst_len']}" if dst else ("0.0.0.0/0" if fam == 4 else "::/0")
    return {
        "family": fam,
        "dst": str(ipaddress.ip_network(dst_s, strict=False)),
        "gateway": msg.get_attr("RTA_GATEWAY"),
        "prefsrc": msg.get_attr("RTA_PREFSRC"),
        "oif": msg.get_attr("RTA_OIF"),
        "priority": msg.get_attr("RTA_PRIORITY"),
        "table": msg.get_attr("RTA_TABLE") or msg["table"],
        "scope": msg["scope"],
        "proto": msg["proto"],
        "type": msg["type"],
    }


def _routes(sock: Rtnl, *, table: int | None = None, oif: int | None = None) -> list[dict[str, Any]]:
    out = []
    kw: dict[str, Any] = {"table": table} if table is not None else {}
    # One dump for both families (get_routes' default family: the kernel dumps every family for it);
    # multicast routing and MPLS routes are skipped.
    for msg in sock.get_routes(**kw):
        # Unicast only (local/broadcast/multicast belong to the kernel), tested on the header before
        # the attributes are read: most of a pod's routes are the local table's (≈ 11 of 16 here).
        if msg["family"] not in _FAM or msg["type"] != 1:
            continue
        d = _route_dict(msg)
        if oif is not None and d["oif"] != oif:
            continue
        out.append(d)
    return out


def _route_spec(r: dict[str, Any], *, table: int, oif: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "family": _AF[r["family"]],
        "dst": r["dst"],
        "table": table,
        "oif": oif,
        "scope": r["scope"],
        "proto": r["proto"],
    }
    for key in ("gateway", "prefsrc", "priority"):
        if r.get(key) is not None:
            spec[key] = r[key]
    return spec


def _del_quiet(sock: Rtnl, what: str, **spec: Any) -> None:
    """Delete a rule/route; "already gone" is fine (DEL and undo are best effort)."""
    from cni.netlink import netlink_error

    NetlinkError = netlink_error()

    try:
        if what == "rule":
            sock.rule("del", **spec)
        else:
            sock.route("del", **spec)
    except NetlinkError as exc:
        if exc.code not in (2, 3, 19):  # ENOENT, ESRCH, ENODEV
            log.warning(f"sbr: cannot delete {what} {spec}: {exc}")


def _flush_table(sock: Rtnl, table: int) -> None:
    for r in _routes(sock, table=table):
        _del_quiet(sock, "route", **_route_spec(r, table=table, oif=r["oif"]))


def _ensure_netns(req: Request) -> None:
    """Error 8 (InvalidNetns, libcni's ErrInvalidNetNS) when the netns is missing, as in every plugin."""
    os.close(netns.open_fd(req.netns))


# ---- commands ---------------------------------------------------------------------------------


def add(req: Request, conf: Conf) -> Result:
    net, prev = conf.net, conf.prev
    assert prev is not None  # parse requires it for ADD
    todo = plan(net, prev, req.ifname)
    path = state_path(net.data_dir, req.container_id, req.ifname)
    state: dict[str, Any] = {"ifname": req.ifname, "table": net.table, "rules": [], "tables": [], "moved": []}
    with locked(net.data_dir), in_netns(req.netns) as sock, ExitStack() as undo:
        idx = link_index(sock, req.ifname)
        if idx is None:
            raise NotFound(f"sbr: interface {req.ifname} not found in {req.netns}")
        rules = _rules(sock)
        # One route dump per family serves both questions (≈ 0.3 ms of pyroute2 decoding per route).
        every = _routes(sock)
        if net.table is not None:
            tables = [net.table] * len(todo)
        else:
            used = {r["table"] for r in rules} | {r["table"] for r in every}
            tables = pick_tables(used, len(todo))
        main_routes = [r for r in every if r["table"] == MAIN and r["oif"] == idx]
        to_delete: list[dict[str, Any]] = []
        for item, table in zip(todo, tables, strict=True):
            fam = item.ip.version
            prio = default_rule_priority([r["priority"] for r in rules if r["family"] == fam])
            rule = {"family": _AF[fam], "src": str(item.ip.ip), "src_len": item.ip.max_prefixlen, "table": table, "priority": prio}
            with translated(f"sbr: failed to add rule from {item.ip.ip} lookup {table}"):
                sock.rule("add", **rule)
            undo.callback(_del_quiet, sock, "rule", **rule)
            rules.append({"family": fam, "priority": prio, "table": table, "src": str(item.ip.ip), "src_len": rule["src_len"]})
            state["rules"].append({"family": fam, "src": str(item.ip.ip), "table": table, "priority": prio})
            if net.table is not None:
                continue
            state["tables"].append(table)
            undo.callback(_flush_table, sock, table)
            dst = "0.0.0.0/0" if fam == 4 else "::/0"
            with translated(f"sbr: failed to add default route via {item.gateway} to table {table}"):
                # proto boot (3), what the reference's netlink library sends.
                sock.route("replace", family=_AF[fam], dst=dst, gateway=str(item.gateway), oif=idx, table=table, proto=3)
            for r in main_routes:
                if route_belongs(item.ip, r):
                    with translated(f"sbr: failed to copy route {r['dst']} to table {table}"):
                        sock.route("replace", **_route_spec(r, table=table, oif=idx))
                    if not keep_in_main(r) and r not in to_delete:
                        to_delete.append(r)
        # Delete from main only after every copy: several IPs of one subnet share routes.
        for r in to_delete:
            with translated(f"sbr: failed to remove route {r['dst']} from the main table"):
                sock.route("del", **_route_spec(r, table=MAIN, oif=idx))
            undo.callback(_readd_main, sock, r, idx)
            state["moved"].append({k: v for k, v in r.items() if k not in ("oif", "table")})
        write_state(path, state)
        undo.pop_all()
    return prev


def _readd_main(sock: Rtnl, r: dict[str, Any], idx: int) -> None:
    from cni.netlink import netlink_error

    NetlinkError = netlink_error()

    try:
        sock.route("replace", **_route_spec(r, table=MAIN, oif=idx))
    except NetlinkError as exc:
        log.warning(f"sbr: cannot put route {r['dst']} back into main: {exc}")


@dataclass(frozen=True)
class DelConf:
    """What DEL acts on: where the state is, the configured table, and prevResult (no state file)."""

    data_dir: str
    table: int | None
    prev: Result | None


# JSON field → Go nilable, of the keys DEL reads (_delconf).
_DEL_FIELDS = {"table": True, "dataDir": False}


def read_for_delete(req: Request) -> DelConf:
    """``DelConf`` read without the pydantic model; ``_delconf.Malformed`` when a key is bad."""
    doc = _delconf.fields(req.config, _DEL_FIELDS)
    table = _delconf.get_int(doc, "table", None, 1, 0xFFFFFFFF)
    if table in _RESERVED_TABLES:
        raise _delconf.Malformed("table")
    # prevResult is read as ``parse`` reads it (a malformed one is error 7 either way).
    return DelConf(_delconf.get_data_dir(doc, DEFAULT_DATA_DIR), table, prev_result(req, TYPE, required=False))


def del_conf(conf: Conf) -> DelConf:
    """The same values taken from the full parse."""
    return DelConf(conf.net.data_dir, conf.net.table, conf.prev)


def delete_only(req: Request) -> None:
    """DEL without ``parse``: it needs ``dataDir``, ``table`` and prevResult."""
    _delete(req, _delconf.read_or_parse(req, read_for_delete, lambda r: del_conf(parse(r))))


def delete(req: Request, conf: Conf) -> None:
    _delete(req, del_conf(conf))


def _delete(req: Request, net: DelConf) -> None:
    path = state_path(net.data_dir, req.container_id, req.ifname)
    state = read_state(path)
    if not netns.exists(req.netns):
        remove_state(path)
        return
    try:
        with locked(net.data_dir, create=False), in_netns(req.netns) as sock:
            idx = link_index(sock, req.ifname)
            if state is not None:
                _undo_from_state(sock, state, idx)
            else:
                _undo_by_address(sock, net.table, net.prev, req.ifname, idx)
    except CNIError as exc:
        if not isinstance(exc, InvalidNetns):  # the namespace vanished under us: nothing left to clean
            raise
    remove_state(path)


def _undo_from_state(sock: Rtnl, state: dict[str, Any], idx: int | None) -> None:
    for r in state.get("rules", []):
        try:
            fam = _AF[int(r["family"])]
            src = str(ipaddress.ip_address(r["src"]))
        except (KeyError, ValueError, TypeError):
            continue
        spec = {"family": fam, "src": src, "src_len": 32 if fam == socket.AF_INET else 128, "table": int(r["table"])}
        if r.get("priority"):
            spec["priority"] = int(r["priority"])
        _del_quiet(sock, "rule", **spec)
    for t in state.get("tables", []):
        if isinstance(t, int) and t not in _RESERVED_TABLES:
            _flush_table(sock, t)
    if idx is not None:
        moved = [r for r in state.get("moved", []) if isinstance(r, dict) and "family" in r and "dst" in r]
        # Routes without a gateway (the connected subnet) first: the kernel refuses a route via
        # a gateway it cannot reach yet (ENETUNREACH), and the state lists routes in dump order,
        # where a default route comes before the subnet route that makes its gateway reachable.
        for r in sorted(moved, key=lambda r: r.get("gateway") is not None):
            _readd_main(sock, r, idx)


def _undo_by_address(sock: Rtnl, table: int | None, prev: Result | None, ifname: str, idx: int | None) -> None:
    """No state file (lost, or ADD by another implementation): rules whose source is one of the
    interface's addresses, and the sbr tables (>= 100) they point to."""
    from cni.netlink import addresses

    addrs: set[str] = set()
    if prev is not None:
        addrs |= {str(ip.address.ip) for ip in ips_of(prev, ifname)}
    if idx is not None:
        addrs |= {str(a.ip) for a in addresses(sock, idx)}
    tables: set[int] = set()
    for r in _rules(sock):
        if r["src"] is None or r["src"] not in addrs or r["src_len"] not in (32, 128):
            continue
        if table is not None and r["table"] != table:
            continue
        spec = {"family": _AF[r["family"]], "src": r["src"], "src_len": r["src_len"], "table": r["table"], "priority": r["priority"]}
        _del_quiet(sock, "rule", **spec)
        if table is None and r["table"] >= FIRST_TABLE:
            tables.add(r["table"])
    for t in tables:
        # Only flush a table no other rule still points to.
        if not any(r["table"] == t for r in _rules(sock)):
            _flush_table(sock, t)


def check(req: Request, conf: Conf) -> None:
    net, prev = conf.net, conf.prev
    assert prev is not None
    todo = plan(net, prev, req.ifname)
    _ensure_netns(req)
    with in_netns(req.netns) as sock:
        idx = link_index(sock, req.ifname)
        if idx is None:
            raise CheckFailed(f"sbr: interface {req.ifname} not found in {req.netns}")
        rules = _rules(sock)
        for item in todo:
            src = str(item.ip.ip)
            mine = [r for r in rules if r["src"] == src and r["src_len"] == item.ip.max_prefixlen]
            if net.table is not None:
                mine = [r for r in mine if r["table"] == net.table]
            if not mine:
                raise CheckFailed(f"sbr: no rule 'from {src} lookup ...' for {req.ifname}")
            if net.table is not None:
                continue
            table = mine[0]["table"]
            defaults = [
                r for r in _routes(sock, table=table, oif=idx)
                if r["family"] == item.ip.version and r["dst"].endswith("/0")
                and r["gateway"] is not None and ipaddress.ip_address(r["gateway"]) == item.gateway
            ]
            if not defaults:
                raise CheckFailed(f"sbr: table {table} for {src} has no default route via {item.gateway} dev {req.ifname}")


PLUGIN = Plugin(TYPE, parse, add, delete, check, delete_only=delete_only)
