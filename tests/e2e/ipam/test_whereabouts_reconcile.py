"""``multinic reconcile`` against the API server double: frees exactly the stale allocations, and does not race
with ADDs that happen while it runs (whereabouts #162/#207/#176)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cni.k8s.client import Client, core_path
from cni.spec.request import Request
from conformance.apiserver import ApiServerDouble
from ipam import reconcile
from ipam.whereabouts import PLUGIN
from ipam.whereabouts.store import Reservation
from ipam.whereabouts.store_k8s import K8sStore
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

OLD = "2020-01-01T00:00:00Z"


@pytest.fixture(autouse=True)
def no_host_flat_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))


def add(kc: str, pod: str, cid: str | None = None, rng: str = "10.30.0.0/24") -> str:
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": rng, "kubernetes": {"kubeconfig": kc}}}
    res = PLUGIN.run(Request(command="ADD", container_id=cid or f"cid-{pod}", netns="/x", ifname="net1",
                             cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod}, config=conf))
    assert res is not None
    return str(res.ips[0].address.ip)


def seed_pod(api: ApiServerDouble, name: str, phase: str = "Running", ips: list[str] | None = None,
             created: str = OLD) -> None:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "creationTimestamp": created}
    if ips is not None:
        meta["annotations"] = {reconcile.NETWORK_STATUS: json.dumps(
            [{"name": "default/net", "interface": "net1", "ips": ips}])}
    api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []},
              "status": {"phase": phase}})


def make(api: ApiServerDouble, **kw: Any) -> tuple[reconcile.Reconciler, K8sStore, Client]:
    client = Client.from_kubeconfig(api.kubeconfig_path())
    store = K8sStore(client, "kube-system")
    rec = reconcile.Reconciler(store, lambda: client.list(core_path("pods"))["items"], grace=kw.pop("grace", 0.0),
                               **kw)
    return rec, store, client


def allocated(store: K8sStore) -> dict[str, str]:
    (pool,) = store.list_pools()
    return {f"10.30.0.{off}": a.podref for off, a in pool.allocations.items()}


def test_frees_exactly_the_stale_allocations_and_orphan_reservations(apiserver: ApiServerDouble) -> None:  # noqa: F811
    api = apiserver
    kc = api.kubeconfig_path()
    ips = {p: add(kc, p) for p in ("alive", "gone", "moved", "pending", "young", "done", "nostatus")}
    seed_pod(api, "alive", ips=[ips["alive"]])
    seed_pod(api, "moved", ips=["10.99.0.1"])  # sandbox re-created elsewhere: this IP is not used
    seed_pod(api, "pending", phase="Pending")
    seed_pod(api, "young", ips=["10.99.0.2"], created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    seed_pod(api, "done", phase="Succeeded", ips=[ips["done"]])
    seed_pod(api, "nostatus")  # running, ADD may still be in flight
    rec, store, _ = make(api, grace=30.0, sleep=lambda s: None)
    store.reserve(Reservation("10.30.0.77", "cid-ghost", "default/ghost", "net1"))  # crashed ADD, pod gone
    store.reserve(Reservation("10.30.0.78", "cid-alive2", "default/alive", "net2"))  # crashed ADD, pod alive

    report = rec.run_once()

    assert sorted(p for _, _, p in report.freed) == ["default/done", "default/gone", "default/moved"]
    assert sorted(allocated(store).values()) == ["default/alive", "default/nostatus", "default/pending",
                                                 "default/young"]
    assert sorted(n for n, _ in report.freed_reservations) == ["10.30.0.77", "10.30.0.78"]
    # Every remaining pool entry still has its reservation, and nothing else is left.
    assert sorted(r.name for r in store.list_reservations()) == sorted(allocated(store))


def test_pod_recreated_during_the_grace_period_keeps_its_ip(apiserver: ApiServerDouble) -> None:  # noqa: F811
    api = apiserver
    kc = api.kubeconfig_path()
    ip = add(kc, "sts-0")
    add(kc, "gone")

    def during_grace(_: float) -> None:
        # The StatefulSet pod comes back with the same name; its new sandbox re-ADDs and keeps the IP.
        seed_pod(api, "sts-0")
        assert add(kc, "sts-0", cid="new-sandbox") == ip
        api.inject_conflicts(1)  # and some other writer touches the pool right before our write

    rec, store, _ = make(api, grace=5.0, sleep=during_grace)
    report = rec.run_once()
    assert [p for _, _, p in report.freed] == ["default/gone"]
    assert report.conflicts == 1
    assert allocated(store) == {ip: "default/sts-0"}
    assert [r.name for r in store.list_reservations()] == [ip]


def test_dry_run_changes_nothing(apiserver: ApiServerDouble) -> None:  # noqa: F811
    kc = apiserver.kubeconfig_path()
    add(kc, "gone")
    rec, store, _ = make(apiserver, dry_run=True, sleep=lambda s: None)
    assert [p for _, _, p in rec.run_once().freed] == ["default/gone"]
    assert allocated(store) == {"10.30.0.1": "default/gone"}


def test_cli_subcommand(apiserver: ApiServerDouble, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    kc = apiserver.kubeconfig_path()
    add(kc, "gone")
    from cni.main import main

    assert main(["multinic", "reconcile", "--kubeconfig", kc, "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert "freed 1 allocation(s)" in out and "10.30.0.1 (default/gone)" in out
    rec, store, _ = make(apiserver)
    assert store.list_pools()[0].allocations == {}
    assert main(["multinic", "reconcile", "--bogus"]) == 2
