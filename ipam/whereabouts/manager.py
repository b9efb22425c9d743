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
- Retries are bounded (``MAX_TRIES`` conflicts, ``ADD_BUDGET``/``DEL_BUDGET`` seconds) with jittered backoff.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from cni import faults
from cni.log import Logger
from cni.spec.errors import CNIError, TryAgainLater, UnknownContainer

from .allocator import (
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
from .store import Conflict, PoolSnapshot, Reservation, Store, StoreUnavailable

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


class Manager:
    """Allocation, release and check for one owner against one store."""

    def __init__(self, store: Store, owner: Owner, *, network_name: str = "", overlapping: bool = True,
                 log: Logger | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.owner = owner
        self.network_name = network_name
        self.overlapping = overlapping
        self.log = log or Logger()
        self.sleep = sleep
        self.conflicts = 0  # for tests and benchmarks

    def _want(self, rng: Range, off: int, podref: str | None = None, ifname: str | None = None) -> Reservation:
        o = self.owner
        return Reservation(reservation_name(rng.ip_at(off), self.network_name), o.container_id,
                           o.podref if podref is None else podref, o.ifname if ifname is None else ifname)

    # ---- ADD ----

    def allocate(self, rng: Range, *, budget: float = ADD_BUDGET) -> IPAddress:
        """The owner's IP in ``rng``: the one it already holds, else the lowest free one."""
        name = pool_name(rng.network, self.network_name)
        deadline = time.monotonic() + budget
        skip: set[int] = set()
        mine: tuple[int, Reservation] | None = None
        unsure = False  # a pool write may have committed without us hearing back
        tries = 0
        try:
            while True:
                tries += 1
                if tries > MAX_TRIES or time.monotonic() > deadline:
                    raise TryAgainLater(f"could not update pool {name} after {tries - 1} attempts "
                                        "(concurrent updates); retry")
                snap = self.store.read_pool(name, rng.cidr)
                unsure = False
                held = find_held(snap.allocations, self.owner)
                if held is not None:
                    if mine is not None and mine[0] != held:
                        self._release_quietly(mine[1])
                    mine = None
                    if snap.allocations[held] != self.owner.allocation():
                        new = dict(snap.allocations)
                        new[held] = self.owner.allocation()
                        try:
                            self.store.write_pool(snap, new)
                        except Conflict:
                            self.conflicts += 1
                            self.sleep(_backoff(tries))
                            continue
                    if self.overlapping:
                        got = self.store.reserve(self._want(rng, held))
                        if not got.same_owner(self._want(rng, held)):
                            self.log.error(f"IP {rng.ip_at(held)} of pool {name} held by {self.owner.podref} is "
                                           f"reserved by {got.podref} too; run 'multinic reconcile'")
                    self.log.debug(f"pool {name}: {self.owner.podref or self.owner.container_id}/"
                                   f"{self.owner.ifname} already holds {rng.ip_at(held)}")
                    return rng.ip_at(held)
                if mine is not None and (mine[0] in snap.allocations or not rng.usable(mine[0])):
                    # Someone wrote that offset without a reservation (a config with overlapping disabled).
                    self._release_quietly(mine[1])
                    skip.add(mine[0])
                    mine = None
                if mine is not None:
                    off = mine[0]
                else:
                    taken = Taken(snap.allocations.keys())
                    for s in skip:
                        taken.add(s)
                    while True:
                        off = first_free(rng, taken)
                        if not self.overlapping:
                            break
                        want = self._want(rng, off)
                        got = self.store.reserve(want)
                        if got.same_owner(want):
                            mine = (off, got)
                            faults.point("after-wb-reserve")  # the window DEL's orphan sweep exists for
                            break
                        # Reserved through an overlapping pool: not ours, look further (the pool read stays valid).
                        skip.add(off)
                        taken.add(off)
                        if time.monotonic() > deadline:
                            raise TryAgainLater(f"pool {name}: no unreserved address found in time; retry")
                new = dict(snap.allocations)
                new[off] = self.owner.allocation()
                try:
                    self.store.write_pool(snap, new)
                except Conflict:
                    self.conflicts += 1
                    self.sleep(_backoff(tries))
                    continue
                except StoreUnavailable as e:
                    unsure = True
                    self.log.verbose(f"pool {name}: write went unanswered ({e}); re-reading")
                    self.sleep(_backoff(tries) + 0.05)
                    continue
                mine = None  # committed: the reservation now belongs to the pool entry
                self.log.debug(f"pool {name}: allocated {rng.ip_at(off)} to {self.owner.podref or '-'} "
                               f"containerID {self.owner.container_id} ifname {self.owner.ifname}")
                return rng.ip_at(off)
        except BaseException:
            if mine is not None and not unsure:
                self._release_quietly(mine[1])
            raise

    def _release_quietly(self, res: Reservation) -> None:
        try:
            self.store.release(res)
        except CNIError as e:
            self.log.error(f"could not delete reservation {res.name}: {e}; 'multinic reconcile' will")

    # ---- DEL ----

    def release(self, rng: Range, *, budget: float = DEL_BUDGET) -> list[IPAddress]:
        """Free what containerID + ifName holds in ``rng``'s pool; nothing held is success."""
        name = pool_name(rng.network, self.network_name)
        deadline = time.monotonic() + budget
        tries = 0
        while True:
            tries += 1
            if tries > MAX_TRIES or time.monotonic() > deadline:
                raise TryAgainLater(f"could not update pool {name} after {tries - 1} attempts "
                                    "(concurrent updates); retry")
            snap = self.store.read_pool(name, rng.cidr)
            offs = find_attached(snap.allocations, self.owner) if snap.version is not None else []
            if not offs:
                if self.overlapping:
                    self._release_orphans(rng, snap)
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

    def _release_orphans(self, rng: Range, snap: PoolSnapshot) -> None:
        """Delete reservations of containerID + ifName in ``rng`` that no pool entry holds (a killed ADD's)."""
        prefix = f"{self.network_name}-" if self.network_name else ""
        for res in self.store.find_reservations(self.owner.container_id, self.owner.ifname):
            if prefix and not res.name.startswith(prefix):
                continue
            ip = ip_of_reservation(res.name[len(prefix):])
            if ip is None or ip not in rng.network:
                continue
            off = int(ip) - rng.base
            held = snap.allocations.get(off)
            if held is not None and held.container_id != self.owner.container_id:
                continue  # another pod's entry points at it: not an orphan, whatever its owner field says
            self.log.verbose(f"deleting orphaned reservation {res.name} of containerID {self.owner.container_id} "
                             f"ifname {self.owner.ifname} (an ADD was interrupted before its pool write)")
            self._release_quietly(res)

    # ---- CHECK ----

    def check(self, rng: Range) -> IPAddress:
        """The IP containerID + ifName holds in ``rng``'s pool (error 3 if none, or its reservation is not its)."""
        name = pool_name(rng.network, self.network_name)
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
