"""Thick-mode pieces that need no kernel: config generation, limiter, metrics, shim encoding."""

from __future__ import annotations

import json
import os
import threading

import pytest

from cni.daemon import _shim as shim
from cni.daemon import autoconf
from cni.daemon.metrics import Metrics
from cni.daemon.server import Limiter


def test_generate_wraps_primary_and_copies_capabilities() -> None:
    primary = {"cniVersion": "0.4.0", "name": "k8s-pod-network", "plugins": [
        {"type": "calico"}, {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True, "off": False}}]}
    doc = autoconf.generate(primary, extra={"logLevel": "verbose"})
    (plugin,) = doc["plugins"]
    assert doc["cniVersion"] == "0.4.0" and plugin["type"] == "multinic-shim"
    assert plugin["delegates"] == [primary] and plugin["logLevel"] == "verbose"
    assert plugin["capabilities"] == {"portMappings": True, "bandwidth": True}


def test_primary_config_skips_ours_and_broken_files(tmp_path: object) -> None:
    d = str(tmp_path)
    open(os.path.join(d, "00-multinic.conflist"), "w").write(json.dumps(autoconf.generate({"name": "x", "type": "bridge"})))
    open(os.path.join(d, "05-broken.conf"), "w").write("{not json")
    open(os.path.join(d, "10-flannel.conflist"), "w").write(json.dumps({"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "flannel"}]}))
    found = autoconf.primary_config(d)
    assert found is not None and found[0] == "10-flannel.conflist"


def test_write_if_changed_is_atomic_and_idempotent(tmp_path: object) -> None:
    d = str(tmp_path)
    doc = autoconf.generate({"cniVersion": "1.0.0", "name": "n", "type": "bridge"})
    assert autoconf.write_if_changed(d, doc) is True
    assert autoconf.write_if_changed(d, doc) is False
    assert sorted(os.listdir(d)) == ["00-multinic.conflist"]


def test_limiter_bounds_running_and_queue() -> None:
    lim = Limiter(max_concurrent=1, max_queue=1)
    assert lim.acquire(timeout=0.1)
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire(timeout=2)))
    t.start()
    while lim.waiting == 0:
        pass
    assert lim.acquire(timeout=0.1) is False  # queue full: refused at once
    lim.release()
    t.join()
    assert got == [True] and lim.running == 1
    lim.release()


def test_metrics_exposition() -> None:
    m = Metrics()
    m.observe("ADD", 0.02, 0)
    m.observe("ADD", 0.3, 7)

    class L:
        running = 2
        waiting = 3

    text = m.render(L())
    assert 'multinic_cni_requests_total{command="ADD",code="7"} 1' in text
    assert 'multinic_cni_errors_total{code="7"} 1' in text
    assert 'multinic_cni_request_duration_seconds_bucket{command="ADD",le="0.025"} 1' in text
    assert 'multinic_cni_request_duration_seconds_count{command="ADD"} 2' in text
    assert "multinic_cni_in_flight 2" in text and "multinic_cni_queued 3" in text


def test_shim_json_escaping_round_trips() -> None:
    s = 'a"b\\c\n\t\x01é'
    assert json.loads(shim._esc(s)) == s
    assert shim._version_of('{"cniVersion": "0.4.0", "name": "x"}') == "0.4.0"


@pytest.mark.parametrize("s", ["", "plain text", 'q"uote', "back\\slash", "nl\nx\ttab\rcr", "\x00\x01\x1f\x7f",
                               "\xa0 nbsp", "\u2028\u2029 separators", "ünï©ødé 日本 🎉 \ufeff\u200b",
                               '{"cniVersion": "1.0.0",\n "name": "a\\"b"}\n'])
def test_shim_json_escaping_matches_json_loads(s: str) -> None:
    # The fast path (replaces) and the per-character path must both give what json.loads reads back as ``s``.
    assert json.loads(shim._esc(s)) == s
    assert json.loads(shim._esc_slow(s)) == s


def test_shim_json_escaping_round_trips_random_text() -> None:
    import random

    rnd = random.Random(16)
    alphabet = [chr(i) for i in range(0x80)] + ["\xa0", "\u2028", "é", "日", "🎉", "\ufeff", "\u200b"]
    for _ in range(3000):
        s = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 16)))
        assert json.loads(shim._esc(s)) == s, s


def test_shim_finds_multinic_next_to_itself() -> None:
    # The thin DEL fallback execs the full multinic beside the shim (os.path-free in the shim: start-up).
    assert shim._sibling("/opt/cni/bin/multinic-shim", "multinic") == "/opt/cni/bin/multinic"
    assert shim._sibling("bin/shim.py", "multinic") == os.path.join(os.getcwd(), "bin", "multinic")
