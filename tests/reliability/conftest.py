"""Fixtures of the reliability suites: a node (tests/reliability/harness.py) on the API server double, and the
figures every suite reports (faults injected, leaks found, duplicates, fuzz cases), printed at the end of the run
and written to ``$MULTINIC_RELIABILITY_FIGURES`` (JSON) when set — README's "Reliability" section quotes them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import Node, purge_host_rules
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)
from tests.support.nsfix import Scene, need_root

FIGURES: dict[str, dict[str, Any]] = {}


def figure(suite: str, **values: Any) -> None:
    """Add to a suite's counters (numbers are summed, anything else replaced)."""
    row = FIGURES.setdefault(suite, {})
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(row.get(k), (int, float)):
            row[k] += v
        else:
            row[k] = v


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for suite, row in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{suite}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    out = os.environ.get("MULTINIC_RELIABILITY_FIGURES")
    if out:
        old: dict[str, Any] = {}
        try:
            old = json.loads(Path(out).read_text())
        except (OSError, ValueError):
            pass
        old.update(FIGURES)
        Path(out).write_text(json.dumps(old, indent=1, sort_keys=True))


@pytest.fixture(autouse=True)
def no_host_whereabouts_flat_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read /etc/cni/net.d/whereabouts.d of this machine."""
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", "")


@pytest.fixture
def node(tmp_path: Path, apiserver: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:  # noqa: F811
    """A node with a cluster bridge, an uplink, the standard NADs (net-hl, net-wb); native plugins in-process."""
    need_root()
    from cni import invoke

    monkeypatch.setattr(invoke, "_force_exec", set())
    monkeypatch.delenv("MULTINIC_EXEC_TYPES", raising=False)
    scene = Scene()
    try:
        n = Node(tmp_path, scene, apiserver)
        n.add_standard_nads()
        yield n
    finally:
        scene.cleanup()
        left = purge_host_rules(scene.tag)
        if left:  # the test's own leak checks decide pass/fail; this only keeps the machine clean
            print(f"node {scene.tag}: removed {len(left)} host nat rule(s) its pods left, e.g. {left[0]}")
