"""cni.faults: off by default and free, armed by the environment or a file, fires on the N-th hit only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni import faults


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    faults.arm("")


def test_parse_specs() -> None:
    assert faults.parse("a, b@3 ,c:raise\nd@2:exit,#comment,e@x,f:boom,@1") == [
        ("a", 1, "kill"), ("b", 3, "kill"), ("c", 1, "raise"), ("d", 2, "exit")]


def test_off_by_default_does_nothing() -> None:
    faults.arm("")
    for _ in range(3):
        faults.point("after-cache-write")
    assert faults._hits == {}


def test_raise_fires_on_the_nth_hit_only() -> None:
    faults.arm("x@2:raise")
    faults.point("x")
    faults.point("y")
    with pytest.raises(faults.InjectedFault, match="x"):
        faults.point("x")
    faults.point("x")  # the third hit passes


def test_file_is_reread_so_a_running_process_can_be_armed(tmp_path: Path) -> None:
    f = tmp_path / "faults"
    faults.arm(file=str(f))
    faults.point("z")  # no file yet: nothing
    f.write_text("z@2:raise\n")
    with pytest.raises(faults.InjectedFault):
        faults.point("z")


def test_trace_records_points_and_the_one_that_fired(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    faults.arm("b:raise", trace=str(trace))
    faults.point("a")
    with pytest.raises(faults.InjectedFault):
        faults.point("b")
    lines = [line.split()[1:] for line in trace.read_text().splitlines()]
    assert lines == [["a", "1"], ["b", "1"], ["FIRE", "b", "1", "raise"]]


def test_kill_is_a_real_sigkill_from_the_environment(tmp_path: Path) -> None:
    code = "from cni import faults; faults.point('p'); print('alive'); faults.point('p'); print('not reached')"
    env = dict(os.environ, MULTINIC_FAULTS="p@2")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == -9
    assert proc.stdout == "alive\n"
