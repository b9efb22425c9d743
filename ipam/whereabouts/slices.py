"""Node slices ("fast IPAM", whereabouts' ``node_slice_size``): a range cut into per-node sub-ranges. PURE.

Wire objects are whereabouts' (so its controller and ours read each other's):
- ``NodeSlicePool`` (``whereabouts.cni.cncf.io/v1alpha1``), named by ``network_name`` (else the network's ``name``):
  ``spec = {range, sliceSize}``, ``status.allocations = [{nodeName, sliceRange}]`` (``nodeName`` "" = free).
- Each slice's ``IPPool`` is named ``<network_name>-<node>-<slice>`` (``<node>-<slice>`` without a network name),
  ``spec.range`` is the slice and its offsets count from the slice's first address.

Rules:
- Slice ``i`` of a range is the ``i``-th subnet of prefix ``sliceSize``. The allocation list may be shorter than the
  number of slices (whereabouts' controller lists them all; we list them lazily, so an IPv6 /64 cut into /120s needs
  no 2^56-entry object): a slice that is not listed is free.
- A node claims the lowest free slice that has a usable address (``claim``); the caller writes the new list with a
  compare-and-swap on the object's version, so two nodes never get one slice. A node may hold several slices
  (claimed one after another as each fills up); whereabouts' own plugin uses the first one listed for its node.
- Inside a slice, the usable offsets are the PARENT range's: its network and all-ones addresses, ``range_start`` /
  ``range_end`` and ``exclude`` carry over; a slice's own first and last addresses are ordinary addresses.
- A slice is given back (``nodeName`` set to "") only when its IPPool is empty and its node is gone; that is the
  reconciler's job, never an ADD's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .allocator import IPNetwork, Range, pool_name

KIND = "NodeSlicePool"
PLURAL = "nodeslicepools"
MAX_LISTED = 64  # a new NodeSlicePool lists every slice (as whereabouts' controller does) up to this many; past
# that only claimed slices are listed: every ADD reads the object, and 256 entries cost more than the allocation


def parse_size(text: object, network: IPNetwork) -> int:
    """``"/24"`` or ``"24"`` → 24; ValueError with a sentence when it does not cut ``network``."""
    s = str(text).strip() if isinstance(text, (str, int)) and not isinstance(text, bool) else ""
    if s.startswith("/"):
        s = s[1:]
    if not s.isdigit():
        raise ValueError(f"{text!r} is not a prefix length such as \"/24\"")
    plen = int(s)
    if plen > network.max_prefixlen:
        raise ValueError(f"/{plen} is longer than an IPv{network.version} address")
    if plen <= network.prefixlen:
        raise ValueError(f"/{plen} does not cut range {network} into slices (it must be longer than "
                         f"/{network.prefixlen})")
    return plen


def slice_count(network: IPNetwork, plen: int) -> int:
    return 1 << (plen - network.prefixlen)


def slice_at(network: IPNetwork, plen: int, index: int) -> IPNetwork:
    size = 1 << (network.max_prefixlen - plen)
    return ipaddress.ip_network((int(network.network_address) + index * size, plen))


def index_of(network: IPNetwork, plen: int, sub: IPNetwork) -> int | None:
    """The index of ``sub`` in ``network``'s slicing, or None if it is not one of its slices."""
    if sub.version != network.version or sub.prefixlen != plen or not sub.subnet_of(network):  # type: ignore[arg-type]
        return None
    return (int(sub.network_address) - int(network.network_address)) >> (network.max_prefixlen - plen)


def sub_range(parent: Range, sub: IPNetwork) -> Range | None:
    """The part of ``parent``'s usable window inside ``sub``, as a Range over ``sub`` (None: nothing usable)."""
    shift = int(sub.network_address) - parent.base
    lo = max(parent.lo - shift, 0)
    hi = min(parent.hi - shift, sub.num_addresses - 1)
    if lo > hi:
        return None
    excludes = tuple((max(a - shift, lo), min(b - shift, hi)) for a, b in parent.excludes
                     if b - shift >= lo and a - shift <= hi)
    rng = Range(sub, lo, hi, excludes, parent.range_start, parent.range_end, parent.exclude_text)
    return rng if rng.segments() else None


