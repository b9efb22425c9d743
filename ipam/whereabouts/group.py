"""Node-process state of whereabouts: shared store connections, the node's cached slice list and pool snapshots,
and group commit of concurrent allocations in one pool.

A *node process* is whatever runs the plugin on a node: one ``multinic`` exec per CNI call (thin mode: this state
lives for one call and changes nothing), or the thick daemon, which runs up to ``--max-concurrent`` calls at once in
threads of one long-lived process (then it pays: connections stay open, reads are skipped, writes are coalesced).

Rules:
- Stores are pooled per datastore identity (``store_key``): a call borrows an idle one and gives it back; a store is
  never used by two threads at once.
- A ``Queue`` per (store, pool, range, overlapping, node) serialises the node's allocations in that pool: one thread
  at a time (the leader) takes every waiting request (up to ``MAX_BATCH``, one per owner) and commits them with one
  compare-and-swap write of the pool; each request still gets its own address, and every address is in the store
  before its caller returns. When the leader's own request is done it steps down and a waiting thread takes over.
- The queue keeps the snapshot its last write produced. Using it instead of a read is safe because every write is a
  compare-and-swap on the version: if anyone else wrote the pool meanwhile (a DEL, the reconciler, another process)
  the write fails and the pool is re-read. Answers that would return without a write ("this pod already holds X")
  are only ever taken from a fresh read.
- The slice list (NodeSlicePool) is cached per (store, pool name) and re-read when it does not give this node a
  usable slice, when a claim conflicts, and before a slice's IPPool is created.
- No I/O here: the manager does the reads and writes; this module only coordinates threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

LINGER = 0.004  # the longest a leader waits for ADDs of its node that are on their way (``Arrivals``)
MAX_BATCH = 40  # an etcd txn holds at most 128 operations by default: pool + 2 per request, with room to spare
IDLE_STORES = 16  # connections kept per datastore (the daemon's default --max-concurrent is 8)

_lock = threading.Lock()
_idle: dict[Hashable, list[Any]] = {}
_queues: dict[Hashable, Queue] = {}
_slices: dict[Hashable, Any] = {}
_arrivals: dict[Hashable, Arrivals] = {}


class Arrivals:
    """How many ADDs of one node are between their start and their queue: a leader that knows more requests are
    a moment away waits for them (at most ``LINGER``) so they share its write, as a database's group commit does.
    Nobody coming: no wait."""

    def __init__(self) -> None:
        self.coming = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.coming += 1

    def leave(self) -> None:
        with self._lock:
            self.coming -= 1


class Arrival:
    """One ADD on its way: ``leave`` once (when it joins a queue, or when the ADD ends without one)."""

    def __init__(self, node: Arrivals | None) -> None:
        self.node = node
        if node is not None:
            node.enter()

    def leave(self) -> None:
        if self.node is not None:
            self.node.leave()
            self.node = None


def arrivals(key: Hashable) -> Arrivals:
    with _lock:
        a = _arrivals.get(key)
        if a is None:
            a = _arrivals[key] = Arrivals()
        return a


@contextmanager
def arriving(key: Hashable | None) -> Iterator[Arrival]:
    """An ADD of node ``key`` (None: not a shared node process) from start to queue."""
    a = Arrival(arrivals(key) if key is not None else None)
    try:
        yield a
    finally:
        a.leave()


@contextmanager
def borrowed(key: Hashable | None, make: Callable[[], Any]) -> Iterator[Any]:
    """An idle store of datastore ``key`` (else a new one), given back afterwards; ``key`` None: never pooled."""
    store = None
    stale: list[Any] = []
    if key is not None:
        with _lock:
            idle = _idle.get(key)
            if idle:
                store = idle.pop()
            elif isinstance(key, tuple):
                # The same datastore (kind, where) under another identity (a rewritten kubeconfig: token rotation;
                # other etcd credentials): its idle connections will never be borrowed again.
                for old in [k for k in _idle if isinstance(k, tuple) and k[:2] == key[:2] and k != key]:
                    stale += _idle.pop(old)
    for s in stale:
        try:
            s.close()
        except Exception:  # noqa: BLE001, S110 - closing a connection we drop anyway
            pass
    if store is None:
        store = make()
    ok = False
    try:
        yield store
        ok = True
    finally:
        keep = False
        if ok and key is not None:
            with _lock:
                idle = _idle.setdefault(key, [])
                if len(idle) < IDLE_STORES:
                    idle.append(store)
                    keep = True
        if not keep:
            try:
                store.close()
            except Exception:  # noqa: BLE001, S110 - closing a connection we drop anyway
                pass


_locks: dict[Hashable, threading.Lock] = {}


def lock_for(key: Hashable) -> threading.Lock:
    """A lock of this node process (claiming a slice: one ADD at a time per node and NodeSlicePool)."""
    with _lock:
        lk = _locks.get(key)
        if lk is None:
            lk = _locks[key] = threading.Lock()
        return lk


def cached_slices(key: Hashable) -> Any:
    with _lock:
        return _slices.get(key)


def remember_slices(key: Hashable, pool: Any) -> None:
    with _lock:
        if pool is None:
            _slices.pop(key, None)
        else:
            _slices[key] = pool


@dataclass(eq=False)
class Request:
    """One allocation waiting in a queue: filled in by the leader that serves it."""

    owner: Any
    deadline: float
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    taken: bool = False  # a leader is serving it (it can no longer be withdrawn)
    extra: dict[str, Any] = field(default_factory=dict)  # the leader's working state for this request

    def value(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Queue:
    """The allocations of one node in one pool (module docstring)."""

    def __init__(self, node: Arrivals | None = None) -> None:
        self.node = node
        self.cv = threading.Condition()
        self.pending: list[Request] = []
        self.busy = False
        self.snap: Any = None  # the pool as our last write left it (None: read it)
        self.batches = 0  # statistics for the bench
        self.served = 0

    def submit(self, req: Request, serve: Callable[[list[Request]], None],
               expired: Callable[[], BaseException], arrival: Arrival | None = None) -> Any:
        with self.cv:
            self.pending.append(req)
            if arrival is not None:
                arrival.leave()
            self.cv.notify_all()  # a lingering leader counts us in
            while self.busy and not req.done:
                left = req.deadline - time.monotonic()
                if left <= 0 and not req.taken:
                    self.pending.remove(req)
                    raise expired()
                self.cv.wait(timeout=max(left, 0.05) if not req.taken else 1.0)
            if req.done:
                return req.value()
            self.busy = True
        try:
            while not req.done:
                with self.cv:
                    self._linger()
                    batch = self._take()
                try:
                    serve(batch)
                except BaseException as e:  # the leader's own failure must not strand the batch
                    for r in batch:
                        if not r.done and r.error is None and r.result is None:
                            r.error = e
                with self.cv:
                    for r in batch:
                        r.done = True
                    self.batches += 1
                    self.served += len(batch)
                    self.cv.notify_all()
        finally:
            with self.cv:
                self.busy = False
                self.cv.notify_all()
        return req.value()

    def _linger(self) -> None:
        """Wait (up to LINGER) while ADDs of this node are on their way and the batch has room."""
        if self.node is None:
            return
        until = time.monotonic() + LINGER
        while self.node.coming > 0 and len(self.pending) < MAX_BATCH:
            left = until - time.monotonic()
            if left <= 0:
                return
            self.cv.wait(timeout=left)

    def _take(self) -> list[Request]:
        """Up to MAX_BATCH waiting requests, one per owner (a second request of one pod and interface waits for
        the next batch, so it sees the first one's entry)."""
        batch: list[Request] = []
        seen: set[Any] = set()
        rest: list[Request] = []
        for r in self.pending:
            k = (r.owner.podref or r.owner.container_id, r.owner.ifname, r.owner.claim)
            if len(batch) < MAX_BATCH and k not in seen:
                seen.add(k)
                r.taken = True
                batch.append(r)
            else:
                rest.append(r)
        self.pending = rest
        return batch


def queue(key: Hashable, node: Hashable | None = None) -> Queue:
    """The queue ``key`` (its leader lingers for the arrivals of ``node``)."""
    arr = arrivals(node) if node is not None else None
    with _lock:
        q = _queues.get(key)
        if q is None:
            q = _queues[key] = Queue(arr)
        return q


def stats() -> dict[str, int]:
    """Batches and requests served by every queue of this process (the bench reports the mean batch)."""
    with _lock:
        qs = list(_queues.values())
    return {"batches": sum(q.batches for q in qs), "served": sum(q.served for q in qs)}
