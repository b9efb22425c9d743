"""The daemon's Namespace cache (policyProfiles labels): one GET per namespace per TTL, errors not remembered —
against the API server double."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cni.daemon.cache import CachedApiSource
from cni.k8s.client import Client
from cni.k8s.errors import ApiError
from conformance.apiserver import ApiServerDouble
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)


@pytest.fixture
def src(apiserver: ApiServerDouble) -> Iterator[CachedApiSource]:  # noqa: F811
    s = CachedApiSource(Client.from_kubeconfig(apiserver.kubeconfig_path()), "node-a")
    try:
        yield s
    finally:
        s.pods.stop.set()
        s.nads.stop.set()


def label(ns: dict[str, object] | None) -> object:
    return ((ns or {}).get("metadata") or {}).get("labels", {}).get("multinic.io/policy")  # type: ignore[union-attr]


def gets(api: ApiServerDouble, name: str) -> int:
    return sum(r.path == f"/api/v1/namespaces/{name}" for r in api.requests_for("GET", "/api/v1/namespaces/"))


def put(api: ApiServerDouble, profile: str) -> None:
    if api.get_obj("namespaces", "team-a") is None:
        api.seed({"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "team-a", "labels": {"multinic.io/policy": profile}}}, plural="namespaces")
        return
    c = Client.from_kubeconfig(api.kubeconfig_path())
    try:
        c.patch("/api/v1/namespaces/team-a", {"metadata": {"labels": {"multinic.io/policy": profile}}})
    finally:
        c.close()


def test_a_namespace_is_read_once_per_ttl(src: CachedApiSource, apiserver: ApiServerDouble,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    put(apiserver, "edge")
    assert label(src.get_namespace("team-a")) == "edge"
    put(apiserver, "locked")
    assert label(src.get_namespace("team-a")) == "edge" and gets(apiserver, "team-a") == 1  # cached
    monkeypatch.setattr(CachedApiSource, "NAMESPACE_TTL", 0.0)
    assert label(src.get_namespace("team-a")) == "locked" and gets(apiserver, "team-a") == 2


def test_an_api_error_is_not_cached_and_a_missing_namespace_is(src: CachedApiSource,
                                                               apiserver: ApiServerDouble) -> None:  # noqa: F811
    apiserver.deny("get", "namespaces")
    with pytest.raises(ApiError):
        src.get_namespace("team-b")
    apiserver.allow("get", "namespaces")
    apiserver.missing_namespaces.add("team-b")
    assert src.get_namespace("team-b") is None
    assert src.get_namespace("team-b") is None and gets(apiserver, "team-b") == 2  # the 403, then one 404
