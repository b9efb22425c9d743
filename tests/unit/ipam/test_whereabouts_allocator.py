"""The pure whereabouts allocator: lowest free, excludes, IPv6 /64, names, cost independent of the range size."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni.spec.errors import AddressExhausted
from ipam.whereabouts.allocator import (
    Allocation,
    Owner,
    Range,
    Taken,
    find_attached,
    find_held,
    first_free,
    offsets_from_wire,
    offsets_to_wire,
    pool_name,
    reservation_name,
)


def rng(cidr: str, start: str | None = None, end: str | None = None, excludes: tuple[str, ...] = ()) -> Range:
    net = ipaddress.ip_network(cidr, strict=False)
    return Range.build(net, ipaddress.ip_address(start) if start else None, ipaddress.ip_address(end) if end else None,
                       [ipaddress.ip_network(e, strict=False) for e in excludes])


def take_all(r: Range, limit: int = 100000) -> list[str]:
    taken = Taken()
    out = []
    while len(out) < limit:
        try:
            off = first_free(r, taken)
        except AddressExhausted:
            return out
        taken.add(off)
        out.append(str(r.ip_at(off)))
    return out


def test_first_address_of_a_v4_range_is_network_plus_one() -> None:
    r = rng("192.168.1.0/24")
    assert str(r.ip_at(first_free(r, Taken()))) == "192.168.1.1"


def test_v4_range_skips_network_and_broadcast() -> None:
    got = take_all(rng("10.0.0.0/29"))
    assert got == [f"10.0.0.{i}" for i in range(1, 7)]


def test_start_end_window_gives_exactly_eight_then_exhaustion_naming_the_range() -> None:
    r = rng("192.168.1.0/24", "192.168.1.5", "192.168.1.12")
    assert take_all(r) == [f"192.168.1.{i}" for i in range(5, 13)]
    taken = Taken(range(5, 13))
    with pytest.raises(AddressExhausted) as ei:
        first_free(r, taken)
    assert "Could not allocate IP in range" in ei.value.msg
    assert "192.168.1.0/24" in ei.value.msg and "192.168.1.5" in ei.value.msg


def test_excluded_subnets_are_skipped() -> None:
    r = rng("192.168.1.0/24", excludes=("192.168.1.0/28", "192.168.1.16/28"))
    assert str(r.ip_at(first_free(r, Taken()))) == "192.168.1.32"


def test_v6_excluded_single_addresses() -> None:
    r = rng("2001::1/116", excludes=("2001::0/128", "2001::1/128", "2001::2/128"))
    assert str(r.ip_at(first_free(r, Taken()))) == "2001::3"


def test_v6_exclude_half_of_the_range() -> None:
    r = rng("caa5::0/112", excludes=("caa5::0/113",))
    assert str(r.ip_at(first_free(r, Taken()))) == "caa5::8000"


def test_v6_network_and_all_ones_are_skipped() -> None:
    assert take_all(rng("fd00::/125")) == [f"fd00::{i}" for i in range(1, 7)]


def test_gaps_are_found_lowest_first() -> None:
    r = rng("10.0.0.0/24")
    taken = Taken([1, 2, 3, 5, 6, 9])
    assert first_free(r, taken) == 4
    taken.add(4)
    assert first_free(r, taken) == 7


def test_full_ipv6_slash64_is_usable_beyond_int64() -> None:
    r = rng("fd00:1::/64", start="fd00:1::ffff:ffff:ffff:fff0")
    off = first_free(r, Taken())
    assert off > 2**63  # whereabouts' int64 offsets cannot express this (#83)
    assert str(r.ip_at(off)) == "fd00:1::ffff:ffff:ffff:fff0"
    assert take_all(r)[-1] == "fd00:1::ffff:ffff:ffff:fffe"
    assert offsets_from_wire(offsets_to_wire({off: Allocation("c", "ns/p", "net1")})) == {
        off: Allocation("c", "ns/p", "net1")}


def test_cost_does_not_grow_with_range_size() -> None:
    # 1 000 000 taken at the start of a /64: the search is a binary search, not a walk.
    r = rng("fd00::/64")
    taken = Taken(range(1, 1_000_001))
    t0 = time.perf_counter()
    for _ in range(100):
        off = first_free(r, taken)
    per_call = (time.perf_counter() - t0) / 100
    assert off == 1_000_001
    assert per_call < 0.002, f"first_free took {per_call * 1000:.2f} ms with 1e6 taken"


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=70), max_size=60),
       st.lists(st.tuples(st.integers(0, 63), st.sampled_from([30, 31, 32])), max_size=3))
def test_first_free_matches_a_linear_scan(taken_set: set[int], ex: list[tuple[int, int]]) -> None:
    nets = []
    for host, plen in ex:
        n = ipaddress.ip_network(f"10.0.0.{host}/{plen}", strict=False)
        if not any(n.overlaps(m) for m in nets):
            nets.append(n)
    r = Range.build(ipaddress.ip_network("10.0.0.0/26"), None, None, nets)
    expected = next((o for o in range(r.lo, r.hi + 1) if o not in taken_set and r.usable(o)), None)
    if expected is None:
        with pytest.raises(AddressExhausted):
            first_free(r, Taken(taken_set))
    else:
        assert first_free(r, Taken(taken_set)) == expected


def test_owner_holds_by_podref_and_ifname_and_releases_by_container_and_ifname() -> None:
    allocs = {1: Allocation("old", "ns/p", "net1"), 2: Allocation("x", "ns/q", "net1"),
              3: Allocation("old", "ns/p", "net2")}
    me = Owner("new", "ns/p", "net1")
    assert find_held(allocs, me) == 1  # same pod, new sandbox: idempotent
    assert find_attached(allocs, me) == []  # a DEL of the new container frees nothing of the old one
    assert find_attached(allocs, Owner("old", "ns/p", "net1")) == [1]
    # Without Kubernetes (no podRef) the container stands for the pod.
    assert find_held({5: Allocation("c1", "", "eth0")}, Owner("c1", "", "eth0")) == 5
    assert find_held({5: Allocation("c1", "", "eth0")}, Owner("c2", "", "eth0")) is None


def test_names_are_whereabouts_compatible() -> None:
    assert pool_name(ipaddress.ip_network("192.168.2.0/24")) == "192.168.2.0-24"
    assert pool_name(ipaddress.ip_network("192.168.2.0/24"), "net-a") == "net-a-192.168.2.0-24"
    assert pool_name(ipaddress.ip_network("fd00::/64")) == "fd00---64"
    assert reservation_name(ipaddress.ip_address("192.168.2.5")) == "192.168.2.5"
    assert reservation_name(ipaddress.ip_address("2001::")) == "2001--0"
    assert reservation_name(ipaddress.ip_address("fd00::5"), "blue") == "blue-fd00--5"


def test_offsets_wire_ignores_garbage_keys() -> None:
    got = offsets_from_wire({"5": {"id": "a", "podref": "ns/p"}, "x": {"id": "b"}, "-1": {"id": "c"}})
    assert got == {5: Allocation("a", "ns/p", "")}
