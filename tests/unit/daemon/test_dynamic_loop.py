"""The dynamicNetworks loop's bookkeeping across sandboxes (what one pass does to one sandbox is tested with
real namespaces in tests/netns/delegator/test_dynamic_networks.py)."""

from __future__ import annotations

import contextvars
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cni import log
from cni.daemon import dynamic
from cni.daemon.dynamic import DynamicNetworks
from cni.daemon.inotify import Wakeup
from cni.delegator import cache as cache_mod
from cni.spec.errors import InvalidConfig
from tests.support.lockfix import killed_holder_leftover


def _loop(tmp_path: Path) -> tuple[DynamicNetworks, Path]:
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "manifests").mkdir()
    dyn = DynamicNetworks(lambda op, result: None)
    dyn.learn({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "dynamicNetworks": True,
               "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}],
               "manifestDir": str(tmp_path / "manifests"), "cniDir": str(cache),
               "logFile": str(tmp_path / "multinic.log"), "logLevel": "error"})
    return dyn, cache


def _pass(dyn: DynamicNetworks) -> None:
    """One pass as the loop's thread runs it: log settings scoped to it (this process' log is left alone)."""
    def run() -> None:
        log.scoped()
        dyn.pass_once()

    contextvars.copy_context().run(run)


def test_state_of_a_sandbox_whose_cache_record_is_gone_is_forgotten(tmp_path: Path) -> None:
    dyn, cache = _loop(tmp_path)
    (cache / "live").write_text("")
    dyn.states = {"live": dynamic._State(), "deleted-long-ago": dynamic._State()}
    seen: list[str] = []
    dyn._sandbox = lambda raw, cfg, source, cid: seen.append(cid)  # type: ignore[method-assign]
    _pass(dyn)
    assert seen == ["live"]
    assert set(dyn.states) == {"live"}  # a daemon that saw 100k pods does not keep 100k states


def test_an_unexpected_error_in_one_sandbox_does_not_stall_the_others_and_backs_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dyn, cache = _loop(tmp_path)
    for cid in ("a-broken", "b-fine"):
        (cache / cid).write_text("")
    calls: list[str] = []
    real = dyn._sandbox

    def sandbox(raw: dict[str, Any], cfg: Any, source: Any, cid: str) -> None:
        calls.append(cid)
        if cid == "a-broken":
            real(raw, cfg, source, cid)  # the broken-state check at its top
            raise OSError(28, "No space left on device")

    dyn._sandbox = sandbox  # type: ignore[method-assign]
    _pass(dyn)
    assert calls == ["a-broken", "b-fine"]
    assert dyn.states["a-broken"].broken_until > 0
    read: list[str] = []
    load = cache_mod.load
    monkeypatch.setattr(cache_mod, "load", lambda d, cid: read.append(cid) or load(d, cid))
    dyn._sandbox = real  # type: ignore[method-assign]
    _pass(dyn)  # within the backoff: the broken sandbox is skipped before anything is read
    assert read == ["b-fine"]
    assert "dynamic networks: sandbox a-broken: OSError(28, 'No space left on device')" in \
        (tmp_path / "multinic.log").read_text()


@pytest.mark.parametrize("off", [{"dynamicNetworks": False}, {}])
def test_a_later_config_without_dynamic_networks_for_the_same_cache_dir_turns_it_off(
        tmp_path: Path, off: dict[str, Any]) -> None:
    dyn, cache = _loop(tmp_path)
    assert dyn.watching
    dyn.learn({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "cniDir": str(tmp_path / "other"),
               **off})
    assert dyn.watching  # another cache dir: not this one's business
    dyn.learn({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "cniDir": str(cache), **off})
    assert not dyn.watching


def test_a_cni_error_in_one_sandbox_is_tried_again_next_pass(tmp_path: Path) -> None:
    """A CNI error (a pod manifest that does not parse) is the author's to fix: no backoff, the fix applies at once."""
    dyn, cache = _loop(tmp_path)
    (cache / "a").write_text("")
    calls: list[str] = []

    def sandbox(raw: dict[str, Any], cfg: Any, source: Any, cid: str) -> None:
        calls.append(cid)
        raise InvalidConfig("manifest pod.yaml is not valid YAML")

    dyn._sandbox = sandbox  # type: ignore[method-assign]
    _pass(dyn)
    _pass(dyn)
    assert calls == ["a", "a"]
    assert "a" not in dyn.states or dyn.states["a"].broken_until == 0.0  # not held back by a backoff


