"""``multinic leaks`` on whereabouts' shared stores — Kubernetes CRDs through the API server double, and a real etcd
cluster: an allocation is reported (and --fix released through whereabouts' own DEL) only when it is provably this
node's (the pod's nodeName; once the pod is gone, this node's slice or cache history) and stale; another node's,
a live pod's, one nobody can place and a young one are left alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netns.admin.conftest import Node
from tests.support.etcd import EtcdCluster, etcd_cluster  # noqa: F401  (fixture)

RANGE = "10.77.3.0/24"


@pytest.fixture(params=["kubernetes", "etcd"])
def store(request: pytest.FixtureRequest, node: Node, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(node.tmp / "no-flat-file.conf"))
    monkeypatch.setenv("NODENAME", node.name)  # whereabouts' own node name, for slices (as the DaemonSet sets it)
    if request.param == "etcd":
        if not os.access("/usr/bin/etcd", os.X_OK):
            pytest.skip("needs etcd (/usr/bin/etcd, Debian etcd-server)")
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        yield {"datastore": "etcd", "endpoints": cluster.endpoints, "etcd_prefix": f"/leaks-{node.tag}/"}
    else:
        yield {"datastore": "kubernetes", "kubernetes": {"kubeconfig": node.kubeconfig}}


def wb_nad(node: Node, store: dict[str, Any], **extra: Any) -> dict[str, Any]:
    conf = {"cniVersion": "1.0.0", "name": f"wbs-{node.tag}", "type": "macvlan", "master": node.uplink,
            "mode": "bridge", "ipam": {"type": "whereabouts", "range": RANGE, **store, **extra}}
    node.add_nad("wbs", conf)
    return conf


def allocate(conf: dict[str, Any], cid: str, ns: str, pod: str, nodename: str,
             monkeypatch: pytest.MonkeyPatch) -> str:
    """An allocation made by whereabouts itself for a container this node's multinic never saw (another node)."""
    from cni.spec.request import Request
    from ipam.whereabouts import PLUGIN

    monkeypatch.setenv("NODENAME", nodename)
    try:
        res = PLUGIN.run(Request("ADD", cid, "/run/netns/x", "net1", {"K8S_POD_NAMESPACE": ns, "K8S_POD_NAME": pod},
                                 ("/usr/lib/cni",), conf))
    finally:
        monkeypatch.setenv("NODENAME", "node-a")
    assert res is not None
    return str(res.ips[0].address.ip)


def allocated(conf: dict[str, Any]) -> dict[str, str]:
    """container ID -> IP of every allocation in the network's pools (this node's slices and others')."""
    from cni.admin.leaks_stores import pools_of
    from cni.spec.request import Request
    from ipam.whereabouts import config as wconf
    from ipam.whereabouts.manager import opened

    wc = wconf.parse(Request("DEL", "x", "", "net1", {}, ("/usr/lib/cni",), conf))
    out = {}
    with opened(wc) as st:
        for name, rng, _owner in pools_of(st, wc, "node-a"):
            for off, a in st.read_pool(name, rng.cidr).allocations.items():
                out[a.container_id] = str(rng.ip_at(off))
    return out


def seed_pod(node: Node, name: str, on: str) -> None:
    node.api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                   "spec": {"nodeName": on, "containers": [{"name": "c", "image": "x"}]}})


def forget(node: Node, pod: str, *, delete_pod: bool) -> str:
    """Lose the pod's cache record (its netns stays); optionally delete the pod from the API too."""
    cid = node.pods[pod][0]
    os.unlink(node.cni_dir / cid)
    if delete_pod:
        assert node.api.delete_obj("pods", pod, "default")
    return cid


