"""The one flock helper: host-local's network lock and the chained plugins' dataDir lock.

Rules:
- Standard library only (os, fcntl): ``ipam/host_local`` is exec'd once per ADD/DEL and imports
  this, so it must stay free of pydantic/pyroute2 (start-up budget: rule 10, cni/ARCHITECTURE.md).
- The lock is the kernel's: it is released by closing the descriptor, also when the process
  dies, so a crashed plugin never leaves a node locked. The lock file is never removed: a
  process that unlinked it while another waited would let a third lock a new inode beside them.
- ``OSError`` is the caller's to translate (each names its own path and CNI error).
"""

from __future__ import annotations

import fcntl
import os


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
