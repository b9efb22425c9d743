"""One lock per sandbox, across processes: every CNI command on a sandbox and every hot-plug of it take it.

The runtime's ADD/DEL/CHECK (a thin exec, the daemon serving the shim, or the shim's own thin DEL when the daemon
is busy, slow or down) and the daemon's hot-plugs (``cni.daemon.dynamic``) all change one sandbox's attachments
and its cache record. An in-memory lock in the daemon serialised only the daemon's own calls: a DEL the shim ran
itself could run beside a hot-plug and leave a cache record or an IPAM reservation behind (issue 15: "a DEL from
the runtime during a hot-plug waits for it and then removes everything"). A flock is the kernel's, so it spans
processes and threads alike and dies with its holder.

Rules:
- The lock file is ``<cniDir>/.locks/<containerID>`` (directory 0700, files 0600, beside the cache it guards;
  dot-named, so the cache's container listing skips it). Taken with ``cni.fslock.acquire_removable``.
- A lock file lives as long as its sandbox's cache record: whoever releases the lock when no record exists (a
  completed DEL, an ADD that failed and rolled back, a hot-plug that found the sandbox gone) removes the file while
  still holding it. So nothing naming a finished sandbox stays on the node. A process killed in between leaves a
  file nobody holds: the next command on that sandbox removes it, and GC sweeps it (``sweep``).
- One taker per sandbox per process at a time: a second ``held`` of the same sandbox in the same process waits for
  the first forever (flock belongs to the open file, not the process). GC therefore takes the lock per container
  it releases, not for its own request.
- Lock order, where two are held: the daemon's GC lock first, then one sandbox lock.
- No timeout: a command waits as long as the holder runs; every holder's work is bounded by its plugins' own
  timeouts, and a holder that dies releases at once.
- Start-up budget: ``os``/``fcntl`` only, beyond what the command imports anyway (rule 10).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .. import fslock
from ..spec.errors import InvalidConfig, IOFailure
from . import cache

DIR = ".locks"
COMMANDS = frozenset({"ADD", "DEL", "CHECK"})  # the ones about one sandbox (GC locks per container it releases)


def _path(cni_dir: str, container_id: str) -> str | None:
    """The sandbox's lock file, or None when the container ID cannot name a file (then no cache record can
    exist for it either, and there is nothing to serialise against)."""
    try:
        return os.path.join(cni_dir, DIR, os.path.basename(cache.path_for(cni_dir, container_id)))
    except InvalidConfig:
        return None


@contextmanager
def held(cni_dir: str, container_id: str) -> Iterator[None]:
    """Hold the sandbox's lock for the block; on the way out, remove the lock file if the sandbox has no record."""
    path = _path(cni_dir, container_id) if container_id else None
    if path is None:
        yield
        return
    try:
        os.makedirs(cni_dir, mode=0o700, exist_ok=True)
        try:
            os.mkdir(os.path.dirname(path), 0o700)
        except FileExistsError:
            pass
        fd = fslock.acquire_removable(path)
    except OSError as exc:
        raise IOFailure(f"cannot take the lock of sandbox {container_id} ({path})",
                        f"{exc.strerror or exc}; check that {cni_dir} is a writable directory") from None
    try:
        yield
    finally:
        _release(cni_dir, container_id, path, fd)


def _release(cni_dir: str, container_id: str, path: str, fd: int) -> None:
    if os.path.lexists(cache.path_for(cni_dir, container_id)):
        os.close(fd)
        return
    try:
        fslock.remove_held(path, fd)
    except OSError:
        pass  # the command itself is done; a file left here is swept by the next command on the sandbox or GC


def sweep(cni_dir: str) -> int:
    """GC: remove the lock files of sandboxes that have no cache record and that nobody holds; how many."""
    d = os.path.join(cni_dir, DIR)
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    removed = 0
    for cid in names:
        path = os.path.join(d, cid)
        if _path(cni_dir, cid) != path or os.path.lexists(cache.path_for(cni_dir, cid)):
            continue
        try:
            fd = fslock.try_acquire_removable(path)
        except OSError:
            continue
        if fd is None:
            continue  # held: its holder decides when it releases
        if os.path.lexists(cache.path_for(cni_dir, cid)):  # an ADD made the record before we locked
            os.close(fd)
            continue
        try:
            fslock.remove_held(path, fd)
            removed += 1
        except OSError:
            pass
    return removed
