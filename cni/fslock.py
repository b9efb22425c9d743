"""The flock helpers: host-local's network lock, the chained plugins' dataDir lock (``acquire``), and the
per-sandbox lock of the meta-plugin (``acquire_removable``).

Rules:
- Standard library only (os, fcntl): ``ipam/host_local`` and the meta-plugin are exec'd once per ADD/DEL and
  import this, so it must stay free of pydantic/pyroute2 (start-up budget: rule 10, cni/ARCHITECTURE.md).
- The lock is the kernel's: it is released by closing the descriptor, also when the process
  dies, so a crashed plugin never leaves a node locked. Each taker opens the file itself: flock
  belongs to the open file description, so it excludes threads of one process as well as processes.
- ``acquire``'s lock file is never removed: a process that unlinked it while another waited would
  let a third lock a new inode beside them. host-local's lock is also the reference binary's, which
  follows that rule, so ours must too.
- ``acquire_removable``'s lock file may be removed, so that a lock per sandbox does not outlive its
  sandbox — but only by its holder (``remove_held``), and every taker checks after flock that the
  inode it locked is still the one at the path, retrying when not (the holder before it removed
  it). So a waiter never ends up holding a lock on an unlinked inode beside a holder of a new one.
  Nobody else may take such a file with ``acquire``, which skips that check.
- ``acquire_removable`` may be bounded (``timeout``): flock has no timeout of its own, so a bounded wait polls
  ``LOCK_NB`` with a growing pause (at most ``POLL_MAX``); an uncontended lock costs one call, as unbounded. Its
  taker may write who it is into the file (``owner``), so that a waiter that gives up can name the holder
  (``owner_of``): a node admin facing "busy" must be able to find the process. Every owner record is padded to
  ``OWNER_SIZE`` bytes and written over the previous one, never after a truncation: ext4 flushes a file that was
  truncated to zero and written again when it is closed (``auto_da_alloc``), ≈ 0.2 ms per command here.
- ``OSError`` is the caller's to translate (each names its own path and CNI error); a bounded wait that ends
  without the lock raises ``TimeoutError`` (an ``OSError``: catch it first).
"""

from __future__ import annotations

import fcntl
import os
import time

POLL_MAX = 0.05  # the longest pause between two tries of a bounded wait: what a waiter may lose after a release
OWNER_SIZE = 128


def acquire(path: str, mode: int = 0o600) -> int:
    """Open ``path`` (created with ``mode`` when missing) and block until we hold an exclusive flock on it.

    Returns the descriptor: closing it releases the lock. Opened read-only like the reference's
    go-filemutex: flock needs no write access, and host-local's lock file is shared with the
    reference binary.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # EINTR is retried by Python (PEP 475)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _still_linked(fd: int, path: str) -> bool:
    """True when the inode ``fd`` has open is the one at ``path`` now (not unlinked, not replaced).

    The inode number cannot have been reused meanwhile: ``fd`` keeps the old inode alive.
    """
    held = os.fstat(fd)
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _flock_by(fd: int, deadline: float | None) -> None:
    """An exclusive flock on ``fd``, waiting until ``deadline`` (``time.monotonic()``; None: for ever)."""
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # EINTR is retried by Python (PEP 475)
        return
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the lock is held by another process")
        time.sleep(min(pause, left))
        pause = min(pause * 2, POLL_MAX)


def acquire_removable(path: str, mode: int = 0o600, *, timeout: float | None = None, owner: bytes = b"") -> int:
    """Block until we hold an exclusive flock on the file at ``path`` (created with ``mode`` when missing), a
    lock file its holder may remove (``remove_held``).

    Returns the descriptor: closing it releases the lock. When the file we locked was removed while we
    waited for it, we lock the one at the path now (creating it), so two holders can never coexist.
    ``timeout``: give up after that many seconds (``TimeoutError``); None waits as long as the holder holds.
    ``owner``: written into the file once we hold it (replacing the previous holder's), for ``owner_of``; at most
    ``OWNER_SIZE`` bytes are kept.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = os.open(path, (os.O_RDWR if owner else os.O_RDONLY) | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        try:
            _flock_by(fd, deadline)
            if _still_linked(fd, path):
                if owner:
                    os.pwrite(fd, owner[:OWNER_SIZE].ljust(OWNER_SIZE), 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it while we waited: lock the file there now


def owner_of(path: str) -> bytes:
    """What the current holder of a removable lock file wrote into it (``owner``, unpadded); empty when unknown."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return os.read(fd, OWNER_SIZE).rstrip(b" ")
    except OSError:
        return b""
    finally:
        os.close(fd)


def try_acquire_removable(path: str) -> int | None:
    """The lock of an existing removable lock file if nobody holds it (never waits, never creates); else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if not _still_linked(fd, path):
        os.close(fd)
        return None
    return fd


def remove_held(path: str, fd: int) -> None:
    """Remove the lock file at ``path`` whose lock ``fd`` holds (from ``acquire_removable``), then release it.

    The unlink happens under the lock: a waiter that locks the old inode afterwards sees it unlinked and
    retries on a new file, and nobody can hold the old one meanwhile.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
