"""Events kept during an API outage (cni.delegator.pending): bounded, private, replayed once, oldest first."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from cni.delegator import pending

META = {"namespace": "default", "name": "web", "uid": "u-1"}


class Recorder:
    def __init__(self, fail_after: int | None = None) -> None:
        self.posted: list[tuple[dict[str, Any], str, str, str, float]] = []
        self.fail_after = fail_after

    def __call__(self, meta: dict[str, Any], reason: str, message: str, type_: str, at: float) -> None:
        if self.fail_after is not None and len(self.posted) >= self.fail_after:
            raise OSError("the API went away again")
        self.posted.append((meta, reason, message, type_, at))


def test_kept_event_is_private_and_replayed_once_with_its_time(tmp_path: Path) -> None:
    assert pending.save(str(tmp_path), META, "ErrorAddingNetwork", "ADD failed: API down", at=1000.5)
    d = tmp_path / pending.DIR
    (f,) = list(d.iterdir())
    assert stat.S_IMODE(d.stat().st_mode) == 0o700 and stat.S_IMODE(f.stat().st_mode) == 0o600
    rec = Recorder()
    # too old for the API's event TTL: dropped, not posted
    assert pending.replay(str(tmp_path), rec) == 0 and rec.posted == [] and pending.count(str(tmp_path)) == 0
    now = time.time()
    pending.save(str(tmp_path), META, "ErrorAddingNetwork", "ADD failed: API down", at=now)
    assert pending.replay(str(tmp_path), rec) == 1
    assert rec.posted == [(META, "ErrorAddingNetwork", "ADD failed: API down", "Warning", now)]
    assert pending.replay(str(tmp_path), rec) == 0 and len(rec.posted) == 1  # once


def test_replay_is_oldest_first_and_stops_at_the_first_failure_keeping_the_rest(tmp_path: Path) -> None:
    for i in range(4):
        pending.save(str(tmp_path), META, f"R{i}", f"m{i}")
    rec = Recorder(fail_after=2)
    assert pending.replay(str(tmp_path), rec) == 2
    assert [p[1] for p in rec.posted] == ["R0", "R1"]
    assert pending.count(str(tmp_path)) == 2
    assert not any(".claim-" in n for n in os.listdir(tmp_path / pending.DIR)), "a failed post must release its claim"
    rec.fail_after = None
    assert pending.replay(str(tmp_path), rec) == 2
    assert [p[1] for p in rec.posted] == ["R0", "R1", "R2", "R3"]


def test_replay_is_bounded_per_command(tmp_path: Path) -> None:
    for i in range(5):
        pending.save(str(tmp_path), META, f"R{i}", "m")
    assert pending.replay(str(tmp_path), Recorder(), batch=3) == 3
    assert pending.count(str(tmp_path)) == 2


def test_the_spool_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pending, "MAX_PENDING", 3)
    assert all(pending.save(str(tmp_path), META, "R", "m") for _ in range(3))
    assert pending.save(str(tmp_path), META, "R", "m") is False
    assert pending.count(str(tmp_path)) == 3


def test_a_live_claim_is_left_alone_and_a_stale_one_taken_over(tmp_path: Path) -> None:
    pending.save(str(tmp_path), META, "R", "m")
    d = tmp_path / pending.DIR
    (f,) = list(d.iterdir())
    claimed = d / f"{f.name}.claim-999999"
    f.rename(claimed)
    rec = Recorder()
    assert pending.replay(str(tmp_path), rec) == 0  # another command is posting it
    old = time.time() - pending.CLAIM_STALE - 5
    os.utime(claimed, (old, old))
    assert pending.replay(str(tmp_path), rec) == 1 and pending.count(str(tmp_path)) == 0


def test_unreadable_event_is_dropped_not_fatal(tmp_path: Path) -> None:
    d = tmp_path / pending.DIR
    d.mkdir(mode=0o700)
    (d / "00000000000000000001-1.json").write_bytes(b"{not json")
    pending.save(str(tmp_path), META, "R", "m")
    rec = Recorder()
    assert pending.replay(str(tmp_path), rec) == 1 and pending.count(str(tmp_path)) == 0


def test_save_where_nothing_can_be_written_reports_false(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert pending.save(str(blocker), META, "R", "m") is False


def test_replay_by_a_command_is_bounded_in_time_when_the_api_answers_slowly(tmp_path: Path) -> None:
    """A command that finds the API back records kept events for at most REPLAY_BUDGET (plus one call)."""
    from cni.delegator import config as cfgmod
    from cni.delegator import events
    from cni.delegator.context import Context
    from cni.spec.request import Request

    class SlowSource:
        def __init__(self) -> None:
            self.recorded: list[str] = []

        def event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal",
                  at: float | None = None) -> None:
            time.sleep(0.3)
            self.recorded.append(reason)

    for i in range(10):
        pending.save(str(tmp_path), META, f"R{i}", "m")
    cfg = cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "cniDir": str(tmp_path),
                        "delegates": [{"cniVersion": "1.0.0", "name": "c", "type": "bridge"}]})
    src = SlowSource()
    ctx = Context(Request(command="ADD", container_id="c1", config={}), cfg, src)  # type: ignore[arg-type]
    t0 = time.monotonic()
    events.replay(ctx)
    took = time.monotonic() - t0
    assert took < events.REPLAY_BUDGET + 0.5, took
    assert 2 <= len(src.recorded) <= 4 and src.recorded == [f"R{i}" for i in range(len(src.recorded))]
    assert pending.count(str(tmp_path)) == 10 - len(src.recorded)  # the rest waits for the next command
