"""The multinet profile (issue 19 §2): multinic passes every MUST, each check catches its broken
meta-plugin (conformance/broken/meta_*.py, one flaw of conformance/broken/_toymeta.py each), and
the correct toy meta-plugin passes every check (so a failure is the flaw, not the harness)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.multinet import multinic_conflist
from conformance.multinet_checks import MULTINET_CHECKS
from conformance.runner import MnOptions, run_multinet

# check id → the broken meta-plugin sample it must catch
CAUGHT_BY = {
    "nad-resolution-order": "meta_conf_before_conflist",
    "nad-name-injection": "meta_no_name_injection",
    "annotation-comma-form": "meta_comma_form_ignored",
    "annotation-json-form": "meta_json_form_ignored",
    "annotation-invalid": "meta_ignores_invalid_annotation",
    "selection-capabilities": "meta_caps_to_all",
    "selection-interface": "meta_ignores_interface",
    "selection-interface-duplicate": "meta_allows_duplicate_ifname",
    "selection-cni-args": "meta_ignores_cni_args",
    "selection-default-route": "meta_keeps_cluster_default",
    "same-network-twice": "meta_dedups_networks",
    "status-entries": "meta_status_host_iface",
    "status-device-info": "meta_bad_device_info",
    "cluster-network-first": "meta_cluster_last",
    "readiness-gating": "meta_ignores_readiness",
    "fail-fast": "meta_continues_after_failure",
    "rollback-on-failure": "meta_no_rollback",
    "del-every-attachment": "meta_del_stops_early",
    "serial-attachments": "meta_parallel",
    "disallowed-nad": "meta_no_isolation",
    "runtimeconfig-cluster-only": "meta_kubelet_rc_everywhere",
    "run-leaks": "meta_keeps_cache",
}
#: checks that judge what other checks did: run these along
ALONG = {"run-leaks": ["annotation-json-form"]}


def _toy_conflist(sample: Any, name: str) -> tuple[dict[str, Any], list[str]]:
    exe = sample(name)
    conflist = multinic_conflist()
    conflist["plugins"][0]["type"] = os.path.basename(exe)
    return conflist, [os.path.dirname(exe)]


def test_every_multinet_check_has_a_broken_meta_plugin() -> None:
    assert set(CAUGHT_BY) == set(MULTINET_CHECKS)


@pytest.mark.parametrize("check_id", sorted(CAUGHT_BY))
def test_multinet_check_catches_its_broken_meta_plugin(check_id: str, sample) -> None:  # type: ignore[no-untyped-def]
    conflist, path = _toy_conflist(sample, CAUGHT_BY[check_id])
    rep = run_multinet(conflist, path, only=[*ALONG.get(check_id, []), check_id])
    res = rep.result(check_id)
    assert res is not None and res.status == "fail", (res.status, res.message) if res else None
    assert not res.message.startswith("harness error"), res.message
    assert any(e.get("calls") or e.get("leaks") for e in res.evidence), "a failure carries its evidence"


@pytest.mark.slow
def test_the_correct_toy_meta_plugin_passes_every_multinet_check(sample) -> None:  # type: ignore[no-untyped-def]
    conflist, path = _toy_conflist(sample, "meta_good")
    rep = run_multinet(conflist, path)
    bad = [(r.id, r.status, r.message) for r in rep.results if r.status == "fail"]
    assert not bad, bad
    assert [r.id for r in rep.results if r.status == "skip"] == ["status-device-info"]


def test_multinic_passes_every_multinet_must(tmp_path: Path, need_root: None) -> None:
    """The whole profile against multinic as kubelet would run it (an argv[0] `multinic` in CNI_PATH)."""
    multinic = Path(sys.executable).parent / "multinic"
    if not os.access(multinic, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "multinic").symlink_to(multinic)
    rep = run_multinet(None, [str(bindir)])
    musts = [(r.id, r.message) for r in rep.must_failures]
    assert not musts, musts
    assert len(rep.results) == len(MULTINET_CHECKS)
    assert rep.result("rollback-on-failure").status == "pass"  # type: ignore[union-attr]  # a SHOULD multinic keeps


def test_a_waived_multinet_check_is_a_skip_with_the_reason(sample) -> None:  # type: ignore[no-untyped-def]
    conflist, path = _toy_conflist(sample, "meta_ignores_readiness")
    rep = run_multinet(conflist, path, only=["readiness-gating"], options=MnOptions(waive={"readiness-gating": "no readiness signal"}))
    res = rep.result("readiness-gating")
    assert res is not None and res.status == "skip" and res.message == "waived: no readiness signal"


def test_the_kept_multinet_report_has_no_must_failure() -> None:
    text = (Path(__file__).resolve().parents[2] / "conformance" / "MULTINET_REPORT.md").read_text()
    rows = [r for r in (line.split(" | ") for line in text.splitlines() if line.startswith("| `")) if r[1] in ("MUST", "SHOULD")]
    assert {r[0].strip("| `") for r in rows} == set(MULTINET_CHECKS)
    assert not [r for r in rows if r[1] == "MUST" and r[3] == "FAIL"]


def test_cli_runs_the_profile_against_a_given_conflist_and_writes_junit_and_json(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import xml.etree.ElementTree as ET

    conflist, path = _toy_conflist(sample, "meta_no_name_injection")
    cfile = tmp_path / "10-meta.conflist"
    cfile.write_text(json.dumps(conflist))
    argv = [sys.executable, "-m", "conformance.cli", "--profile", "multinet", "--conflist", str(cfile), "--cni-path", path[0],
            "--only", "nad-name-injection", "--junit", str(tmp_path / "r.xml"), "--json", str(tmp_path / "r.json")]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a MUST failed
    assert "0 passed, 1 failed, 0 skipped" in proc.stdout
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.get("failures") == "1" and suite.find("testcase/failure") is not None
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["profile"] == "multinet" and doc["results"][0]["section"] == "NPWG §3.4.2"
