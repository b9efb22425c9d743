"""The whereabouts store interface: IPPools and OverlappingRangeIPReservations with optimistic concurrency.

Rules every store follows (file, etcd, Kubernetes CRDs):
- Data model = whereabouts' CRDs, so a cluster can switch stores and switch to/from whereabouts: a pool is named by
  ``allocator.pool_name`` and holds ``spec.range`` + ``spec.allocations`` (decimal offset → ``{id, podref, ifname}``);
  a reservation is named by ``allocator.reservation_name`` and holds ``{podref, ifname, containerid}``.
- Concurrency is optimistic, per pool: ``read_pool`` returns a snapshot with an opaque ``version``; ``write_pool``
  succeeds only if the stored pool still has that version, else raises ``Conflict`` (the caller re-reads and
  retries). There is no cluster-wide lock (whereabouts' single Lease serialises every ADD of the cluster).
- A reservation is created only if absent (``reserve`` returns whatever is stored afterwards, ours or another's) and
  deleted only if it still is the one we read (``release``): creation is the per-IP uniqueness point across
  overlapping pools.
- A snapshot whose ``version`` is None is a pool that does not exist yet; writing it creates it (``Conflict`` if
  someone created it meanwhile). Reading never creates anything (a DEL or CHECK leaves no trace).
- Failures to reach the store raise ``StoreUnavailable`` (code 11: try again later). A write that failed that way
  may or may not have happened; callers re-read before deciding anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cni.spec.errors import TryAgainLater

from .allocator import Allocation

if TYPE_CHECKING:  # pragma: no cover
    from .slices import SlicePool

GROUP = "whereabouts.cni.cncf.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
POOL_KIND = "IPPool"
POOL_PLURAL = "ippools"
RES_KIND = "OverlappingRangeIPReservation"
RES_PLURAL = "overlappingrangeipreservations"


class Conflict(Exception):
    """The pool (or reservation) changed since it was read. Internal: never reaches a CNI caller."""


class BatchConflict(Conflict):
    """A pool write with reservations in the same transaction failed: what each reservation is now (None: absent),
    so the caller knows which addresses another owner reserved meanwhile."""

    def __init__(self, name: str, reservations: dict[str, Reservation | None]) -> None:
        super().__init__(name)
        self.reservations = reservations


class StoreUnavailable(TryAgainLater):
    """The store could not be reached or answered with a server error."""


@dataclass
class PoolSnapshot:
    """A pool as read: its allocations and the version a write must match (None = does not exist)."""

    name: str
    range: str
    allocations: dict[int, Allocation]
    version: str | None = None
    raw: Any = field(default=None, repr=False)  # the store's own object (e.g. the full CR, to PUT back)


@dataclass(frozen=True)
class Reservation:
    """An OverlappingRangeIPReservation."""

    name: str
    container_id: str
    podref: str
    ifname: str = ""
    version: str | None = None
    uid: str = ""

    def spec(self) -> dict[str, str]:
        return {"containerid": self.container_id, "podref": self.podref, "ifname": self.ifname}

    def same_owner(self, other: Reservation) -> bool:
        """Same pod and interface (whereabouts compares podref only; an old reservation has no ifname)."""
        if self.podref or other.podref:
            return self.podref == other.podref and (not self.ifname or not other.ifname or self.ifname == other.ifname)
        return self.container_id == other.container_id


class Store(Protocol):
    """What the whereabouts manager needs from a datastore."""

    kind: str  # "file" | "etcd" | "kubernetes"

    def read_pool(self, name: str, cidr: str) -> PoolSnapshot:
        """The pool ``name`` (an empty snapshot with version None when it does not exist)."""

    def write_pool(self, snap: PoolSnapshot, allocations: dict[int, Allocation]) -> PoolSnapshot | None:
        """Replace the allocations if the pool is still at ``snap.version``; else ``Conflict``. Returns the pool as
        written (with its new version) when the store's answer tells it, else None."""

    def reserve(self, res: Reservation) -> Reservation:
        """Create ``res`` if no reservation of that name exists; return the stored one either way."""

    def get_reservation(self, name: str) -> Reservation | None:
        """The reservation ``name``, or None."""

    def release(self, res: Reservation) -> None:
        """Delete the reservation if it is still the one read (same owner/version); absent is fine."""

    def list_pools(self) -> list[PoolSnapshot]:
        """Every pool (for the reconciler and GC)."""

    def list_reservations(self) -> list[Reservation]:
        """Every reservation."""

    def find_reservations(self, container_id: str, ifname: str) -> list[Reservation]:
        """The reservations whose owner is ``container_id`` + ``ifname`` (DEL's orphan sweep)."""

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` when the store cannot be used (STATUS)."""

    def close(self) -> None:
        """Release connections."""


class SliceStore(Store, Protocol):
    """A store that can hold node slices (etcd and Kubernetes; the file store serves one node and never slices)."""

    def read_slices(self, name: str) -> SlicePool:
        """The NodeSlicePool ``name`` (version None when it does not exist)."""

    def list_slices(self) -> list[SlicePool]:
        """Every NodeSlicePool (for the reconciler)."""

    def write_slices(self, pool: SlicePool) -> None:
        """Create (version None) or replace the NodeSlicePool if still at ``pool.version``; else ``Conflict``."""

    def delete_pool(self, snap: PoolSnapshot) -> None:
        """Delete the IPPool if still at ``snap.version`` (a slice given back); else ``Conflict``."""


# ---- wire objects shared by the stores --------------------------------------------------------------------------


def pool_object(name: str, cidr: str, allocations: dict[int, Allocation], namespace: str,
                base: dict[str, Any] | None = None) -> dict[str, Any]:
    """An IPPool object (``base`` keeps the metadata and unknown fields of the object read)."""
    from .allocator import offsets_to_wire

    obj: dict[str, Any] = dict(base) if base else {}
    obj["apiVersion"] = API_VERSION
    obj["kind"] = POOL_KIND
    meta = dict(obj.get("metadata") or {})
    meta["name"] = name
    meta.setdefault("namespace", namespace)
    obj["metadata"] = meta
    spec = dict(obj.get("spec") or {})
    spec["range"] = spec.get("range") or cidr
    spec["allocations"] = offsets_to_wire(allocations)
    obj["spec"] = spec
    return obj


def pool_from_object(obj: dict[str, Any], version: str | None, cidr: str = "") -> PoolSnapshot:
    from .allocator import offsets_from_wire

    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return PoolSnapshot(
        name=str(meta.get("name") or ""),
        range=str(spec.get("range") or cidr),
        allocations=offsets_from_wire(spec.get("allocations")),
        version=version,
        raw=obj,
    )


# A label on the reservations we create, so DEL can find a container's by selector instead of listing them all.
# Its value is a digest: a container ID may be longer than a label value (63) or end in '-'.
OWNER_LABEL = "multinic.io/container-id-sha1"


def owner_label(container_id: str) -> str:
    import hashlib

    return hashlib.sha1(container_id.encode(), usedforsecurity=False).hexdigest()


def reservation_object(res: Reservation, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": RES_KIND,
        "metadata": {"name": res.name, "namespace": namespace,
                     "labels": {OWNER_LABEL: owner_label(res.container_id)}},
        "spec": res.spec(),
    }


def owned_by(reservations: list[Reservation], container_id: str, ifname: str) -> list[Reservation]:
    """Those of ``reservations`` made for ``container_id`` + ``ifname`` (an old reservation has no ifname)."""
    return [r for r in reservations if r.container_id == container_id and r.ifname in (ifname, "")]


def reservation_from_object(obj: dict[str, Any], version: str | None) -> Reservation:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return Reservation(
        name=str(meta.get("name") or ""),
        container_id=str(spec.get("containerid") or ""),
        podref=str(spec.get("podref") or ""),
        ifname=str(spec.get("ifname") or ""),
        version=version,
        uid=str(meta.get("uid") or ""),
    )
