"""host-local IPAM: addresses from local range sets, reservations in files on this node.

Config (reference plugins/ipam/host-local): ``ipam.ranges`` (list of range sets, each a list of
``{subnet, rangeStart, rangeEnd, gateway}``), the legacy single range at the top of ``ipam``
(``subnet``/``rangeStart``/``rangeEnd``/``gateway``, prepended to ``ranges``), runtimeConfig
``ipRanges`` (capability, prepended before everything), ``routes``, ``dataDir`` (default
/var/lib/cni/networks), ``resolvConf`` (a resolv.conf read into the result's DNS). Requested
addresses: CNI_ARGS ``IP=`` (comma list), ``args.cni.ips``, runtimeConfig ``ips``; each range
set takes the first requested address it contains; one that fits no range set is an error.

Rules:
- ``parse`` is pure and validates everything ADD needs, so bad input (error 7, or 4 for
  CNI_ARGS) fails before any file is touched. DEL, CHECK and GC need only the network name and
  ``dataDir``: DEL still releases when the ranges in the config have since become invalid.
- The allocator (``allocator.py``) is pure; ``store.py`` is the only file I/O. One ADD holds
  the network's flock for all its range sets and undoes its own reservations on failure.
- A second ADD for the same (containerID, ifname) fails, as in the reference (SPEC: no
  duplicate allocation); DEL releases by (containerID, ifname) and is idempotent; CHECK
  verifies the reservation (and prevResult's addresses, when given); GC (CNI 1.1; the
  reference has none) releases what ``cni.dev/valid-attachments`` does not list.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from cni.plugin import Plugin, valid_attachments
from cni.spec import versions
from cni.spec.args import check_known, validate_network_name
from cni.spec.errors import IncompatibleVersion, InvalidConfig, IOFailure, UnknownContainer
from cni.spec.request import Request
from cni.spec.result import DNS, IPAddress, Result, Route

from .._common import (
    HOST_LOCAL_SCHEMA,
    RequestedIP,
    bad_field,
    ipam_section,
    opt_str,
    parse_address,
    parse_resolv_conf,
    parse_routes,
    parse_subnet,
    requested_ips,
)
from . import allocator
from .allocator import Owner, Range, RangeSet

TYPE = "host-local"
DEFAULT_DATA_DIR = "/var/lib/cni/networks"
CNI_ARGS_KEYS = frozenset({"IP"})


@dataclass(frozen=True)
class Conf:
    network: str
    data_dir: str
    rangesets: tuple[RangeSet, ...] = ()
    wheres: tuple[str, ...] = ()  # each range set's field path, for messages
    requested: tuple[IPAddress | None, ...] = ()  # per range set
    routes: tuple[Route, ...] = ()
    resolv_conf: str = ""


def _range(raw: Any, where: str) -> Range:
    if not isinstance(raw, dict):
        raise bad_field(where, f"must be an object {{subnet, rangeStart, rangeEnd, gateway}}, got {type(raw).__name__}")
    if raw.get("subnet") in (None, ""):
        raise bad_field(f"{where}.subnet", "is missing")
    subnet = parse_subnet(raw["subnet"], f"{where}.subnet")

    def ip(key: str) -> IPAddress | None:
        val = raw.get(key)
        return None if val in (None, "") else parse_address(val, f"{where}.{key}")

    return allocator.make_range(subnet, ip("rangeStart"), ip("rangeEnd"), ip("gateway"), where=where)


def _rangeset(raw: Any, where: str) -> RangeSet:
    if not isinstance(raw, list):
        raise bad_field(where, f"must be a list of ranges, got {type(raw).__name__}")
    rs = tuple(_range(r, f"{where}[{i}]") for i, r in enumerate(raw))
    allocator.check_rangeset(rs, where=where)
    return rs


def _rangesets(req: Request, ipam: dict[str, Any]) -> tuple[list[RangeSet], list[str]]:
    """runtimeConfig.ipRanges, then the legacy range, then ipam.ranges (reference order: it fixes the indexes)."""
    sets: list[RangeSet] = []
    wheres: list[str] = []
    rc_ranges = req.runtime_config().get("ipRanges")
    if rc_ranges is not None:
        if not isinstance(rc_ranges, list):
            raise bad_field("runtimeConfig.ipRanges", "must be a list of range sets")
        for i, raw in enumerate(rc_ranges):
            sets.append(_rangeset(raw, f"runtimeConfig.ipRanges[{i}]"))
            wheres.append(f"runtimeConfig.ipRanges[{i}]")
    if ipam.get("subnet") not in (None, ""):
        sets.append((_range(ipam, "ipam"),))
        wheres.append("ipam")
    ranges = ipam.get("ranges")
    if ranges is not None:
        if not isinstance(ranges, list):
            raise bad_field("ipam.ranges", "must be a list of range sets")
        for i, raw in enumerate(ranges):
            sets.append(_rangeset(raw, f"ipam.ranges[{i}]"))
            wheres.append(f"ipam.ranges[{i}]")
    if not sets:
        raise InvalidConfig("network config field 'ipam.ranges' is missing: no IP ranges specified", "set ipam.ranges (or ipam.subnet)")
    allocator.check_no_overlaps(sets, wheres)
    return sets, wheres


def _assign(sets: list[RangeSet], wheres: list[str], wanted: tuple[RequestedIP, ...]) -> tuple[IPAddress | None, ...]:
    """Give each range set the first requested address it contains; leftovers are errors (reference cmdAdd)."""
    left = list(wanted)
    out: list[IPAddress | None] = []
    for rs, where in zip(sets, wheres, strict=True):
        pick = next((r for r in left if allocator.range_for(rs, r.ip) is not None), None)
        if pick is not None:
            left.remove(pick)
            rng = allocator.range_for(rs, pick.ip)
            if rng is not None and pick.ip == rng.gateway:
                raise InvalidConfig(f"requested IP address {pick.ip} ({pick.source}) is the gateway of range set {where}")
        out.append(pick.ip if pick else None)
    if left:
        r = left[0]
        taken_by = [w for rs, w, p in zip(sets, wheres, out, strict=True) if p is not None and allocator.range_for(rs, r.ip)]
        why = f"range set {taken_by[0]} already gets {out[wheres.index(taken_by[0])]}" if taken_by else "it is in no configured range"
        raise InvalidConfig(
            f"failed to allocate all requested IPs: {', '.join(str(x.ip) for x in left)}",
            f"{r.ip} ({r.source}): {why}",
        )
    return tuple(out)


def parse(req: Request) -> Conf:
    network = validate_network_name(req.config.get("name"))
    ipam = ipam_section(req.config, HOST_LOCAL_SCHEMA)
    data_dir = opt_str(ipam, "dataDir", "ipam") or DEFAULT_DATA_DIR
    if not data_dir.startswith("/"):
        # A relative dataDir would put reservations wherever the runtime's working directory is.
        raise InvalidConfig(f"ipam.dataDir must be an absolute path, got {data_dir!r}")
    if req.command in ("DEL", "GC"):
        # Releasing needs only where the files are; a config whose ranges are now broken must still release.
        return Conf(network=network, data_dir=data_dir)
    check_known(req.cni_args, CNI_ARGS_KEYS)
    sets, wheres = _rangesets(req, ipam)
    if not versions.at_least(req.cni_version, "0.3.0"):
        fams = [rs[0].version for rs in sets]
        if fams.count(4) > 1 or fams.count(6) > 1:
            raise IncompatibleVersion(f"cniVersion {req.cni_version} does not support more than 1 address per family", "use cniVersion 0.3.0 or later")
    requested = _assign(sets, wheres, requested_ips(req).union())
    return Conf(
        network=network,
        data_dir=data_dir,
        rangesets=tuple(sets),
        wheres=tuple(wheres),
        requested=requested,
        routes=parse_routes(ipam.get("routes"), "ipam.routes"),
        resolv_conf=opt_str(ipam, "resolvConf", "ipam"),
    )


def _owner(req: Request) -> Owner:
    return Owner(req.container_id.strip(), req.ifname)


def add(req: Request, conf: Conf) -> Result:
    from . import store

    dns = DNS()
    if conf.resolv_conf:
        try:
            with open(conf.resolv_conf, encoding="utf-8", errors="replace") as f:
                dns = parse_resolv_conf(f.read())
        except OSError as exc:
            raise IOFailure(f"host-local: cannot read resolvConf {conf.resolv_conf}", exc.strerror or str(exc)) from None
    owner = _owner(req)
    with store.locked(conf.data_dir, conf.network) as st, ExitStack() as undo:
        assert st is not None
        ips = []
        for i, rs in enumerate(conf.rangesets):
            got = allocator.allocate(rs, i, st, owner, conf.requested[i], where=conf.wheres[i])
            undo.callback(st.release_ip, got.address.ip, owner)
            ips.append(got)
        undo.pop_all()
    return Result(cni_version=req.cni_version, ips=tuple(ips), routes=conf.routes, dns=dns)


def delete(req: Request, conf: Conf) -> None:
    from . import store

    with store.locked(conf.data_dir, conf.network, create=False) as st:
        if st is not None:
            st.release(_owner(req))


def check(req: Request, conf: Conf) -> None:
    from cni.spec.result import from_wire

    from . import store

    owner = _owner(req)
    with store.locked(conf.data_dir, conf.network, create=False) as st:
        held = set(st.owned_by(owner)) if st is not None else set()
    if not held:
        raise UnknownContainer(
            f"host-local: no address is reserved for container {owner.container_id} interface {owner.ifname} in network {conf.network}",
            f"looked in {conf.data_dir}/{conf.network}",
        )
    prev = req.config.get("prevResult")
    if prev is None:
        return
    result = from_wire(prev, err_cls=InvalidConfig)
    for ipc in result.ips:
        ip = ipc.address.ip
        mine = any(allocator.range_for(rs, ip) for rs in conf.rangesets)
        if mine and ip not in held:
            raise UnknownContainer(
                f"host-local: {ip} from prevResult is not reserved for container {owner.container_id} interface {owner.ifname}",
                f"reserved: {', '.join(sorted(map(str, held)))}",
            )


def status(req: Request, conf: Conf) -> None:
    """Ready when the config parses (done by ``parse``); the store is created on first ADD."""
    return None


def gc(req: Request, conf: Conf) -> None:
    from . import store

    valid = valid_attachments(req.config)
    if valid is None:
        return  # without the list we cannot tell what is stale; collecting everything would be a disaster
    with store.locked(conf.data_dir, conf.network, create=False) as st:
        if st is not None:
            st.gc({Owner(c.strip(), i) for c, i in valid})


PLUGIN: Plugin[Conf] = Plugin(
    TYPE, parse, add, delete, check, status, gc, capabilities=frozenset({"ips", "ipRanges"})
)
