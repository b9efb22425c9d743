"""Crash-safe file writes for state the delegator keeps (cache, status, generated configs)."""

from __future__ import annotations

import os


def atomic_write(path: str, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write ``path`` so that a reader sees the old or the new content, never a torn file.

    Temp file in the same directory, fsync, rename, fsync of the directory: after a crash
    (power loss included) the rename is either fully there or not at all. ``durable=False``
    skips the two fsyncs: still atomic against a killed process (the page cache survives it),
    not against power loss — for updates whose loss is harmless because an earlier durable
    write already recorded what matters.
    """
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    if not durable:
        return
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
