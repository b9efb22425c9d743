"""The bench runs and writes what README and the plot read. No timing is asserted anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.bench._report import replace_section
from tests.bench._stats import check, pct, summary

ROOT = Path(__file__).resolve().parents[2]


def test_version_section_writes_json_with_rows_for_every_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MULTINIC_EXEC_TYPES"}
    p = subprocess.run([sys.executable, "-m", "tests.bench.run", "--quick", "--only", "version", "--out", str(tmp_path),
                        "--no-readme", "--no-plot", "-n", "2", "--warmup", "0"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert {"meta", "rows", "targets", "samples"} <= set(doc)
    assert doc["meta"]["sections"] == ["version"] and doc["meta"]["n"] == 2
    rows = {r["stack"]: r for r in doc["rows"] if r.get("op") == "VERSION"}
    assert {"go", "thin", "thick", "dropin"} <= set(rows)
    for stack in ("thin", "thick", "dropin"):
        r = rows[stack]
        assert r["n"] == 2 and r["failures"] == 0
        assert {"p50_ms", "p95_ms", "ratio_p50", "ratio_p95"} <= set(r)
    assert "ratio_p50" not in rows["go"]
    assert len(doc["samples"]["version|VERSION|go"]) == 2
    assert (tmp_path / "latest.md").read_text().startswith("# multinic bench")
    assert not (tmp_path / "latency.png").exists()


def test_percentiles_are_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert pct(xs, 0.5) == 50.0 and pct(xs, 0.95) == 95.0 and pct(xs, 0.99) == 99.0
    assert pct([7.0], 0.99) == 7.0
    s = summary([0.001, 0.003, 0.002])
    assert s["n"] == 3 and s["p50_ms"] == 2.0 and s["min_ms"] == 1.0
    assert summary([])["p50_ms"] is None


def test_missed_target_says_by_how_much() -> None:
    ok = check("x", 0.4, 0.5, ours_ms=40, ref_ms=100)
    assert ok["met"] is True and ok["miss"] == ""
    bad = check("x", 1.5, 0.5, ours_ms=150, ref_ms=100)
    assert bad["met"] is False and "3.00× over" in bad["miss"] and "≤ 50.0 ms, 100.0 ms less" in bad["miss"]
    assert check("x", None, 1.0)["met"] is None


def test_readme_section_is_replaced_up_to_the_next_heading_only() -> None:
    text = "# T\n\n## A\n\na\n\n## Performance\n\n(placeholder)\n\n## Reliability\n\nr\n"
    out = replace_section(text, "## Performance\n\nnew figures\n")
    assert out == "# T\n\n## A\n\na\n\n## Performance\n\nnew figures\n\n## Reliability\n\nr\n"
    assert replace_section(out, "## Performance\n\nnewer\n").count("## Performance") == 1
    assert replace_section("# T\n", "## Performance\n\nx\n").endswith("\n\n## Performance\n\nx\n")


def test_repeated_failures_are_reported_once_with_a_count() -> None:
    from tests.bench.run import condense

    notes = [f"thin ADD failed: pod c{i}-abcdef12 port {30000 + i}: daemon unavailable" for i in range(5)]
    assert condense(notes + ["go DEL failed: other"]) == [
        "5× thin ADD failed: pod c0-abcdef12 port 30000: daemon unavailable", "go DEL failed: other"]
