"""The per-sandbox lock: one holder at a time across threads and processes, and its file lives no longer than the
sandbox's cache record (after a completed DEL nothing on the node names the container)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni import fslock
from cni.deadline import deadline
from cni.delegator import cache, sandbox_lock
from cni.delegator.plan import Attachment
from cni.spec.config import conflist_from
from cni.spec.errors import IOFailure, TryAgainLater

ROOT = Path(__file__).resolve().parents[3]
# Another process holding a sandbox's lock as a command does, until the test closes its stdin.
HOLDER = """
import sys
from cni.delegator import sandbox_lock
with sandbox_lock.held(sys.argv[1], sys.argv[2], "CNI ADD"):
    print("held", flush=True)
    sys.stdin.read()
"""


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
    assert not (cni_dir / ".locks").exists()  # nor the directory it made


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
    locks = os.path.join(cni_dir, ".locks")
    assert not os.path.exists(locks) or os.listdir(locks) == []  # gone, unless a waiter made it again meanwhile


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


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real process that holds the lock of sandbox ``cid1`` in ``tmp_path/cache`` until the test ends."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "cache"), "cid1"], cwd=ROOT, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == "held\n"
        yield p
    finally:
        p.communicate(timeout=10)


def _gives_up(cni_dir: Path, **kw: float) -> tuple[TryAgainLater, float]:
    t0 = time.monotonic()
    with pytest.raises(TryAgainLater) as err, sandbox_lock.held(str(cni_dir), "cid1", **kw):
        pytest.fail("took a lock another process holds")
    return err.value, time.monotonic() - t0


@pytest.mark.timeout(30)
def test_a_wait_past_its_bound_is_code_11_naming_the_holding_process(tmp_path: Path,
                                                                      holder: subprocess.Popen[str]) -> None:
    err, waited = _gives_up(tmp_path / "cache", wait=0.3)
    assert err.code == 11 and 0.3 <= waited < 5
    lock = tmp_path / "cache" / ".locks" / "cid1"
    assert "sandbox cid1 is busy" in err.msg and str(lock) in err.msg, err.msg
    assert f"held by pid {holder.pid}, CNI ADD, since " in err.msg and "-c" in err.msg, err.msg  # its command line
    assert lock.exists()  # the holder's lock is not ours to remove


@pytest.mark.timeout(30)
def test_the_wait_ends_at_the_calls_deadline_when_it_comes_first(tmp_path: Path, holder: subprocess.Popen[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_lock, "WAIT", 600.0)
    with deadline(time.monotonic() + 0.2):
        err, waited = _gives_up(tmp_path / "cache")
    assert err.code == 11 and waited < 5  # the deadline's budget (at least MIN_CALL_BUDGET), not WAIT


@pytest.mark.timeout(30)
def test_a_hotplug_does_not_wait_for_a_busy_sandbox(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    err, waited = _gives_up(tmp_path / "cache", wait=0)
    assert err.code == 11 and waited < 1


def test_a_bounded_waiter_gets_the_lock_when_the_holder_lets_go_in_time(tmp_path: Path) -> None:
    cni_dir = str(tmp_path / "cache")
    got: list[float] = []

    def waiter() -> None:
        with sandbox_lock.held(cni_dir, "cid1", "CNI DEL", wait=10):
            got.append(time.monotonic())

    with sandbox_lock.held(cni_dir, "cid1", "CNI ADD"):
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        released = time.monotonic()
    t.join(10)
    assert got and got[0] >= released


def test_each_holder_writes_itself_into_the_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "cache" / ".locks" / "cid1"
    with sandbox_lock.held(str(tmp_path / "cache"), "cid1", "CNI ADD"):
        _record(tmp_path / "cache", "cid1")
        assert lock.read_text().split()[:2] == [str(os.getpid()), "CNI_ADD"]
        assert sandbox_lock.holder(str(lock)).endswith(", this very process")
    with sandbox_lock.held(str(tmp_path / "cache"), "cid1", "hot-plug"):
        assert lock.read_text().split()[:2] == [str(os.getpid()), "hot-plug"]  # replaced, not appended
    lock.write_text("")
    assert "holder unknown" in sandbox_lock.holder(str(lock))


def test_fslock_bounded_acquire_times_out_and_then_succeeds_once_released(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    fd = fslock.acquire_removable(path, owner=b"1 first 0\n")
    try:
        with pytest.raises(TimeoutError):
            fslock.acquire_removable(path, timeout=0.1, owner=b"2 second 0\n")
        assert fslock.owner_of(path) == b"1 first 0\n"  # a waiter that gave up wrote nothing
    finally:
        os.close(fd)
    fd = fslock.acquire_removable(path, timeout=0.1, owner=b"2 second 0\n")
    os.close(fd)
    assert fslock.owner_of(path) == b"2 second 0\n"


def test_takers_racing_the_tidying_of_the_lock_directories_never_fail_nor_share_a_sandbox(tmp_path: Path) -> None:
    """Commands on sandboxes that have no record keep making and removing the cache and lock directories; one that
    finds a directory gone between its mkdir and its open makes it again."""
    cni_dir = str(tmp_path / "cache")
    inside: dict[str, int] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(500):
                cid = f"cid{(n + i) % 3}"
                with sandbox_lock.held(cni_dir, cid, "CNI DEL", wait=10):
                    inside[cid] = inside.get(cid, 0) + 1
                    assert inside[cid] == 1, f"two holders of {cid}"
                    inside[cid] -= 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not os.path.exists(cni_dir) or os.listdir(cni_dir) in ([], [".locks"])
