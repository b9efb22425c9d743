"""cni.fslock's removable lock: a lock file its holder may unlink, and that no two processes ever hold at once.

The classic hazard: a waiter opened the file, its holder unlinked it, the waiter gets the flock on the unlinked
inode while a third process creates a new file at the path and locks that one — two holders. ``acquire_removable``
re-checks after flock that the inode it locked is still the one at the path.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from cni import fslock

ROOT = Path(__file__).resolve().parents[2]


def _fds_on(path: Path) -> list[str]:
    """Our open descriptors on ``path`` (its inode, whether still linked or not): /proc/self/fd entries."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in (str(path), f"{path} (deleted)"):
            out.append(target)
    return out


def test_lock_file_is_created_private_and_excludes_another_taker(tmp_path: Path) -> None:
    path = tmp_path / "cid"
    fd = fslock.acquire_removable(str(path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert fslock.try_acquire_removable(str(path)) is None  # held: another open file cannot take it
    finally:
        os.close(fd)
    again = fslock.try_acquire_removable(str(path))
    assert again is not None  # released by closing
    fslock.remove_held(str(path), again)
    assert not path.exists()
    assert fslock.try_acquire_removable(str(path)) is None  # gone: try never creates


def test_a_waiter_on_a_removed_file_locks_the_new_one_never_the_unlinked_inode(tmp_path: Path) -> None:
    path = tmp_path / "cid"
    first = fslock.acquire_removable(str(path))
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(fslock.acquire_removable(str(path))))
    waiter.start()
    deadline = time.monotonic() + 5
    while len(_fds_on(path)) < 2:  # the waiter has the old inode open and waits in flock
        assert time.monotonic() < deadline, "the waiter never opened the lock file"
        time.sleep(0.01)
    time.sleep(0.05)
    assert not got, "the waiter got a lock that is held"
    fslock.remove_held(str(path), first)  # unlinked under the lock, then released
    waiter.join(5)
    assert got, "the waiter never got the lock after its holder released it"
    (fd,) = got
    try:
        held, now = os.fstat(fd), os.stat(path)
        # It did not keep the flock it won on the unlinked inode: it holds the file at the path now.
        assert (held.st_dev, held.st_ino, held.st_nlink) == (now.st_dev, now.st_ino, 1)
        assert _fds_on(path) == [str(path)]  # the old inode's descriptor was closed, not leaked
        assert fslock.try_acquire_removable(str(path)) is None
    finally:
        fslock.remove_held(str(path), fd)


WORKER = r"""
import os, random, sys, time
sys.path.insert(0, sys.argv[1])
from cni import fslock
path, log, rounds = sys.argv[2], sys.argv[3], int(sys.argv[4])
out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
for i in range(rounds):
    fd = fslock.acquire_removable(path)
    held = os.fstat(fd)
    try:
        now = os.stat(path)
        ok = (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino) and held.st_nlink == 1
    except FileNotFoundError:
        ok = False
    os.write(out, f"enter {os.getpid()} {'ok' if ok else 'UNLINKED'}\n".encode())
    time.sleep(random.random() / 2000)
    os.write(out, f"exit {os.getpid()}\n".encode())
    if random.random() < 0.5:
        fslock.remove_held(path, fd)  # the unlink race, every other round
    else:
        os.close(fd)
"""


def test_processes_that_remove_the_lock_file_never_hold_it_together(tmp_path: Path) -> None:
    """Four processes take the lock 150 times each and remove its file half of the time: the log of who is
    inside must alternate enter/exit of one process, and every holder must hold the linked file."""
    path, log = tmp_path / "cid", tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(ROOT), str(path), str(log), "150"])
             for _ in range(4)]
    for p in procs:
        assert p.wait(120) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * 150 * 2
    inside = None
    for n, line in enumerate(lines):
        what, pid, *rest = line.split()
        if what == "enter":
            assert inside is None, f"line {n}: {pid} entered while {inside} held the lock"
            assert rest == ["ok"], f"line {n}: {pid} held a lock on an unlinked inode"
            inside = pid
        else:
            assert inside == pid, f"line {n}: {pid} left while {inside} held the lock"
            inside = None
