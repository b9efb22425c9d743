"""The pure host-local allocator against an in-memory store: no disk, no root."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest

from cni.spec.errors import AddressExhausted, InvalidConfig
from ipam.host_local import allocator as A
from ipam.host_local.allocator import MemoryStore, Owner, make_range


def ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(s)


def rng(subnet: str, start: str | None = None, end: str | None = None, gw: str | None = None) -> A.Range:
    return make_range(
        ipaddress.ip_network(subnet, strict=False),
        ip(start) if start else None,
        ip(end) if end else None,
        ip(gw) if gw else None,
        where="ipam.ranges[0][0]",
    )


def own(i: int | str) -> Owner:
    return Owner(f"c{i}", "eth0")


def alloc(rs: A.RangeSet, store: MemoryStore, i: int | str, requested: str | None = None, rid: int = 0) -> str:
    got = A.allocate(rs, rid, store, own(i), ip(requested) if requested else None, where="ipam.ranges[0]")
    return str(got.address)


# ---- defaults and validation ------------------------------------------------------------


def test_ipv4_defaults_start_after_network_end_before_broadcast_gateway_first_host() -> None:
    r = rng("10.1.2.0/24")
    assert (str(r.start), str(r.end), str(r.gateway)) == ("10.1.2.1", "10.1.2.254", "10.1.2.1")


def test_ipv6_default_end_is_the_last_address_of_the_subnet() -> None:
    r = rng("fd00::/120")
    assert (str(r.start), str(r.end), str(r.gateway)) == ("fd00::1", "fd00::ff", "fd00::1")


@pytest.mark.parametrize("subnet", ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::/128"])
def test_networks_with_fewer_than_four_addresses_are_refused_naming_the_subnet_field(subnet: str) -> None:
    with pytest.raises(InvalidConfig) as ei:
        rng(subnet)
    assert ei.value.code == 7 and "ipam.ranges[0][0].subnet" in ei.value.msg and "too small" in ei.value.msg


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"start": "10.0.1.5"}, "rangeStart"),
        ({"end": "10.0.1.5"}, "rangeEnd"),
        ({"gw": "10.0.1.1"}, "gateway"),
        ({"start": "10.0.0.50", "end": "10.0.0.40"}, "rangeEnd"),
        ({"start": "10.0.0.0"}, "rangeStart"),
        ({"end": "10.0.0.255"}, "rangeEnd"),
        ({"gw": "fd00::1"}, "gateway"),
    ],
)
def test_range_fields_outside_the_subnet_are_error_7_naming_the_field(kw: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidConfig) as ei:
        rng("10.0.0.0/24", **kw)
    assert f"ipam.ranges[0][0].{field}" in ei.value.msg


def test_overlapping_ranges_in_one_set_and_across_sets_are_refused() -> None:
    a, b = rng("10.0.0.0/24"), rng("10.0.0.0/25")
    with pytest.raises(InvalidConfig, match=r"ipam.ranges\[0\]\[1\]"):
        A.check_rangeset((a, b), where="ipam.ranges[0]")
    with pytest.raises(InvalidConfig, match=r"ipam.ranges\[1\]"):
        A.check_no_overlaps([(a,), (b,)], ["ipam.ranges[0]", "ipam.ranges[1]"])
    with pytest.raises(InvalidConfig, match="mixes address families"):
        A.check_rangeset((a, rng("fd00::/64")), where="ipam.ranges[0]")
    A.check_no_overlaps([(a,), (rng("fd00::/64"),)], ["x", "y"])  # different families never overlap


# ---- allocation order -------------------------------------------------------------------


def test_first_allocation_skips_the_gateway_and_round_robins_after_the_last_reserved() -> None:
    rs = (rng("10.0.0.0/29"),)  # .1 (gw) .. .6
    st = MemoryStore()
    assert [alloc(rs, st, i) for i in range(3)] == ["10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29"]
    st.release(own(0))  # .2 free again, but round-robin goes on after .4
    assert alloc(rs, st, 10) == "10.0.0.5/29"
    assert alloc(rs, st, 11) == "10.0.0.6/29"
    assert alloc(rs, st, 12) == "10.0.0.2/29"  # wrapped around, skipping the gateway
    with pytest.raises(AddressExhausted) as ei:
        alloc(rs, st, 13)
    assert ei.value.code == 101 and "10.0.0.1-10.0.0.6" in ei.value.msg and "ipam.ranges[0]" in ei.value.msg


def test_slash_30_has_exactly_one_usable_address_like_the_reference() -> None:
    rs = (rng("10.9.0.0/30"),)
    st = MemoryStore()
    assert alloc(rs, st, 1) == "10.9.0.2/30"
    with pytest.raises(AddressExhausted, match="10.9.0.1-10.9.0.2"):
        alloc(rs, st, 2)


def test_a_range_set_with_two_ranges_continues_into_the_second_and_wraps() -> None:
    rs = (rng("10.0.0.0/24", "10.0.0.10", "10.0.0.11"), rng("10.0.1.0/24", "10.0.1.20", "10.0.1.21"))
    A.check_rangeset(rs, where="ipam.ranges[0]")
    st = MemoryStore()
    got = [alloc(rs, st, i) for i in range(4)]
    assert got == ["10.0.0.10/24", "10.0.0.11/24", "10.0.1.20/24", "10.0.1.21/24"]
    st.release(own(1))
    assert alloc(rs, st, 9) == "10.0.0.11/24"
    # An address of the second range carries that range's gateway and prefix.
    st.release(own(2))
    got2 = A.allocate(rs, 0, st, own(20), None)
    assert (str(got2.address), got2.gateway) == ("10.0.1.20/24", ip("10.0.1.1"))


def test_each_range_set_keeps_its_own_round_robin_cursor() -> None:
    v4 = (rng("10.0.0.0/24"),)
    v6 = (rng("fd00::/64"),)
    st = MemoryStore()
    assert alloc(v4, st, 1, rid=0) == "10.0.0.2/24"
    assert alloc(v6, st, 1, rid=1) == "fd00::2/64"
    assert alloc(v4, st, 2, rid=0) == "10.0.0.3/24"
    assert st.last_reserved(0) == ip("10.0.0.3") and st.last_reserved(1) == ip("fd00::2")


def test_a_last_reserved_address_outside_the_set_restarts_at_range_start() -> None:
    rs = (rng("10.0.0.0/24", "10.0.0.100"),)
    st = MemoryStore()
    st.last[0] = ip("192.168.0.9")  # the range indexes changed since; the reference loses round-robin once
    assert alloc(rs, st, 1) == "10.0.0.100/24"


def test_gateway_inside_the_range_is_never_handed_out_even_mid_range() -> None:
    rs = (rng("10.0.0.0/24", "10.0.0.10", "10.0.0.12", "10.0.0.11"),)
    st = MemoryStore()
    assert [alloc(rs, st, i) for i in range(2)] == ["10.0.0.10/24", "10.0.0.12/24"]
    with pytest.raises(AddressExhausted):
        alloc(rs, st, 3)


# ---- requested addresses and duplicates ------------------------------------------------------


def test_requested_address_is_reserved_and_a_taken_one_is_refused() -> None:
    rs = (rng("10.0.0.0/24"),)
    st = MemoryStore()
    assert alloc(rs, st, 1, "10.0.0.77") == "10.0.0.77/24"
    with pytest.raises(AddressExhausted, match="10.0.0.77 is not available"):
        alloc(rs, st, 2, "10.0.0.77")
    assert st.holders[ip("10.0.0.77")] == own(1)


@pytest.mark.parametrize("req,why", [("10.0.1.5", "not in range set"), ("10.0.0.1", "gateway")])
def test_requested_address_outside_the_range_or_the_gateway_is_error_7(req: str, why: str) -> None:
    with pytest.raises(InvalidConfig, match=why):
        alloc((rng("10.0.0.0/24"),), MemoryStore(), 1, req)


def test_second_allocation_for_the_same_attachment_is_refused_like_the_reference() -> None:
    rs = (rng("10.0.0.0/24"),)
    st = MemoryStore()
    alloc(rs, st, 1)
    with pytest.raises(A.AlreadyAllocated, match="already allocated to container c1 interface eth0"):
        alloc(rs, st, 1)
    with pytest.raises(A.AlreadyAllocated):
        alloc(rs, st, 1, "10.0.0.50")
    assert len(st.holders) == 1
    # Another interface of the same container is another attachment.
    assert A.allocate(rs, 0, st, Owner("c1", "net1"), None).address.ip == ip("10.0.0.3")


def test_full_ipv6_slash_64_allocates_near_its_end_and_wraps() -> None:
    rs = (rng("fd00:1::/64", "fd00:1::ffff:ffff:ffff:fffe"),)
    st = MemoryStore()
    assert alloc(rs, st, 1) == "fd00:1::ffff:ffff:ffff:fffe/64"
    assert alloc(rs, st, 2) == "fd00:1::ffff:ffff:ffff:ffff/64"  # v6 has no broadcast: the last address counts
    with pytest.raises(AddressExhausted):
        alloc(rs, st, 3)


# ---- equivalence with the reference iteration, and cost ------------------------------------------


def _reference_next(rs: A.RangeSet, taken: set[int], last: A.IPAddress | None) -> int | None:
    """A direct transcription of the reference RangeIter walk, probing one address at a time."""
    order: list[tuple[A.Range, int]] = []
    for r in rs:
        order += [(r, x) for x in range(int(r.start), int(r.end) + 1)]
    start = 0
    if last is not None and A.range_for(rs, last) is not None:
        start = next(k for k, (_, x) in enumerate(order) if x == int(last)) + 1
    for k in range(len(order)):
        r, x = order[(start + k) % len(order)]
        if r.gateway is not None and x == int(r.gateway):
            continue
        if x not in taken:
            return x
    return None


def test_allocation_order_matches_the_reference_walk_on_random_pools() -> None:
    rnd = random.Random(7)
    for trial in range(200):
        rs = (rng("10.0.0.0/27", "10.0.0.3", "10.0.0.20", "10.0.0.9"), rng("10.0.1.0/28"))
        st = MemoryStore()
        cands = [x for r in rs for x in range(int(r.start), int(r.end) + 1) if x != int(r.gateway or 0)]
        st.fill([ipaddress.IPv4Address(x) for x in rnd.sample(cands, rnd.randrange(len(cands) + 1))], own("x"))
        if rnd.random() < 0.8:
            st.last[0] = ipaddress.IPv4Address(rnd.choice(cands + [int(ip("10.5.0.1"))]))
        want = _reference_next(rs, set(st.taken(4)), st.last_reserved(0))
        if want is None:
            with pytest.raises(AddressExhausted):
                A.allocate(rs, 0, st, own(trial), None)
        else:
            assert int(A.allocate(rs, 0, st, own(trial), None).address.ip) == want, trial


def test_first_free_finds_the_end_of_a_run_in_logarithmic_steps() -> None:
    taken = list(range(100, 200)) + [201, 202]
    assert A._first_free(taken, 100, 1000) == 200
    assert A._first_free(taken, 200, 1000) == 200
    assert A._first_free(taken, 201, 1000) == 203
    assert A._first_free(taken, 150, 199) is None
    assert A._first_free(taken, 5, 3) is None


def test_allocating_after_a_long_taken_run_in_a_slash_16_is_fast() -> None:
    rs = (rng("10.20.0.0/16"),)
    st = MemoryStore()
    st.fill([ipaddress.IPv4Address(int(ip("10.20.0.2")) + k) for k in range(60_000)], own("bulk"))
    t = time.perf_counter()
    assert alloc(rs, st, 1) == "10.20.234.98/16"
    assert time.perf_counter() - t < 0.05