def _conflist(path: Path, **multinic: Any) -> None:
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": path.stem, "plugins": [
        {"type": "multinic", "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}],
         **multinic}]}))


def test_conf_dir_any_file_enabling_a_cache_dir_wins_over_a_stale_one_and_turning_it_off_is_seen(
        tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    _conflist(conf_dir / "00-multinic.conflist", dynamicNetworks=True)
    _conflist(conf_dir / "00-multus.conflist")  # a stale Multus-style config for the same (default) cache dir
    (conf_dir / "10-cluster.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge"}]}))  # not a multinic config
    dyn = DynamicNetworks(lambda op, result: None, conf_dir=str(conf_dir))
    dyn._scan_conf_dir()
    assert list(dyn.configs) == ["/var/lib/cni/multus"]
    _conflist(conf_dir / "00-multinic.conflist", dynamicNetworks=False)
    dyn._scan_conf_dir()
    assert not dyn.watching
    # A cache dir no file names (learned from a runtime's request, another conf dir) is not the scan's business.
    dyn.learn({"cniVersion": "1.0.0", "name": "h", "type": "multinic", "dynamicNetworks": True,
               "cniDir": str(tmp_path / "other")})
    dyn._scan_conf_dir()
    assert list(dyn.configs) == [str(tmp_path / "other")]


def test_pod_informer_wakes_the_loop_on_a_networks_change_only() -> None:
    dyn = DynamicNetworks(lambda op, result: None)
    dyn.wakeup = Wakeup.open()
    if dyn.wakeup is None:
        pytest.skip("inotify_init1 is not available here: the loop polls only")

    def pod(networks: str | None, phase: str = "Running") -> dict[str, Any]:
        annotations = {} if networks is None else {"k8s.v1.cni.cncf.io/networks": networks}
        return {"metadata": {"name": "p", "annotations": annotations}, "status": {"phase": phase}}

    try:
        dyn._on_pod(pod("a"), pod("a", phase="Succeeded"))  # a status update (kubelet's, network-status …)
        assert dyn.wakeup.wait(0.1) is False
        dyn._on_pod(pod("a"), pod("a,b"))
        assert dyn.wakeup.wait(1.0)
        dyn._on_pod(pod(None), pod("a"))
        assert dyn.wakeup.wait(1.0)
        dyn._on_pod({"metadata": {"annotations": None}}, {"metadata": {}})  # null annotations: no change
        assert dyn.wakeup.wait(0.1) is False
        dyn._on_pod(None, None)  # a re-list: anything may have changed
        assert dyn.wakeup.wait(1.0)
    finally:
        dyn.wakeup.close()



def test_the_loop_sweeps_leftover_lock_files_in_every_cache_dir_a_config_names(tmp_path: Path) -> None:
    """Also where dynamicNetworks is off: a runtime older than CNI 1.1 never sends the GC that would sweep them."""
    conf_dir, cache = tmp_path / "net.d", tmp_path / "cache"
    conf_dir.mkdir()
    _conflist(conf_dir / "00-multinic.conflist", cniDir=str(cache))
    old = killed_holder_leftover(cache, "cid-old", age=3600)
    new = killed_holder_leftover(cache, "cid-new", age=0)  # within the grace: maybe a command's, left for later
    live = killed_holder_leftover(cache, "cid-live", age=3600)
    (cache / "cid-live").write_text("")  # a sandbox with a cache record keeps its lock file
    dyn = DynamicNetworks(lambda op, result: None, conf_dir=str(conf_dir))
    assert not dyn.watching
    _pass(dyn)
    assert not old.exists() and new.exists() and live.exists()
    t = time.time() - 3600
    os.utime(new, (t, t))
    _pass(dyn)
    assert new.exists()  # not every pass: every LOCK_SWEEP_EVERY
    dyn.next_lock_sweep = 0.0
    _pass(dyn)
    assert not new.exists() and live.exists()
