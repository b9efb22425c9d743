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
from .store import Conflict, PoolSnapshot, Reservation, SliceStore, Store, StoreUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from .config import Conf

MAX_TRIES = 100
ADD_BUDGET = 120.0  # whereabouts' ADD time limit
DEL_BUDGET = 60.0


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


class Manager:
    """Allocation, release and check for one owner against one store."""

    def __init__(self, store: Store, owner: Owner, *, network_name: str = "", overlapping: bool = True,
                 log: Logger | None = None, sleep: Callable[[float], None] = time.sleep,
                 slicing: SliceConf | None = None) -> None:
        self.slicing = slicing
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

    def _want(self, rng: Range, off: int, podref: str | None = None, ifname: str | None = None) -> Reservation:
        o = self.owner
        return Reservation(reservation_name(rng.ip_at(off), self.network_name), o.container_id,
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
        if snap.allocations[held] != self.owner.allocation():
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

    def _slice_pool(self, rng: Range, sl: SliceConf, deadline: float) -> SlicePool:
        """The NodeSlicePool of ``rng``, created (listing its slices) the first time any node allocates."""
        while True:
            pool = self._sliced.read_slices(sl.pool)
            if pool.version is not None:
                if pool.range and pool.range != rng.cidr or pool.size and pool.size.lstrip("/") != str(sl.size):
                    raise InvalidConfig(f"NodeSlicePool {sl.pool} slices {pool.range} into {pool.size}, but this "
                                        f"network asks for {rng.cidr} in /{sl.size}",
                                        "one network_name per range and slice size; rename the network or "
                                        "delete the NodeSlicePool once no pod uses it")
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
        pool = self._slice_pool(rng, sl, deadline)
        mine = self._my_slices(rng, sl, pool)
        if len(mine) > 1:
            # Idempotency across this node's slices: a re-ADD gets what it holds, wherever it is.
            for name, r in mine:
                if find_held(self.store.read_pool(name, r.cidr).allocations, self.owner) is not None:
                    return self._allocate_in(name, r, deadline - time.monotonic())
        for name, r in mine:
            try:
                return self._allocate_in(name, r, deadline - time.monotonic())
            except AddressExhausted:
                continue  # this slice is full: the next one, or a new one
        while True:  # claim the lowest free slice with a compare-and-swap on the slice list
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
                continue
            self.log.verbose(f"node {sl.node} claimed slice {sub} of NodeSlicePool {sl.pool}")
            sr = slices.sub_range(rng, sub)
            assert sr is not None  # claim only returns slices with a usable address
            return self._allocate_in(slices.slice_pool_name(sub, sl.node, self.network_name), sr,
                                     deadline - time.monotonic())

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
        pool = self._sliced.read_slices(self.slicing.pool)
        freed: list[IPAddress] = []
        for name, r in self._my_slices(rng, self.slicing, pool):
            freed += self._release_in(name, r, deadline - time.monotonic(), sweep=None)
        if not freed and self.overlapping and not self._kept_for_claim:
            # One sweep over the whole range, not one per slice; an address is looked up in whichever node's
            # slice holds it (an IPAMClaim's entry may sit in another node's slice).
            self._release_orphans(rng, None, lambda ip: self._slice_entry(rng, pool, ip))
        return freed

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
    """The datastore of ``conf``, closed afterwards."""
    store = open_store(conf)
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):
            store.close()
