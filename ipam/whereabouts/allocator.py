"""whereabouts allocation: ranges, lowest-free search, pool and reservation naming. PURE.

Rules of this module (no I/O, no sockets, no clock):
- Addresses inside a pool are **offsets** from the range's network address (Python ints, so a whole IPv6 /64 is
  usable — whereabouts' int64 offsets stop at a /65, whereabouts#83). On the wire an offset is its decimal string.
- The usable part of a range is ``max(range_start, network+1) .. min(range_end, broadcast-1)`` minus the excluded
  subnets; the network and all-ones addresses are skipped for IPv6 too, as whereabouts does.
- ``first_free`` is the lowest usable offset not taken. It never walks the range: it binary-searches a sorted list of
  taken offsets inside each allowed segment, so its cost is O(segments · log taken), not O(range) (whereabouts walks
  every address per allocation).
- Ownership: an allocation is held by ``(podref, ifname)`` (idempotent ADD: a re-ADD gets the same address) and
  released by ``(containerID, ifname)`` (DEL). Without a podRef (no Kubernetes), the containerID stands in for it.
- Names follow whereabouts so a cluster can switch either way: an IPPool is the range's CIDR with ``:`` and ``/``
  replaced by ``-``, an OverlappingRangeIPReservation the IP with ``:`` replaced by ``-``; both prefixed by
  ``<network_name>-`` when a network name is set.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cni.spec.errors import AddressExhausted

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Allocation:
    """One entry of ``IPPool.spec.allocations``: ``{id, podref, ifname}`` on the wire, plus ``ipamclaimref``
    (whereabouts' own, for an IPAMClaim's address) and ``poduid`` (ours: the identity the reconciler keys on; Go's
    decoder and whereabouts ignore it, an apiserver with whereabouts' own CRD prunes it — then the reconciler falls
    back to the pod's name)."""

    container_id: str
    podref: str
    ifname: str
    pod_uid: str = ""
    claim: str = ""  # "namespace/name" of the IPAMClaim that owns the address
    # When the entry was written for this container, Unix milliseconds of the node that wrote it (ours, like
    # poduid): the reconciler frees an entry of a replaced sandbox only when it predates the current sandbox's ADD.
    at: int = 0

    def to_wire(self) -> dict[str, str]:
        out = {"id": self.container_id, "podref": self.podref, "ifname": self.ifname}
        if self.pod_uid:
            out["poduid"] = self.pod_uid
        if self.claim:
            out["ipamclaimref"] = self.claim
        if self.at:
            out["allocatedat"] = str(self.at)
        return out

    def same_holder(self, other: Allocation) -> bool:
        """Equal but for ``at`` (rewriting an entry only to refresh its time is not worth a write)."""
        return (self.container_id, self.podref, self.ifname, self.pod_uid, self.claim) == \
            (other.container_id, other.podref, other.ifname, other.pod_uid, other.claim)

    @classmethod
    def from_wire(cls, raw: object) -> Allocation | None:
        if not isinstance(raw, Mapping):
            return None
        at = str(raw.get("allocatedat") or "")
        return cls(str(raw.get("id") or ""), str(raw.get("podref") or ""), str(raw.get("ifname") or ""),
                   str(raw.get("poduid") or ""), str(raw.get("ipamclaimref") or ""),
                   int(at) if at.isdigit() and len(at) < 19 else 0)


@dataclass(frozen=True)
class Owner:
    """Who asks: the CNI request's container, pod and interface."""

    container_id: str
    podref: str
    ifname: str
    pod_uid: str = ""  # CNI_ARGS K8S_POD_UID
    claim: str = ""  # "namespace/name" of the IPAMClaim this attachment names
    at: int = 0  # when this request's entry is written (Unix ms; set by the ADD, this module reads no clock)

    def holds(self, a: Allocation) -> bool:
        """Idempotency key: the claim when there is one (the address follows the claim, not the pod), else
        podRef + ifName (containerID when there is no pod, e.g. podman)."""
        if self.claim or a.claim:
            return bool(self.claim) and a.claim == self.claim
        if self.podref:
            return a.podref == self.podref and a.ifname in (self.ifname, "")
        return not a.podref and a.container_id == self.container_id and a.ifname in (self.ifname, "")

    def attached(self, a: Allocation) -> bool:
        """DEL/CHECK key: containerID + ifName (an allocation written without ifname matches any)."""
        return a.container_id == self.container_id and a.ifname in (self.ifname, "")

    def allocation(self) -> Allocation:
        return Allocation(self.container_id, self.podref, self.ifname, self.pod_uid, self.claim, self.at)


@dataclass(frozen=True)
class Range:
    """One allocation range: a network, the usable offsets [lo, hi] and the excluded offset intervals."""

    network: IPNetwork
    lo: int  # first usable offset
    hi: int  # last usable offset
    excludes: tuple[tuple[int, int], ...] = ()  # merged, sorted, clipped to [lo, hi]
    range_start: IPAddress | None = None
    range_end: IPAddress | None = None
    exclude_text: tuple[str, ...] = ()

    @classmethod
    def build(cls, network: IPNetwork, start: IPAddress | None = None, end: IPAddress | None = None,
              excludes: Iterable[IPNetwork] = ()) -> Range:
        """The usable window of ``network`` (callers validate that start/end/excludes belong to it)."""
        base = int(network.network_address)
        size = network.num_addresses
        lo = max(1, int(start) - base if start is not None else 1)
        hi = min(size - 2, int(end) - base if end is not None else size - 2)
        ivals = []
        texts = []
        for ex in excludes:
            texts.append(str(ex))
            a = int(ex.network_address) - base
            b = a + ex.num_addresses - 1
            a, b = max(a, lo), min(b, hi)
            if a <= b:
                ivals.append((a, b))
        ivals.sort()
        merged: list[tuple[int, int]] = []
        for a, b in ivals:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return cls(network, lo, hi, tuple(merged), start, end, tuple(texts))

    @property
    def base(self) -> int:
        return int(self.network.network_address)

    @property
    def cidr(self) -> str:
        return str(self.network)

    def ip_at(self, offset: int) -> IPAddress:
        return ipaddress.ip_address(self.base + offset)

    def offset_of(self, ip: IPAddress) -> int:
        return int(ip) - self.base

    def contains_offset(self, offset: int) -> bool:
        return 0 <= offset < self.network.num_addresses

    def usable(self, offset: int) -> bool:
        """Inside [lo, hi] and not excluded."""
        if not self.lo <= offset <= self.hi:
            return False
        i = bisect.bisect_right(self.excludes, (offset, float("inf"))) - 1
        return not (i >= 0 and self.excludes[i][0] <= offset <= self.excludes[i][1])

    def segments(self) -> list[tuple[int, int]]:
        """The allowed offset intervals, in order."""
        out = []
        cur = self.lo
        for a, b in self.excludes:
            if a > cur:
                out.append((cur, a - 1))
            cur = max(cur, b + 1)
        if cur <= self.hi:
            out.append((cur, self.hi))
        return out

    def capacity(self) -> int:
        return sum(b - a + 1 for a, b in self.segments())

    def describe(self) -> str:
        """whereabouts' wording of a range in its exhaustion error."""
        return (f"ip: {self.ip_at(self.lo)} / - {self.ip_at(self.hi)} / range: {self.network} / "
                f"excludeRanges: [{' '.join(self.exclude_text)}]")


class Taken:
    """The taken offsets of a pool, sorted, for binary search. Build once per pool read (O(n log n), or O(n) when
    the input is already sorted); ``add`` keeps it sorted."""

    __slots__ = ("_sorted",)

    def __init__(self, offsets: Iterable[int] = ()) -> None:
        self._sorted = sorted(set(offsets))

    def add(self, offset: int) -> None:
        i = bisect.bisect_left(self._sorted, offset)
        if i == len(self._sorted) or self._sorted[i] != offset:
            self._sorted.insert(i, offset)

    def __contains__(self, offset: object) -> bool:
        if not isinstance(offset, int):
            return False
        i = bisect.bisect_left(self._sorted, offset)
        return i < len(self._sorted) and self._sorted[i] == offset

    def __len__(self) -> int:
        return len(self._sorted)

    def first_gap(self, a: int, b: int) -> int | None:
        """The lowest offset in [a, b] that is not taken, or None."""
        t = self._sorted
        i0 = bisect.bisect_left(t, a)
        i1 = bisect.bisect_right(t, b)
        # t[i0:i1] are distinct and >= a, so t[k] >= a + (k - i0); "t[k] > a + k - i0" is monotone in k.
        lo, hi = i0, i1
        while lo < hi:
            mid = (lo + hi) // 2
            if t[mid] > a + (mid - i0):
                hi = mid
            else:
                lo = mid + 1
        cand = a + (lo - i0)
        return cand if cand <= b else None


def first_free(rng: Range, taken: Taken) -> int:
    """The lowest usable offset of ``rng`` not in ``taken``; ``AddressExhausted`` when there is none."""
    for a, b in rng.segments():
        off = taken.first_gap(a, b)
        if off is not None:
            return off
    raise AddressExhausted(f"Could not allocate IP in range: {rng.describe()}",
                           "every address of the range is allocated; free addresses (delete pods or run "
                           "'multinic reconcile') or widen the range")


def find_held(allocations: Mapping[int, Allocation], owner: Owner) -> int | None:
    """The offset already held by ``owner`` (idempotent ADD), or None. The lowest one if several."""
    held = [off for off, a in allocations.items() if owner.holds(a)]
    return min(held) if held else None


def find_attached(allocations: Mapping[int, Allocation], owner: Owner) -> list[int]:
    """Offsets allocated to ``owner``'s containerID + ifName (what DEL releases)."""
    return sorted(off for off, a in allocations.items() if owner.attached(a))


# ---- names (whereabouts-compatible) -----------------------------------------------------------------------------


def pool_name(network: IPNetwork, network_name: str = "") -> str:
    """IPPool name: ``192.168.2.0/24`` → ``192.168.2.0-24``; ``fd00::/64`` → ``fd00---64``; prefixed by network."""
    text = str(network)
    if text.endswith(":"):
        text += "0"
    norm = text.replace(":", "-").replace("/", "-")
    return f"{network_name}-{norm}" if network_name else norm


def reservation_name(ip: IPAddress, network_name: str = "") -> str:
    """OverlappingRangeIPReservation name: the IP with ``:`` → ``-`` (``2001::`` → ``2001--0``), network-prefixed."""
    text = str(ip)
    if text.endswith(":"):
        text += "0"
    norm = text.replace(":", "-")
    return f"{network_name}-{norm}" if network_name else norm


def ip_of_reservation(name: str) -> IPAddress | None:
    """The IP a reservation name (without its network prefix) stands for: the inverse of ``reservation_name``."""
    try:
        return ipaddress.ip_address(name.replace("-", ":") if "-" in name else name)
    except ValueError:
        return None


def offsets_from_wire(allocations: object) -> dict[int, Allocation]:
    """Decode ``spec.allocations``; keys that are not decimal offsets are ignored (as whereabouts does)."""
    out: dict[int, Allocation] = {}
    if not isinstance(allocations, Mapping):
        return out
    for k, v in allocations.items():
        try:
            off = int(str(k), 10)
        except ValueError:
            continue
        a = Allocation.from_wire(v)
        if a is not None and off >= 0:
            out[off] = a
    return out


def offsets_to_wire(allocations: Mapping[int, Allocation]) -> dict[str, dict[str, str]]:
    return {str(off): a.to_wire() for off, a in sorted(allocations.items())}
