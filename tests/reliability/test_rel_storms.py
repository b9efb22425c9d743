"""Concurrency storms: many pods that share networks ADDed and DELed at once on one node (thin: the real binary
exec'd per call; thick: one daemon, the shim per call), and 8 simulated nodes sharing etcd- and API-backed whereabouts
pools while an etcd member is killed — never a duplicate IP, never a leak.

One node's storm: half of the pods are ADDed at once; then the other half is ADDed while a quarter is DELed
(churn); the addresses of every live pod are read from the kernel (eth0, net1, net2) and must be unique per network;
then everything is DELed at once and the leak detector must find nothing. A call answered with code 11 (the daemon's
back-pressure) is retried as kubelet would; any other failure fails the test.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import figure
from tests.reliability.harness import ROOT, Call, Daemon, Node, Pod, ip_out
from tests.support.etcd import etcd_fresh  # noqa: F401  (fixture)

Runner = Callable[[str, Pod], Call]


def _with_retry(run: Runner, cmd: str, pod: Pod, tries: int = 5) -> Call:
    call = run(cmd, pod)
    for _ in range(tries - 1):
        if call.ok or call.code != 11:
            break
        time.sleep(0.5)
        call = run(cmd, pod)
    return call


def pod_ips(pod: Pod) -> dict[str, str]:
    out = {}
    for line in ip_out("-o", "-4", "addr", "show", ns=pod.netns).splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1] != "lo":
            out[parts[1]] = str(ipaddress.ip_interface(parts[3]).ip)
    return out


def storm(node: Node, n: int, run: Runner, workers: int, suite: str) -> None:
    pods = [node.new_pod(f"storm-{i}") for i in range(n)]
    first, second = pods[: n // 2], pods[n // 2:]
    failures: list[str] = []

    def go(cmd: str, batch: list[Pod]) -> None:
        with ThreadPoolExecutor(workers) as ex:
            for pod, call in zip(batch, ex.map(lambda p: _with_retry(run, cmd, p), batch), strict=True):
                if not call.ok:
                    failures.append(f"{cmd} {pod.name}: rc={call.rc} {call.doc} {call.stderr[-500:]}")

    t0 = time.monotonic()
    go("ADD", first)
    gone = first[: len(first) // 2]
    with ThreadPoolExecutor(2) as ex:  # churn: ADDs and DELs at the same time
        a = ex.submit(go, "ADD", second)
        d = ex.submit(go, "DEL", gone)
        a.result()
        d.result()
    assert not failures, "\n".join(failures[:20])
    live = [p for p in pods if p not in gone]
    ips: dict[str, list[str]] = {}
    for p in live:
        got = pod_ips(p)
        assert set(got) == {"eth0", "net1", "net2"}, f"{p.name} has {got}"
        for ifname, ip in got.items():
            ips.setdefault(ifname, []).append(ip)
    dups = {ifn: [ip for ip, c in Counter(v).items() if c > 1] for ifn, v in ips.items()}
    dups = {k: v for k, v in dups.items() if v}
    for p in gone:
        assert node.netns_leaks(p) == [], node.netns_leaks(p)
    go("DEL", [p for p in live])
    seconds = time.monotonic() - t0
    leaks = node.leaks(pods)
    figure(suite, pods=n, calls=2 * n, duplicate_ips=sum(len(v) for v in dups.values()), leaks=len(leaks),
           failures=len(failures), seconds=round(seconds, 1))
    assert not failures, "\n".join(failures[:20])
    assert not dups, f"duplicate IPs among live pods: {dups}"
    assert not leaks, "\n".join(leaks[:40])


def _thin(node: Node) -> Runner:
    return lambda cmd, pod: node.exec(cmd, pod, timeout=240)


def _thick(node: Node, d: Daemon) -> Runner:
    return lambda cmd, pod: node.shim(d, cmd, pod, timeout=240)


@pytest.mark.timeout(900)  # slower when the machine is shared
def test_thin_storm_shared_networks(node: Node) -> None:
    storm(node, 10, _thin(node), 10, "storm-thin-fast")


@pytest.mark.timeout(900)  # slower when the machine is shared
def test_thick_storm_shared_networks(node: Node, tmp_path: Path) -> None:
    d = Daemon(tmp_path / "daemon")
    try:
        storm(node, 30, _thick(node, d), 30, "storm-thick-fast")
        assert d.alive(), "the daemon died under the storm"
    finally:
        d.stop()


@pytest.mark.slow
@pytest.mark.timeout(10800)
def test_soak_thin_storm_200(node: Node) -> None:
    storm(node, 200, _thin(node), 32, "storm-thin-soak")


@pytest.mark.slow
@pytest.mark.timeout(10800)
def test_soak_thick_storm_200(node: Node, tmp_path: Path) -> None:
    d = Daemon(tmp_path / "daemon")
    try:
        storm(node, 200, _thick(node, d), 200, "storm-thick-soak")
        assert d.alive(), "the daemon died under the storm"
    finally:
        d.stop()


# ---- 8 nodes sharing whereabouts pools (etcd and the Kubernetes API) -----------------------------------------------

# One simulated node: for each round, ADD its pods on both networks, DEL every other one, re-ADD them (churn), and
# print the live (pod, network, ip) rows; a final DEL of everything when asked. CNI calls go through skel.dispatch
# exactly as `multinic plugin whereabouts` makes them; code 11 is retried as kubelet would.
WORKER = r"""
import io, json, sys, time
from cni import skel
from ipam.whereabouts import PLUGIN
a = json.loads(sys.argv[1])
def call(cmd, net, pod):
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": f"cid-{pod}", "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "net1",
           "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"}
    conf = json.dumps(a["confs"][net]).encode()
    for attempt in range(20):
        out = io.BytesIO()
        rc = skel.dispatch(PLUGIN.run, env, io.BytesIO(conf), out, io.StringIO())
        doc = json.loads(out.getvalue() or b"{}")
        if rc == 0 or doc.get("code") != 11:
            return rc, doc, attempt
        time.sleep(0.3)
    return rc, doc, attempt
