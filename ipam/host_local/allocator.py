"""host-local's address allocator. PURE: no files, no locks, no clock — state lives behind ``Store``.

Semantics follow the reference (plugins/ipam/host-local/backend/allocator), so a node can
switch between the two binaries:
- A *range* is ``subnet`` + inclusive ``rangeStart``..``rangeEnd`` + ``gateway``; defaults are
  gateway = subnet+1, start = subnet+1 (the gateway is skipped while iterating), end =
  broadcast−1 for IPv4 and the last address for IPv6. A *range set* is a list of ranges of one
  family; one address is allocated per range set.
- Round-robin: the search starts right after the range set's last reserved address
  (``last_reserved_ip.<index>`` on disk) and walks to the end of its range, through the next
  ranges, wraps around and ends at the last reserved address itself. Without a (valid) last
  reserved address it starts at the first range's start.
- One (containerID, ifname) holds at most one address per range set: a second dynamic ADD is
  an error (SPEC: duplicate allocation is not allowed).

Cost: the store hands out the taken addresses of a family as a sorted sequence of ints; the
next free address after a cursor is found by bisection over runs of consecutive taken
addresses (O(log n)), not by probing every taken address in turn as the reference does. A full
IPv6 /64 is fine: addresses are Python ints.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from cni.spec.errors import AddressExhausted, CNIError, InvalidConfig
from cni.spec.result import IPAddress, IPConfig, IPNetwork


class AlreadyAllocated(CNIError):
    """The container already holds an address in this range set (a repeated ADD without DEL)."""

    code = AddressExhausted.code  # no closer code exists; the message tells the two apart


class Owner(NamedTuple):
    """Who holds a reservation: the CNI attachment key."""

    container_id: str
    ifname: str


# ---- ranges ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """One allocatable range. Build it with ``make_range`` (which validates and fills defaults)."""

    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress | None

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, ip: IPAddress) -> bool:
        """True when ``ip`` may be handed out by this range (reference ``Range.Contains``)."""
        # Same family checked first, so comparing the integers is what ipaddress's ordering does.
        return ip.version == self.version and int(self.start) <= int(ip) <= int(self.end)

    def __str__(self) -> str:  # the reference prints ranges as start-end
        return f"{self.start}-{self.end}"


RangeSet = tuple[Range, ...]


def rangeset_str(rs: RangeSet) -> str:
    return ",".join(str(r) for r in rs)


def _bad(path: str, problem: str, details: str = "") -> InvalidConfig:
    return InvalidConfig(f"invalid network config field {path!r}: {problem}", details)


def make_range(
    subnet: IPNetwork,
    start: IPAddress | None = None,
    end: IPAddress | None = None,
    gateway: IPAddress | None = None,
    *,
    where: str = "range",
) -> Range:
    """Validate one range and fill the reference defaults. ``where`` is its field path for errors."""
    v = subnet.version
    width = 32 if v == 4 else 128
    # The reference refuses networks with fewer than 4 addresses (/31, /32, /127, /128).
    if subnet.prefixlen > width - 2:
        raise _bad(f"{where}.subnet", f"network {subnet} is too small to allocate from", "use a prefix of at most /30 (IPv4) or /126 (IPv6)")
    net_i = int(subnet.network_address)
    last_i = int(subnet.broadcast_address)
    addr = ipaddress.IPv4Address if v == 4 else ipaddress.IPv6Address

    def inside(ip: IPAddress, field: str) -> None:
        if ip.version != v:
            raise _bad(f"{where}.{field}", f"{ip} is not of the address family of subnet {subnet}")
        if ip not in subnet:
            raise _bad(f"{where}.{field}", f"{ip} is not in subnet {subnet}")

    if gateway is None:
        gateway = addr(net_i + 1)
    else:
        inside(gateway, "gateway")
    if start is None:
        start = addr(net_i + 1)
    else:
        inside(start, "rangeStart")
    if end is None:
        end = addr(last_i - 1 if v == 4 else last_i)
    else:
        inside(end, "rangeEnd")
        if int(end) < int(start):  # both of family v (checked by inside / built by addr)
            raise _bad(f"{where}.rangeEnd", f"{end} is before rangeStart {start}")
    if v == 4:
        # The reference would hand out the network or broadcast address; a pod given one cannot talk.
        if int(start) == net_i:
            raise _bad(f"{where}.rangeStart", f"{start} is the network address of {subnet}")
        if int(end) == last_i:
            raise _bad(f"{where}.rangeEnd", f"{end} is the broadcast address of {subnet}")
    return Range(subnet=subnet, start=start, end=end, gateway=gateway)


def _overlap(a: Range, b: Range) -> bool:
    return a.version == b.version and not (int(a.end) < int(b.start) or int(b.end) < int(a.start))


def check_rangeset(rs: RangeSet, *, where: str) -> None:
    """One family per set, no overlapping ranges inside it (reference ``RangeSet.Canonicalize``)."""
    if not rs:
        raise _bad(where, "is an empty range set")
    for i, r in enumerate(rs[1:], start=1):
        if r.version != rs[0].version:
            raise _bad(f"{where}[{i}]", "mixes address families with the first range of its set", "use one range set per family")
    for i, a in enumerate(rs):
        for j in range(i + 1, len(rs)):
            if _overlap(a, rs[j]):
                raise _bad(f"{where}[{j}]", f"range {rs[j]} overlaps range {a} ({where}[{i}])")


def check_no_overlaps(sets: Sequence[RangeSet], wheres: Sequence[str]) -> None:
    """Range sets must not overlap each other, or two sets could hand out one address."""
    for i, a in enumerate(sets):
        for j in range(i + 1, len(sets)):
            if any(_overlap(x, y) for x in a for y in sets[j]):
                raise _bad(wheres[j], f"range set {rangeset_str(sets[j])} overlaps range set {rangeset_str(a)} ({wheres[i]})")


def range_for(rs: RangeSet, ip: IPAddress) -> Range | None:
    for r in rs:
        if r.contains(ip):
            return r
    return None


# ---- the store interface ---------------------------------------------------------------


class Store(Protocol):
    """The allocator's view of the reservations of one network. Callers hold the store's lock."""

    def reserve(self, ip: IPAddress, owner: Owner, rangeset_id: int) -> bool:
        """Atomically reserve ``ip``; False when it is already reserved. Records it as last reserved."""

    def release_ip(self, ip: IPAddress, owner: Owner) -> None:
        """Drop ``ip`` if ``owner`` holds it (undo of a reservation made in this operation)."""

    def owned_by(self, owner: Owner) -> list[IPAddress]:
        """Every address ``owner`` holds in this network."""

    def last_reserved(self, rangeset_id: int) -> IPAddress | None:
        """The address last reserved for range set ``rangeset_id`` (None if unknown)."""

    def taken(self, version: int) -> Sequence[int]:
        """Every reserved address of one family as ints, sorted ascending, without duplicates."""


# ---- allocation ---------------------------------------------------------------------------


def _first_free(taken: Sequence[int], lo: int, hi: int) -> int | None:
    """The smallest x in [lo, hi] not in ``taken`` (sorted, distinct), in O(log n).

    In a sorted list of distinct ints, ``taken[j] - j`` never decreases, and it stays constant
    exactly along a run of consecutive integers, so the end of the run starting at ``lo`` is
    found by bisection.
    """
    if lo > hi:
        return None
    p = bisect.bisect_left(taken, lo)
    if p == len(taken) or taken[p] != lo:
        return lo
    key = taken[p] - p
    a, b = p, len(taken)
    while a < b:
        mid = (a + b) // 2
        if taken[mid] - mid > key:
            b = mid
        else:
            a = mid + 1
    x = taken[a - 1] + 1
    return x if x <= hi else None


def _segments(rs: RangeSet, cursor: IPAddress | None) -> list[tuple[Range, int, int]]:
    """The reference iteration order as inclusive int intervals, one full cycle."""
    if cursor is None or range_for(rs, cursor) is None:
        return [(r, int(r.start), int(r.end)) for r in rs]
    i = next(k for k, r in enumerate(rs) if r.contains(cursor))
    c = int(cursor)
    out = [(rs[i], c + 1, int(rs[i].end))]
    n = len(rs)
    out += [(rs[(i + k) % n], int(rs[(i + k) % n].start), int(rs[(i + k) % n].end)) for k in range(1, n)]
    out.append((rs[i], int(rs[i].start), c))
    return out


def _config(r: Range, ip_int: int) -> IPConfig:
    cls = ipaddress.IPv4Interface if r.version == 4 else ipaddress.IPv6Interface
    return IPConfig(address=cls((ip_int, r.subnet.prefixlen)), gateway=r.gateway)


def allocate(
    rs: RangeSet,
    rangeset_id: int,
    store: Store,
    owner: Owner,
    requested: IPAddress | None = None,
    *,
    where: str = "range set",
) -> IPConfig:
    """Reserve one address of ``rs`` for ``owner`` (the requested one, or the next free one)."""
    if requested is not None:
        r = range_for(rs, requested)
        if r is None:
            raise InvalidConfig(f"requested IP address {requested} is not in range set {rangeset_str(rs)} ({where})")
        if requested == r.gateway:
            raise InvalidConfig(f"requested IP address {requested} is the gateway of range set {rangeset_str(rs)} ({where})")
        for held in store.owned_by(owner):
            if range_for(rs, held) is not None:
                raise AlreadyAllocated(
                    f"{held} is already allocated to container {owner.container_id} interface {owner.ifname} in range set {rangeset_str(rs)}",
                    "duplicate allocation is not allowed; DEL the attachment first",
                )
        if not store.reserve(requested, owner, rangeset_id):
            raise AddressExhausted(
                f"requested IP address {requested} is not available in range set {rangeset_str(rs)} ({where})",
                "another container holds it",
            )
        return _config(r, int(requested))

    for held in store.owned_by(owner):
        if range_for(rs, held) is not None:
            raise AlreadyAllocated(
                f"{held} is already allocated to container {owner.container_id} interface {owner.ifname} in range set {rangeset_str(rs)}",
                "duplicate allocation is not allowed; DEL the attachment first",
            )
    version = rs[0].version
    taken = store.taken(version)
    for r, lo, hi in _segments(rs, store.last_reserved(rangeset_id)):
        gw = int(r.gateway) if r.gateway is not None else -1
        while lo <= hi:
            x = _first_free(taken, lo, hi)
            if x is None:
                break
            if x == gw:
                lo = x + 1
                continue
            ip = ipaddress.IPv4Address(x) if version == 4 else ipaddress.IPv6Address(x)
            if store.reserve(ip, owner, rangeset_id):
                return _config(r, x)
            # The listing was stale (a reservation appeared behind our back): skip it and go on.
            taken = store.taken(version)
            lo = x + 1
    raise AddressExhausted(
        f"no IP addresses available in range set {rangeset_str(rs)} ({where})",
        "every address of the range set is reserved; release unused reservations (CNI DEL/GC) or widen the range",
    )


# ---- an in-memory store (tests, benchmarks, and a model of the contract) --------------------


class MemoryStore:
    """A ``Store`` in memory, cheap enough for a million reservations (benchmarks, tests).

    Addresses are kept as ints per family; ``owned_by`` is O(1) through an owner index.
    """

    def __init__(self) -> None:
        self.last: dict[int, IPAddress] = {}
        self._owner: dict[int, dict[int, Owner]] = {4: {}, 6: {}}
        self._by_owner: dict[Owner, set[IPAddress]] = {}
        self._sorted: dict[int, list[int]] = {4: [], 6: []}

    @property
    def holders(self) -> dict[IPAddress, Owner]:
        """Address → owner of every reservation (O(n); for assertions)."""
        out: dict[IPAddress, Owner] = {}
        for v, m in self._owner.items():
            cls = ipaddress.IPv4Address if v == 4 else ipaddress.IPv6Address
            out.update((cls(x), o) for x, o in m.items())
        return out

    def reserve(self, ip: IPAddress, owner: Owner, rangeset_id: int) -> bool:
        m = self._owner[ip.version]
        x = int(ip)
        if x in m:
            return False
        m[x] = owner
        self._by_owner.setdefault(owner, set()).add(ip)
        bisect.insort(self._sorted[ip.version], x)
        self.last[rangeset_id] = ip
        return True

    def release_ip(self, ip: IPAddress, owner: Owner) -> None:
        if self._owner[ip.version].get(int(ip)) == owner:
            self._drop(ip, owner)

    def _drop(self, ip: IPAddress, owner: Owner) -> None:
        x = int(ip)
        del self._owner[ip.version][x]
        self._by_owner.get(owner, set()).discard(ip)
        lst = self._sorted[ip.version]
        del lst[bisect.bisect_left(lst, x)]

    def owned_by(self, owner: Owner) -> list[IPAddress]:
        return list(self._by_owner.get(owner, ()))

    def last_reserved(self, rangeset_id: int) -> IPAddress | None:
        return self.last.get(rangeset_id)

    def taken(self, version: int) -> Sequence[int]:
        return self._sorted[version]

    def release(self, owner: Owner) -> list[IPAddress]:
        gone = self.owned_by(owner)
        for ip in gone:
            self._drop(ip, owner)
        return gone

    def fill(self, ips: Sequence[IPAddress], owner: Owner) -> None:
        """Bulk-load reservations held by ``owner`` (one sort instead of n inserts)."""
        for ip in ips:
            self._owner[ip.version][int(ip)] = owner
        self._by_owner.setdefault(owner, set()).update(ips)
        for v in (4, 6):
            self._sorted[v] = sorted(self._owner[v])

    def fill_ints(self, version: int, ints: Sequence[int], owner: Owner) -> None:
        """Bulk-load addresses given as ints (a million IPv6Address objects would dominate a benchmark).

        They are not indexed by owner: ``release``/``owned_by`` will not see them.
        """
        m = self._owner[version]
        m.update(dict.fromkeys(ints, owner))
        self._sorted[version] = sorted(m)
