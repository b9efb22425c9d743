"""``multinic conformance --kernel uml``: the harness re-runs itself inside User-Mode Linux, for
plugins the host kernel cannot run (ipvlan here: the host has no ipvlan driver).

The plugin under test must be visible in the guest: UML mounts the host root through hostfs
but gives the guest its own tmpfs on /tmp, /run, /var/tmp and its own /dev, so the argv[0]
symlink lives in a scratch dir under the checkout (``.scratch/``, gitignored), removed after.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni.invoke import NATIVE
from conformance import cli
from conformance.uml import uml_available

ROOT = Path(__file__).resolve().parents[2]
REF = "/usr/lib/cni"

pytestmark = pytest.mark.uml


@pytest.fixture
def guest_visible_bin() -> Iterator[Path]:
    """A plugin dir the guest can see, holding ``ipvlan`` (and ``host-local``) → the venv's multinic."""
    reason = uml_available()
    if reason is not None:
        pytest.skip(f"needs User-Mode Linux: {reason}")
    multinic = Path(sys.executable).parent / "multinic"
    if not os.access(multinic, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    parent = ROOT / ".scratch"
    parent.mkdir(exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="conformance-uml-", dir=parent))
    try:
        for ptype in ("ipvlan", "host-local"):
            (d / ptype).symlink_to(multinic)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _uml_sweep(bindir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = tmp_path / "report.json"
    rc = cli.main(["--kernel", "uml", "--plugin", str(bindir / "ipvlan"), "--profile", "interface",
                   "--cni-path", f"{bindir}:{REF}", "--json", str(out), "-q", *extra])
    printed = capsys.readouterr()
    assert out.exists(), f"no report (exit {rc}): {printed.out[-3000:]}\n{printed.err[-3000:]}"
    return rc, json.loads(out.read_text())


def test_cli_refuses_a_plugin_path_the_guest_cannot_see(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fast, no UML boot: a plugin under /tmp would be the guest's own (empty) tmpfs."""
    plugin = tmp_path / "ipvlan"
    plugin.symlink_to(Path(sys.executable).parent / "multinic")  # resolves outside /tmp: still refused
    assert cli.main(["--kernel", "uml", "--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert "guest-private" in err and "UML cannot see it" in err


def test_ipvlan_attaches_inside_uml(guest_visible_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Boots UML once (~15-40 s; the budget of `make test` allows one): native ipvlan's result
    and its interface, addresses and routes in the guest's pod namespace. The full sweep (leaks,
    GC, CHECK...) is the slow test below and conformance/OURS_REPORT.md."""
    assert "ipvlan" in NATIVE
    rc, rep = _uml_sweep(guest_visible_bin, tmp_path, capsys, "--versions", "1.0.0", "--only", "add-side-effects")
    assert rep["kernel"] == "uml" and rep["plugin"] == "ipvlan"
    results = {r["id"]: (r["status"], r["message"]) for r in rep["results"]}
    assert set(results) == {"add-side-effects"}, results
    assert results == {"add-side-effects": ("pass", results["add-side-effects"][1])}, results
    assert "net1 up" in results["add-side-effects"][1]
    assert rc == 0


@pytest.mark.slow
def test_ipvlan_full_sweep_inside_uml(guest_visible_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, rep = _uml_sweep(guest_visible_bin, tmp_path, capsys, "--runs", "2", "--parallel", "4", "--latency-budget-ms", "20000")
    bad = [(r["id"], r["level"], r["message"]) for r in rep["results"] if r["status"] == "fail"]
    assert not bad, f"ipvlan in UML: {rep['summary']}: {bad}"
    assert rc == 0
