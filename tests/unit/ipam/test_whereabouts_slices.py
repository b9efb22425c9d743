"""Node slices, pure part: slice sizes, the usable window inside a slice, claims and the wire objects."""

from __future__ import annotations

import ipaddress

import pytest

from ipam.whereabouts import slices
from ipam.whereabouts.allocator import Range, Taken, first_free

NET = ipaddress.ip_network("10.0.0.0/16")


def test_size_accepts_both_spellings_and_refuses_what_does_not_cut() -> None:
    assert slices.parse_size("/24", NET) == 24
    assert slices.parse_size("24", NET) == 24
    for bad in ("/16", "/8", "/33", "x", "", True, None):
        with pytest.raises(ValueError):
            slices.parse_size(bad, NET)


def test_sub_range_carries_the_parent_window_exclusions_and_bounds() -> None:
    parent = Range.build(NET, ipaddress.ip_address("10.0.0.10"), ipaddress.ip_address("10.0.2.5"),
                         [ipaddress.ip_network("10.0.1.0/25")])
    first = slices.sub_range(parent, ipaddress.ip_network("10.0.0.0/24"))
    assert first is not None and str(first.ip_at(first_free(first, Taken()))) == "10.0.0.10"
    second = slices.sub_range(parent, ipaddress.ip_network("10.0.1.0/24"))
    assert second is not None and str(second.ip_at(first_free(second, Taken()))) == "10.0.1.128"
    # A slice's own first address is an ordinary address when it is not the parent's network address.
    third = slices.sub_range(parent, ipaddress.ip_network("10.0.2.0/24"))
    assert third is not None and (third.lo, third.hi) == (0, 5)
    assert slices.sub_range(parent, ipaddress.ip_network("10.0.3.0/24")) is None


def test_claim_takes_the_lowest_free_usable_slice_and_skips_excluded_ones() -> None:
    parent = Range.build(NET, excludes=[ipaddress.ip_network("10.0.0.0/23")])
    pool = slices.new_pool("net", ipaddress.ip_network("10.0.0.0/20"), 24)
    assert len(pool.allocations) == 16
    got = slices.claim(pool, "node-a", parent, 24)
    assert got is not None and str(got[1]) == "10.0.2.0/24"
    pool = got[0]
    got = slices.claim(pool, "node-b", parent, 24)
    assert got is not None and str(got[1]) == "10.0.3.0/24"
    assert [str(s) for s in got[0].of_node("node-a")] == ["10.0.2.0/24"]
    back = slices.give_back(got[0], "node-a", "10.0.2.0/24")
    again = slices.claim(back, "node-c", parent, 24)
    assert again is not None and str(again[1]) == "10.0.2.0/24"


def test_claim_lists_slices_lazily_in_big_ipv6_ranges_and_reports_exhaustion() -> None:
    v6 = ipaddress.ip_network("fd00::/64")
    pool = slices.new_pool("v6", v6, 120)
    assert pool.allocations == []  # 2^56 slices are not listed
    got = slices.claim(pool, "n1", Range.build(v6), 120)
    assert got is not None and str(got[1]) == "fd00::/120"
    got2 = slices.claim(got[0], "n2", Range.build(v6), 120)
    assert got2 is not None and str(got2[1]) == "fd00::100/120"
    small = ipaddress.ip_network("10.9.0.0/30")
    full = slices.new_pool("s", small, 31)
    p1 = slices.claim(full, "a", Range.build(small), 31)
    assert p1 is not None
    p2 = slices.claim(p1[0], "b", Range.build(small), 31)
    assert p2 is not None and slices.claim(p2[0], "c", Range.build(small), 31) is None


def test_wire_names_and_objects_match_whereabouts() -> None:
    sub = ipaddress.ip_network("10.0.1.0/24")
    assert slices.slice_pool_name(sub, "node-a", "fast-net") == "fast-net-node-a-10.0.1.0-24"
    assert slices.slice_pool_name(sub, "node-a") == "node-a-10.0.1.0-24"
    small = ipaddress.ip_network("10.0.0.0/20")
    got = slices.claim(slices.new_pool("fast-net", small, 24), "node-a", Range.build(small), 24)
    assert got is not None
    obj = slices.to_object(got[0], "kube-system", "whereabouts.cni.cncf.io/v1alpha1")
    assert obj["kind"] == "NodeSlicePool" and obj["spec"] == {"range": "10.0.0.0/20", "sliceSize": "/24"}
    assert obj["status"]["allocations"][0] == {"nodeName": "node-a", "sliceRange": "10.0.0.0/24"}
    assert obj["status"]["allocations"][1] == {"nodeName": "", "sliceRange": "10.0.1.0/24"}
    back = slices.from_object(obj, "7")
    assert back.version == "7" and back.of_node("node-a") == [ipaddress.ip_network("10.0.0.0/24")]
