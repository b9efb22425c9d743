"""Report data: check declarations, per-check results, the whole report. PURE."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "skip"]
Level = Literal["MUST", "SHOULD"]


class Fail(Exception):
    """The plugin violated the check's rule (message says how)."""


class Skip(Exception):
    """The check does not apply (message says why)."""


@dataclass(frozen=True)
class Check:
    id: str
    section: str  # e.g. "SPEC §DEL", "CONVENTIONS"
    level: Level
    profiles: frozenset[str]
    title: str
    fn: Callable[[Any, str], str | None]  # (context.Ctx, version): the model does not import the context
    per_version: bool = False
    min_version: str | None = None


@dataclass
class CheckResult:
    id: str
    check: str
    version: str
    title: str
    section: str
    level: Level
    status: Status
    message: str = ""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (what latency reports usually mean)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, int(-(-pct * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Report:
    plugin: str
    profile: str
    versions: list[str]
    supported: list[str]
    kernel: str = "host"
    results: list[CheckResult] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def passed(self) -> int:
        return self.count("pass")

    @property
    def failed(self) -> int:
        return self.count("fail")

    @property
    def skipped(self) -> int:
        return self.count("skip")

    @property
    def must_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail" and r.level == "MUST"]

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"

    def latency(self) -> dict[str, dict[str, float]]:
        if not self.timings and getattr(self, "_latency", None):
            return self._latency  # type: ignore[attr-defined,no-any-return]  # came back as JSON (UML run)
        return {
            op: {
                "n": len(v),
                "p50_ms": round(percentile(v, 50) * 1000, 1),
                "p95_ms": round(percentile(v, 95) * 1000, 1),
                "mean_ms": round(statistics.fmean(v) * 1000, 1),
            }
            for op, v in sorted(self.timings.items())
            if v
        }

    def result(self, rid: str) -> CheckResult | None:
        return next((r for r in self.results if r.id == rid), None)

    def by_check(self, check: str) -> list[CheckResult]:
        return [r for r in self.results if r.check == check]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "profile": self.profile,
            "kernel": self.kernel,
            "versions": self.versions,
            "supported": self.supported,
            "summary": {"passed": self.passed, "failed": self.failed, "skipped": self.skipped},
            "latency": self.latency(),
            "notes": self.notes,
            "results": [asdict(r) for r in self.results],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Report:
        rep = cls(doc["plugin"], doc["profile"], doc["versions"], doc["supported"], doc.get("kernel", "host"))
        rep.results = [CheckResult(**r) for r in doc["results"]]
        rep.notes = list(doc.get("notes", []))
        rep.timings = {}
        rep._latency = doc.get("latency", {})  # type: ignore[attr-defined]
        return rep
