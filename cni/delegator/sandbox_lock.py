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
  file nobody holds: the next command on that sandbox removes it, and GC sweeps it (``sweep``) — so does the
  daemon's loop (``cni.daemon.dynamic``), for runtimes older than CNI 1.1 that never send GC.
- One taker per sandbox per process at a time: a second ``held`` of the same sandbox in the same process waits for
  the first forever (flock belongs to the open file, not the process). GC therefore takes the lock per container
  it releases, not for its own request.
- Lock order, where two are held: the daemon's GC lock first, then one sandbox lock.
- A bounded wait: a command waits at most ``WAIT`` seconds (``MULTINIC_LOCK_TIMEOUT`` in the environment, else 60 —
  below kubelet's 2-minute runtime request timeout, above the longest wait a healthy holder causes: an ADD waiting
  for the readiness indicator, 45 s by default), or until the current ``cni.deadline`` when one is set, whichever
  comes first. Then it fails with code 11 (try again later: the runtime retries) and a message naming the holder,
  from what each holder writes into the file (``pid what unix-time``) and ``/proc/<pid>``. Without the bound a
  wedged holder made the runtime's call hang until the runtime killed it, with no message anywhere.
- The daemon's hot-plug does not wait (``wait=0``): a sandbox busy with a runtime command is retried by a later pass,
  so one wedged command cannot stall the hot-plugs of every other sandbox behind it.
- Nothing on disk for a sandbox never added: the directories ``held`` creates (the cache dir, ``.locks``) are
  removed again on release when they are empty, so a DEL of something never added leaves the disk as it found it.
  A taker that finds a directory gone between its ``mkdir`` and its ``open`` makes it again.
- Start-up budget: ``os``/``fcntl``/``time`` only, beyond what the command imports anyway (rule 10).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .. import fslock
from ..deadline import call_budget
from ..spec.errors import InvalidConfig, IOFailure, TryAgainLater
from . import cache

DIR = ".locks"
COMMANDS = frozenset({"ADD", "DEL", "CHECK"})  # the ones about one sandbox (GC locks per container it releases)
DEFAULT_WAIT = 60.0


def _wait_from_env() -> float:
    try:
        wait = float(os.environ.get("MULTINIC_LOCK_TIMEOUT", ""))
    except ValueError:
        return DEFAULT_WAIT
    return wait if 0 < wait < float("inf") else DEFAULT_WAIT


WAIT = _wait_from_env()


def _path(cni_dir: str, container_id: str) -> str | None:
    """The sandbox's lock file, or None when the container ID cannot name a file (then no cache record can
    exist for it either, and there is nothing to serialise against)."""
    try:
        return os.path.join(cni_dir, DIR, os.path.basename(cache.path_for(cni_dir, container_id)))
    except InvalidConfig:
        return None


@contextmanager
def held(cni_dir: str, container_id: str, what: str = "", *, wait: float | None = None) -> Iterator[None]:
    """Hold the sandbox's lock for the block; on the way out, remove the lock file if the sandbox has no record.

    ``what`` the holder is doing ("CNI DEL", "hot-plug"), for the message of a waiter that gives up. ``wait``: the
    longest wait in seconds (default ``WAIT``, cut to the current ``cni.deadline``); past it, ``TryAgainLater``.
    """
    path = _path(cni_dir, container_id) if container_id else None
    if path is None:
        yield
        return
    budget = call_budget(WAIT) if wait is None else wait
    owner = f"{os.getpid()} {what.replace(' ', '_') or '-'} {time.time():.0f}\n".encode()
    created: list[str] = []
    try:
        fd = _take(cni_dir, path, budget, owner, created)
    except TimeoutError:
        _tidy(created)
        raise _busy(container_id, path, budget) from None
    except OSError as exc:
        _tidy(created)
        raise IOFailure(f"cannot take the lock of sandbox {container_id} ({path})",
                        f"{exc.strerror or exc}; check that {cni_dir} is a writable directory") from None
    try:
        yield
    finally:
        _release(cni_dir, container_id, path, fd, created)


def _take(cni_dir: str, path: str, budget: float, owner: bytes, created: list[str]) -> int:
    """The lock's descriptor, making the directories on the way (noted in ``created``, outermost first)."""
    for _ in range(100):
        try:
            _mkdir(cni_dir, created, parents=True)
            _mkdir(os.path.dirname(path), created)
            return fslock.acquire_removable(path, timeout=budget, owner=owner)
        except FileNotFoundError:
            continue  # a DEL of a sandbox never added removed an empty directory just now: make it again
    raise FileNotFoundError(errno.ENOENT, "the lock directory keeps disappearing", os.path.dirname(path))


def _mkdir(d: str, created: list[str], *, parents: bool = False) -> None:
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        return
    except FileNotFoundError:
        if not parents:
            raise
        os.makedirs(os.path.dirname(d), mode=0o700, exist_ok=True)  # the cache dir's parents: not ours to remove
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            return
    if d not in created:
        created.append(d)


def _tidy(created: list[str]) -> None:
    """Remove the directories this command made, innermost first, if nothing else is in them now."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            return  # not empty (another sandbox's lock or record): it stays, and so do its parents


def _release(cni_dir: str, container_id: str, path: str, fd: int, created: list[str]) -> None:
    if os.path.lexists(cache.path_for(cni_dir, container_id)):
        os.close(fd)
        return
    try:
        fslock.remove_held(path, fd)
    except OSError:
        return  # the command itself is done; a file left here is swept by the next command on the sandbox or GC
    _tidy(created)


def _busy(container_id: str, path: str, budget: float) -> TryAgainLater:
    """Code 11 naming who holds the sandbox, as far as this process can tell."""
    return TryAgainLater(f"sandbox {container_id} is busy: waited {budget:g}s for its lock {path}, {holder(path)}",
                         "the runtime will try again; if the holder is stuck, its /proc/<pid>/stack and the multinic "
                         "log say where, and ending it releases the lock")


def holder(path: str) -> str:
    """Who holds the lock at ``path``, from what it wrote there (``pid what since``) and ``/proc``."""
    fields = fslock.owner_of(path).decode(errors="replace").split()
    if len(fields) != 3 or not fields[0].isdigit():
        return "holder unknown: it wrote nothing into the lock file"
    pid, what, since = fields
    out = f"held by pid {pid}"
    if what != "-":
        out += f", {what.replace('_', ' ')}"
    try:
        at = float(since)
        out += f", since {time.strftime('%H:%M:%S UTC', time.gmtime(at))} ({max(time.time() - at, 0):.0f}s ago)"
    except ValueError:
        pass
    if int(pid) == os.getpid():
        return out + ", this very process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = " ".join(f.read(200).replace(b"\0", b" ").decode(errors="replace").split())
    except OSError:
        return out + "; no such process here (another PID namespace?)"
    return f"{out}: {cmdline}"


def sweep(cni_dir: str, min_age: float = 0.0) -> int:
    """GC and the daemon: remove the lock files of sandboxes that have no cache record and that nobody holds (and
    nobody took in the last ``min_age`` seconds: each taker rewrites the file); how many."""
    d = os.path.join(cni_dir, DIR)
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    removed = 0
    newer = time.time() - min_age
    for cid in names:
        path = os.path.join(d, cid)
        if _path(cni_dir, cid) != path or os.path.lexists(cache.path_for(cni_dir, cid)):
            continue
        try:
            if min_age and os.lstat(path).st_mtime > newer:
                continue
        except OSError:
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
