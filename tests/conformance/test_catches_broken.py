"""Every check can fail: each broken sample plugin (conformance/broken/) is caught by its check,
and the correct control samples pass every check (so a failure is the flaw, not the harness)."""

from __future__ import annotations

import pytest

from conformance.checks import CHECKS
from conformance.runner import Options, run

# check id → (broken sample, profile)
CAUGHT_BY = {
    "version-shape": ("bad_version", "interface"),
    "versions-supported": ("old_versions_only", "interface"),
    "error-envelope": ("error_exit_zero", "interface"),
    "error-missing-env": ("wrong_code_env", "interface"),
    "error-bad-json": ("wrong_code_json", "interface"),
    "error-unsupported-version": ("accepts_any_version", "interface"),
    "error-invalid-config": ("invalid_config_999", "interface"),
    "result-schema": ("two_docs", "interface"),
    "add-side-effects": ("iface_down", "interface"),
    "add-twice-fails": ("add_twice_ok", "interface"),
    "del-idempotent": ("del_errors_when_absent", "interface"),
    "del-without-add": ("del_errors_when_absent", "interface"),
    "del-without-prevresult": ("del_needs_prevresult", "interface"),
    "del-empty-netns": ("del_needs_netns", "interface"),
    "del-deleted-netns": ("del_netns_gone_leaks", "ipam"),
    "leak-add-del": ("del_keeps_link", "interface"),
    "leak-failed-add": ("no_undo", "interface"),
    "check-after-add": ("check_always_fails", "interface"),
    "check-detects-perturbation": ("check_always_passes", "interface"),
    "check-below-040": ("check_any_version", "interface"),
    "chained-keeps-prevresult": ("drops_prevresult", "chained"),
    "chained-older-prevresult": ("rejects_old_prevresult", "chained"),
    "unknown-config-keys": ("rejects_unknown_keys", "interface"),
    "ignore-unknown-args": ("rejects_unknown_args", "interface"),
    "caller-namespace": ("changes_host", "interface"),
    "ipam-unique-parallel": ("ipam_not_unique", "ipam"),
    "ipam-exhaustion": ("ipam_overcommit", "ipam"),
    "ipam-release-on-del": ("ipam_never_releases", "ipam"),
    "gc-valid-attachments": ("gc_old_key_only", "ipam"),
    "gc-attachments": ("gc_noop", "ipam"),
    "status": ("status_fails", "ipam"),
    "latency": ("slow_add", "ipam"),
    "run-leaks": ("leaks_once", "interface"),
}

#: checks that judge what other checks did: run these along (run-leaks needs at least one ADD)
ALONG = {"run-leaks": ["result-schema"]}
FAST = Options(runs=2, parallel=4, latency_budget_ms=800)  # slow_add sleeps 1 s per ADD
VERSIONS = ("0.3.1", "1.1.0")


def test_every_check_has_a_broken_sample() -> None:
    assert set(CAUGHT_BY) == set(CHECKS)


@pytest.mark.parametrize("check_id", sorted(CAUGHT_BY))
def test_harness_catches_broken_sample(check_id: str, sample) -> None:  # type: ignore[no-untyped-def]
    name, profile = CAUGHT_BY[check_id]
    rep = run(sample(name), profile, None, VERSIONS, only=[*ALONG.get(check_id, []), check_id], options=FAST)
    results = rep.by_check(check_id)
    assert results, f"{check_id} did not run for profile {profile}"
    failed = [r for r in results if r.status == "fail"]
    assert failed, f"{name} was not caught by {check_id}: {[(r.id, r.status, r.message) for r in results]}"
    assert all(not r.message.startswith("harness error") for r in failed), failed[0].message
    assert failed[0].evidence, "a failure must carry evidence"


@pytest.mark.slow
@pytest.mark.parametrize("name,profile", [("good_interface", "interface"), ("good_ipam", "ipam"), ("good_chained", "chained")])
def test_correct_sample_passes_every_check(name: str, profile: str, sample) -> None:  # type: ignore[no-untyped-def]
    rep = run(sample(name), profile, None, VERSIONS, options=FAST)
    bad = [(r.id, r.message) for r in rep.results if r.status != "pass"]
    assert not bad, bad
    assert rep.summary() == f"{len(rep.results)} passed, 0 failed, 0 skipped"


def test_a_waived_check_is_a_skip_carrying_the_callers_reason(sample) -> None:  # type: ignore[no-untyped-def]
    """gc_noop fails gc-attachments; waived (the check cannot apply to that plugin) it is not run."""
    opts = Options(runs=2, parallel=4, waive={"gc-attachments": "pools are cluster-wide"})
    rep = run(sample("gc_noop"), "ipam", None, ("1.1.0",), only=["gc-attachments"], options=opts)
    res = rep.result("gc-attachments")
    assert res is not None and res.status == "skip" and res.message == "waived: pools are cluster-wide", res
    assert not res.evidence  # not run at all


def test_ipam_check_after_add_finds_the_interface_configured_as_an_interface_plugin_would(sample) -> None:  # type: ignore[no-untyped-def]
    rep = run(sample("good_ipam"), "ipam", None, ("1.0.0",), only=["check-after-add"], options=FAST)
    res = rep.result("check-after-add")
    assert res is not None and res.status == "pass", res
    plumbed = [e for e in res.evidence if e.get("label") == "harness plays the interface plugin"]
    assert plumbed and "eth0 up" in plumbed[0]["stdout"] and "10.78.0." in plumbed[0]["stdout"]


def test_a_leak_on_the_first_add_only_is_caught_and_named_by_the_check_it_happened_in(sample) -> None:  # type: ignore[no-untyped-def]
    """issue 19 §1: leaks_once leaves a veth pair in the caller's namespace on its first successful
    ADD only. No stateful check selected → no warm-up, so the first ADD is result-schema's."""
    rep = run(sample("leaks_once"), "interface", None, ("0.3.1", "1.0.0"), only=["version-shape", "result-schema", "run-leaks"],
              options=FAST)
    res = rep.result("run-leaks")
    assert res is not None and res.status == "fail", res
    assert "+link leakonce0" in res.message and "+link leakonce1" in res.message, res.message
    assert "first after result-schema[0.3.1]" in res.message, res.message  # not [1.0.0]: the name was taken by then
    assert res.evidence and res.evidence[0]["leaks"], res.evidence


def test_the_per_check_diff_misses_the_once_only_leak_that_the_whole_run_baseline_catches(sample) -> None:  # type: ignore[no-untyped-def]
    """With caller-namespace selected the warm-up ADD comes first and leaks: caller-namespace's own
    before/after diff passes (the issue's finding), the whole-run comparison names the warm-up."""
    rep = run(sample("leaks_once"), "interface", None, ("1.0.0",), only=["caller-namespace", "run-leaks"], options=FAST)
    assert rep.result("caller-namespace").status == "pass"  # type: ignore[union-attr]
    res = rep.result("run-leaks")
    assert res is not None and res.status == "fail" and "first after warm-up" in res.message, res


def test_the_control_plugin_keeps_shared_state_without_a_whole_run_leak(sample) -> None:  # type: ignore[no-untyped-def]
    """good_interface keeps its allocator's lock file across attachments: shared state, not a leak."""
    rep = run(sample("good_interface"), "interface", None, ("1.0.0",), only=["leak-add-del", "ipam-release-on-del", "run-leaks"],
              options=FAST)
    res = rep.result("run-leaks")
    assert res is not None and res.status == "pass", res
