"""``pytest -p conformance.pytest_plugin``: the checks become pytest items; MUST failures fail the
run, SHOULD failures are skips unless ``--cni-strict-should``. Driven as a user would, in a
subprocess with an empty test directory, against the toy sample plugins (fast: no Go, no exec
of multinic)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conformance.pytest_plugin", "-p", "no:cacheprovider", "-rA", *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=240, check=False,
    )


def test_pytest_plugin_turns_checks_into_items_and_passes_a_good_plugin(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    plugin = sample("good_ipam")
    proc = _pytest(tmp_path, f"--cni-plugin={plugin}", "--cni-profile=ipam", "--cni-versions=0.3.1,1.1.0",
                   "--cni-only=version-shape,result-schema,del-idempotent")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for item in ("cni-conformance::version-shape", "cni-conformance::result-schema[0.3.1]",
                 "cni-conformance::result-schema[1.1.0]", "cni-conformance::del-idempotent"):
        assert any(line.startswith("PASSED") and line.endswith(item) for line in out.splitlines()), (item, out)
    assert "4 passed" in out, out


def test_pytest_plugin_fails_the_run_on_a_must_violation_and_skips_should(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    # del_errors_when_absent violates the MUST del-without-add; version 9.9.9 (unsupported by any
    # plugin) makes the SHOULD versions-supported fail too.
    plugin = sample("del_errors_when_absent")
    args = (f"--cni-plugin={plugin}", "--cni-profile=interface", "--cni-versions=1.0.0,9.9.9",
            "--cni-only=del-without-add,versions-supported")
    proc = _pytest(tmp_path, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "FAILED" in out and "del-without-add" in out and "[MUST SPEC §DEL]" in out, out
    assert "SHOULD failure (use --cni-strict-should to fail)" in out, out
    strict = _pytest(tmp_path, *args[:3], "--cni-only=versions-supported", "--cni-strict-should")
    assert strict.returncode == 1 and "versions-supported" in strict.stdout, strict.stdout + strict.stderr
