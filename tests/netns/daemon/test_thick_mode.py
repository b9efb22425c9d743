"""Thick mode end to end: the real daemon process, the real shim, real namespaces.

The cluster network is bridge + host-local. When the native plugins are importable the
daemon runs them in-process (the point of thick mode); otherwise the reference binaries
are exec'd, which still exercises the daemon and the shim.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lockfix import killed_holder_leftover
from tests.support.nsfix import Scene, need_reference, sh

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SHIM = os.path.join(ROOT, "cni", "daemon", "shim.py")
REAL_PY = os.path.realpath(sys.executable)


def _exec_types() -> str:
    have = all(importlib.util.find_spec(m) is not None for m in ("plugins.bridge", "ipam.host_local"))
    return "" if have else "bridge,host-local"


class Daemon:
    def __init__(self, tmp: str, *extra: str) -> None:
        self.tmp = tmp
        self.sock = os.path.join(tmp, "run", "multinic.sock")
        env = dict(os.environ, MULTINIC_EXEC_TYPES=_exec_types())
        self.proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "multinic"), "daemon", "--socket", self.sock, *extra],
            stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"daemon did not start: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            time.sleep(0.1)

    def get(self, path: str) -> tuple[int, str]:
        out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", self.sock, f"http://x{path}"],
                             capture_output=True, text=True, check=False).stdout
        body, _, code = out.rpartition("\n")
        return int(code or 0), body

    def ready(self) -> bool:
        return os.path.exists(self.sock) and self.get("/readyz")[0] == 200

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@pytest.fixture
def tmpdir_(tmp_path: object) -> str:
    return str(tmp_path)


@pytest.fixture
def daemon(tmpdir_: str) -> Iterator[Daemon]:
    if not os.path.exists("/usr/bin/curl"):
        pytest.skip("needs curl to talk HTTP over the unix socket")
    d = Daemon(tmpdir_)
    try:
        yield d
    finally:
        d.stop()


def conf(tmp: str, bridge: str, **extra: object) -> bytes:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "multinic", "type": "multinic-shim", "cniDir": f"{tmp}/cache", **extra,
        "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True,
             "ipam": {"type": "host-local", "subnet": "10.91.0.0/24", "dataDir": f"{tmp}/ipam"}}]}],
    }).encode()


def shim(d: Daemon, scene_ns: str, cmd: str, data: bytes, cid: str = "c1") -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{scene_ns}",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "MULTINIC_SOCKET": d.sock,
           "MULTINIC_THIN": os.path.join(os.path.dirname(sys.executable), "multinic")}
    return subprocess.run([REAL_PY, "-I", "-S", SHIM], input=data, capture_output=True, env=env, check=False)


def test_socket_is_private(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.sock)).st_mode) == 0o700
    assert daemon.get("/healthz")[0] == 200


def test_add_del_through_shim_and_metrics(daemon: Daemon, scene: Scene, tmpdir_: str) -> None:
    need_reference("bridge", "host-local")
    ns = scene.netns("pod")
    br = f"mnd{scene.tag}"
    scene.host_links.append(br)
    data = conf(tmpdir_, br)
    r = shim(daemon, ns, "ADD", data)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert res["ips"][0]["address"].startswith("10.91.0.")
    assert "10.91.0." in sh("ip", "-br", "addr", "show", "eth0", ns=ns)
    r = shim(daemon, ns, "DEL", data)
    assert r.returncode == 0, r.stdout
    assert "eth0" not in sh("ip", "-br", "link", ns=ns)
    assert [f for f in os.listdir(f"{tmpdir_}/cache") if f not in (".history", ".locks")] == []
    assert os.listdir(f"{tmpdir_}/cache/.locks") == []  # the sandbox's lock file went with its record
    code, text = daemon.get("/metrics")
    assert code == 200 and 'multinic_cni_requests_total{command="ADD",code="0"} 1' in text
    assert 'multinic_cni_request_duration_seconds_count{command="DEL"} 1' in text


def test_daemon_down_add_is_code_11_and_del_falls_back_to_thin(daemon: Daemon, scene: Scene, tmpdir_: str) -> None:
    need_reference("bridge", "host-local")
    ns = scene.netns("pod")
    br = f"mnd{scene.tag}"
    scene.host_links.append(br)
    data = conf(tmpdir_, br)
    assert shim(daemon, ns, "ADD", data).returncode == 0
    daemon.stop()
    r = shim(daemon, ns, "ADD", data, cid="c2")
    assert r.returncode != 0 and json.loads(r.stdout)["code"] == 11
    assert "daemon unavailable" in json.loads(r.stdout)["msg"]
    # DEL must not leak: the shim runs it itself from the cache.
    env_types = _exec_types()
    os.environ["MULTINIC_EXEC_TYPES"] = env_types
    try:
        r = shim(daemon, ns, "DEL", data)
    finally:
        os.environ.pop("MULTINIC_EXEC_TYPES", None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "eth0" not in sh("ip", "-br", "link", ns=ns)
    assert [f for f in os.listdir(f"{tmpdir_}/ipam/cluster") if f.startswith("10.")] == []


def test_version_is_answered_without_daemon(tmpdir_: str) -> None:
    env = {"CNI_COMMAND": "VERSION", "MULTINIC_SOCKET": f"{tmpdir_}/nothing.sock"}
    r = subprocess.run([REAL_PY, "-I", "-S", SHIM], input=b'{"cniVersion":"1.0.0"}', capture_output=True, env=env, check=False)
    assert r.returncode == 0 and "1.1.0" in json.loads(r.stdout)["supportedVersions"]


def test_backpressure_refuses_with_code_11_and_graceful_shutdown_finishes_in_flight(scene: Scene, tmpdir_: str) -> None:
    if not os.path.exists("/usr/bin/curl"):
        pytest.skip("needs curl")
    need_reference("bridge", "host-local")
    d = Daemon(tmpdir_, "--max-concurrent", "1", "--max-queue", "0")
    try:
        ns = scene.netns("pod")
        br = f"mnd{scene.tag}"
        scene.host_links.append(br)
        flag = os.path.join(tmpdir_, "ready-flag")
        slow = conf(tmpdir_, br, readinessindicatorfile=flag, readinessTimeoutSeconds=20)
        results: dict[str, subprocess.CompletedProcess[bytes]] = {}
        t = threading.Thread(target=lambda: results.setdefault("slow", shim(d, ns, "ADD", slow)))
        t.start()
        deadline = time.monotonic() + 10
        while "multinic_cni_in_flight 1" not in d.get("/metrics")[1]:
            assert time.monotonic() < deadline, (results, d.get("/metrics")[1])
            time.sleep(0.05)
        busy = shim(d, ns, "ADD", conf(tmpdir_, br), cid="c9")
        assert json.loads(busy.stdout)["code"] == 11  # refused at once, not queued without bound
        d.proc.send_signal(signal.SIGTERM)  # shutdown while the slow ADD is in flight
        time.sleep(0.3)
        open(flag, "w").close()
        t.join(timeout=30)
        assert results["slow"].returncode == 0, results["slow"].stdout  # finished, not cut off
        assert d.proc.wait(timeout=30) == 0
        assert "eth0" in sh("ip", "-br", "link", ns=ns)
    finally:
        d.stop()
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "multinic")], input=conf(tmpdir_, f"mnd{scene.tag}"),
                       env=dict(os.environ, CNI_COMMAND="DEL", CNI_CONTAINERID="c1", CNI_NETNS=f"/run/netns/{scene.namespaces[0]}",
                                CNI_IFNAME="eth0", CNI_PATH="/usr/lib/cni", MULTINIC_EXEC_TYPES=_exec_types()),
                       capture_output=True, check=False)


def test_auto_config_is_generated_regenerated_and_kept_on_shutdown(tmpdir_: str) -> None:
    if not os.path.exists("/usr/bin/curl"):
        pytest.skip("needs curl")
    confdir = os.path.join(tmpdir_, "net.d")
    os.makedirs(confdir)
    primary = os.path.join(confdir, "10-cluster.conflist")
    open(primary, "w").write(json.dumps({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge"}]}))
    d = Daemon(tmpdir_, "--auto-config", "--cni-conf-dir", confdir)
    ours = os.path.join(confdir, "00-multinic.conflist")
    try:
        assert json.load(open(ours))["plugins"][0]["delegates"][0]["name"] == "cluster"
        open(primary, "w").write(json.dumps({"cniVersion": "1.0.0", "name": "cluster2", "plugins": [{"type": "bridge"}]}))
        deadline = time.monotonic() + 10
        while json.load(open(ours))["plugins"][0]["delegates"][0]["name"] != "cluster2":
            assert time.monotonic() < deadline, "config not regenerated"
            time.sleep(0.2)
    finally:
        assert d.stop() == 0
    assert os.path.exists(ours)  # Multus #1527: never removed on shutdown


def test_a_burst_of_calls_is_served_not_refused_at_the_socket(daemon: Daemon, tmpdir_: str) -> None:
    """100 shims at once: every call reaches the daemon (the answer is its own code 7 for this
    config), none is turned away by a full accept queue (which the shim would report as 11)."""
    from concurrent.futures import ThreadPoolExecutor

    bad = json.dumps({"cniVersion": "1.0.0", "name": "multinic", "type": "multinic-shim",
                      "cniDir": f"{tmpdir_}/cache", "logLevel": "nonsense"}).encode()
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "burst", "CNI_NETNS": "/run/netns/none",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "MULTINIC_SOCKET": daemon.sock}

    def one(_: int) -> int:
        r = subprocess.run([REAL_PY, "-I", "-S", SHIM], input=bad, capture_output=True, env=env, check=False)
        return int(json.loads(r.stdout)["code"])

    with ThreadPoolExecutor(max_workers=100) as pool:
        codes = list(pool.map(one, range(100)))
    assert codes == [7] * 100


def test_the_daemon_sweeps_a_lock_file_a_killed_command_left_without_gc(tmpdir_: str) -> None:
    """A command killed while it held a sandbox leaves its lock file; a runtime older than CNI 1.1 never sends the
    GC that sweeps it, so the daemon's loop does (the node's multinic config names the cache dir; no dynamicNetworks)."""
    if not os.path.exists("/usr/bin/curl"):
        pytest.skip("needs curl to talk HTTP over the unix socket")
    cache, net_d = os.path.join(tmpdir_, "cache"), os.path.join(tmpdir_, "net.d")
    os.mkdir(net_d)
    with open(os.path.join(net_d, "00-multinic.conflist"), "wb") as f:
        f.write(b'{"cniVersion": "1.0.0", "name": "multinic", "plugins": [' + conf(tmpdir_, "mnlk0") + b"]}")
    old = killed_holder_leftover(Path(cache), "cid-killed", age=3600)
    fresh = killed_holder_leftover(Path(cache), "cid-just-now", age=0)
    d = Daemon(tmpdir_, "--cni-conf-dir", net_d)
    try:
        deadline = time.monotonic() + 20
        while old.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not old.exists(), "the daemon left the lock file of a killed command"
        assert fresh.exists()  # taken within the grace: the next sweep's
    finally:
        d.stop()
