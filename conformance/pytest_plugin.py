"""Run the conformance checks as pytest tests: ``pytest -p conformance.pytest_plugin --cni-plugin=PATH``.

(Write ``--cni-plugin=PATH`` with ``=``: pytest picks its rootdir from command-line words that
are existing paths, and a separate ``PATH`` word would make the plugin's directory the rootdir.)
Each check (per version where it applies) becomes one test item; a SHOULD failure is reported
as xfail-like failure only with ``--cni-strict-should`` (default: SHOULD failures are skips so
that only MUST violations fail the run). The harness runs once per session; items replay it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from .model import CheckResult, Report

_REPORT: dict[str, Report] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cni-conformance")
    g.addoption("--cni-plugin", help="plugin binary under test")
    g.addoption("--cni-profile", default="interface", help="interface | chained | ipam | meta")
    g.addoption("--cni-config", help="plugin config file (placeholders {{master}} {{bridge}} {{dataDir}})")
    g.addoption("--cni-path", help="colon-separated CNI_PATH (default: the plugin's dir, /usr/lib/cni, /opt/cni/bin)")
    g.addoption("--cni-versions", default="0.3.1,0.4.0,1.0.0,1.1.0")
    g.addoption("--cni-only", action="append", default=[], help="check id (repeatable)")
    g.addoption("--cni-waive", action="append", default=[], metavar="CHECK_ID=REASON",
                help="report this check as skipped with REASON (it cannot apply to the plugin)")
    g.addoption("--cni-strict-should", action="store_true", help="SHOULD failures fail too")


class ConformanceItem(pytest.Item):
    def __init__(self, *, result: CheckResult, strict: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self.result = result
        self.strict = strict

    def runtest(self) -> None:
        r = self.result
        if r.status == "skip":
            pytest.skip(r.message)
        if r.status == "fail":
            if r.level == "SHOULD" and not self.strict:
                pytest.skip(f"SHOULD failure (use --cni-strict-should to fail): {r.message}")
            raise AssertionError(f"[{r.level} {r.section}] {r.message}\nevidence: {json.dumps(r.evidence, indent=1)[:8000]}")

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), 0, f"cni-conformance {self.result.id}"


class ConformanceCollector(pytest.Collector):
    def collect(self) -> list[pytest.Item]:
        from .runner import run

        cfg = self.config
        key = "report"
        if key not in _REPORT:
            conf = None
            if cfg.getoption("--cni-config"):
                with open(cfg.getoption("--cni-config")) as f:
                    conf = json.load(f)
            only = [c for item in cfg.getoption("--cni-only") for c in item.split(",") if c]
            from .cli import parse_waivers
            from .runner import Options

            path = cfg.getoption("--cni-path")
            try:
                opts = Options(waive=parse_waivers(cfg.getoption("--cni-waive")))
            except ValueError as exc:
                raise pytest.UsageError(str(exc)) from None
            _REPORT[key] = run(cfg.getoption("--cni-plugin"), cfg.getoption("--cni-profile"), conf,
                               cfg.getoption("--cni-versions").split(","), only=only, options=opts,
                               cni_path=path.split(":") if path else None)
        strict = bool(cfg.getoption("--cni-strict-should"))
        return [ConformanceItem.from_parent(self, name=r.id, result=r, strict=strict) for r in _REPORT[key].results]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--cni-plugin"):
        return
    if os.geteuid() != 0:
        raise pytest.UsageError("--cni-plugin: the conformance harness needs root (it creates network namespaces)")
    collector = ConformanceCollector.from_parent(session, name="cni-conformance")
    items.extend(collector.collect())
