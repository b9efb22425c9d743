"""Summaries and target checks for bench samples. PURE (no I/O), so it is unit-testable."""

from __future__ import annotations

import math
from typing import Any


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sample."""
    s = sorted(samples)
    k = max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))
    return s[k]


def summary(samples_s: list[float]) -> dict[str, Any]:
    """p50/p95/p99/mean/min in milliseconds of samples given in seconds."""
    if not samples_s:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "min_ms": None}
    ms = [x * 1e3 for x in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 2),
        "p95_ms": round(pct(ms, 0.95), 2),
        "p99_ms": round(pct(ms, 0.99), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
        "min_ms": round(min(ms), 2),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def check(what: str, value: float | None, limit: float, unit: str = "x", *,
          ours_ms: float | None = None, ref_ms: float | None = None, at_least: bool = False) -> dict[str, Any]:
    """A target ``value ≤ limit`` (``at_least``: ``value ≥ limit``): met or not, and by how much it is
    missed (in the unit and in ms)."""
    out: dict[str, Any] = {"target": what, "value": value, "limit": limit, "unit": unit}
    if value is None:
        out.update(met=None, miss="not measured")
        return out
    if at_least:
        out["met"] = value >= limit
        out["miss"] = "" if out["met"] else f"missed: {value:g}{unit} vs ≥ {limit:g}{unit} ({limit / value if value else math.inf:.2f}× short)"
        return out
    out["met"] = value <= limit
    if value <= limit:
        out["miss"] = ""
    elif limit == 0:
        out["miss"] = f"missed: {value:g}{unit} (target 0)"
    else:
        over = value / limit if limit else math.inf
        text = f"missed: {value:g}{unit} vs ≤ {limit:g}{unit} ({over:.2f}× over the target"
        if unit == "x" and ours_ms is not None and ref_ms is not None:
            need = limit * ref_ms
            text += f"; p50 {ours_ms:.1f} ms would have to be ≤ {need:.1f} ms, {ours_ms - need:.1f} ms less"
        out["miss"] = text + ")"
    return out
