"""whereabouts black-box cases (upstream behaviour: https://github.com/k8snetworkplumbingwg/whereabouts) and concurrency, for every store: the local file store, a
real 3-member etcd cluster, and the Kubernetes API server double (HTTPS, real wire protocol)."""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from cni.spec.errors import AddressExhausted, CNIError
from cni.spec.request import Request
from cni.spec.result import Result
from ipam.whereabouts import PLUGIN
from ipam.whereabouts import config as wconfig
from ipam.whereabouts.allocator import Allocation
from ipam.whereabouts.manager import open_store
from tests.support.etcd import etcd_cluster  # noqa: F401  (fixture)
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

STORES = ["file", "etcd", "kubernetes"]


@pytest.fixture(autouse=True)
def no_host_flat_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))


@pytest.fixture(params=STORES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ipam keys that select a fresh, empty store of the parametrised kind."""
    if request.param == "etcd":
        cluster = request.getfixturevalue("etcd_cluster")
        return {"datastore": "etcd", "endpoints": cluster.endpoints, "etcd_prefix": f"/t-{uuid.uuid4().hex[:8]}/"}
    if request.param == "kubernetes":
        api = request.getfixturevalue("apiserver")
        return {"kubernetes": {"kubeconfig": api.kubeconfig_path()}}  # datastore defaults to kubernetes
    return {"datastore": "file", "data_dir": str(tmp_path / "wb")}


def conf_of(ipam: dict[str, Any], backend: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {"type": "whereabouts", **ipam, **backend}}


def run(cmd: str, ipam: dict[str, Any], backend: dict[str, Any], pod: str, *, cid: str | None = None,
        ifname: str = "net1", prev: Result | None = None) -> Result | None:
    conf = conf_of(ipam, backend)
    if prev is not None:
        from cni.spec.result import to_wire

        conf["prevResult"] = to_wire(prev, "1.0.0")
    req = Request(command=cmd, container_id=cid or f"cid-{pod}", netns="/var/run/netns/x", ifname=ifname,
                  cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod}, path=("/usr/lib/cni",),
                  config=conf)
    return PLUGIN.run(req)


def add_ips(ipam: dict[str, Any], backend: dict[str, Any], pod: str, **kw: Any) -> list[str]:
    res = run("ADD", ipam, backend, pod, **kw)
    assert res is not None
    return [str(ip.address) for ip in res.ips]


def store_of(ipam: dict[str, Any], backend: dict[str, Any]) -> Any:
    req = Request(command="ADD", container_id="x", ifname="net1", config=conf_of(ipam, backend))
    return open_store(wconfig.parse(req))


# ---- black-box cases ---------------------------------------------------------------------------------------------


def test_first_ip_and_add_del_add_gives_the_same_ip(backend: dict[str, Any]) -> None:
    ipam = {"range": "192.168.1.0/24", "gateway": "192.168.1.254"}
    res = run("ADD", ipam, backend, "p1")
    assert res is not None and [str(i.address) for i in res.ips] == ["192.168.1.1/24"]
    assert str(res.ips[0].gateway) == "192.168.1.254"
    run("DEL", ipam, backend, "p1")
    assert add_ips(ipam, backend, "p1") == ["192.168.1.1/24"]


def test_start_end_range_form_allocates_in_order(backend: dict[str, Any]) -> None:
    ipam = {"range": "192.168.1.11-192.168.1.23/24"}
    assert [add_ips(ipam, backend, f"p{i}")[0] for i in range(3)] == \
        ["192.168.1.11/24", "192.168.1.12/24", "192.168.1.13/24"]


def test_range_start_end_gives_exactly_eight_then_exhaustion(backend: dict[str, Any]) -> None:
    ipam = {"range": "192.168.1.0/24", "range_start": "192.168.1.5", "range_end": "192.168.1.12"}
    got = [add_ips(ipam, backend, f"p{i}")[0] for i in range(8)]
    assert got == [f"192.168.1.{i}/24" for i in range(5, 13)]
    with pytest.raises(AddressExhausted) as ei:
        run("ADD", ipam, backend, "p9")
    assert "Could not allocate IP in range" in ei.value.msg and "192.168.1.0/24" in ei.value.msg
    # A failed ADD leaves no reservation behind.
    assert len(store_of(ipam, backend).list_reservations()) == 8


def test_excluded_subnets(backend: dict[str, Any]) -> None:
    ipam = {"range": "192.168.1.0/24", "exclude": ["192.168.1.0/28", "192.168.1.16/28"]}
    assert add_ips(ipam, backend, "p") == ["192.168.1.32/24"]


def test_v6_excluded_addresses(backend: dict[str, Any]) -> None:
    ipam = {"range": "2001::1/116", "exclude": ["2001::0/128", "2001::1/128", "2001::2/128"]}
    assert add_ips(ipam, backend, "p") == ["2001::3/116"]


def test_v6_excluded_half(backend: dict[str, Any]) -> None:
    assert add_ips({"range": "caa5::0/112", "exclude": ["caa5::0/113"]}, backend, "p") == ["caa5::8000/112"]


def test_dual_stack_ip_ranges_in_order_with_per_family_gateways(backend: dict[str, Any]) -> None:
    ipam = {"ipRanges": [{"range": "10.10.0.0/16"}, {"range": "abcd::/64"}], "gateway": "10.10.0.254"}
    res = run("ADD", ipam, backend, "p")
    assert res is not None
    assert [str(i.address) for i in res.ips] == ["10.10.0.1/16", "abcd::1/64"]
    assert [str(i.gateway) if i.gateway else None for i in res.ips] == ["10.10.0.254", None]


def test_overlapping_ranges_share_addresses_unless_disabled(backend: dict[str, Any]) -> None:
    assert add_ips({"range": "192.168.22.0/24"}, backend, "a") == ["192.168.22.1/24"]
    assert add_ips({"range": "192.168.22.0/28"}, backend, "b") == ["192.168.22.2/28"]
    off = {"enable_overlapping_ranges": False}
    assert add_ips({"range": "192.168.33.0/24", **off}, backend, "c") == ["192.168.33.1/24"]
    assert add_ips({"range": "192.168.33.0/28", **off}, backend, "d") == ["192.168.33.1/28"]


def test_network_name_separates_pools_of_the_same_cidr(backend: dict[str, Any]) -> None:
    assert add_ips({"range": "10.40.0.0/24", "network_name": "red"}, backend, "a") == ["10.40.0.1/24"]
    assert add_ips({"range": "10.40.0.0/24", "network_name": "blue"}, backend, "b") == ["10.40.0.1/24"]
    names = sorted(p.name for p in store_of({"range": "10.40.0.0/24"}, backend).list_pools())
    assert names == ["blue-10.40.0.0-24", "red-10.40.0.0-24"]


def test_pool_already_holding_podref_and_ifname_returns_that_ip(backend: dict[str, Any]) -> None:
    ipam = {"range": "10.50.0.0/24"}
    store = store_of(ipam, backend)
    snap = store.read_pool("10.50.0.0-24", "10.50.0.0/24")
    store.write_pool(snap, {7: Allocation("old-sandbox", "default/sticky", "net1")})
    # Re-ADD after a kubelet restart (new container ID, no DEL in between): the held IP comes back.
    assert add_ips(ipam, backend, "sticky", cid="new-sandbox") == ["10.50.0.7/24"]
    # ... and a late DEL of the old sandbox does not free it.
    run("DEL", ipam, backend, "sticky", cid="old-sandbox")
    allocs = store.read_pool("10.50.0.0-24", "10.50.0.0/24").allocations
    assert list(allocs) == [7] and allocs[7].same_holder(Allocation("new-sandbox", "default/sticky", "net1"))
    assert allocs[7].at > 0  # moved to the new sandbox: written now, for the reconciler's sandbox rule


def test_del_unknown_succeeds_check_matches(backend: dict[str, Any]) -> None:
    ipam = {"range": "10.60.0.0/24"}
    run("DEL", ipam, backend, "ghost")  # nothing allocated: success, and no pool created
    assert store_of(ipam, backend).list_pools() == []
    res = run("ADD", ipam, backend, "p")
    assert res is not None
    run("CHECK", ipam, backend, "p", prev=res)
    other = Result(ips=(type(res.ips[0])(address=ipaddress.ip_interface("10.60.0.99/24")),))
    with pytest.raises(CNIError) as ei:
        run("CHECK", ipam, backend, "p", prev=other)
    assert ei.value.code == 3
    run("DEL", ipam, backend, "p")
    run("DEL", ipam, backend, "p")
    with pytest.raises(CNIError) as ei:
        run("CHECK", ipam, backend, "p", prev=res)
    assert ei.value.code == 3


def test_failure_in_a_later_range_releases_the_earlier_ones(backend: dict[str, Any]) -> None:
    full = {"range": "10.70.1.0/30"}  # two usable addresses
    add_ips(full, backend, "x1")
    add_ips(full, backend, "x2")
    ipam = {"ipRanges": [{"range": "10.70.0.0/24"}, {"range": "10.70.1.0/30"}]}
    with pytest.raises(AddressExhausted):
        run("ADD", ipam, backend, "victim")
    store = store_of(ipam, backend)
    assert store.read_pool("10.70.0.0-24", "10.70.0.0/24").allocations == {}
    assert all(r.podref != "default/victim" for r in store.list_reservations())


def test_stored_objects_are_whereabouts_wire_compatible(backend: dict[str, Any], request: pytest.FixtureRequest) -> None:
    ipam = {"range": "fd00:77::/64", "network_name": "net-a"}
    add_ips(ipam, backend, "p", cid="c0ffee")
    store = store_of(ipam, backend)
    (pool,) = store.list_pools()
    raw = pool.raw
    assert raw["apiVersion"] == "whereabouts.cni.cncf.io/v1alpha1" and raw["kind"] == "IPPool"
    assert raw["metadata"]["name"] == "net-a-fd00-77---64"
    # whereabouts' fields as whereabouts writes them, plus our "allocatedat" (Unix ms; Go's decoder ignores it)
    at = raw["spec"]["allocations"]["1"].pop("allocatedat")
    assert at.isdigit() and abs(int(at) / 1000 - time.time()) < 600
    assert raw["spec"] == {"range": "fd00:77::/64",
                           "allocations": {"1": {"id": "c0ffee", "podref": "default/p", "ifname": "net1"}}}
    (res,) = store.list_reservations()
    assert (res.name, res.podref, res.container_id, res.ifname) == ("net-a-fd00-77--1", "default/p", "c0ffee", "net1")
    if backend.get("kubernetes"):
        api = request.getfixturevalue("apiserver")
        obj = api.get_obj("overlappingrangeipreservations", "net-a-fd00-77--1", "kube-system",
                          "whereabouts.cni.cncf.io/v1alpha1")
        assert obj is not None and obj["spec"] == {"containerid": "c0ffee", "podref": "default/p", "ifname": "net1"}


def test_status_reports_an_unusable_store(backend: dict[str, Any]) -> None:
    ipam = {"range": "10.80.0.0/24"}
    conf = conf_of(ipam, backend)
    conf["cniVersion"] = "1.1.0"
    PLUGIN.run(Request(command="STATUS", config=conf))
    broken = dict(conf["ipam"])
    if backend.get("datastore") == "etcd":
        broken["endpoints"] = ["http://127.0.0.1:1"]
    elif backend.get("datastore") == "file":
        broken["data_dir"] = "/proc/multinic-not-writable"
    else:
        broken["kubernetes"] = {"kubeconfig": "/nonexistent/kubeconfig"}
    with pytest.raises(CNIError) as ei:
        PLUGIN.run(Request(command="STATUS", config={**conf, "ipam": broken}))
    assert ei.value.code in (7, 50)


# ---- concurrency -------------------------------------------------------------------------------------------------


def test_fifty_parallel_allocations_get_distinct_ips(backend: dict[str, Any]) -> None:
    ipam = {"range": "10.90.0.0/24"}
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = add_ips(ipam, backend, f"par-{i}")[0]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(results) == 50 and len(set(results.values())) == 50
    assert sorted(results.values(), key=lambda s: ipaddress.ip_interface(s)) == \
        [f"10.90.0.{i}/24" for i in range(1, 51)]  # lowest free: no holes left by conflicts
    store = store_of(ipam, backend)
    pool = store.read_pool("10.90.0.0-24", "10.90.0.0/24")
    assert len(pool.allocations) == 50
    assert {r.podref for r in store.list_reservations()} == {f"default/par-{i}" for i in range(50)}
    # Release everything in parallel too: nothing is left.
    threads = [threading.Thread(target=run, args=("DEL", ipam, backend, f"par-{i}")) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert store.read_pool("10.90.0.0-24", "10.90.0.0/24").allocations == {}
    assert store.list_reservations() == []


def test_file_store_permissions_and_atomic_layout(tmp_path: Path) -> None:
    backend = {"datastore": "file", "data_dir": str(tmp_path / "wb")}
    add_ips({"range": "10.1.0.0/24"}, backend, "p")
    d = tmp_path / "wb"
    assert (d.stat().st_mode & 0o777) == 0o700
    pool = d / "ippools" / "10.1.0.0-24.json"
    assert (pool.stat().st_mode & 0o777) == 0o600
    assert orjson.loads(pool.read_bytes())["spec"]["allocations"]["1"]["podref"] == "default/p"
    assert not [p for p in d.rglob("*.tmp.*")]


@pytest.mark.parametrize("ipam", [{"range": "10.77.0.0/24"}, {"range": "fd00:78::/64", "network_name": "net-b"}])
def test_del_after_an_add_killed_between_reservation_and_pool_write_leaves_nothing(
        backend: dict[str, Any], ipam: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """The state a SIGKILL leaves in that window: a reservation owned by the container, no pool entry."""
    from ipam.whereabouts.allocator import reservation_name
    from ipam.whereabouts.store import OWNER_LABEL, Reservation, owner_label

    net = ipaddress.ip_network(ipam["range"])
    store = store_of(ipam, backend)
    name_of = lambda host: reservation_name(net[host], ipam.get("network_name", ""))  # noqa: E731
    store.reserve(Reservation(name_of(1), "cid-killed", "default/killed", "net1"))   # the killed ADD's
    store.reserve(Reservation(name_of(8), "cid-killed", "default/killed", "net2"))   # same pod, other interface
    store.reserve(Reservation(name_of(9), "cid-other", "default/other", "net1"))     # someone else's
    if backend.get("kubernetes"):
        api = request.getfixturevalue("apiserver")
        obj = api.get_obj("overlappingrangeipreservations", name_of(1), "kube-system",
                          "whereabouts.cni.cncf.io/v1alpha1")
        assert obj["metadata"]["labels"] == {OWNER_LABEL: owner_label("cid-killed")}
    run("DEL", ipam, backend, "killed", cid="cid-killed")
    left = sorted((r.name, r.container_id, r.ifname) for r in store.list_reservations())
    assert left == [(name_of(8), "cid-killed", "net2"), (name_of(9), "cid-other", "net1")]
    # a second DEL is still success and touches nothing else
    run("DEL", ipam, backend, "killed", cid="cid-killed")
    assert len(store.list_reservations()) == 2
    # the address is free again: without the sweep the next pod would skip it (reserved) and get the second one
    assert add_ips(ipam, backend, "next") == [f"{net[1]}/{net.prefixlen}"]


def test_kubernetes_pool_writes_are_merge_patches_of_the_changed_entries(apiserver: Any) -> None:  # noqa: F811
    # Upstream whereabouts writes an empty pool's nil map as null: the first patch replaces it whole.
    apiserver.seed({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                    "metadata": {"name": "10.78.0.0-24", "namespace": "kube-system"},
                    "spec": {"range": "10.78.0.0/24", "allocations": None}})
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    ipam = {"range": "10.78.0.0/24"}
    assert add_ips(ipam, backend, "a") == ["10.78.0.1/24"]
    assert add_ips(ipam, backend, "b") == ["10.78.0.2/24"]
    run("DEL", ipam, backend, "a")
    pool = apiserver.get_obj("ippools", "10.78.0.0-24", "kube-system", "whereabouts.cni.cncf.io/v1alpha1")
    assert pool is not None and list(pool["spec"]["allocations"]) == ["2"]
    assert pool["spec"]["allocations"]["2"]["podref"] == "default/b"
    writes = [r for r in apiserver.requests_for(path_prefix="/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/"
                                                             "kube-system/ippools/") if r.method in ("PUT", "PATCH")]
    assert [r.method for r in writes] == ["PATCH"] * 3
    # Each write carries the compare-and-swap version and only the entry it changes (DEL: null deletes it).
    assert all(r.body["metadata"]["resourceVersion"] for r in writes)
    assert [sorted(r.body["spec"]["allocations"]) for r in writes] == [["1"], ["2"], ["1"]]
    assert writes[2].body["spec"]["allocations"]["1"] is None


def test_kubernetes_pool_patch_on_a_stale_version_is_a_conflict_and_retried(apiserver: Any) -> None:  # noqa: F811
    backend = {"kubernetes": {"kubeconfig": apiserver.kubeconfig_path()}}
    ipam = {"range": "10.79.0.0/24"}
    add_ips(ipam, backend, "a")
    apiserver.inject_conflicts(2)  # as if two other writers got there first
    assert add_ips(ipam, backend, "b") == ["10.79.0.2/24"]
    patches = apiserver.requests_for("PATCH", "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/ippools/")
    assert [r.status for r in patches][-3:] == [409, 409, 200]
