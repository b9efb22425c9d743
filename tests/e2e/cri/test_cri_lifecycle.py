"""What happens on a node around the CNI calls: runtime and daemon restarts, crashes, bursts.

Each test ends with conftest.Node's leak check (thin and thick). The long ones are ``slow``
(``make cri-e2e`` / ``make soak``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from ipam.whereabouts.store import API_VERSION as WB_API

from .conftest import Node, ipv4

pytestmark = pytest.mark.root


def _wb_nads(node: Node) -> None:
    assert node.api is not None
    node.nad("wb-file", {"cniVersion": "1.0.0", "type": "macvlan", "master": node.master, "mode": "bridge",
                         "ipam": {"type": "whereabouts", "range": "10.95.1.0/24", "datastore": "file",
                                  "data_dir": str(node.scratch / "wb")}})
    node.nad("wb-api", {"cniVersion": "1.0.0", "type": "macvlan", "master": node.master, "mode": "bridge",
                        "ipam": {"type": "whereabouts", "range": "10.95.2.0/24",
                                 "kubernetes": {"kubeconfig": node.api.kubeconfig_path()}}})


def test_whereabouts_in_file_store_and_api_double_allocate_and_release(node: Node) -> None:
    _wb_nads(node)
    a = node.run("cri-wb-a", "wb-file,wb-api")
    b = node.run("cri-wb-b", "wb-file,wb-api")
    na, nb = node.cri.netns(a), node.cri.netns(b)
    got = {(sid, ifname): ipv4(ns, ifname)[0] for sid, ns in ((a, na), (b, nb)) for ifname in ("net1", "net2")}
    assert str(got[a, "net1"].network) == "10.95.1.0/24" and str(got[a, "net2"].network) == "10.95.2.0/24"
    assert got[a, "net1"] != got[b, "net1"] and got[a, "net2"] != got[b, "net2"]
    assert node.api is not None
    pools = node.api.objects("ippools", WB_API)
    held = [v["podref"] for p in pools for v in (p["spec"].get("allocations") or {}).values()]
    assert sorted(held) == ["default/cri-wb-a", "default/cri-wb-b"], held
    out = subprocess.run(["nsenter", f"--net={na}", "ping", "-c", "1", "-W", "2", "-I", "net2",
                          str(got[b, "net2"].ip)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for sid in (a, b):
        node.cri.stop(sid)
        node.cri.remove(sid)


@pytest.mark.slow
def test_containerd_restarted_while_sandboxes_run_then_stop_and_remove_work(node: Node) -> None:
    node.nad("rs", {"cniVersion": "1.0.0", "type": "macvlan", "master": node.master, "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": "10.94.5.0/24", "dataDir": str(node.scratch / "ipam-rs")}})
    ids = [node.run(f"cri-rs-{i}", "rs") for i in range(3)]
    ips = {sid: node.cri.status(sid)[0].network.ip for sid in ids}
    node.ctd.restart()
    # After the restart the CRI still knows the sandboxes, their netns and their IPs (recovered state).
    for sid in ids:
        st, _ = node.cri.status(sid)
        assert st.state == 0 and st.network.ip == ips[sid]
    node.cri.stop(ids[0])
    node.cri.remove(ids[0])
    node.ctd.stop(signal.SIGKILL)
    node.ctd.start()
    for sid in ids[1:]:
        node.cri.stop(sid)
        node.cri.remove(sid)


def _when(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_containerd_sigkilled_during_run_pod_sandbox_then_restarted_and_removed_leaves_nothing(node: Node) -> None:
    node.nad("kl", {"cniVersion": "1.0.0", "type": "macvlan", "master": node.master, "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": "10.94.6.0/24", "dataDir": str(node.scratch / "ipam-kl")}})
    node.pod("cri-kill", "kl")
    cfg = node.cri.sandbox_config("cri-kill")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            node.cri.run(cfg)
        except BaseException as exc:  # noqa: BLE001 - the connection dies with containerd
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    # Kill while the CNI ADD is in progress: the attachment cache is written before the kernel is touched.
    assert _when(lambda: any(not f.name.startswith(".") for f in node.cache.iterdir()), 60), "no ADD began"
    node.ctd.stop(signal.SIGKILL)
    t.join(60)
    assert errors and isinstance(errors[0], grpc.RpcError)
    time.sleep(1.0)  # the orphaned plugin process finishes its ADD (or fails) on its own
    node.ctd.start()
    # kubelet: the sandbox is unknown or not ready → remove what is listed, run again with attempt 1.
    # containerd 1.6.20 stores the sandbox before it sets up the network: after the restart the sandbox is
    # listed NOTREADY, and kubelet's Stop/Remove of it sends the DEL that releases the half-made attachment
    # (the plugin process that was running the ADD outlived containerd and finished or failed on its own).
    listed = node.cri.list()
    assert [sb.state for sb in listed] == [1], listed
    for sb in listed:
        node.sandboxes.add(sb.id)
        node.cri.stop(sb.id)
        node.cri.remove(sb.id)
    # kubelet then runs the pod again (next attempt): a fresh sandbox, no trace of the first.
    sid = node.cri.run(node.cri.sandbox_config("cri-kill", attempt=1))
    node.sandboxes.add(sid)
    assert ipv4(node.cri.netns(sid), "net1")
    node.cri.stop(sid)
    node.cri.remove(sid)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_thick_daemon_killed_during_a_burst_restarts_and_serves_the_retries(node: Node) -> None:
    if node.mode != "thick":
        pytest.skip("thick mode only: thin mode has no daemon")
    node.nad("bd", {"cniVersion": "1.0.0", "type": "macvlan", "master": node.master, "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": "10.94.7.0/24", "dataDir": str(node.scratch / "ipam-bd")}})
    names = [f"cri-burst-{i}" for i in range(10)]
    for n in names:
        node.pod(n, "bd")

    def run(name: str, attempt: int) -> tuple[str, str]:
        try:
            sid = node.cri.run(node.cri.sandbox_config(name, attempt=attempt))
            node.sandboxes.add(sid)
            return name, sid
        except grpc.RpcError as exc:
            return name, f"error: {exc.details()}"

    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(run, n, 0) for n in names]
        # Kill with ADDs in the daemon (their attachment caches are being written) and more queued behind them.
        assert _when(lambda: len([f for f in os.listdir(node.cache) if not f.startswith(".")]) >= 2, 120), "no ADD reached the daemon"
        node.daemon.kill()
        first = [f.result() for f in futures]
    node.daemon.start()
    failed = [n for n, sid in first if sid.startswith("error")]
    assert failed, "the daemon was killed after the whole burst was served"
    # The shim reports an unreachable daemon (refused, or dead mid-call) as CNI error 11: kubelet retries.
    assert all("try again later" in sid for _, sid in first if sid.startswith("error")), first
    # kubelet retries failed sandboxes (next attempt); every retry is served by the restarted daemon.
    with ThreadPoolExecutor(max(1, len(failed))) as pool:
        retried = list(pool.map(lambda n: run(n, 1), failed))
    assert [r for r in retried if r[1].startswith("error")] == []
    sids = [sid for _, sid in first + retried if not sid.startswith("error")]
    assert len(sids) == len(names)
    ips = [node.cri.status(sid)[0].network.ip for sid in sids]
    net1 = [str(ipv4(node.cri.netns(sid), "net1")[0].ip) for sid in sids]
    assert len(set(ips)) == len(ips) and len(set(net1)) == len(net1), (ips, net1)
    # Exactly one cache record per live sandbox: the failed first attempts left none behind.
    assert sorted(f for f in os.listdir(node.cache) if not f.startswith(".")) == sorted(
        f for f in os.listdir(node.cache) if not f.startswith(".") and any(s in f for s in sids))


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 30 thin ADDs at once are CPU-bound on 2 cores; a loaded machine stretches them
def test_thirty_concurrent_run_then_thirty_concurrent_stop_remove(node: Node) -> None:
    node.nad("cc", {"cniVersion": "1.0.0", "type": "macvlan", "master": node.master, "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": "10.94.8.0/24", "dataDir": str(node.scratch / "ipam-cc")}})
    names = [f"cri-cc-{i}" for i in range(30)]
    for n in names:
        node.pod(n, "cc")

    def run(name: str) -> str:
        sid: str = node.cri.run(node.cri.sandbox_config(name))
        node.sandboxes.add(sid)
        return sid

    with ThreadPoolExecutor(30) as pool:
        sids = list(pool.map(run, names))
    assert len(set(sids)) == 30
    eth0 = [node.cri.status(sid)[0].network.ip for sid in sids]
    net1 = [str(ipv4(node.cri.netns(sid), "net1")[0].ip) for sid in sids]
    assert len(set(eth0)) == 30 and len(set(net1)) == 30, (eth0, net1)

    def down(sid: str) -> None:
        node.cri.stop(sid)
        node.cri.remove(sid)

    with ThreadPoolExecutor(30) as pool:
        list(pool.map(down, sids))
    assert node.cri.list() == []
