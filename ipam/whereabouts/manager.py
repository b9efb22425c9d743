"""whereabouts IP management over any ``Store``: allocate, release, check — the optimistic-concurrency loop.

Rules (the invariants that keep pools and reservations from diverging, whereabouts #409/#712):
- ADD with overlapping ranges: **reserve first, then write the pool**. The reservation (create-if-absent) is the
  cluster-wide uniqueness point of an IP; the pool write is guarded by the version read. On a pool conflict we keep
  our reservation and retry with the same IP while the re-read pool still has it free; if we give up (exhausted, too
  many conflicts, any error) the reservation is deleted again. So a pool entry always has its reservation, and a
  reservation without a pool entry exists only while an ADD is in flight (or after a crash in that window: the
  reconciler deletes such orphans once their pod is gone).
- If a pool write failed without an answer (member died, timeout) it may have committed: we re-read, and the
  idempotency rule (podRef + ifName already holds an IP → return it) turns "maybe" into a definite answer. If the
  store stays unreachable, the reservation is left in place rather than risk a pool entry without one.
- DEL: remove the pool entries of containerID + ifName (guarded write), then delete their reservations. A missing
  pool or entry is success — and the one case where a reservation of ours can exist without a pool entry (the ADD
  was killed between the two writes), so then the reservations owned by containerID + ifName in the range are
  looked up and deleted: the runtime's DEL after a crash leaves nothing, without waiting for the reconciler.
- A re-ADD by the same pod with a new containerID (sandbox re-created without DEL, whereabouts #291) returns the
  IP it holds and moves the entry to the new containerID, so a late DEL of the old sandbox frees nothing in use.
- Node slices: the pool is the node's slice pool (``slices.py``); a node claims a slice by a compare-and-swap on
  the NodeSlicePool, tries its slices in order (after an idempotency pass over all of them when it has several),
  and claims another when they are full. An IPAMClaim's entry is found in whichever node's slice holds it.
- Group commit (a node process that shares state, ``group``; sliced ranges only): the node's ADDs and DELs in one
  slice pool are written by one thread at a time with one compare-and-swap for all of them. On etcd the new
  entries' reservations are created in the same transaction (reserve-first becomes reserve-together: there is no
  window with a reservation and no entry); on the Kubernetes store they are created first, as above. The pool
  snapshot of the last write replaces the read; answers without a write (held, full, nothing to free) need a fresh
  read. Requests that need more (a held address, a pool that does not exist yet) take the per-request protocol.
- ``allocate`` is a sequence of named steps over one ``_Attempt`` (read, keep what is held, drop an unusable
  reservation, pick and reserve, commit), each of which says whether to retry.
- Retries are bounded (``MAX_TRIES`` conflicts, ``ADD_BUDGET``/``DEL_BUDGET`` seconds) with jittered backoff.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from cni import faults
from cni.log import Logger
from cni.spec.errors import AddressExhausted, CNIError, InvalidConfig, TryAgainLater, UnknownContainer

from . import slices
from .allocator import (
    Allocation,
    IPAddress,
    IPNetwork,
    Owner,
    Range,
    Taken,
    find_attached,
    find_held,
    first_free,
    ip_of_reservation,
    pool_name,
    reservation_name,
)
from .slices import SlicePool
from .store import BatchConflict, Conflict, PoolSnapshot, Reservation, SliceStore, Store, StoreUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from . import group
    from .config import Conf

MAX_TRIES = 100
ADD_BUDGET = 120.0  # whereabouts' ADD time limit
DEL_BUDGET = 60.0


def store_key(conf: Conf) -> tuple[object, ...] | None:
    """The identity of ``conf``'s datastore, for connection pooling and node-process caches (``group``); None for
    the file store (it serves one node through flocks; nothing to share)."""
    if conf.datastore == "etcd" and conf.etcd is not None:
        e = conf.etcd
        # (kind, where, who): the first two name the datastore, the last its credentials (group.borrowed)
        return ("etcd", (e.endpoints, e.prefix, e.namespace),
                (e.username, hash(e.password), e.ca_file, e.cert_file, e.key_file))
    if conf.datastore == "kubernetes":
        import os

        try:  # a rewritten kubeconfig (another server, other credentials) is another datastore
            st = os.stat(conf.kubeconfig) if conf.kubeconfig else None
        except OSError:
            return None
        return ("kubernetes", conf.kubeconfig, st and (st.st_ino, st.st_mtime_ns, st.st_size))
    return None


def open_store(conf: Conf) -> Store:
    """The datastore ``conf`` names."""
    if conf.datastore == "kubernetes":
        from .store_k8s import K8sStore

        return K8sStore.from_kubeconfig(conf.kubeconfig or None)
    if conf.datastore == "etcd":
        from .store_etcd import EtcdStore

        assert conf.etcd is not None
        return EtcdStore(conf.etcd)
    from .store_file import FileStore

    return FileStore(conf.data_dir)


def _backoff(attempt: int) -> float:
    # Short and jittered: a conflict means another writer just finished, so the pool is free again right away.
    return random.uniform(0, min(0.001 * (2 ** min(attempt, 5)), 0.03))


@dataclass(frozen=True)
class SliceConf:
    """Node slicing of a range: the NodeSlicePool's name, the slice prefix length and this node."""

    pool: str
    size: int
    node: str


