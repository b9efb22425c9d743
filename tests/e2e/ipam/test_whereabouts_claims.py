"""Persistent IPs through IPAMClaims (multi-net spec v1.3 ``ipam-claim-reference``), against the API server double:
the claim's address comes back to a re-created pod on any node, survives DEL, and is freed only with the claim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cni.k8s.client import Client, core_path
from cni.spec.errors import CNIError
from cni.spec.request import Request
from conformance.apiserver import ApiServerDouble
from ipam import reconcile
from ipam.whereabouts import PLUGIN
from ipam.whereabouts.store_k8s import K8sStore
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

WB = "whereabouts.cni.cncf.io/v1alpha1"
CLAIMS = "k8s.cni.cncf.io/v1alpha1"


@pytest.fixture(autouse=True)
def no_host_flat_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))
    monkeypatch.delenv("NODE_NAME", raising=False)


def seed_claim(api: ApiServerDouble, name: str, network: str = "net") -> None:
    api.seed({"apiVersion": CLAIMS, "kind": "IPAMClaim", "metadata": {"name": name, "namespace": "default"},
              "spec": {"network": network, "interface": "net1"}}, plural="ipamclaims")


def seed_pod(api: ApiServerDouble, name: str, uid: str, networks: Any) -> None:
    api.seed({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": name, "namespace": "default", "uid": uid, "creationTimestamp": "2020-01-01T00:00:00Z",
                           "annotations": {"k8s.v1.cni.cncf.io/networks": json.dumps(networks)}},
              "spec": {"containers": []}, "status": {"phase": "Running"}})


def run(cmd: str, api: ApiServerDouble, pod: str, uid: str, extra: dict[str, Any] | None = None) -> list[str]:
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "allowPersistentIPs": True,
            "ipam": {"type": "whereabouts", "range": "10.33.0.0/24",
                     "kubernetes": {"kubeconfig": api.kubeconfig_path()}, **(extra or {})}}
    res = PLUGIN.run(Request(command=cmd, container_id=f"cid-{pod}", netns="/x", ifname="net1",
                             cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod, "K8S_POD_UID": uid},
                             config=conf))
    return [str(i.address) for i in res.ips] if res is not None else []


CLAIMED = [{"name": "net", "interface": "net1", "ipam-claim-reference": "vm-a"}]


def test_a_claims_address_survives_del_and_returns_to_the_re_created_pod(apiserver: ApiServerDouble) -> None:  # noqa: F811
    seed_claim(apiserver, "vm-a")
    seed_pod(apiserver, "virt-launcher-1", "u1", CLAIMED)
    seed_pod(apiserver, "other", "u-o", [{"name": "net"}])
    assert run("ADD", apiserver, "virt-launcher-1", "u1") == ["10.33.0.1/24"]
    claim = apiserver.get_obj("ipamclaims", "vm-a", "default", CLAIMS)
    assert claim is not None and claim["status"]["ips"] == ["10.33.0.1/24"]
    run("DEL", apiserver, "virt-launcher-1", "u1")
    apiserver.delete_obj("pods", "virt-launcher-1", "default")
    # Freed addresses would be reused lowest-first: the claim's is not free.
    assert run("ADD", apiserver, "other", "u-o") == ["10.33.0.2/24"]
    seed_pod(apiserver, "virt-launcher-2", "u2", CLAIMED)
    assert run("ADD", apiserver, "virt-launcher-2", "u2") == ["10.33.0.1/24"]
    (pool,) = apiserver.objects("ippools", WB)
    assert pool["spec"]["allocations"]["1"].pop("allocatedat").isdigit()
    assert pool["spec"]["allocations"]["1"] == {"id": "cid-virt-launcher-2", "podref": "default/virt-launcher-2",
                                                "ifname": "net1", "poduid": "u2", "ipamclaimref": "default/vm-a"}
    res = apiserver.get_obj("overlappingrangeipreservations", "10.33.0.1", "kube-system", WB)
    assert res is not None and res["spec"]["podref"] == "default/virt-launcher-2"

    # The reconciler keeps it while the claim exists (its first pod is gone), frees it with the claim.
    client = Client.from_kubeconfig(apiserver.kubeconfig_path())
    store = K8sStore(client, "kube-system")
    apiserver.delete_obj("pods", "virt-launcher-2", "default")

    def claims() -> set[str]:
        return {f"default/{c['metadata']['name']}" for c in apiserver.objects("ipamclaims", CLAIMS)}

    rec = reconcile.Reconciler(store, lambda: client.list(core_path("pods"))["items"], grace=0,
                               sleep=lambda s: None, list_claims=claims)
    assert rec.run_once().freed == []
    apiserver.delete_obj("ipamclaims", "vm-a", "default", CLAIMS)
    report = rec.run_once()
    assert [ip for _, ip, _ in report.freed] == ["10.33.0.1"]
    assert "IPAMClaim default/vm-a is gone" in report.why[("10.33.0.0-24", "10.33.0.1")]


def test_a_claims_address_follows_the_pod_to_another_node_with_slices(apiserver: ApiServerDouble,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sl = {"node_slice_size": "/26", "network_name": "fast"}
    seed_claim(apiserver, "vm-a")
    seed_pod(apiserver, "vm-1", "u1", CLAIMED)
    monkeypatch.setenv("NODENAME", "node-a")
    assert run("ADD", apiserver, "vm-1", "u1", sl) == ["10.33.0.1/24"]
    run("DEL", apiserver, "vm-1", "u1", sl)
    monkeypatch.setenv("NODENAME", "node-b")
    seed_pod(apiserver, "vm-2", "u2", CLAIMED)
    assert run("ADD", apiserver, "vm-2", "u2", sl) == ["10.33.0.1/24"]
    seed_pod(apiserver, "plain", "u3", [{"name": "net"}])
    assert run("ADD", apiserver, "plain", "u3", sl) == ["10.33.0.64/24"]  # node-b's own slice
    # vm-2's DEL on node-b: its entry is in node-a's slice; the claim's reservation must survive the sweep.
    run("DEL", apiserver, "vm-2", "u2", sl)
    res = apiserver.get_obj("overlappingrangeipreservations", "fast-10.33.0.1", "kube-system", WB)
    assert res is not None and res["spec"]["podref"] == "default/vm-2"
    entry = apiserver.get_obj("ippools", "fast-node-a-10.33.0.0-26", "kube-system", WB)
    assert entry is not None and entry["spec"]["allocations"]["1"]["ipamclaimref"] == "default/vm-a"


def test_missing_or_foreign_claims_fail_cleanly(apiserver: ApiServerDouble) -> None:  # noqa: F811
    seed_pod(apiserver, "p", "u1", CLAIMED)
    with pytest.raises(CNIError) as e:
        run("ADD", apiserver, "p", "u1")
    assert e.value.code == 11 and "IPAMClaim default/vm-a" in e.value.msg
    seed_claim(apiserver, "vm-a", network="elsewhere")
    with pytest.raises(CNIError) as e:
        run("ADD", apiserver, "p", "u1")
    assert e.value.code == 7 and "not 'net'" in e.value.msg
    assert all(not p["spec"]["allocations"] for p in apiserver.objects("ippools", WB))
    assert apiserver.objects("overlappingrangeipreservations", WB) == []


def test_claims_are_ignored_without_allow_persistent_ips(apiserver: ApiServerDouble) -> None:  # noqa: F811
    seed_claim(apiserver, "vm-a")
    seed_pod(apiserver, "p", "u1", CLAIMED)
    before = len(apiserver.requests_for("GET", "/api/v1/namespaces/default/pods"))
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": "10.33.0.0/24",
                     "kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}}
    PLUGIN.run(Request(command="ADD", container_id="cid-p", netns="/x", ifname="net1",
                       cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p", "K8S_POD_UID": "u1"},
                       config=conf))
    assert len(apiserver.requests_for("GET", "/api/v1/namespaces/default/pods")) == before
    claim = apiserver.get_obj("ipamclaims", "vm-a", "default", CLAIMS)
    assert claim is not None and "status" not in claim
    with pytest.raises(CNIError) as e:
        PLUGIN.run(Request(command="ADD", container_id="cid-q", netns="/x", ifname="net1",
                           cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "q"},
                           config={**conf, "allowPersistentIPs": "yes"}))
    assert e.value.code == 7 and "allowPersistentIPs" in e.value.msg


def test_a_pod_with_another_uid_is_not_ours_and_static_ips_keep_working(apiserver: ApiServerDouble) -> None:  # noqa: F811
    seed_claim(apiserver, "vm-a")
    seed_pod(apiserver, "p", "u-new", CLAIMED)
    assert run("ADD", apiserver, "p", "u-old") == ["10.33.0.1/24"]
    claim = apiserver.get_obj("ipamclaims", "vm-a", "default", CLAIMS)
    assert claim is not None and "status" not in claim
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": "10.33.0.0/24",
                     "kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}}
    res = PLUGIN.run(Request(command="ADD", container_id="cid-s", netns="/x", ifname="net1",
                             cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "s", "IP": "10.9.9.9/24"},
                             config=conf))
    assert res is not None and "10.9.9.9/24" in [str(i.address) for i in res.ips]
