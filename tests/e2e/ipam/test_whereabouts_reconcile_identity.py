"""``multinic reconcile`` keyed on identity (pod UID), its Lease, its metric and node-slice give-back, against the
API server double (and the same code paths the CLI runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cni.k8s.client import Client, core_path
from cni.spec.request import Request
from conformance.apiserver import ApiServerDouble
from ipam import reconcile
from ipam.whereabouts import PLUGIN
from ipam.whereabouts.store_k8s import K8sStore
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

OLD = "2020-01-01T00:00:00Z"
WB = "whereabouts.cni.cncf.io/v1alpha1"


@pytest.fixture(autouse=True)
def no_host_flat_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))
    monkeypatch.delenv("NODE_NAME", raising=False)


def add(kc: str, pod: str, uid: str, *, cid: str | None = None, extra: dict[str, Any] | None = None) -> str:
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": "10.31.0.0/24", "kubernetes": {"kubeconfig": kc},
                     **(extra or {})}}
    res = PLUGIN.run(Request(command="ADD", container_id=cid or f"cid-{pod}-{uid}", netns="/x", ifname="net1",
                             cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod, "K8S_POD_UID": uid},
                             config=conf))
    assert res is not None
    return str(res.ips[0].address.ip)


def seed_pod(api: ApiServerDouble, name: str, uid: str, *, phase: str = "Running",
             ips: list[str] | None = None) -> None:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": uid, "creationTimestamp": OLD}
    if ips is not None:
        meta["annotations"] = {reconcile.NETWORK_STATUS: json.dumps(
            [{"name": "default/net", "interface": "net1", "ips": ips}])}
    api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []},
              "status": {"phase": phase}})


def make(api: ApiServerDouble, **kw: Any) -> tuple[reconcile.Reconciler, K8sStore, Client]:
    client = Client.from_kubeconfig(api.kubeconfig_path())
    store = K8sStore(client, "kube-system")
    rec = reconcile.Reconciler(store, lambda: client.list(core_path("pods"))["items"],
                               grace=kw.pop("grace", 0.0), sleep=kw.pop("sleep", lambda s: None), **kw)
    return rec, store, client


def holders(store: K8sStore) -> dict[str, str]:
    return {f"{p.name}:{off}": a.podref for p in store.list_pools() for off, a in p.allocations.items()}


def test_a_live_pod_keeps_its_ip_even_before_its_network_status_lists_it(apiserver: ApiServerDouble) -> None:  # noqa: F811
    kc = apiserver.kubeconfig_path()
    add(kc, "web", "u-web")
    seed_pod(apiserver, "web", "u-web", ips=["10.99.9.9"])  # the name-keyed rule would free this (#176)
    rec, store, _ = make(apiserver)
    assert rec.run_once().freed == []
    assert list(holders(store).values()) == ["default/web"]


def test_a_pod_name_reused_by_a_new_pod_frees_the_old_identity_unless_it_re_adds(
        apiserver: ApiServerDouble) -> None:  # noqa: F811
    kc = apiserver.kubeconfig_path()
    ip = add(kc, "sts-0", "u-old")
    add(kc, "db-0", "u-db-old")
    seed_pod(apiserver, "sts-0", "u-new", ips=[ip])
    seed_pod(apiserver, "db-0", "u-db-new", ips=[])

    def during_grace(_: float) -> None:
        # sts-0's new sandbox re-ADDs during the grace period: same address, new identity — kept.
        assert add(kc, "sts-0", "u-new", cid="new-sandbox") == ip

    rec, store, _ = make(apiserver, grace=5.0, sleep=during_grace)
    report = rec.run_once()
    assert [p for _, _, p in report.freed] == ["default/db-0"]
    assert "no pod has UID u-db-old" in next(iter(report.why.values()))
    (pool,) = store.list_pools()
    (entry,) = pool.allocations.values()
    assert (entry.podref, entry.pod_uid, entry.container_id) == ("default/sts-0", "u-new", "new-sandbox")


def test_dry_run_lists_what_and_why_and_takes_no_lease(apiserver: ApiServerDouble,  # noqa: F811
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    kc = apiserver.kubeconfig_path()
    add(kc, "gone", "u-gone")
    seed_pod(apiserver, "done", "u-done", phase="Failed")
    add(kc, "done", "u-done")
    assert reconcile.main(["--kubeconfig", kc, "--grace", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would free 2 allocation(s)" in out
    assert "10.31.0.1 (default/gone): no pod has UID u-gone any more" in out
    assert "10.31.0.2 (default/done): pod has terminated (Failed)" in out
    assert apiserver.objects("leases", "coordination.k8s.io/v1") == []
    _, store, _ = make(apiserver)
    assert len(holders(store)) == 2


def test_the_lease_lets_one_reconciler_run_and_hands_over_when_it_expires(apiserver: ApiServerDouble) -> None:  # noqa: F811
    client = Client.from_kubeconfig(apiserver.kubeconfig_path())
    now = [1000.0]
    a = reconcile.LeaderLock(client, "kube-system", "a", duration=30, clock=lambda: now[0])
    b = reconcile.LeaderLock(client, "kube-system", "b", duration=30, clock=lambda: now[0])
    assert a.acquire() == ""
    assert b.acquire() == "a"
    assert a.renew()
    now[0] += 31  # a stopped renewing (crashed): b takes over, and a notices it lost the lease
    assert b.acquire() == ""
    assert not a.renew()
    b.release()
    assert a.acquire() == ""  # released: no need to wait for expiry
    (lease,) = apiserver.objects("leases", "coordination.k8s.io/v1")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseTransitions"] == 2

    # A reconciler whose lease is held by a live holder frees nothing.
    add(apiserver.kubeconfig_path(), "gone", "u-gone")
    rec, store, _ = make(apiserver, lock=reconcile.LeaderLock(client, "kube-system", "c", duration=30,
                                                              clock=lambda: now[0]))
    report = rec.run_once()
    assert report.skipped and report.freed == [] and len(holders(store)) == 1


def test_metrics_file_counts_what_was_freed(apiserver: ApiServerDouble, tmp_path: Path) -> None:  # noqa: F811
    kc = apiserver.kubeconfig_path()
    add(kc, "gone", "u-gone")
    prom = tmp_path / "reconcile.prom"
    assert reconcile.main(["--kubeconfig", kc, "--grace", "0", "--metrics-file", str(prom)]) == 0
    text = prom.read_text()
    assert 'multinic_reconcile_freed_total{kind="allocation"} 1' in text
    assert 'multinic_reconcile_runs_total{result="done"} 1' in text
    (lease,) = apiserver.objects("leases", "coordination.k8s.io/v1")
    assert lease["spec"]["holderIdentity"] == ""  # handed back after the run


def test_slices_of_deleted_nodes_are_given_back_once_empty(apiserver: ApiServerDouble,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    kc = apiserver.kubeconfig_path()
    sl = {"range": "10.32.0.0/24", "node_slice_size": "/26", "network_name": "fast"}
    for node, pod in (("node-a", "pa"), ("node-b", "pb"), ("node-c", "pc")):
        monkeypatch.setenv("NODENAME", node)
        add(kc, pod, f"u-{pod}", extra=sl)
    apiserver.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-b"}})
    seed_pod(apiserver, "pb", "u-pb", ips=[])
    seed_pod(apiserver, "pc", "u-pc", ips=[])  # node-c is gone, but its pod's object is still there
    rec, store, client = make(apiserver, list_nodes=lambda: {n["metadata"]["name"]
                                                              for n in client.list(core_path("nodes"))["items"]})
    report = rec.run_once()
    assert [p for _, _, p in report.freed] == ["default/pa"]
    assert report.freed_slices == [("fast", "10.32.0.0/26", "node-a")]
    nsp = apiserver.get_obj("nodeslicepools", "fast", "kube-system", WB)
    assert nsp is not None
    assert [(a["nodeName"], a["sliceRange"]) for a in nsp["status"]["allocations"]] == [
        ("", "10.32.0.0/26"), ("node-b", "10.32.0.64/26"), ("node-c", "10.32.0.128/26"), ("", "10.32.0.192/26")]
    assert apiserver.get_obj("ippools", "fast-node-a-10.32.0.0-26", "kube-system", WB) is None
    # The given-back slice is the next one claimed.
    monkeypatch.setenv("NODENAME", "node-d")
    assert add(kc, "pd", "u-pd", extra=sl) == "10.32.0.1"