live = {}
retries = 0
errors = []
for r in range(a["rounds"]):
    for i in range(a["count"]):
        pod = f"n{a['node']}-p{i}"
        for net in a["confs"]:
            rc, doc, att = call("ADD", net, pod)
            retries += att
            if rc:
                errors.append(["ADD", net, pod, doc])
            else:
                live[(net, pod)] = doc["ips"][0]["address"].split("/")[0]
        print(json.dumps({"progress": [r, i]}), flush=True)
    for i in range(0, a["count"], 2):
        pod = f"n{a['node']}-p{i}"
        for net in a["confs"]:
            rc, doc, att = call("DEL", net, pod)
            retries += att
            if rc:
                errors.append(["DEL", net, pod, doc])
            else:
                live.pop((net, pod), None)
if a["final_del"]:
    for (net, pod) in list(live):
        rc, doc, att = call("DEL", net, pod)
        retries += att
        if rc:
            errors.append(["DEL", net, pod, doc])
        else:
            live.pop((net, pod))
print(json.dumps({"live": [[n, p, ip] for (n, p), ip in live.items()], "errors": errors, "retries": retries}))
"""


def _spawn(node: int, confs: dict[str, Any], count: int, rounds: int, final_del: bool) -> subprocess.Popen[str]:
    env = dict(os.environ, MULTINIC_WHEREABOUTS_FLATFILE="")
    arg = json.dumps({"node": node, "confs": confs, "count": count, "rounds": rounds, "final_del": final_del})
    return subprocess.Popen([sys.executable, "-c", WORKER, arg], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _pool_state(conf: dict[str, Any]) -> tuple[int, int]:
    """(allocations, reservations) left in the store behind ``conf``."""
    from cni.spec.request import Request
    from ipam.whereabouts import config as wconfig
    from ipam.whereabouts.manager import open_store

    store = open_store(wconfig.parse(Request(command="ADD", container_id="x", ifname="net1", config=conf)))
    try:
        allocs = sum(len(p.allocations) for p in store.list_pools())
        return allocs, len(store.list_reservations())
    finally:
        store.close()


def eight_nodes(etcd: Any, api: Any, count: int, rounds: int, suite: str) -> None:
    tag = uuid.uuid4().hex[:8]
    confs = {
        "etcd": {"cniVersion": "1.0.0", "name": "wb-etcd", "type": "macvlan",
                 "ipam": {"type": "whereabouts", "range": "10.210.0.0/20", "datastore": "etcd",
                          "endpoints": etcd.endpoints, "etcd_prefix": f"/storm-{tag}/"}},
        "api": {"cniVersion": "1.0.0", "name": "wb-api", "type": "macvlan",
                "ipam": {"type": "whereabouts", "range": "10.211.0.0/20",
                         "kubernetes": {"kubeconfig": api.kubeconfig_path()}}},
    }
    nodes = 8
    procs = [_spawn(n, confs, count, rounds, final_del=False) for n in range(nodes)]
    # Kill an etcd member once every node is under way, and make the API answer conflicts and slowly for a while.
    for p in procs:
        assert p.stdout is not None
        p.stdout.readline()
    victim = 0
    etcd.kill(victim)
    api.inject_conflicts(40)
    api.set_latency(0.05)
    rows: list[dict[str, Any]] = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
            rows.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        api.set_latency(0)
    errors = [e for r in rows for e in r["errors"]]
    live = [tuple(x) for r in rows for x in r["live"]]
    dups = {net: [ip for ip, c in Counter(ip for n, _, ip in live if n == net).items() if c > 1] for net in confs}
    dups = {k: v for k, v in dups.items() if v}
    stored = {net: _pool_state(c) for net, c in confs.items()}
    expected = {net: sum(1 for n, _, _ in live if n == net) for net in confs}
    # every node releases everything (the member is still down), then the pools must be empty
    final = [_spawn(n, confs, count, 1, final_del=True) for n in range(nodes)]
    for p in final:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        r = json.loads(out.strip().splitlines()[-1])
        errors += r["errors"]
        assert r["live"] == [], r["live"][:5]
    etcd.restart(victim)
    left = {net: _pool_state(c) for net, c in confs.items()}
    leaks = sum(a + b for a, b in left.values())
    figure(suite, nodes=nodes, add_calls=nodes * count * rounds * len(confs),
           duplicate_ips=sum(len(v) for v in dups.values()), leaks=leaks, errors=len(errors),
           retries=sum(r["retries"] for r in rows))
    assert not errors, errors[:10]
    assert not dups, dups
    assert {net: a for net, (a, _) in stored.items()} == expected, (stored, expected)
    assert {net: r for net, (_, r) in stored.items()} == expected, (stored, expected)
    assert leaks == 0, left


def _need_whereabouts() -> None:
    try:
        import ipam.whereabouts.store_etcd  # noqa: F401
        import ipam.whereabouts.store_k8s  # noqa: F401
    except ImportError as exc:  # pragma: no cover - while the whereabouts engineer is still at it
        pytest.skip(f"ipam.whereabouts is not importable yet: {exc}")


@pytest.mark.timeout(900)  # slower when the machine is shared
def test_eight_nodes_etcd_and_api_pools_member_killed(etcd_fresh: Any, apiserver: Any) -> None:  # noqa: F811
    _need_whereabouts()
    eight_nodes(etcd_fresh, apiserver, count=6, rounds=2, suite="wb-8nodes-fast")


@pytest.mark.slow
@pytest.mark.timeout(10800)
def test_soak_eight_nodes_etcd_and_api_pools_member_killed(etcd_fresh: Any, apiserver: Any) -> None:  # noqa: F811
    _need_whereabouts()
    eight_nodes(etcd_fresh, apiserver, count=40, rounds=3, suite="wb-8nodes-soak")