@dataclass
class _Attempt:
    """The state of one allocation in one pool, across its retries."""

    name: str  # the IPPool
    rng: Range
    deadline: float
    skip: set[int] = field(default_factory=set)  # offsets reserved through an overlapping pool
    mine: tuple[int, Reservation] | None = None  # the offset we reserved and have not committed yet
    unsure: bool = False  # a pool write may have committed without us hearing back
    tries: int = 0


def _same_slicing(pool: SlicePool, rng: Range, sl: SliceConf) -> None:
    if pool.range and pool.range != rng.cidr or pool.size and pool.size.lstrip("/") != str(sl.size):
        raise InvalidConfig(f"NodeSlicePool {sl.pool} slices {pool.range} into {pool.size}, but this "
                            f"network asks for {rng.cidr} in /{sl.size}",
                            "one network_name per range and slice size; rename the network or "
                            "delete the NodeSlicePool once no pod uses it")


def _holders(allocations: dict[int, Allocation]) -> set[tuple[str, str, str]]:
    """(podref, containerID when no podref, ifname) of every entry not owned by an IPAMClaim: ``Owner.holds`` for a
    whole batch in one pass over the pool."""
    return {(a.podref, "" if a.podref else a.container_id, a.ifname) for a in allocations.values() if not a.claim}


def _held_in(holders: set[tuple[str, str, str]], o: Owner) -> bool:
    if o.claim:
        return True  # never batched; be safe
    who = (o.podref, "" if o.podref else o.container_id)
    return (*who, o.ifname) in holders or (*who, "") in holders


class _SliceGone(Exception):
    """A cached slice list named a slice this node no longer holds (internal: the list is re-read)."""


