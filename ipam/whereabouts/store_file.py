"""Local file store for whereabouts: the embedded single-node default.

Layout under ``data_dir`` (0700; files 0600)::

    ippools/<pool name>.json                       an IPPool object (same JSON as the CRD)
    ippools/<pool name>.lock                       flock(2) guarding writes of that pool
    overlappingrangeipreservations/<name>.json     an OverlappingRangeIPReservation object

Rules:
- Readers never lock: every write is temp file + fsync + rename(2) (+ fsync of the directory), so a reader sees the
  old or the new pool, never half of one, and a crash loses at most the write in progress.
- The version of a pool is its ``metadata.resourceVersion``, bumped by every write; ``write_pool`` compares it under
  the pool's flock, which makes the optimistic protocol of ``store.Store`` exact on one node.
- A reservation is created with link(2) of a complete temp file, which fails if the name exists: create-if-absent
  without a lock.
- OSError becomes ``IOFailure`` (code 5) naming the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

import orjson

from cni.atomicfile import atomic_create, atomic_write
from cni.spec.errors import IOFailure

from .allocator import Allocation
from .store import (
    POOL_PLURAL,
    RES_PLURAL,
    Conflict,
    PoolSnapshot,
    Reservation,
    owned_by,
    pool_from_object,
    pool_object,
    reservation_from_object,
    reservation_object,
)


def _io(path: str, exc: OSError) -> IOFailure:
    return IOFailure(f"whereabouts file store: cannot use {path}: {exc.strerror or exc}",
                     "check that the data_dir is a writable local directory")


class FileStore:
    kind = "file"

    def __init__(self, data_dir: str, namespace: str = "local") -> None:
        self.dir = data_dir
        self.namespace = namespace
        self._pools = os.path.join(data_dir, POOL_PLURAL)
        self._res = os.path.join(data_dir, RES_PLURAL)

    # -- helpers --

    def _ensure_dirs(self) -> None:
        for d in (self.dir, self._pools, self._res):
            try:
                os.makedirs(d, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise _io(d, exc) from None

    def _load(self, path: str) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io(path, exc) from None
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise IOFailure(f"whereabouts file store: {path} is corrupt (not JSON)",
                            "move it aside; 'multinic reconcile' rebuilds nothing, so check which pods use the range")\
                from None
        return doc if isinstance(doc, dict) else None

    def _write_atomic(self, path: str, doc: dict[str, Any], *, exclusive: bool = False) -> bool:
        """Write ``doc`` to ``path`` atomically. With ``exclusive``, only if ``path`` does not exist (False if it did)."""
        try:
            if exclusive:
                return atomic_create(path, orjson.dumps(doc))
            atomic_write(path, orjson.dumps(doc))
            return True
        except OSError as exc:
            raise _io(path, exc) from None

    @contextlib.contextmanager
    def _locked(self, name: str, d: str | None = None) -> Iterator[None]:
        self._ensure_dirs()
        path = os.path.join(d or self._pools, f"{name}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _io(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _pool_path(self, name: str) -> str:
        return os.path.join(self._pools, f"{name}.json")

    def _res_path(self, name: str) -> str:
        return os.path.join(self._res, f"{name}.json")

    # -- pools --

    def read_pool(self, name: str, cidr: str) -> PoolSnapshot:
        doc = self._load(self._pool_path(name))
        if doc is None:
            return PoolSnapshot(name, cidr, {}, None)
        return pool_from_object(doc, str((doc.get("metadata") or {}).get("resourceVersion") or "0"), cidr)

    def write_pool(self, snap: PoolSnapshot, allocations: dict[int, Allocation]) -> None:
        path = self._pool_path(snap.name)
        with self._locked(snap.name):
            cur = self._load(path)
            cur_version = None if cur is None else str((cur.get("metadata") or {}).get("resourceVersion") or "0")
            if cur_version != snap.version:
                raise Conflict(snap.name)
            obj = pool_object(snap.name, snap.range, allocations, self.namespace, cur)
            obj["metadata"]["resourceVersion"] = str(int(cur_version or "0") + 1)
            self._write_atomic(path, obj)

    def list_pools(self) -> list[PoolSnapshot]:
        out = []
        for name in self._names(self._pools):
            snap = self.read_pool(name, "")
            if snap.version is not None:
                out.append(snap)
        return out

    # -- reservations --

    def reserve(self, res: Reservation) -> Reservation:
        self._ensure_dirs()
        path = self._res_path(res.name)
        for _ in range(3):
            obj = reservation_object(res, self.namespace)
            obj["metadata"]["resourceVersion"] = "1"
            if self._write_atomic(path, obj, exclusive=True):
                return Reservation(res.name, res.container_id, res.podref, res.ifname, "1")
            cur = self.get_reservation(res.name)
            if cur is not None:
                return cur
            # Deleted between our link and our read: try to create it again.
        raise IOFailure(f"whereabouts file store: reservation {res.name} keeps appearing and vanishing")

    def get_reservation(self, name: str) -> Reservation | None:
        doc = self._load(self._res_path(name))
        if doc is None:
            return None
        return reservation_from_object(doc, str((doc.get("metadata") or {}).get("resourceVersion") or "1"))

    def release(self, res: Reservation) -> None:
        path = self._res_path(res.name)
        # Reservations change only by create and delete, so "still the one read" = same owner.
        with self._locked("_deletions", self._res):  # one lock file for every reservation deletion
            cur = self.get_reservation(res.name)
            if cur is None or not cur.same_owner(res):
                return
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise _io(path, exc) from None

    def list_reservations(self) -> list[Reservation]:
        out = []
        for name in self._names(self._res):
            r = self.get_reservation(name)
            if r is not None:
                out.append(r)
        return out

    def find_reservations(self, container_id: str, ifname: str) -> list[Reservation]:
        return owned_by(self.list_reservations(), container_id, ifname)

    # -- misc --

    def _names(self, d: str) -> list[str]:
        try:
            files = os.listdir(d)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _io(d, exc) from None
        return sorted(f[:-5] for f in files if f.endswith(".json"))

    def ping(self) -> None:
        self._ensure_dirs()
        if not os.access(self._pools, os.W_OK):
            raise IOFailure(f"whereabouts file store: {self._pools} is not writable")

    def close(self) -> None:
        return None