def test_only_this_nodes_stale_allocations_are_reported_and_released(node: Node, store: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    conf = wb_nad(node, store)
    node.add_pod("live", "wbs")
    node.add_pod("lost", "wbs")
    node.add_pod("alive", "wbs")
    lost = forget(node, "lost", delete_pod=True)  # its pod is gone: the cache history says it was made here
    alive = forget(node, "alive", delete_pod=False)  # its pod is still on this node (no phase yet: may be in flight)
    seed_pod(node, "remote", "node-b")
    allocate(conf, "remote-cid", "default", "remote", "node-b", monkeypatch)  # another node's pod
    seed_pod(node, "ghost", "node-b")
    allocate(conf, "ghost-cid", "default", "ghost", "node-b", monkeypatch)
    assert node.api.delete_obj("pods", "ghost", "default")  # pod gone, and nothing says which node made it
    before = allocated(conf)
    assert {lost, alive, "remote-cid", "ghost-cid", node.pods["live"][0]} <= set(before)

    # (The lost pods' cluster-network reservations and veths are leaks of their own kinds; here: whereabouts.)
    # Within the grace period the lost container's allocation is left alone: its ADD may be in flight.
    rc, doc = node.run_json("leaks")
    assert [lk for lk in doc["leaks"] if lk["kind"] == "whereabouts"] == [], doc
    assert any("may be in flight" in n and before[lost] in n for n in doc["notes"]), doc["notes"]

    rc, doc = node.run_json("leaks", "--grace", "0")
    wb = [lk for lk in doc["leaks"] if lk["kind"] == "whereabouts"]
    assert [(lk["owner"], lk["fixable"]) for lk in wb] == [(f"{lost}/net1", True)] and rc == 1, doc
    assert before[lost] in wb[0]["what"] and "pod is gone" in wb[0]["what"] and "cache history" in wb[0]["what"]
    notes = " | ".join(doc["notes"])
    assert f"{before[alive]} (default/alive)" in notes and "may be using it" in notes
    assert "2 allocation(s) of other nodes or of no known node left alone" in notes
    assert allocated(conf) == before  # looking changes nothing

    rc, doc = node.run_json("leaks", "--fix", "--grace", "0")
    assert [lk["removed"] for lk in doc["leaks"] if lk["kind"] == "whereabouts"] == [True], doc
    assert [lk for lk in doc["left"] if lk["kind"] == "whereabouts"] == [], doc
    after = allocated(conf)
    assert lost not in after and {k: v for k, v in before.items() if k != lost} == after


def test_a_slice_of_this_node_places_an_allocation_without_history(node: Node, store: dict[str, Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    conf = wb_nad(node, store, node_slice_size="/28", network_name=f"sl-{node.tag}")
    node.add_pod("live", "wbs")  # (a network is judged when multinic knows it: a cached attachment uses it)
    node.add_pod("lost", "wbs")
    lost = forget(node, "lost", delete_pod=True)
    os.unlink(node.cni_dir / ".history")  # no history: only the slice says whose it is
    seed_pod(node, "remote", "node-b")
    allocate(conf, "remote-cid", "default", "remote", "node-b", monkeypatch)
    assert node.api.delete_obj("pods", "remote", "default")  # gone too, but in node-b's slice
    before = allocated(conf)
    assert {lost, "remote-cid", node.pods["live"][0]} <= set(before)

    rc, doc = node.run_json("leaks", "--fix", "--grace", "0")
    wb = [lk for lk in doc["leaks"] if lk["kind"] == "whereabouts"]
    assert [(lk["owner"], lk["removed"]) for lk in wb] == [(f"{lost}/net1", True)], doc
    assert "in this node's slice" in wb[0]["what"]
    assert set(allocated(conf)) == set(before) - {lost}


def test_an_unreachable_pod_source_judges_nothing(node: Node, store: dict[str, Any]) -> None:
    wb_nad(node, store)
    node.add_pod("live", "wbs")
    node.add_pod("lost", "wbs")
    forget(node, "lost", delete_pod=True)
    node.api.deny("get", "pods")
    rc, doc = node.run_json("leaks", "--fix", "--grace", "0")
    assert [lk for lk in doc["leaks"] if lk["kind"] == "whereabouts"] == [], doc
    assert any("cannot read the pod" in n for n in doc["notes"]), doc["notes"]
    node.api.allow("get", "pods")
