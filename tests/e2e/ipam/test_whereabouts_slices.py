"""Node slices on the stores that span nodes: a real 3-member etcd cluster and the Kubernetes API server double.
Nodes are simulated by NODENAME (what whereabouts' fast IPAM reads)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from cni.spec.errors import AddressExhausted, CNIError
from cni.spec.request import Request
from ipam.whereabouts import PLUGIN
from tests.support.etcd import etcd_cluster  # noqa: F401  (fixture)
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def no_host_flat_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))
    monkeypatch.delenv("NODE_NAME", raising=False)


@pytest.fixture(params=["etcd", "kubernetes"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "etcd":
        cluster = request.getfixturevalue("etcd_cluster")
        return {"datastore": "etcd", "endpoints": cluster.endpoints, "etcd_prefix": f"/s-{uuid.uuid4().hex[:8]}/"}
    api = request.getfixturevalue("apiserver")
    backend = {"kubernetes": {"kubeconfig": api.kubeconfig_path()}}
    backend["_api"] = api  # type: ignore[assignment]
    return backend


def run(cmd: str, ipam: dict[str, Any], backend: dict[str, Any], pod: str, node: str,
        monkeypatch: pytest.MonkeyPatch, *, name: str = "net", ifname: str = "net1") -> list[str]:
    monkeypatch.setenv("NODENAME", node)
    conf = {"cniVersion": "1.0.0", "name": name, "type": "macvlan",
            "ipam": {"type": "whereabouts", **ipam, **{k: v for k, v in backend.items() if k != "_api"}}}
    req = Request(command=cmd, container_id=f"cid-{pod}", netns="/var/run/netns/x", ifname=ifname,
                  cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod}, config=conf)
    res = PLUGIN.run(req)
    return [str(i.address.ip) for i in res.ips] if res is not None else []


def test_each_node_allocates_in_its_own_slice_and_claims_another_when_full(
        backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ipam = {"range": "10.20.0.0/28", "node_slice_size": "/30", "network_name": "fast"}
    a = [run("ADD", ipam, backend, f"a{i}", "node-a", monkeypatch)[0] for i in range(3)]
    b = run("ADD", ipam, backend, "b0", "node-b", monkeypatch)[0]
    assert a == ["10.20.0.1", "10.20.0.2", "10.20.0.3"]  # slice 0 without the range's network address
    assert b == "10.20.0.4"  # node-b's slice 10.20.0.4/30: its first address is an ordinary one
    # node-a's slice is full: it claims the next free slice, not node-b's.
    assert run("ADD", ipam, backend, "a3", "node-a", monkeypatch) == ["10.20.0.8"]
    # Idempotent re-ADD across the node's slices, then DEL frees and the lowest address comes back.
    assert run("ADD", ipam, backend, "a0", "node-a", monkeypatch) == ["10.20.0.1"]
    run("CHECK", ipam, backend, "a3", "node-a", monkeypatch)
    run("DEL", ipam, backend, "a1", "node-a", monkeypatch)
    assert run("ADD", ipam, backend, "a4", "node-a", monkeypatch) == ["10.20.0.2"]
    # Slices 0, 1 and 2 are held; node-c gets 3, node-d finds none left once c's is full.
    assert run("ADD", ipam, backend, "c0", "node-c", monkeypatch) == ["10.20.0.12"]
    for i in range(1, 3):
        run("ADD", ipam, backend, f"c{i}", "node-c", monkeypatch)
    with pytest.raises(AddressExhausted, match="slice"):
        run("ADD", ipam, backend, "c3", "node-c", monkeypatch)
    with pytest.raises(AddressExhausted):
        run("ADD", ipam, backend, "d0", "node-d", monkeypatch)


def test_exclude_range_bounds_and_ipv6_hold_inside_slices(backend: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ipam = {"range": "10.30.0.0/16", "range_start": "10.30.0.200", "range_end": "10.30.3.10",
            "exclude": ["10.30.1.0/24"], "node_slice_size": "24", "network_name": "ex"}
    assert run("ADD", ipam, backend, "p0", "n1", monkeypatch) == ["10.30.0.200"]
    assert run("ADD", ipam, backend, "p1", "n2", monkeypatch) == ["10.30.2.0"]  # slice 1 is all excluded
    assert run("ADD", ipam, backend, "p2", "n3", monkeypatch) == ["10.30.3.0"]
    with pytest.raises(AddressExhausted):  # slice 3 ends at range_end; nothing past it is usable
        run("ADD", ipam, backend, "p3", "n4", monkeypatch)
    v6 = {"range": "fd00:1::/64", "node_slice_size": "/120", "network_name": "six", "exclude": ["fd00:1::/126"]}
    assert run("ADD", v6, backend, "p0", "n1", monkeypatch) == ["fd00:1::4"]
    assert run("ADD", v6, backend, "p1", "n2", monkeypatch) == ["fd00:1::100"]


def test_overlapping_reservations_keep_a_sliced_and_a_plain_network_apart(
        backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    sliced = {"range": "10.40.0.0/24", "node_slice_size": "/26"}  # NodeSlicePool named by the network: "net"
    plain = {"range": "10.40.0.0/24"}
    got = {run("ADD", sliced, backend, "s0", "n1", monkeypatch)[0],
           run("ADD", plain, backend, "p0", "n1", monkeypatch, name="other")[0],
           run("ADD", sliced, backend, "s1", "n1", monkeypatch)[0]}
    assert got == {"10.40.0.1", "10.40.0.2", "10.40.0.3"}
    # Same CIDR, two network_names: independent, both start at the bottom of their slices.
    assert run("ADD", {**sliced, "network_name": "x"}, backend, "x0", "n1", monkeypatch) == ["10.40.0.1"]
    assert run("ADD", {**sliced, "network_name": "y"}, backend, "y0", "n1", monkeypatch) == ["10.40.0.1"]


def test_wire_objects_are_whereabouts_fast_ipam_ones(apiserver: Any,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    ipam = {"range": "10.50.0.0/16", "node_slice_size": "/24", "network_name": "fast-net"}
    run("ADD", ipam, backend, "p0", "node-a", monkeypatch)
    run("ADD", ipam, backend, "p1", "node-b", monkeypatch)
    nsp = apiserver.get_obj("nodeslicepools", "fast-net", "kube-system", "whereabouts.cni.cncf.io/v1alpha1")
    assert nsp["spec"] == {"range": "10.50.0.0/16", "sliceSize": "/24"}
    allocs = nsp["status"]["allocations"]
    assert allocs[:2] == [{"nodeName": "node-a", "sliceRange": "10.50.0.0/24"},
                          {"nodeName": "node-b", "sliceRange": "10.50.1.0/24"}]
    assert len(allocs) == 2  # 256 slices: listed lazily (MAX_LISTED)
    pool = apiserver.get_obj("ippools", "fast-net-node-b-10.50.1.0-24", "kube-system",
                             "whereabouts.cni.cncf.io/v1alpha1")
    assert pool["spec"]["range"] == "10.50.1.0/24"
    assert pool["spec"]["allocations"]["0"].pop("allocatedat").isdigit()  # ours; whereabouts ignores it
    assert pool["spec"]["allocations"] == {"0": {"id": "cid-p1", "podref": "default/p1", "ifname": "net1"}}
    run("DEL", ipam, backend, "p1", "node-b", monkeypatch)
    pool = apiserver.get_obj("ippools", "fast-net-node-b-10.50.1.0-24", "kube-system",
                             "whereabouts.cni.cncf.io/v1alpha1")
    assert pool["spec"]["allocations"] == {}
    assert apiserver.get_obj("overlappingrangeipreservations", "fast-net-10.50.1.0", "kube-system",
                             "whereabouts.cni.cncf.io/v1alpha1") is None


@pytest.mark.parametrize(("ipam", "field"), [
    ({"range": "10.0.0.0/16", "node_slice_size": "/16"}, "ipam.node_slice_size"),
    ({"range": "10.0.0.0/16", "node_slice_size": "big"}, "ipam.node_slice_size"),
    ({"range": "10.0.0.0/16", "node_slice_size": "/24", "ipRanges": [{"range": "fd00::/64"}]},
     "ipam.node_slice_size"),
    ({"range": "10.0.0.0/16", "node_slice_size": "/24", "network_name": "Bad_Name"}, "ipam.network_name"),
])
def test_bad_slice_config_is_error_7_naming_the_field(ipam: dict[str, Any], field: str, apiserver: Any,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    with pytest.raises(CNIError) as e:
        run("ADD", ipam, backend, "p", "n1", monkeypatch)
    assert e.value.code == 7 and field in e.value.msg
    assert apiserver.objects("ippools", "whereabouts.cni.cncf.io/v1alpha1") == []
    assert apiserver.objects("nodeslicepools", "whereabouts.cni.cncf.io/v1alpha1") == []


def test_the_file_store_ignores_slicing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = {"datastore": "file", "data_dir": str(tmp_path / "wb")}
    ipam = {"range": "10.60.0.0/16", "node_slice_size": "/24"}
    assert run("ADD", ipam, backend, "p0", "n1", monkeypatch) == ["10.60.0.1"]
    assert run("ADD", ipam, backend, "p1", "n2", monkeypatch) == ["10.60.0.2"]
    assert sorted(p.name for p in (tmp_path / "wb" / "ippools").glob("*.json")) == ["10.60.0.0-16.json"]


def test_a_different_slice_size_for_the_same_pool_is_refused(apiserver: Any,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    run("ADD", {"range": "10.70.0.0/16", "node_slice_size": "/24", "network_name": "n"}, backend, "p0", "a",
        monkeypatch)
    with pytest.raises(CNIError) as e:
        run("ADD", {"range": "10.70.0.0/16", "node_slice_size": "/26", "network_name": "n"}, backend, "p1", "a",
            monkeypatch)
    assert e.value.code == 7 and "NodeSlicePool n" in e.value.msg
