"""The whereabouts concurrency protocol (manager) over a store whose failures we script: reservation before pool,
rollback on failure, an unanswered write that did commit, conflicts that keep the reserved address."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from cni.spec.errors import CNIError, IOFailure
from ipam.whereabouts.allocator import Allocation, Owner, Range
from ipam.whereabouts.manager import Manager
from ipam.whereabouts.store import Conflict, PoolSnapshot, StoreUnavailable
from ipam.whereabouts.store_file import FileStore

RNG = Range.build(ipaddress.ip_network("10.0.0.0/24"))
POOL = "10.0.0.0-24"


class Scripted(FileStore):
    """A real file store whose next pool writes do what the test says first."""

    def __init__(self, d: str) -> None:
        super().__init__(d)
        self.script: list[str] = []
        self.writes = 0

    def write_pool(self, snap: PoolSnapshot, allocations: dict[int, Allocation]) -> None:
        self.writes += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "conflict-by-other":
            # Someone else allocates .9 meanwhile: our write must fail and be retried on the fresh pool.
            cur = self.read_pool(snap.name, snap.range)
            super().write_pool(cur, {**cur.allocations, 9: Allocation("other", "ns/other", "net1")})
            raise Conflict(snap.name)
        if step == "commit-then-timeout":
            super().write_pool(snap, allocations)
            raise StoreUnavailable("etcd unreachable", "member died after committing")
        if step == "io-error":
            raise IOFailure("disk full")
        super().write_pool(snap, allocations)


def mgr(store: Any, pod: str = "p") -> Manager:
    return Manager(store, Owner(f"cid-{pod}", f"ns/{pod}", "net1"), sleep=lambda s: None)


def test_conflict_keeps_the_reserved_address_and_retries(tmp_path: Path) -> None:
    store = Scripted(str(tmp_path))
    store.script = ["conflict-by-other"]
    m = mgr(store)
    assert str(m.allocate(RNG)) == "10.0.0.1"
    assert m.conflicts == 1 and store.writes == 2
    assert sorted(store.read_pool(POOL, "").allocations) == [1, 9]
    assert [r.name for r in store.list_reservations()] == ["10.0.0.1"]


def test_unanswered_write_that_committed_is_resolved_by_rereading(tmp_path: Path) -> None:
    store = Scripted(str(tmp_path))
    store.script = ["commit-then-timeout"]
    assert str(mgr(store).allocate(RNG)) == "10.0.0.1"
    assert store.writes == 1  # the re-read found the pod's IP: no second write
    assert len(store.read_pool(POOL, "").allocations) == 1 and len(store.list_reservations()) == 1


def test_failed_pool_write_rolls_the_reservation_back(tmp_path: Path) -> None:
    store = Scripted(str(tmp_path))
    store.script = ["io-error"]
    with pytest.raises(CNIError):
        mgr(store).allocate(RNG)
    assert store.list_reservations() == []
    assert store.read_pool(POOL, "").version is None


def test_address_reserved_through_an_overlapping_pool_is_skipped(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    small = Range.build(ipaddress.ip_network("10.0.0.0/28"))
    assert str(mgr(store, "a").allocate(small)) == "10.0.0.1"
    assert str(mgr(store, "b").allocate(RNG)) == "10.0.0.2"
    # Release in the small pool frees its reservation; the big pool can then use .1.
    assert [str(ip) for ip in mgr(store, "a").release(small)] == ["10.0.0.1"]
    assert str(mgr(store, "c").allocate(RNG)) == "10.0.0.1"


def test_release_and_check(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    m = mgr(store)
    ip = m.allocate(RNG)
    assert m.check(RNG) == ip
    assert m.release(RNG) == [ip]
    assert m.release(RNG) == []
    with pytest.raises(CNIError) as ei:
        m.check(RNG)
    assert ei.value.code == 3