def slice_pool_name(sub: IPNetwork, node: str, network_name: str = "") -> str:
    """whereabouts' ``IPPoolName`` for a node slice: ``[<network>-]<node>-<normalised slice>``."""
    return pool_name(sub, f"{network_name}-{node}" if network_name else node)


@dataclass(frozen=True)
class SliceAlloc:
    node: str
    cidr: str


@dataclass
class SlicePool:
    """A NodeSlicePool as read (``version`` None: it does not exist yet)."""

    name: str
    range: str
    size: str
    allocations: list[SliceAlloc]
    version: str | None = None
    raw: Any = None

    def of_node(self, node: str) -> list[IPNetwork]:
        out = []
        for a in self.allocations:
            if a.node == node:
                try:
                    out.append(ipaddress.ip_network(a.cidr, strict=False))
                except ValueError:
                    continue
        return out


def new_pool(name: str, network: IPNetwork, plen: int) -> SlicePool:
    n = slice_count(network, plen)
    listed = [SliceAlloc("", str(slice_at(network, plen, i))) for i in range(n)] if n <= MAX_LISTED else []
    return SlicePool(name, str(network), f"/{plen}", listed)


def claim(pool: SlicePool, node: str, parent: Range, plen: int) -> tuple[SlicePool, IPNetwork] | None:
    """``pool`` with the lowest free usable slice given to ``node`` (None: every slice is taken)."""
    net = parent.network
    taken: set[int] = set()
    free_listed: dict[int, int] = {}  # slice index → position in the list
    for pos, a in enumerate(pool.allocations):
        try:
            idx = index_of(net, plen, ipaddress.ip_network(a.cidr, strict=False))
        except ValueError:
            continue
        if idx is None:
            continue
        if a.node:
            taken.add(idx)
        else:
            free_listed.setdefault(idx, pos)
    # Candidates in index order; only slices with a usable address (exclude/range_start may empty whole slices).
    first = parent.lo >> (net.max_prefixlen - plen)
    last = parent.hi >> (net.max_prefixlen - plen)
    idx = first
    while idx <= last:
        if idx not in taken:
            sub = slice_at(net, plen, idx)
            if sub_range(parent, sub) is not None:
                allocs = list(pool.allocations)
                if idx in free_listed:
                    allocs[free_listed[idx]] = SliceAlloc(node, str(sub))
                else:
                    allocs.append(SliceAlloc(node, str(sub)))
                return SlicePool(pool.name, pool.range, pool.size, allocs, pool.version, pool.raw), sub
        idx += 1
    return None


def give_back(pool: SlicePool, node: str, cidr: str) -> SlicePool:
    allocs = [SliceAlloc("", a.cidr) if (a.node == node and a.cidr == cidr) else a for a in pool.allocations]
    return SlicePool(pool.name, pool.range, pool.size, allocs, pool.version, pool.raw)


# ---- wire ---------------------------------------------------------------------------------------------------------


def to_object(pool: SlicePool, namespace: str, api_version: str) -> dict[str, Any]:
    obj: dict[str, Any] = dict(pool.raw) if isinstance(pool.raw, dict) else {}
    obj["apiVersion"] = api_version
    obj["kind"] = KIND
    meta = dict(obj.get("metadata") or {})
    meta["name"] = pool.name
    meta.setdefault("namespace", namespace)
    meta.pop("resourceVersion", None)
    obj["metadata"] = meta
    obj["spec"] = {**(obj.get("spec") or {}), "range": pool.range, "sliceSize": pool.size}
    obj["status"] = {**(obj.get("status") or {}),
                     "allocations": [{"nodeName": a.node, "sliceRange": a.cidr} for a in pool.allocations]}
    return obj


def from_object(obj: Mapping[str, Any], version: str | None) -> SlicePool:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    allocs = []
    for a in status.get("allocations") or []:
        if isinstance(a, Mapping) and a.get("sliceRange"):
            allocs.append(SliceAlloc(str(a.get("nodeName") or ""), str(a["sliceRange"])))
    return SlicePool(str(meta.get("name") or ""), str(spec.get("range") or ""), str(spec.get("sliceSize") or ""),
                     allocs, version, dict(obj))
