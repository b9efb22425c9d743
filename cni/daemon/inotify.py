"""A wake-up for the dynamicNetworks loop when a watched directory changes (Linux inotify through libc).

Only a wake-up: which file changed is not read, because the loop is level-triggered (it re-reads every
pod and compares). So a lost or overflowed event costs nothing but latency — the loop still polls every
``interval`` — and an ``inotify_init1`` that fails (no libc symbol, ``max_user_instances`` reached) simply
leaves the poll alone (``Wakeup.open`` returns None).

Events watched: a file closed after writing (an in-place editor's write is whole by then), a file renamed
in or out (an atomic write, ``kubectl``-style tools), a file deleted. Not ``IN_CREATE``/``IN_MODIFY``: those
fire before the content is complete. Hidden directories are not watched (``.multinic`` holds what the
daemon itself writes: network-status, events — watching it would wake the loop with its own writes).
"""

from __future__ import annotations

import ctypes
import os
import select

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_DELETE = 0x00000200
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_ONLYDIR
MAX_DIRS = 256  # a manifest tree deeper than this is polled only (each watch is kernel memory)


class Wakeup:
    """An inotify fd plus a pipe: ``wait`` returns when a watched directory changed, ``wake`` was called, or
    the timeout passed."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watched: set[str] = set()

    @classmethod
    def open(cls) -> Wakeup | None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        except (OSError, AttributeError):
            return None
        return cls(fd, libc) if fd >= 0 else None

    def watch_tree(self, top: str) -> None:
        """Watch ``top`` and its non-hidden subdirectories (again at every call: new ones are picked up; the
        kernel drops the watch of a removed one by itself)."""
        seen: set[str] = set()
        for root, dirs, _ in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            self.watch(root)
            seen.add(root)
        below = os.path.join(top, "")
        self._watched = {p for p in self._watched if p in seen or not (p == top or p.startswith(below))}

    def watch(self, path: str) -> None:
        """Watch ``path``; again on every call — ``inotify_add_watch`` on a watched directory only returns its
        watch, and a directory removed and made again (the kernel dropped its watch) gets a new one."""
        if path not in self._watched and len(self._watched) >= MAX_DIRS:
            return
        if self._libc.inotify_add_watch(self.fd, os.fsencode(path), MASK) >= 0:
            self._watched.add(path)
        else:
            self._watched.discard(path)

    def wait(self, timeout: float) -> bool:
        """True when woken by a change or ``wake`` (events drained), False on timeout."""
        try:
            ready, _, _ = select.select([self.fd, self._r], [], [], timeout)
        except (OSError, ValueError):
            return False
        for fd in ready:
            self._drain(fd)
        return bool(ready)

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except OSError:
            pass  # the pipe is full: a wake-up is pending anyway

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 65536):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self.fd, self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
