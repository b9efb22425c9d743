"""The per-sandbox lock: one holder at a time across threads and processes, and its file lives no longer than the
sandbox's cache record (after a completed DEL nothing on the node names the container)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from cni import fslock
from cni.delegator import cache, sandbox_lock
from cni.delegator.plan import Attachment
from cni.spec.config import conflist_from
from cni.spec.errors import IOFailure


def _record(cni_dir: Path, cid: str) -> None:
    cl = conflist_from({"cniVersion": "1.0.0", "name": "n0", "type": "macvlan"})
    cache.save(str(cni_dir), cache.Record(cid, "/run/netns/x", "default", "p", "uid",
                                          [cache.Entry(Attachment(0, "eth0", "default/n0", cl, primary=True))]))


def test_lock_file_is_private_and_goes_when_the_sandbox_has_no_record(tmp_path: Path) -> None:
    cni_dir = tmp_path / "cache"
    lock = cni_dir / ".locks" / "cid1"
    with sandbox_lock.held(str(cni_dir), "cid1"):
        assert stat.S_IMODE(os.stat(cni_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(lock.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        assert fslock.try_acquire_removable(str(lock)) is None  # held
    assert not lock.exists()  # no record (a DEL that completed, an ADD that rolled back): nothing left
    assert cache.list_ids(str(cni_dir)) == []  # the lock directory is not a sandbox


def test_lock_file_stays_while_the_record_does(tmp_path: Path) -> None:
    cni_dir = tmp_path / "cache"
    lock = cni_dir / ".locks" / "cid1"
    with sandbox_lock.held(str(cni_dir), "cid1"):
        _record(cni_dir, "cid1")  # an ADD
    assert lock.exists()
    with sandbox_lock.held(str(cni_dir), "cid1"):
        cache.remove(str(cni_dir), "cid1")  # its DEL
    assert not lock.exists()


def test_lock_file_goes_also_when_the_command_fails(tmp_path: Path) -> None:
    cni_dir = tmp_path / "cache"
    with pytest.raises(RuntimeError), sandbox_lock.held(str(cni_dir), "cid1"):
        raise RuntimeError("the command failed before it wrote a record")
    assert os.listdir(cni_dir / ".locks") == []


def test_a_second_holder_of_the_same_sandbox_waits_another_sandbox_does_not(tmp_path: Path) -> None:
    cni_dir = str(tmp_path / "cache")
    order: list[str] = []

    def second(cid: str) -> None:
        with sandbox_lock.held(cni_dir, cid):
            order.append(f"in {cid}")

    with sandbox_lock.held(cni_dir, "cid1"):
        other = threading.Thread(target=second, args=("cid2",))
        other.start()
        other.join(5)
        same = threading.Thread(target=second, args=("cid1",))
        same.start()
        time.sleep(0.2)
        order.append("out cid1")
    same.join(5)
    assert order == ["in cid2", "out cid1", "in cid1"]
    assert os.listdir(os.path.join(cni_dir, ".locks")) == []


@pytest.mark.parametrize("cid", ["", "..", "a/b", "x\0y"])
def test_a_container_id_that_cannot_name_a_file_takes_no_lock(tmp_path: Path, cid: str) -> None:
    """No cache record can exist for it either (DEL goes on from the pod and config alone)."""
    cni_dir = tmp_path / "cache"
    with sandbox_lock.held(str(cni_dir), cid):
        pass
    assert not cni_dir.exists()


def test_an_unusable_cache_dir_is_an_io_error_naming_it(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(IOFailure) as err, sandbox_lock.held(str(not_a_dir), "cid1"):
        pass
    assert err.value.code == 5 and str(not_a_dir) in str(err.value)


def test_gc_sweep_removes_only_unheld_lock_files_of_sandboxes_without_a_record(tmp_path: Path) -> None:
    cni_dir = tmp_path / "cache"
    locks = cni_dir / ".locks"
    locks.mkdir(parents=True)
    (locks / "stale").write_text("")  # its holder was killed after the DEL dropped the record
    (locks / "live").write_text("")
    _record(cni_dir, "live")
    held = fslock.acquire_removable(str(locks / "busy"))  # a command in progress, no record yet
    try:
        assert sandbox_lock.sweep(str(cni_dir)) == 1
        assert sorted(os.listdir(locks)) == ["busy", "live"]
    finally:
        os.close(held)
    assert sandbox_lock.sweep(str(cni_dir)) == 1
    assert os.listdir(locks) == ["live"]
    assert sandbox_lock.sweep(str(tmp_path / "nothing-here")) == 0