class Manager:
    """Allocation, release and check for one owner against one store."""

    def __init__(self, store: Store, owner: Owner, *, network_name: str = "", overlapping: bool = True,
                 log: Logger | None = None, sleep: Callable[[float], None] = time.sleep,
                 slicing: SliceConf | None = None, shared: tuple[object, ...] | None = None) -> None:
        self.slicing = slicing
        # The datastore's identity when this node process may share state across calls (``group``): the node's
        # allocations in one slice are then group-committed, and the slice list and pool snapshot are cached.
        self.shared = shared
        self.arrival: group.Arrival | None = None  # this ADD on its way to a queue (group.arriving)
        self.claim_ips: tuple[str, ...] = ()  # status.ips of the owner's IPAMClaim (claims.py)
        self._kept_for_claim = False  # a DEL found an entry of ours that stays with its IPAMClaim
        self.store = store
        self.owner = owner
        self.network_name = network_name
        self.overlapping = overlapping
        self.log = log or Logger()
        self.sleep = sleep
        self.conflicts = 0  # for tests and benchmarks

    @property
    def _sliced(self) -> SliceStore:
        return cast(SliceStore, self.store)  # slicing is only configured for etcd and Kubernetes stores

    def _want(self, rng: Range, off: int, podref: str | None = None, ifname: str | None = None,
              container_id: str | None = None) -> Reservation:
        o = self.owner
        return Reservation(reservation_name(rng.ip_at(off), self.network_name),
                           o.container_id if container_id is None else container_id,
                           o.podref if podref is None else podref, o.ifname if ifname is None else ifname)

    # ---- ADD ----

    def allocate(self, rng: Range, *, budget: float = ADD_BUDGET) -> IPAddress:
        """The owner's IP in ``rng``: the one it already holds, else the lowest free one (in this node's slices
        when the range is sliced)."""
        if self.slicing is not None:
            if self.owner.claim:
                found = self._claimed_slice(rng, self.slicing)
                if found is not None:
                    return self._allocate_in(found[0], found[1], budget)
            return self._allocate_sliced(rng, self.slicing, budget)
        return self._allocate_in(pool_name(rng.network, self.network_name), rng, budget)

    def _allocate_in(self, name: str, rng: Range, budget: float) -> IPAddress:
        """The protocol of the module docstring on one pool, as named steps over one ``_Attempt``."""
        st = _Attempt(name, rng, time.monotonic() + budget)
        try:
            while True:
                self._next_try(st)
                snap = self.store.read_pool(name, rng.cidr)
                st.unsure = False
                held = find_held(snap.allocations, self.owner)
                if held is not None:
                    if self._keep_held(st, snap, held):
                        return rng.ip_at(held)
                    continue
                self._drop_unusable_reservation(st, snap)
                off = st.mine[0] if st.mine is not None else self._pick(st, snap)
                if self._commit(st, snap, off):
                    return rng.ip_at(off)
        except BaseException:
            if st.mine is not None and not st.unsure:
                self._release_quietly(st.mine[1])
            raise

    def _next_try(self, st: _Attempt) -> None:
        st.tries += 1
        if st.tries > MAX_TRIES or time.monotonic() > st.deadline:
            raise TryAgainLater(f"could not update pool {st.name} after {st.tries - 1} attempts "
                                "(concurrent updates); retry")

    def _keep_held(self, st: _Attempt, snap: PoolSnapshot, held: int) -> bool:
        """The owner already holds ``held`` (idempotent re-ADD): move it to this containerID and make sure its
        reservation exists. False when the pool write conflicted (re-read and decide again)."""
        rng = st.rng
        if st.mine is not None and st.mine[0] != held:
            self._release_quietly(st.mine[1])
        st.mine = None
        if not snap.allocations[held].same_holder(self.owner.allocation()):
            new = dict(snap.allocations)
            new[held] = self.owner.allocation()
            try:
                self.store.write_pool(snap, new)
            except Conflict:
                self.conflicts += 1
                self.sleep(_backoff(st.tries))
                return False
        if self.overlapping:
            want = self._want(rng, held)
            got = self.store.reserve(want)
            prev = snap.allocations[held]
            if not got.same_owner(want) and prev.claim and got.podref == prev.podref:
                # The claim's previous pod still owns the reservation: it moves to the new pod with the entry.
                self.store.release(got)
                got = self.store.reserve(want)
            if not got.same_owner(want):
                self.log.error(f"IP {rng.ip_at(held)} of pool {st.name} held by {self.owner.podref} is "
                               f"reserved by {got.podref} too; run 'multinic reconcile'")
        self.log.debug(f"pool {st.name}: {self.owner.podref or self.owner.container_id}/"
                       f"{self.owner.ifname} already holds {rng.ip_at(held)}")
        return True

    def _drop_unusable_reservation(self, st: _Attempt, snap: PoolSnapshot) -> None:
        """Our reserved offset was written meanwhile without a reservation (a config with overlapping disabled)."""
        if st.mine is not None and (st.mine[0] in snap.allocations or not st.rng.usable(st.mine[0])):
            self._release_quietly(st.mine[1])
            st.skip.add(st.mine[0])
            st.mine = None

    def _pick(self, st: _Attempt, snap: PoolSnapshot) -> int:
        """The lowest free offset, reserved cluster-wide when overlapping ranges are on."""
        rng = st.rng
        taken = Taken(snap.allocations.keys())
        for s in st.skip:
            taken.add(s)
        while True:
            off = first_free(rng, taken)
            if not self.overlapping:
                return off
            want = self._want(rng, off)
            got = self.store.reserve(want)
            if got.same_owner(want):
                st.mine = (off, got)
                faults.point("after-wb-reserve")  # the window DEL's orphan sweep exists for
                return off
            # Reserved through an overlapping pool: not ours, look further (the pool read stays valid).
            st.skip.add(off)
            taken.add(off)
            if time.monotonic() > st.deadline:
                raise TryAgainLater(f"pool {st.name}: no unreserved address found in time; retry")

    def _commit(self, st: _Attempt, snap: PoolSnapshot, off: int) -> bool:
        """Write the pool with ``off`` allocated to the owner; False when the write must be retried."""
        new = dict(snap.allocations)
        new[off] = self.owner.allocation()
        try:
            self.store.write_pool(snap, new)
        except Conflict:
            self.conflicts += 1
            self.sleep(_backoff(st.tries))
            return False
        except StoreUnavailable as e:
            st.unsure = True
            self.log.verbose(f"pool {st.name}: write went unanswered ({e}); re-reading")
            self.sleep(_backoff(st.tries) + 0.05)
            return False
        st.mine = None  # committed: the reservation now belongs to the pool entry
        self.log.debug(f"pool {st.name}: allocated {st.rng.ip_at(off)} to {self.owner.podref or '-'} "
                       f"containerID {self.owner.container_id} ifname {self.owner.ifname}")
        return True

    def _claimed_slice(self, rng: Range, sl: SliceConf) -> tuple[str, Range] | None:
        """The slice pool (of whichever node) holding the owner's IPAMClaim address, if any: a claim's address
        follows the claim to any node."""
        import ipaddress

        pool = self._sliced.read_slices(sl.pool)
        for text in self.claim_ips:
            try:
                ip = ipaddress.ip_interface(text).ip
            except ValueError:
                continue
            if ip not in rng.network:
                continue
            for a in pool.allocations:
                sub = ipaddress.ip_network(a.cidr, strict=False)
                if a.node and ip in sub:
                    r = slices.sub_range(rng, sub)
                    name = slices.slice_pool_name(sub, a.node, self.network_name)
                    if r is not None and find_held(self.store.read_pool(name, r.cidr).allocations,
                                                   self.owner) is not None:
                        return name, r
        return None

    # ---- node slices ----

    def _slice_pool(self, rng: Range, sl: SliceConf, deadline: float, *, fresh: bool = True) -> SlicePool:
        """The NodeSlicePool of ``rng``, created (listing its slices) the first time any node allocates; with
        ``fresh`` False the node process's cached copy when it has one (``group``)."""
        from . import group

        key = (self.shared, sl.pool)
        if not fresh and self.shared is not None:
            # One read per node process when the cache is empty: a daemon's first ADDs all arrive at once, and
            # every one of them reading (on a connection of its own) is a thundering herd at the API server.
            with group.lock_for(("read", key)):
                cached = group.cached_slices(key)
                if cached is None:
                    cached = self._slice_pool(rng, sl, deadline)
            _same_slicing(cast(SlicePool, cached), rng, sl)
            return cast(SlicePool, cached)
        while True:
            pool = self._sliced.read_slices(sl.pool)
            if pool.version is not None:
                _same_slicing(pool, rng, sl)
                if self.shared is not None:
                    group.remember_slices(key, pool)
                return pool
            try:
                self._sliced.write_slices(slices.new_pool(sl.pool, rng.network, sl.size))
            except Conflict:
                pass  # another node created it: read theirs
            if time.monotonic() > deadline:
                raise TryAgainLater(f"NodeSlicePool {sl.pool}: could not be created in time; retry")

    def _my_slices(self, rng: Range, sl: SliceConf, pool: SlicePool) -> list[tuple[str, Range]]:
        """(IPPool name, usable range) of every slice this node holds, in the order listed."""
        out = []
        for sub in pool.of_node(sl.node):
            r = slices.sub_range(rng, sub)
            if r is not None:
                out.append((slices.slice_pool_name(sub, sl.node, self.network_name), r))
        return out

    def _allocate_sliced(self, rng: Range, sl: SliceConf, budget: float) -> IPAddress:
        deadline = time.monotonic() + budget
        fresh = False  # the node process's cached slice list is good enough until it fails us
        while True:
            if time.monotonic() > deadline:
                raise TryAgainLater(f"NodeSlicePool {sl.pool}: no slice of this node could take the address in "
                                    "time; retry")
            pool = self._slice_pool(rng, sl, deadline, fresh=fresh)
            mine = self._my_slices(rng, sl, pool)
            if len(mine) > 1:
                # Idempotency across this node's slices: a re-ADD gets what it holds, wherever it is.
                for name, r in mine:
                    if find_held(self.store.read_pool(name, r.cidr).allocations, self.owner) is not None:
                        return self._allocate_in(name, r, deadline - time.monotonic())
            try:
                for name, r in mine:
                    try:
                        return self._allocate_slice(name, r, deadline - time.monotonic())
                    except AddressExhausted:
                        continue  # this slice is full: the next one, or a new one
            except _SliceGone:
                fresh = True  # the cached list was stale: read it
                continue
            # One claim at a time per node process: concurrent ADDs that all find the node's slices full must not
            # each claim a slice (a node would end up with one slice per thread).
            with self._claiming(sl):
                pool = self._slice_pool(rng, sl, deadline)
                if self._my_slices(rng, sl, pool) != mine:
                    fresh = False  # another ADD of this node claimed one meanwhile (and the cache has it)
                    continue
                sub = self._claim_slice(rng, sl, pool, mine, deadline)
            if sub is None:
                fresh = True
                continue
            sr = slices.sub_range(rng, sub)
            assert sr is not None  # claim only returns slices with a usable address
            return self._allocate_slice(slices.slice_pool_name(sub, sl.node, self.network_name), sr,
                                        deadline - time.monotonic())

    def _claiming(self, sl: SliceConf) -> contextlib.AbstractContextManager[object]:
        if self.shared is None:
            return contextlib.nullcontext()
        from . import group

        return group.lock_for((self.shared, sl.pool, sl.node))

    def _claim_slice(self, rng: Range, sl: SliceConf, pool: SlicePool, mine: list[tuple[str, Range]],
                     deadline: float) -> IPNetwork | None:
        """Claim the lowest free slice with a compare-and-swap on the slice list; None when this node's slices
        changed meanwhile (another process of the node claimed one: use it first)."""
        while True:
            got = slices.claim(pool, sl.node, rng, sl.size)
            if got is None:
                raise AddressExhausted(f"Could not allocate IP in range: {rng.describe()}: every /{sl.size} slice "
                                       f"of NodeSlicePool {sl.pool} is taken and this node's are full",
                                       "use a smaller node_slice_size, a larger range, or run 'multinic "
                                       "reconcile' to give back the slices of deleted nodes")
            new, sub = got
            try:
                self._sliced.write_slices(new)
            except Conflict:
                self.conflicts += 1
                if time.monotonic() > deadline:
                    raise TryAgainLater(f"NodeSlicePool {sl.pool}: could not claim a slice in time; retry") from None
                self.sleep(_backoff(1))
                pool = self._slice_pool(rng, sl, deadline)
                if self._my_slices(rng, sl, pool) != mine:
                    return None
                continue
            self.log.verbose(f"node {sl.node} claimed slice {sub} of NodeSlicePool {sl.pool}")
            if self.shared is not None:
                from . import group

                group.remember_slices((self.shared, sl.pool), None)  # its version changed: read it next time
            return sub

    # ---- group commit (a node process's concurrent allocations in one slice: ``group``) ----

    def _allocate_slice(self, name: str, rng: Range, budget: float) -> IPAddress:
        """The owner's address in this node's slice pool ``name``: group-committed with the node process's other
        allocations in it when the process shares state, else the per-request protocol."""
        if self.shared is None or self.owner.claim or self.slicing is None:
            return self._allocate_in(name, rng, budget)
        from . import group

        q = group.queue((self.shared, name, rng, self.overlapping, self.network_name, self.slicing.node),
                        node=(self.shared, self.slicing.node))
        req = group.Request(self.owner, time.monotonic() + budget)
        got = q.submit(req, lambda batch: self._serve(q, name, rng, batch),
                       lambda: TryAgainLater(f"pool {name}: this node's queue did not reach the request in time; "
                                             "retry"), self.arrival)
        return cast(IPAddress, got)

    def _serve(self, q: group.Queue, name: str, rng: Range, batch: list[group.Request]) -> None:
        """Commit ``batch`` (the leader's turn): every request gets its own lowest free address, all written with
        one compare-and-swap of the pool (with their reservations in the same etcd transaction). A request whose
        owner already holds an address, or a pool that does not exist yet, goes through the per-request protocol,
        which reads the pool first (idempotent re-ADD, first allocation in a slice)."""
        todo = list(batch)
        skip: set[int] = set()  # offsets reserved through another (overlapping) pool
        tries = 0
        snap: PoolSnapshot | None = q.snap
        fresh = False
        q.snap = None  # whatever happens below, the next leader starts from what this one leaves
        try:
            while todo:
                tries += 1
                now = time.monotonic()
                for r in [r for r in todo if tries > MAX_TRIES or now > r.deadline]:
                    r.error = TryAgainLater(f"could not update pool {name} after {tries - 1} attempts "
                                            "(concurrent updates); retry")
                    todo.remove(r)
                if not todo:
                    break
                if snap is None:
                    snap, fresh = self.store.read_pool(name, rng.cidr), True
                if not self._plan_releases(snap, todo, fresh=fresh):
                    snap = None  # "nothing to free" is only trusted from a fresh read
                    continue
                if not todo:
                    break
                if snap.version is None:
                    self._serve_alone(name, rng, todo.pop(0), fresh=False)
                    snap = None
                    continue
                holders = _holders(snap.allocations)
                held = [r for r in todo if not r.extra.get("del") and _held_in(holders, r.owner)]
                if held:
                    if not fresh:
                        snap = None  # a held address is only trusted from a fresh read
                        continue
                    for r in held:
                        self._serve_alone(name, rng, r, fresh=True)
                        todo.remove(r)
                    snap = None
                    continue
                snap = self._commit_batch(name, rng, snap, todo, skip, tries, fresh=fresh)
                if not todo:
                    q.snap = snap
                    return
                snap, fresh = None, False
        finally:
            for r in batch:  # a request that failed gives back the reservation it made
                mine = r.extra.get("mine")
                if r.error is not None and mine is not None and not r.extra.get("unsure"):
                    self._release_quietly(mine)

    def _plan_releases(self, snap: PoolSnapshot, todo: list[group.Request], *, fresh: bool) -> bool:
        """The entries each DEL of ``todo`` removes (``extra["gone"]``); a DEL with nothing to remove is answered
        and leaves ``todo``. False when that answer needs a fresh read first."""
        plans = []
        for r in todo:
            if not r.extra.get("del"):
                continue
            offs = find_attached(snap.allocations, r.owner) if snap.version is not None else []
            kept = any(snap.allocations[o].claim for o in offs)  # an IPAMClaim's address outlives its pods
            gone = {o: snap.allocations[o] for o in offs if not snap.allocations[o].claim}
            if not gone and not fresh:
                return False
            plans.append((r, gone, kept))
        for r, gone, kept in plans:
            r.extra["kept"] = kept
            if gone:
                r.extra["gone"] = gone
            else:
                r.result = []
                todo.remove(r)
        return True

    def _serve_alone(self, name: str, rng: Range, r: group.Request, *, fresh: bool) -> None:
        """One request through the per-request protocol, as its own owner (the leader's store)."""
        m = Manager(self.store, r.owner, network_name=self.network_name, overlapping=self.overlapping, log=self.log,
                    sleep=self.sleep, slicing=self.slicing)
        try:
            if not fresh and self.slicing is not None:
                self._slice_still_mine(name)
            r.result = m._allocate_in(name, rng, max(r.deadline - time.monotonic(), 0.1))
        except BaseException as e:  # noqa: BLE001 - handed to the request's own thread
            r.error = e
        finally:
            self.conflicts += m.conflicts

    def _slice_still_mine(self, name: str) -> None:
        """Before an ADD creates a slice's IPPool: the NodeSlicePool, read now, still gives the slice to this node
        (a cached list may predate the reconciler giving it back)."""
        from . import group

        assert self.slicing is not None
        sl = self.slicing
        pool = self._sliced.read_slices(sl.pool)
        group.remember_slices((self.shared, sl.pool), pool if pool.version is not None else None)
        for sub in pool.of_node(sl.node):
            if slices.slice_pool_name(sub, sl.node, self.network_name) == name:
                return
        raise _SliceGone(name)

    def _commit_batch(self, name: str, rng: Range, snap: PoolSnapshot, todo: list[group.Request], skip: set[int],
                      tries: int, *, fresh: bool) -> PoolSnapshot | None:
        """One compare-and-swap write of ``snap`` with an address for each request of ``todo``; the requests
        served are removed from ``todo``. Returns the pool as written, or None (re-read and try again). "Full" is
        an answer without a write, so it is only given from a ``fresh`` read (a DEL may have freed addresses)."""
        taken = Taken(snap.allocations.keys())  # offsets a DEL of this batch frees stay taken until the next one
        for off in skip:
            taken.add(off)
        dels = [r for r in todo if r.extra.get("del")]
        adds = [r for r in todo if not r.extra.get("del")]
        for r in adds:  # addresses reserved on an earlier try stay theirs while the pool has them free
            mine = r.extra.get("mine")
            if mine is not None:
                off = r.extra["off"]
                if off in snap.allocations or not rng.usable(off):
                    self._release_quietly(mine)
                    r.extra.pop("mine")
                    skip.add(off)
                    taken.add(off)
                else:
                    taken.add(off)
        for r in list(adds):
            if r.extra.get("mine") is None:
                try:
                    r.extra["off"] = off = first_free(rng, taken)
                except AddressExhausted as e:
                    if not fresh:
                        return None
                    r.error = e
                    todo.remove(r)
                    adds.remove(r)
                    continue
                taken.add(off)
        if not todo:
            return snap
        new = dict(snap.allocations)
        for r in dels:
            for off in r.extra["gone"]:
                new.pop(off, None)
        for r in adds:
            new[r.extra["off"]] = r.owner.allocation()
        atomic = self.overlapping and hasattr(self.store, "write_pool_reserving")
        if self.overlapping and not atomic:
            for r in list(adds):
                if r.extra.get("mine") is not None:
                    continue
                want = self._want(rng, r.extra["off"], r.owner.podref, r.owner.ifname, r.owner.container_id)
                got = self.store.reserve(want)
                if got.same_owner(want):
                    r.extra["mine"] = got
                    faults.point("after-wb-reserve")
                else:  # reserved through an overlapping pool: pick again on the next try
                    skip.add(r.extra["off"])
                    return None
        written: PoolSnapshot | None
        try:
            if atomic:
                creates = [self._want(rng, r.extra["off"], r.owner.podref, r.owner.ifname, r.owner.container_id)
                           for r in adds if r.extra.get("mine") is None]
                keeps = [r.extra["mine"] for r in adds if r.extra.get("mine") is not None]
                written = cast(PoolSnapshot, self.store.write_pool_reserving(  # type: ignore[attr-defined]
                    snap, new, creates, keeps))
            else:
                written = self.store.write_pool(snap, new)
        except BatchConflict as c:
            self.conflicts += 1
            for r in adds:
                want = self._want(rng, r.extra["off"], r.owner.podref, r.owner.ifname, r.owner.container_id)
                cur = c.reservations.get(want.name)
                if r.extra.get("mine") is not None and (cur is None or cur.version != r.extra["mine"].version):
                    r.extra.pop("mine")  # ours vanished or changed: reserve again
                if cur is not None and r.extra.get("mine") is None:
                    if cur.same_owner(want):
                        r.extra["mine"] = cur  # left by an earlier try of this owner: keep using it
                    else:
                        skip.add(r.extra["off"])
            self.sleep(_backoff(tries))
            return None
        except Conflict:
            self.conflicts += 1
            self.sleep(_backoff(tries))
            return None
        except StoreUnavailable as e:
            for r in todo:
                r.extra["unsure"] = True  # may have committed: the re-read decides (held → per-request path)
            self.log.verbose(f"pool {name}: write went unanswered ({e}); re-reading")
            self.sleep(_backoff(tries) + 0.05)
            return None
        for r in dels:
            r.result = sorted(r.extra["gone"].items())
        for r in adds:
            r.result = rng.ip_at(r.extra["off"])
            r.extra.pop("mine", None)
            self.log.debug(f"pool {name}: allocated {r.result} to {r.owner.podref or '-'} containerID "
                           f"{r.owner.container_id} ifname {r.owner.ifname}")
        todo.clear()
        return written

    def _release_quietly(self, res: Reservation) -> None:
        try:
            self.store.release(res)
        except CNIError as e:
            self.log.error(f"could not delete reservation {res.name}: {e}; 'multinic reconcile' will")

    # ---- DEL ----

    def release(self, rng: Range, *, budget: float = DEL_BUDGET) -> list[IPAddress]:
        """Free what containerID + ifName holds in ``rng``'s pool (or this node's slices); nothing held is success."""
        if self.slicing is None:
            return self._release_in(pool_name(rng.network, self.network_name), rng, budget, sweep=rng)
        deadline = time.monotonic() + budget
        if self.shared is not None:
            pool = self._slice_pool(rng, self.slicing, deadline, fresh=False)
        else:
            pool = self._sliced.read_slices(self.slicing.pool)
        freed: list[IPAddress] = []
        done: set[str] = set()
        for name, r in self._my_slices(rng, self.slicing, pool):
            freed += self._release_slice(name, r, deadline - time.monotonic())
            done.add(name)
        if not freed and self.shared is not None:
            # "Nothing held" is only trusted from a fresh slice list (this node may hold a slice the cache lacks).
            pool = self._sliced.read_slices(self.slicing.pool)
            for name, r in self._my_slices(rng, self.slicing, pool):
                if name not in done:
                    freed += self._release_slice(name, r, deadline - time.monotonic())
        if not freed and self.overlapping and not self._kept_for_claim:
            # One sweep over the whole range, not one per slice; an address is looked up in whichever node's
            # slice holds it (an IPAMClaim's entry may sit in another node's slice).
            self._release_orphans(rng, None, lambda ip: self._slice_entry(rng, pool, ip))
        return freed

    def _release_slice(self, name: str, rng: Range, budget: float) -> list[IPAddress]:
        """Free containerID + ifName's entries in this node's slice pool ``name``: through the node process's
        queue (one write with the node's other ADDs and DELs in that slice), then its own reservations."""
        if self.shared is None or self.slicing is None:
            return self._release_in(name, rng, budget, sweep=None)
        from . import group

        q = group.queue((self.shared, name, rng, self.overlapping, self.network_name, self.slicing.node),
                        node=(self.shared, self.slicing.node))
        req = group.Request(self.owner, time.monotonic() + budget, extra={"del": True})
        gone = cast(list[tuple[int, Allocation]], q.submit(
            req, lambda batch: self._serve(q, name, rng, batch),
            lambda: TryAgainLater(f"pool {name}: this node's queue did not reach the DEL in time; retry")))
        if req.extra.get("kept"):
            self._kept_for_claim = True
        if self.overlapping:
            for off, a in gone:
                self._release_quietly(self._want(rng, off, a.podref, a.ifname))
        ips = [rng.ip_at(off) for off, _ in gone]
        if ips:
            self.log.debug(f"pool {name}: released {', '.join(map(str, ips))} of containerID "
                           f"{self.owner.container_id} ifname {self.owner.ifname}")
        return ips

    def _release_in(self, name: str, rng: Range, budget: float, *, sweep: Range | None) -> list[IPAddress]:
        deadline = time.monotonic() + budget
        tries = 0
        while True:
            tries += 1
            if tries > MAX_TRIES or time.monotonic() > deadline:
                raise TryAgainLater(f"could not update pool {name} after {tries - 1} attempts "
                                    "(concurrent updates); retry")
            snap = self.store.read_pool(name, rng.cidr)
            offs = find_attached(snap.allocations, self.owner) if snap.version is not None else []
            if any(snap.allocations[o].claim for o in offs):
                self._kept_for_claim = True
            if offs and all(snap.allocations[o].claim for o in offs):
                # An IPAMClaim's address outlives its pods: only the reconciler frees it, once the claim is gone.
                self.log.debug(f"pool {name}: {', '.join(str(rng.ip_at(o)) for o in offs)} stays with IPAMClaim "
                               f"{snap.allocations[offs[0]].claim}")
                return []
            offs = [o for o in offs if not snap.allocations[o].claim]
            if not offs:
                if self.overlapping and sweep is not None:
                    self._release_orphans(sweep, snap)
                return []
            gone = {off: snap.allocations[off] for off in offs}
            new = {k: v for k, v in snap.allocations.items() if k not in gone}
            try:
                self.store.write_pool(snap, new)
            except Conflict:
                self.conflicts += 1
                self.sleep(_backoff(tries))
                continue
            except StoreUnavailable:
                self.sleep(_backoff(tries) + 0.05)
                continue
            if self.overlapping:
                for off, a in gone.items():
                    self._release_quietly(self._want(rng, off, a.podref, a.ifname))
            ips = [rng.ip_at(off) for off in offs]
            self.log.debug(f"pool {name}: released {', '.join(map(str, ips))} of containerID "
                           f"{self.owner.container_id} ifname {self.owner.ifname}")
            return ips

    def _slice_entry(self, rng: Range, pool: SlicePool, ip: IPAddress) -> Allocation | None:
        """The pool entry of ``ip`` in whichever node's slice holds it."""
        import ipaddress

        for a in pool.allocations:
            sub = ipaddress.ip_network(a.cidr, strict=False)
            if a.node and ip in sub:
                name = slices.slice_pool_name(sub, a.node, self.network_name)
                return self.store.read_pool(name, a.cidr).allocations.get(int(ip) - int(sub.network_address))
        return None

    def _release_orphans(self, rng: Range, snap: PoolSnapshot | None,
                         holder: Callable[[IPAddress], Allocation | None] | None = None) -> None:
        """Delete reservations of containerID + ifName in ``rng`` that no pool entry holds (a killed ADD's).
        ``snap`` is the range's pool; for a sliced range None, and ``holder`` finds an address's entry."""
        prefix = f"{self.network_name}-" if self.network_name else ""
        for res in self.store.find_reservations(self.owner.container_id, self.owner.ifname):
            if prefix and not res.name.startswith(prefix):
                continue
            ip = ip_of_reservation(res.name[len(prefix):])
            if ip is None or ip not in rng.network:
                continue
            off = int(ip) - rng.base
            held = snap.allocations.get(off) if snap is not None else holder(ip) if holder is not None else None
            if held is not None and (held.container_id != self.owner.container_id or held.claim):
                continue  # another pod's (or a claim's) entry points at it: not an orphan, whatever its owner says
            self.log.verbose(f"deleting orphaned reservation {res.name} of containerID {self.owner.container_id} "
                             f"ifname {self.owner.ifname} (an ADD was interrupted before its pool write)")
            self._release_quietly(res)

    # ---- CHECK ----

    def check(self, rng: Range) -> IPAddress:
        """The IP containerID + ifName holds in ``rng``'s pool (error 3 if none, or its reservation is not its)."""
        if self.slicing is None:
            return self._check_in(pool_name(rng.network, self.network_name), rng)
        pool = self._sliced.read_slices(self.slicing.pool)
        mine = self._my_slices(rng, self.slicing, pool)
        for name, r in mine:
            if find_attached(self.store.read_pool(name, r.cidr).allocations, self.owner):
                return self._check_in(name, r)
        raise UnknownContainer(f"whereabouts: no IP of this node's slices of NodeSlicePool {self.slicing.pool} is "
                               f"allocated to container {self.owner.container_id} interface {self.owner.ifname}")

    def _check_in(self, name: str, rng: Range) -> IPAddress:
        snap = self.store.read_pool(name, rng.cidr)
        offs = find_attached(snap.allocations, self.owner)
        if not offs:
            raise UnknownContainer(f"whereabouts: no IP of pool {name} is allocated to container "
                                   f"{self.owner.container_id} interface {self.owner.ifname}")
        off = offs[0]
        a = snap.allocations[off]
        if self.owner.podref and a.podref != self.owner.podref:
            raise UnknownContainer(f"whereabouts: IP {rng.ip_at(off)} of pool {name} is allocated to pod "
                                   f"{a.podref}, not {self.owner.podref}")
        if self.overlapping:
            want = self._want(rng, off, a.podref, a.ifname)
            got = self.store.get_reservation(want.name)
            if got is None or not got.same_owner(want):
                raise UnknownContainer(f"whereabouts: IP {rng.ip_at(off)} of pool {name} has no matching "
                                       f"OverlappingRangeIPReservation {want.name}",
                                       f"found {got.podref if got else 'none'}; run 'multinic reconcile'")
        return rng.ip_at(off)


@contextlib.contextmanager
def opened(conf: Conf) -> Iterator[Store]:
    """The datastore of ``conf``: a pooled connection of this node process (``group.borrowed``), or a new one."""
    from . import group

    with group.borrowed(store_key(conf), lambda: open_store(conf)) as store:
        yield store
