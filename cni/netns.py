"""The one place that opens and enters network namespaces.

Rules:
- A namespace is only ever opened by path, never created: pyroute2's helpers create a
  missing namespace file unless told not to, and a DEL after the pod is gone must not
  resurrect one (cni/ARCHITECTURE.md, "Start-up costs"). Nothing else in multinic calls setns.
- ``entered`` switches only the calling thread (setns on a thread is per-thread for
  CLONE_NEWNET) and always switches back, so a daemon thread can serve another request next.
- Netlink sockets keep the namespace they were created in: open them inside ``entered``
  and use them after leaving.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .spec.errors import InvalidNetns, KernelError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def exists(path: str) -> bool:
    return bool(path) and os.path.exists(path)


def open_fd(path: str) -> int:
    """Open the namespace file at ``path`` read-only. Error 8 when it is missing or not a namespace."""
    if not path:
        raise InvalidNetns("CNI_NETNS is empty")
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidNetns(f"network namespace {path} does not exist") from None
    except OSError as exc:
        raise InvalidNetns(f"cannot open network namespace {path}", exc.strerror or str(exc)) from None


def _setns(fd: int, path: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:
            raise InvalidNetns(f"{path} is not a network namespace")
        raise KernelError(f"cannot enter network namespace {path}", os.strerror(err))


@contextmanager
def entered(path: str) -> Iterator[int]:
    """Run the block inside the namespace at ``path``; yields the namespace fd (valid inside the block)."""
    target = open_fd(path)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, path)
        try:
            yield target
        finally:
            # Failing to return would leave this thread in the pod's namespace: fatal.
            if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover
                os.abort()
    finally:
        os.close(home)
        os.close(target)


def same_as_current(path: str) -> bool:
    """True when ``path`` names the namespace this thread is in (a plugin must never configure the host by accident)."""
    try:
        a = os.stat(path)
        b = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
