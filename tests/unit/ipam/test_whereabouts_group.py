"""The node-process coordination of ipam/whereabouts/group.py, without a store: queues batch and hand over
leadership, a failing leader fails only its batch, a request that waited too long is withdrawn, stores are never
shared by two callers at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ipam.whereabouts import group
from ipam.whereabouts.allocator import Owner


def owner(i: int) -> Owner:
    return Owner(f"c{i}", f"ns/p{i}", "net1")


def test_waiting_requests_share_a_batch_and_each_gets_its_own_answer() -> None:
    q = group.Queue()
    batches: list[list[str]] = []
    gate = threading.Event()

    def serve(batch: list[group.Request]) -> None:
        gate.wait(5)  # the first leader holds the queue while the others arrive
        batches.append([r.owner.podref for r in batch])
        for r in batch:
            r.result = r.owner.podref.upper()

    out: dict[int, Any] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, q.submit(
        group.Request(owner(i), time.monotonic() + 10), serve, lambda: TimeoutError()))) for i in range(6)]
    threads[0].start()
    while not q.busy:
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    while len(q.pending) < 5:
        time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join()
    assert out == {i: f"NS/P{i}" for i in range(6)}
    assert batches[0] == ["ns/p0"] and sorted(batches[1]) == [f"ns/p{i}" for i in range(1, 6)]
    assert not q.busy and q.pending == []


def test_a_leader_that_fails_fails_its_batch_only_and_the_queue_goes_on() -> None:
    q = group.Queue()
    calls = []

    def serve(batch: list[group.Request]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("store went away")
        for r in batch:
            r.result = "ok"

    with pytest.raises(RuntimeError):
        q.submit(group.Request(owner(0), time.monotonic() + 5), serve, lambda: TimeoutError())
    assert q.submit(group.Request(owner(1), time.monotonic() + 5), serve, lambda: TimeoutError()) == "ok"


def test_a_request_past_its_deadline_is_withdrawn_before_anyone_serves_it() -> None:
    q = group.Queue()
    q.busy = True  # a leader that never comes back to the queue
    with pytest.raises(TimeoutError):
        q.submit(group.Request(owner(0), time.monotonic() + 0.05), lambda b: None, lambda: TimeoutError())
    assert q.pending == []


def test_one_owner_is_never_twice_in_a_batch() -> None:
    q = group.Queue()
    q.pending = [group.Request(owner(1), 0.0), group.Request(owner(1), 0.0), group.Request(owner(2), 0.0)]
    first = q._take()
    assert [r.owner.container_id for r in first] == ["c1", "c2"] and len(q.pending) == 1


class FakeStore:
    closed = 0

    def close(self) -> None:
        FakeStore.closed += 1


def test_a_store_is_lent_to_one_caller_at_a_time_and_reused_after() -> None:
    key = ("etcd", (("http://x",), "/unit-group/"), 1)
    with group.borrowed(key, FakeStore) as a, group.borrowed(key, FakeStore) as b:
        assert a is not b
    with group.borrowed(key, FakeStore) as c:
        assert c in (a, b)
    # The same datastore under a new identity (rotated credentials): the old idle connections are closed.
    before = FakeStore.closed
    with group.borrowed(("etcd", (("http://x",), "/unit-group/"), 2), FakeStore):
        pass
    assert FakeStore.closed == before + 2
    with group.borrowed(("etcd", (("http://x",), "/another-prefix/"), 2), FakeStore):
        pass  # another datastore on the same endpoints: the first one's idle connections stay
    assert FakeStore.closed == before + 2
