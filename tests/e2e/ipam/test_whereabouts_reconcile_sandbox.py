"""``multinic reconcile``'s sandbox rule (issue #17): an entry of a live pod whose container ID is not the pod's
current sandbox is freed only with proof — the pod's ``multinic.io/sandbox`` record (written by multinic's
delegator with network-status, here through the same ``ApiSource`` call) names another container whose ADD started
after the entry was written, and the record has stood for the grace period. Against the API server double (pods,
and the Kubernetes store) and a real 3-member etcd (the etcd store)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cni.k8s.client import Client, core_path
from cni.k8s.network_status import SANDBOX, parse_sandbox_record, sandbox_record
from cni.k8s.source import ApiSource
from cni.spec.request import Request
from conformance.apiserver import ApiServerDouble
from ipam import reconcile
from ipam.whereabouts import PLUGIN
from ipam.whereabouts.allocator import Allocation
from ipam.whereabouts.config import EtcdConf
from ipam.whereabouts.store_etcd import EtcdStore
from ipam.whereabouts.store_k8s import K8sStore
from tests.support.etcd import EtcdCluster, etcd_cluster  # noqa: F401  (fixture)
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

OLD = "2020-01-01T00:00:00Z"
NET_A = "10.41.0.0/24"  # the old sandbox's network
NET_B = "10.42.0.0/24"  # the network the pod has now (its NAD changed before the sandbox was re-created)


@pytest.fixture(autouse=True)
def no_host_flat_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))
    monkeypatch.delenv("NODE_NAME", raising=False)


def add(backend: dict[str, Any], rng: str, cid: str, pod: str = "web", uid: str = "u-web") -> str:
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": rng, **backend}}
    res = PLUGIN.run(Request(command="ADD", container_id=cid, netns="/x", ifname="net1",
                             cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod, "K8S_POD_UID": uid},
                             config=conf))
    assert res is not None
    return str(res.ips[0].address.ip)


def seed_pod(api: ApiServerDouble, name: str = "web", uid: str = "u-web") -> None:
    api.seed({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": name, "namespace": "default", "uid": uid, "creationTimestamp": OLD},
              "spec": {"containers": []}, "status": {"phase": "Running"}})


def write_status(api: ApiServerDouble, cid: str, started: float, ips: list[str], name: str = "web") -> None:
    """What the delegator's write_status does at the end of sandbox ``cid``'s ADD: network-status and the
    sandbox record in one pods/status update."""
    src = ApiSource(Client.from_kubeconfig(api.kubeconfig_path()))
    value = json.dumps([{"name": "default/net", "interface": "net1", "ips": ips}])
    assert src.set_network_status("default", name, value, sandbox=sandbox_record(cid, started, time.time()))


def entries(store: Any) -> dict[str, str]:
    """container ID → pool of every entry."""
    return {a.container_id: p.name for p in store.list_pools() for a in p.allocations.values()}


def reconciler(api: ApiServerDouble, store: Any, *, grace: float, later: float,
               sleep: Callable[[float], None] = lambda s: None, dry_run: bool = False) -> reconcile.Reconciler:
    """A reconciler whose clock runs ``later`` seconds ahead (the record's age is what the grace rule reads)."""
    client = Client.from_kubeconfig(api.kubeconfig_path())
    return reconcile.Reconciler(store, lambda: client.list(core_path("pods"))["items"], grace=grace,
                                sleep=sleep, clock=lambda: time.time() + later, dry_run=dry_run)


def recreate(api: ApiServerDouble, backend: dict[str, Any]) -> tuple[str, str]:
    """Sandbox c-old ADDs on NET_A; it is replaced (no DEL: the runtime crashed) by c-new, whose ADD starts
    afterwards on NET_B and writes the status. The old and the new address."""
    seed_pod(api)
    old = add(backend, NET_A, "c-old")
    time.sleep(0.01)
    started = time.time()
    new = add(backend, NET_B, "c-new")
    write_status(api, "c-new", started, [new])
    return old, new


def test_a_replaced_sandboxs_allocation_is_freed_the_current_one_never(apiserver: ApiServerDouble) -> None:  # noqa: F811
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    old, new = recreate(apiserver, backend)
    store = K8sStore(Client.from_kubeconfig(apiserver.kubeconfig_path()), "kube-system")
    # A record younger than the grace period decides nothing (a replaced sandbox's late ADD may have written it).
    assert reconciler(apiserver, store, grace=30, later=0).run_once().freed == []
    report = reconciler(apiserver, store, grace=30, later=60).run_once()
    assert [(ip, pod) for _, ip, pod in report.freed] == [(old, "default/web")]
    assert "sandbox c-old was replaced by c-new" in next(iter(report.why.values()))
    assert entries(store) == {"c-new": "10.42.0.0-24"}
    # Run again: the current sandbox's entry is never judged stale.
    assert reconciler(apiserver, store, grace=30, later=3600).run_once().freed == []
    assert apiserver.get_obj("overlappingrangeipreservations", old, "kube-system",
                             "whereabouts.cni.cncf.io/v1alpha1") is None


def test_a_new_sandbox_whose_status_write_failed_keeps_its_address(apiserver: ApiServerDouble) -> None:  # noqa: F811
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    seed_pod(apiserver)
    started = time.time()
    old = add(backend, NET_A, "c-old")
    write_status(apiserver, "c-old", started, [old])
    time.sleep(0.01)
    add(backend, NET_B, "c-new")  # ... and its network-status write failed: the record still names c-old
    store = K8sStore(Client.from_kubeconfig(apiserver.kubeconfig_path()), "kube-system")
    report = reconciler(apiserver, store, grace=1, later=3600).run_once()
    assert report.freed == []  # c-new's entry is younger than the record: no proof it was replaced
    assert set(entries(store)) == {"c-old", "c-new"}


def test_no_record_or_no_entry_time_frees_nothing(apiserver: ApiServerDouble) -> None:  # noqa: F811
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    seed_pod(apiserver)
    add(backend, NET_A, "c-old")
    add(backend, NET_B, "c-new")  # no record at all (status never written): never judged by sandbox
    store = K8sStore(Client.from_kubeconfig(apiserver.kubeconfig_path()), "kube-system")
    assert reconciler(apiserver, store, grace=1, later=3600).run_once().freed == []
    # An entry written by whereabouts (no allocatedat) is kept even when the record names another sandbox.
    (pool,) = [p for p in store.list_pools() if p.name == "10.41.0.0-24"]
    ((off, a),) = pool.allocations.items()
    store.write_pool(pool, {off: Allocation(a.container_id, a.podref, a.ifname, a.pod_uid)})
    write_status(apiserver, "c-new", time.time(), [])
    assert reconciler(apiserver, store, grace=1, later=3600).run_once().freed == []


def test_dry_run_says_the_sandbox_was_replaced(apiserver: ApiServerDouble,  # noqa: F811
                                              capsys: pytest.CaptureFixture[str]) -> None:
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    old, _ = recreate(apiserver, backend)
    assert reconcile.main(["--kubeconfig", apiserver.kubeconfig_path(), "--grace", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would free 1 allocation(s)" in out
    assert f"{old} (default/web): sandbox c-old was replaced by c-new" in out
    store = K8sStore(Client.from_kubeconfig(apiserver.kubeconfig_path()), "kube-system")
    assert set(entries(store)) == {"c-old", "c-new"}  # dry run: nothing changed


def test_the_rule_holds_on_etcd(apiserver: ApiServerDouble, etcd_cluster: EtcdCluster) -> None:  # noqa: F811
    prefix = f"/sandbox-{uuid.uuid4().hex[:6]}/"
    backend = {"datastore": "etcd", "endpoints": etcd_cluster.endpoints, "etcd_prefix": prefix}
    old, new = recreate(apiserver, backend)
    store = EtcdStore(EtcdConf(endpoints=tuple(etcd_cluster.endpoints), prefix=prefix))
    try:
        # The sandbox is replaced again during the grace period: c-old was stale in both phases and goes; c-new
        # only looks stale in the second one, so it stays (both phases must agree).
        def replaced_again(_: float) -> None:
            write_status(apiserver, "c-newer", time.time(), [])

        report = reconciler(apiserver, store, grace=30, later=60, sleep=replaced_again).run_once()
        assert [ip for _, ip, _ in report.freed] == [old]
        assert entries(store) == {"c-new": "10.42.0.0-24"}
        assert [r.name for r in store.list_reservations()] == [new]
        # An address the current network-status lists is in use, whatever container its entry names.
        write_status(apiserver, "c-newer", time.time(), [new])
        assert reconciler(apiserver, store, grace=30, later=60).run_once().freed == []
        write_status(apiserver, "c-newer", time.time(), [])
        assert [ip for _, ip, _ in reconciler(apiserver, store, grace=30, later=60).run_once().freed] == [new]
        assert entries(store) == {} and store.list_reservations() == []
    finally:
        store.close()


def test_a_late_del_of_the_replaced_sandbox_leaves_the_new_status(apiserver: ApiServerDouble) -> None:  # noqa: F811
    seed_pod(apiserver)
    write_status(apiserver, "c-new", time.time(), ["10.42.0.1"])
    src = ApiSource(Client.from_kubeconfig(apiserver.kubeconfig_path()))
    assert not src.clear_network_status("default", "web", "u-web", "c-old")
    anns = apiserver.get_obj("pods", "web", "default", "v1")["metadata"]["annotations"]
    rec = parse_sandbox_record(anns[SANDBOX])
    assert rec is not None and rec[0] == "c-new" and "10.42.0.1" in anns[reconcile.NETWORK_STATUS]
    assert src.clear_network_status("default", "web", "u-web", "c-new")
    anns = apiserver.get_obj("pods", "web", "default", "v1")["metadata"].get("annotations") or {}
    assert SANDBOX not in anns and reconcile.NETWORK_STATUS not in anns
