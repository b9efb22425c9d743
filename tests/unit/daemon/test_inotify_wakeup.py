"""The dynamicNetworks loop's wake-up: the kernel's inotify on real directories (no root needed).

Only *whether* it wakes is asserted; how fast is measured, not tested (README, "Dynamic attachments").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni.daemon.dynamic import DynamicNetworks
from cni.daemon.inotify import Wakeup

LONG = 5.0  # a wait that must end early; it ending by timeout is the failure


@pytest.fixture
def wakeup() -> Iterator[Wakeup]:
    w = Wakeup.open()
    if w is None:
        pytest.skip("inotify_init1 is not available here (libc without it, or max_user_instances reached)")
    try:
        yield w
    finally:
        w.close()


def test_quiet_directory_times_out(wakeup: Wakeup, tmp_path: Path) -> None:
    wakeup.watch_tree(str(tmp_path))
    assert wakeup.wait(0.2) is False


def test_atomic_write_in_place_write_and_delete_wake_it(wakeup: Wakeup, tmp_path: Path) -> None:
    wakeup.watch_tree(str(tmp_path))
    tmp = tmp_path / ".pod.yaml.tmp"
    tmp.write_text("a")
    assert wakeup.wait(LONG)  # the tmp file closed after writing (a change like any other)
    os.replace(tmp, tmp_path / "pod.yaml")
    assert wakeup.wait(LONG)
    assert wakeup.wait(0.1) is False  # drained: one change, not a stream of wake-ups
    with open(tmp_path / "pod.yaml", "w") as f:
        f.write("b")
    assert wakeup.wait(LONG)
    (tmp_path / "pod.yaml").unlink()
    assert wakeup.wait(LONG)


def test_subdirectories_are_watched_hidden_ones_are_not(wakeup: Wakeup, tmp_path: Path) -> None:
    (tmp_path / "team-a").mkdir()
    (tmp_path / ".multinic").mkdir()
    wakeup.watch_tree(str(tmp_path))
    wakeup.wait(0.05)
    (tmp_path / ".multinic" / "status.json").write_text("{}")  # the daemon's own writes
    assert wakeup.wait(0.2) is False
    (tmp_path / "team-a" / "pod.yaml").write_text("x")
    assert wakeup.wait(LONG)


def test_a_directory_made_again_is_watched_again(wakeup: Wakeup, tmp_path: Path) -> None:
    sub = tmp_path / "pods"
    sub.mkdir()
    wakeup.watch_tree(str(tmp_path))
    sub.rmdir()
    sub.mkdir()
    wakeup.wait(0.05)
    wakeup.watch_tree(str(tmp_path))  # what each pass does
    (sub / "pod.yaml").write_text("x")
    assert wakeup.wait(LONG)
    (sub / "pod.yaml").unlink()
    sub.rmdir()
    wakeup.watch_tree(str(tmp_path))
    assert str(sub) not in wakeup._watched  # a removed directory does not count against MAX_DIRS


def test_wake_ends_a_wait(wakeup: Wakeup) -> None:
    threading.Timer(0.1, wakeup.wake).start()
    assert wakeup.wait(LONG)


def test_the_loop_runs_a_pass_when_its_conf_dir_changes_not_only_every_interval(tmp_path: Path) -> None:
    dyn = DynamicNetworks(lambda op, result: None, conf_dir=str(tmp_path), interval=60.0)
    passes = threading.Semaphore(0)
    dyn.pass_once = passes.release  # type: ignore[method-assign] # count passes; what a pass does is tested elsewhere
    dyn.start()
    try:
        if dyn.wakeup is None:
            pytest.skip("inotify_init1 is not available here: the loop polls only")
        assert passes.acquire(timeout=LONG)  # the first pass, at start
        (tmp_path / "00-multinic.conflist").write_text("{}")
        assert passes.acquire(timeout=LONG), "no pass after the conf dir changed (the interval is 60 s)"
    finally:
        dyn.stop()
    assert dyn.thread is not None and not dyn.thread.is_alive()
