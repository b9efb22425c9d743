"""cni.atomicfile: writes are never torn, a failed write leaves no temp file, and temp files of
interrupted writes are found and removed (DEL: its container's, GC: all)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from cni import atomicfile as files
from cni.delegator import cache


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_sweep_removes_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / f".cid1.tmp.{dead}.{dead}").write_text("torn")
    (tmp_path / f".cid2.tmp.{dead}.{dead}").write_text("torn")
    live = tmp_path / f".cid3.tmp.{os.getpid()}.1"
    live.write_text("being written")
    (tmp_path / "cid1").write_text("a record")
    assert files.sweep_temp(str(tmp_path), "cid1") == 1  # DEL of cid1: its own only
    assert sorted(os.listdir(tmp_path)) == sorted(["cid1", f".cid2.tmp.{dead}.{dead}", live.name])
    assert files.sweep_temp(str(tmp_path)) == 1  # GC: every dead writer's
    assert sorted(os.listdir(tmp_path)) == sorted(["cid1", live.name])


def test_a_very_old_temp_file_goes_even_if_its_pid_is_alive_again(tmp_path: Path) -> None:
    f = tmp_path / f".cid.tmp.{os.getpid()}.7"
    f.write_text("old")
    old = time.time() - files.STALE_AFTER - 10
    os.utime(f, (old, old))
    assert files.sweep_temp(str(tmp_path)) == 1 and not f.exists()


def test_cache_remove_takes_the_containers_temp_files_with_it(tmp_path: Path) -> None:
    dead = _dead_pid()
    rec = cache.Record("abc123", "/run/netns/x")
    cache.save(str(tmp_path), rec)
    (tmp_path / f".abc123.tmp.{dead}.{dead}").write_text("torn")
    (tmp_path / f".other.tmp.{dead}.{dead}").write_text("torn")
    cache.remove(str(tmp_path), "abc123")
    assert sorted(os.listdir(tmp_path)) == sorted([f".other.tmp.{dead}.{dead}", cache.HISTORY])
    assert cache.sweep(str(tmp_path)) == 1 and os.listdir(tmp_path) == [cache.HISTORY]


def test_atomic_write_leaves_no_temp_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError):
        files.atomic_write(str(tmp_path / "rec"), b"data")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_temp_names_differ_per_thread(tmp_path: Path) -> None:
    import threading

    names: list[str] = []
    t = threading.Thread(target=lambda: names.append(files._temp_path(str(tmp_path / "x"))))
    t.start()
    t.join()
    assert names[0] != files._temp_path(str(tmp_path / "x"))


def test_atomic_create_only_creates_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "reservation.json"
    assert files.atomic_create(str(target), b"first") is True
    assert files.atomic_create(str(target), b"second") is False  # the name exists: not replaced
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["reservation.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)


def test_chained_state_write_that_fails_leaves_no_temp_file(tmp_path: Path) -> None:
    """A state write whose rename fails (here: a directory has the state file's name) is error 5, and
    the directory holds nothing new (the old copy in plugins/_chained.py left its temp file behind)."""
    from cni.spec.errors import IOFailure
    from plugins._chained import write_state

    path = tmp_path / "data" / "cid:net1.json"
    path.mkdir(parents=True)
    with pytest.raises(IOFailure) as ei:
        write_state(str(path), {"ifname": "net1"})
    assert ei.value.code == 5 and str(path) in ei.value.msg
    assert os.listdir(path.parent) == [path.name]


def test_chained_state_write_is_private_and_readable_back(tmp_path: Path) -> None:
    from plugins._chained import read_state, write_state

    path = tmp_path / "data" / "cid:net1.json"
    write_state(str(path), {"ifname": "net1"})
    assert read_state(str(path)) == {"ifname": "net1"}
    assert oct(path.stat().st_mode & 0o777) == oct(0o600) and oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    assert os.listdir(path.parent) == [path.name]
