"""A node process's shared whereabouts state (ipam/whereabouts/group.py) against a real 3-member etcd and the API
server double: concurrent ADDs of one node in one slice are group-committed (one write, each its own address, every
address and reservation stored), and what the process caches never outlives a write by someone else — a DEL or an
entry written behind its back, a slice given back by the reconciler."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni.k8s.client import Client
from cni.spec.request import Request
from ipam import reconcile
from ipam.whereabouts import PLUGIN, group
from ipam.whereabouts.allocator import Allocation
from ipam.whereabouts.config import EtcdConf
from ipam.whereabouts.store_etcd import EtcdStore
from ipam.whereabouts.store_k8s import K8sStore
from tests.support.etcd import EtcdCluster, etcd_cluster  # noqa: F401  (fixture)
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

SLICED = {"range": "10.77.0.0/16", "node_slice_size": "/24", "network_name": "grp"}


@pytest.fixture(autouse=True)
def node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.setenv("NODENAME", "node-g")


@pytest.fixture(params=["etcd", "kubernetes"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, Any], Any]]:
    """(the ipam keys of a store, a store of our own to look at it with)."""
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        prefix = f"/grp-{uuid.uuid4().hex[:6]}/"
        store: Any = EtcdStore(EtcdConf(endpoints=tuple(cluster.endpoints), prefix=prefix))
        yield {"datastore": "etcd", "endpoints": cluster.endpoints, "etcd_prefix": prefix}, store
    else:
        api = request.getfixturevalue("apiserver")
        store = K8sStore(Client.from_kubeconfig(api.kubeconfig_path()), "kube-system")
        yield {"kubernetes": {"kubeconfig": api.kubeconfig_path()}}, store
    store.close()


def run(cmd: str, backend: dict[str, Any], pod: str, ifname: str = "net1") -> str | None:
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "ipam": {"type": "whereabouts", **SLICED,
                                                                              **backend}}
    res = PLUGIN.run(Request(command=cmd, container_id=f"cid-{pod}", netns="/x", ifname=ifname,
                             cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod, "K8S_POD_UID": f"u-{pod}"},
                             config=conf))
    return str(res.ips[0].address.ip) if res is not None else None


def stored(store: Any) -> dict[str, str]:
    """address → podref of every pool entry (offsets are from each slice's first address)."""
    import ipaddress

    out = {}
    for p in store.list_pools():
        base = int(ipaddress.ip_network(p.range).network_address)
        for off, a in p.allocations.items():
            out[str(ipaddress.ip_address(base + off))] = a.podref
    return out


def test_concurrent_adds_of_a_node_share_writes_and_each_gets_its_own_address(
        backend: tuple[dict[str, Any], Any]) -> None:
    conf, store = backend
    before = group.stats()
    got: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def pod(i: int) -> None:
        try:
            got[f"p{i}"] = run("ADD", conf, f"p{i}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=pod, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(got.values())) == 24 and None not in got.values()
    # Every address is stored, with its reservation, before its ADD returned.
    assert stored(store) == {ip: f"default/{p}" for p, ip in got.items()}
    assert sorted(r.name for r in store.list_reservations()) == sorted(f"grp-{ip}" for ip in got.values())
    after = group.stats()
    served, batches = after["served"] - before["served"], after["batches"] - before["batches"]
    assert served == 24 and batches < served  # some writes carried several allocations
    for p in got:
        run("DEL", conf, p)
    assert stored(store) == {} and store.list_reservations() == []


def test_a_write_behind_the_node_process_back_is_never_overwritten_or_ignored(
        backend: tuple[dict[str, Any], Any]) -> None:
    conf, store = backend
    a, b = run("ADD", conf, "a"), run("ADD", conf, "b")
    assert (a, b) == ("10.77.0.1", "10.77.0.2")
    (pool,) = store.list_pools()
    # Another writer (a thin exec on this node, the reconciler) adds an entry and frees b's: the process's cached
    # pool is stale now; its next write must fail its compare-and-swap and start from what is stored.
    new = dict(pool.allocations)
    new[3] = Allocation("cid-other", "default/other", "net1")
    del new[2]
    store.write_pool(pool, new)
    (res,) = [r for r in store.list_reservations() if r.podref == "default/b"]
    store.release(res)  # (b's reservation would otherwise keep .2 from being handed out again)
    assert run("ADD", conf, "c") == "10.77.0.2"  # the freed address, not a duplicate of .3
    assert run("ADD", conf, "d") == "10.77.0.4"
    assert stored(store) == {"10.77.0.1": "default/a", "10.77.0.2": "default/c", "10.77.0.3": "default/other",
                             "10.77.0.4": "default/d"}


def test_a_slice_given_back_while_cached_is_claimed_again_not_written_blindly(
        backend: tuple[dict[str, Any], Any]) -> None:
    conf, store = backend
    ip = run("ADD", conf, "a")
    run("DEL", conf, "a")
    # The node is deleted: the reconciler gives its empty slice back (deletes the IPPool, frees the slice) while
    # this process still has the slice list and the pool cached.
    rec = reconcile.Reconciler(store, lambda: [], grace=0.0, sleep=lambda s: None, list_nodes=lambda: set())
    assert [s for _, s, _ in rec.run_once().freed_slices] == ["10.77.0.0/24"]
    assert store.list_pools() == []
    # The node comes back: its next ADD sees the slice is no longer its own and claims one again.
    assert run("ADD", conf, "b") == ip
    nsp = store.read_slices("grp")
    assert [(x.node, x.cidr) for x in nsp.allocations if x.node] == [("node-g", "10.77.0.0/24")]
    assert stored(store) == {ip: "default/b"}
