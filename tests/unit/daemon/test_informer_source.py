"""Thick mode's warm source: informer caches of this node's pods and all NADs, over the real
client against the API server double (wire protocol: LIST + WATCH)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cni.daemon.cache import CachedApiSource, Informer
from cni.k8s.client import Client
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

NODE = "node-a"


def pod(name: str, uid: str, node: str = NODE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                         "annotations": {"k8s.v1.cni.cncf.io/networks": "mv"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}


NAD = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
       "metadata": {"name": "mv", "namespace": "default"},
       "spec": {"config": '{"cniVersion":"1.0.0","type":"macvlan","master":"eth1"}'}}


def wait_for(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def source(apiserver: Any) -> Iterator[CachedApiSource]:  # noqa: F811
    apiserver.seed(pod("p1", "uid-1"))
    apiserver.seed(pod("elsewhere", "uid-x", node="node-b"))
    apiserver.seed(NAD, plural="network-attachment-definitions")
    client = Client.from_kubeconfig(apiserver.kubeconfig_path(), timeout=5)
    src = CachedApiSource(client, NODE)
    try:
        wait_for(lambda: src.pods.synced.is_set() and src.nads.synced.is_set())
        yield src
    finally:
        src.pods.stop.set()
        src.nads.stop.set()
        client.close()


def _gets(apiserver: Any, path: str) -> int:  # noqa: F811
    return len([r for r in apiserver.requests_for("GET", path) if "watch" not in r.query])


def test_cached_pod_and_nad_cost_no_request(apiserver: Any, source: CachedApiSource) -> None:  # noqa: F811
    before = (_gets(apiserver, "/api/v1/namespaces/default/pods/p1"),
              _gets(apiserver, "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/mv"))
    assert source.get_pod("default", "p1")["metadata"]["uid"] == "uid-1"
    assert source.get_nad("default", "mv") is not None
    after = (_gets(apiserver, "/api/v1/namespaces/default/pods/p1"),
             _gets(apiserver, "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/mv"))
    assert after == before and source.hits == 2


def test_only_this_nodes_pods_are_watched(apiserver: Any, source: CachedApiSource) -> None:  # noqa: F811
    assert ("default", "elsewhere") not in source.pods.items
    # ...but a lookup of another node's pod still answers, by a live GET (a miss, not an error).
    assert source.get_pod("default", "elsewhere") is not None and source.misses == 1


def test_watch_brings_new_and_deleted_objects(apiserver: Any, source: CachedApiSource) -> None:  # noqa: F811
    apiserver.seed(pod("p2", "uid-2"))
    wait_for(lambda: ("default", "p2") in source.pods.items)
    apiserver.delete_obj("pods", "p1", "default")
    wait_for(lambda: ("default", "p1") not in source.pods.items)
    assert source.get_pod("default", "p1") is None  # live GET: gone for real


def test_live_get_bypasses_a_stale_incarnation(apiserver: Any, source: CachedApiSource) -> None:  # noqa: F811
    # The informer still holds uid-1 while the API already has the recreated pod.
    source.pods.stop.set()
    apiserver.delete_obj("pods", "p1", "default")
    apiserver.seed(pod("p1", "uid-new"))
    assert source.get_pod("default", "p1")["metadata"]["uid"] == "uid-1"
    assert source.get_pod_live("default", "p1")["metadata"]["uid"] == "uid-new"


def test_delegator_asks_the_api_when_the_cached_pod_has_another_uid(apiserver: Any, source: CachedApiSource) -> None:  # noqa: F811
    from cni.delegator import config as cfgmod
    from cni.delegator.context import Context, PodRef
    from cni.delegator.resolve import read_pod
    from cni.spec.request import Request

    source.pods.stop.set()
    apiserver.delete_obj("pods", "p1", "default")
    apiserver.seed(pod("p1", "uid-new"))
    ctx = Context(Request("ADD"), cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic"}), source)
    got = read_pod(ctx, PodRef("default", "p1", "uid-new"))
    assert got.pod is not None and got.pod["metadata"]["uid"] == "uid-new"


def test_listeners_hear_each_change_with_the_object_before_and_after(
        apiserver: Any, source: CachedApiSource) -> None:  # noqa: F811
    heard: list[tuple[Any, Any]] = []
    source.pods.listeners.append(lambda old, new: heard.append((old, new)))
    client = Client.from_kubeconfig(apiserver.kubeconfig_path(), timeout=5)
    try:
        client.patch("/api/v1/namespaces/default/pods/p1",
                     {"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": "mv,mv2"}}})
    finally:
        client.close()
    wait_for(lambda: any(new is not None and new["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == "mv,mv2"
                         for _, new in heard))
    old, new = next((o, n) for o, n in heard if n is not None and o is not None)
    assert old["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == "mv"
    assert new["metadata"]["name"] == "p1"


def test_an_informer_behind_the_watch_window_gets_410_and_relists(apiserver: Any) -> None:  # noqa: F811
    """The double trims its watch history as kube-apiserver's watch cache does; the unchanged client and informer
    answer the 410 by listing again, and end up with every change."""
    apiserver.watch_cache_size = 3
    apiserver.seed(pod("p1", "uid-1"))
    gate = threading.Event()

    class Paused(Informer):
        """Holds its thread between its first LIST and the WATCH that follows it, as a slow node would."""

        lists = 0

        def _tell(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            if old is None and new is None:
                type(self).lists += 1
                if type(self).lists == 1:
                    gate.wait(10)
            super()._tell(old, new)

    client = Client.from_kubeconfig(apiserver.kubeconfig_path(), timeout=5)
    inf = Paused(client, "/api/v1/pods", field_selector=f"spec.nodeName={NODE}")
    try:
        wait_for(lambda: Paused.lists == 1)
        for i in range(2, 7):  # more pod events than the window holds, while the informer is between LIST and WATCH
            apiserver.seed(pod(f"p{i}", f"uid-{i}"))
        gate.set()
        wait_for(lambda: len(inf.items) == 6 and inf.synced.is_set(), timeout=10)
        assert Paused.lists >= 2, "the informer did not list again"
        watches = [r for r in apiserver.requests_for("GET", "/api/v1/pods") if r.query.get("watch")]
        assert watches, "the informer never watched"
        apiserver.seed(pod("p7", "uid-7"))  # and it watches again after the relist
        wait_for(lambda: ("default", "p7") in inf.items)
    finally:
        inf.stop.set()
        gate.set()
        client.close()
