"""The reconciler's sandbox rule and the sandbox record it reads, as pure functions (ipam/reconcile.py,
cni/k8s/network_status.py)."""

from __future__ import annotations

import pytest

from cni.k8s.network_status import parse_sandbox_record, sandbox_record
from ipam.reconcile import PodView, replaced_sandbox
from ipam.whereabouts.allocator import Allocation


def test_the_record_round_trips_in_milliseconds() -> None:
    assert parse_sandbox_record(sandbox_record("c1", 100.25, 101.5)) == ("c1", 100.25, 101.5)


@pytest.mark.parametrize("text", [None, "", "x", "[]", '{"containerID": "c1"}', '{"containerID": "", "started": 1, '
                                  '"written": 2}', '{"containerID": "c", "started": true, "written": 2}',
                                  '{"containerID": "c", "started": 5, "written": 4}',
                                  '{"containerID": "c", "started": 0, "written": 4}',
                                  '{"containerID": "c", "started": 1.5, "written": 4}'])
def test_a_record_that_is_not_ours_is_no_record(text: object) -> None:
    assert parse_sandbox_record(text) is None


def pod(record: tuple[str, float, float] | None, ips: frozenset[str] | None = frozenset()) -> PodView:
    return PodView("Running", ips, 0.0, "u1", record)


ENTRY = Allocation("c-old", "default/p", "net1", "u1", "", 1_000_000)  # written at t = 1000 s


def test_an_entry_older_than_the_current_sandboxs_add_is_freed_once_the_record_has_stood() -> None:
    assert replaced_sandbox(ENTRY, "10.0.0.1", pod(("c-new", 1001.0, 1002.0)), now=1100.0, grace=60.0)
    assert replaced_sandbox(ENTRY, "10.0.0.1", pod(("c-new", 1001.0, 1050.0)), now=1100.0, grace=60.0) is None


@pytest.mark.parametrize(("entry", "view"), [
    (ENTRY, pod(None)),  # no record: never
    (ENTRY, pod(("c-old", 1001.0, 1002.0))),  # the entry is the current sandbox's
    (ENTRY, pod(("c-new", 999.0, 1002.0))),  # the record's ADD began before the entry: no proof of replacement
    (ENTRY, pod(("c-new", 1000.0, 1002.0))),  # same millisecond: no proof either
    (Allocation("c-old", "default/p", "net1", "u1"), pod(("c-new", 1001.0, 1002.0))),  # no entry time
    (ENTRY, pod(("c-new", 1001.0, 1002.0), frozenset({"10.0.0.1"}))),  # its address is in network-status
])
def test_anything_short_of_proof_keeps_the_entry(entry: Allocation, view: PodView) -> None:
    assert replaced_sandbox(entry, "10.0.0.1", view, now=5000.0, grace=60.0) is None
