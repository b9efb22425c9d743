"""Crash-safe file writes: the delegator's cache, chained plugins' state, whereabouts' file store, configs.

Rules:
- Standard library only, and a leaf (imports nothing of ours): every layer may use it, and the
  per-exec plugins that do pay nothing for it (start-up budget).
- A reader sees the old or the new content, never a torn file; a failed write leaves no temp
  file behind.
- A writer killed between creating its temp file and renaming it leaves ``.<name>.tmp.<pid>.<tid>``
  behind; ``sweep_temp`` removes those whose writer is gone (DEL for its container, GC for all).
- ``OSError`` is the caller's to translate (each names its own path and CNI error).
- fsync (``durable``) only where crash safety needs it — a write whose loss in a power cut would
  leave something the node cannot find again: the delegator's plan, written before the kernel is
  touched (``cni.delegator.cache.save``); whereabouts' file store (the pool outlives the pods);
  the CNI config autoconf installs. Not durable, because what they describe dies with the kernel
  state in the same power cut: attachment results in the cache, chained plugins' state
  (``plugins._chained.write_state``), the manifest source's network-status file. host-local's
  reservations are link(2)ed unsynced, as the reference writes them.
"""

from __future__ import annotations

import os
import threading
import time

_TMP = ".tmp."
# A temp file this old is a leftover even if its PID was reused by another process since.
STALE_AFTER = 600.0


def _temp_path(path: str) -> str:
    d = os.path.dirname(path) or "."
    # PID for the sweeper's liveness check; thread ID because the daemon writes from many threads.
    return os.path.join(d, f".{os.path.basename(path)}{_TMP}{os.getpid()}.{threading.get_native_id()}")


def atomic_write(path: str, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write ``path`` so that a reader sees the old or the new content, never a torn file.

    Temp file in the same directory, fsync, rename, fsync of the directory: after a crash
    (power loss included) the rename is either fully there or not at all. ``durable=False``
    skips the two fsyncs: still atomic against a killed process (the page cache survives it),
    not against power loss — for updates whose loss is harmless because an earlier durable
    write already recorded what matters.
    """
    d = os.path.dirname(path) or "."
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        _unlink(tmp)  # a full disk or a failed rename must not leave the temp file behind
        raise
    if durable:
        _fsync_dir(d)


def atomic_create(path: str, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data`` only if it does not exist (False if it did); durable, never torn.

    link(2) of a complete, fsync'd temp file fails when the name exists: create-if-absent
    without a lock, and a reader never sees the file half-written.
    """
    d = os.path.dirname(path) or "."
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        _unlink(tmp)
    _fsync_dir(d)
    return True


def _fsync_dir(d: str) -> None:
    # The rename/link is durable only once the directory entry is: fsync the directory too.
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def sweep_temp(directory: str, name: str | None = None) -> int:
    """Remove temp files of ``atomic_write`` (of ``name`` only, or of every file) whose writer is gone.

    Gone: its PID is not alive, or the file is older than ``STALE_AFTER``. Returns how many were removed.
    """
    prefix = f".{name}{_TMP}" if name is not None else "."
    try:
        names = [f for f in os.listdir(directory) if f.startswith(prefix) and _TMP in f]
    except OSError:
        return 0
    removed = 0
    for fn in names:
        pid_part = fn.rsplit(_TMP, 1)[1].split(".", 1)[0]
        path = os.path.join(directory, fn)
        try:
            old = time.time() - os.lstat(path).st_mtime > STALE_AFTER
        except OSError:
            continue
        if old or not _alive(pid_part):
            removed += _unlink(path)
    return removed


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True  # ourselves (the daemon): another thread may be writing it right now
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except OSError:
        return 0
    return 1
