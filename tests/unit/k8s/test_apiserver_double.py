"""The API server double behaves like kube-apiserver where our code depends on it (keeps the fixture honest)."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

import pytest

from cni.k8s.client import ApiInvalid, ApiUnauthorized, Client, KubeConfig, core_path, group_path
from conformance.apiserver import ApiServerDouble, JsonPatchError, json_merge_patch, json_patch

NS = "default"


@pytest.fixture
def client(apiserver: ApiServerDouble) -> Client:
    return Client(KubeConfig.from_file(apiserver.kubeconfig_path()))


def raw(apiserver: ApiServerDouble, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=apiserver.ca_file)
    conn = http.client.HTTPSConnection(apiserver.host, apiserver.port, context=ctx, timeout=5)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def seeded_pod(apiserver: ApiServerDouble) -> dict[str, Any]:
    return apiserver.seed({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "p", "namespace": NS,
                                        "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "1"}]},
                           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "a"}]},
                           "status": {"phase": "Running"}})


def test_missing_bearer_token_is_a_401_status(apiserver: ApiServerDouble) -> None:
    code, body = raw(apiserver, "GET", "/api/v1/namespaces/default/pods")
    assert code == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_not_found_status_carries_details(apiserver: ApiServerDouble) -> None:
    code, body = raw(apiserver, "GET", "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/x/ippools/p",
                     headers={"Authorization": f"Bearer {apiserver.token}"})
    assert code == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'ippools.whereabouts.cni.cncf.io "p" not found'
    assert body["details"] == {"name": "p", "group": "whereabouts.cni.cncf.io", "kind": "ippools"}


def test_pod_status_put_keeps_spec_and_owner_refs_but_persists_annotations(apiserver: ApiServerDouble,
                                                                           client: Client) -> None:
    # pkg/registry/core/pod/strategy.go podStatusStrategy.PrepareForUpdate.
    seeded_pod(apiserver)
    p = client.get_pod(NS, "p")
    p["spec"]["nodeName"] = "hijacked"
    p["metadata"]["ownerReferences"] = []
    p["metadata"]["annotations"] = {"a": "1"}
    p["metadata"]["labels"] = {"l": "1"}
    p["status"]["phase"] = "Failed"
    out = client.update(core_path("pods", NS, "p", "status"), p)
    assert out["spec"]["nodeName"] == "n1" and out["metadata"]["ownerReferences"][0]["name"] == "rs"
    assert out["metadata"]["annotations"] == {"a": "1"} and out["metadata"]["labels"] == {"l": "1"}
    assert out["status"]["phase"] == "Failed"


def test_pod_main_put_ignores_status_and_forbids_spec_changes(apiserver: ApiServerDouble, client: Client) -> None:
    seeded_pod(apiserver)
    p = client.get_pod(NS, "p")
    p["status"]["phase"] = "Failed"
    p["spec"]["containers"][0]["image"] = "b"  # the image is mutable
    out = client.update(core_path("pods", NS, "p"), p)
    assert out["status"]["phase"] == "Running" and out["spec"]["containers"][0]["image"] == "b"
    out["spec"]["nodeName"] = "elsewhere"
    with pytest.raises(ApiInvalid):
        client.update(core_path("pods", NS, "p"), out)


def test_custom_resource_status_put_changes_only_status(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": NS},
                    "spec": {"size": 1}})
    w = client.get(group_path("example.com", "v1", "widgets", NS, "w"))
    w["spec"]["size"] = 2
    w["metadata"]["labels"] = {"x": "y"}
    w["status"] = {"ready": True}
    out = client.update(group_path("example.com", "v1", "widgets", NS, "w", "status"), w)
    assert out["spec"] == {"size": 1} and "labels" not in out["metadata"] and out["status"] == {"ready": True}


def test_custom_resource_put_requires_a_resource_version(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": NS}})
    with pytest.raises(ApiInvalid, match="must be specified for an update"):
        client.update(group_path("example.com", "v1", "widgets", NS, "w"), {"metadata": {"name": "w"}})


def test_no_op_update_does_not_bump_the_resource_version(apiserver: ApiServerDouble, client: Client) -> None:
    seeded_pod(apiserver)
    p = client.get_pod(NS, "p")
    out = client.update(core_path("pods", NS, "p"), p)
    assert out["metadata"]["resourceVersion"] == p["metadata"]["resourceVersion"]


def test_resource_version_is_one_counter_across_all_objects(apiserver: ApiServerDouble, client: Client) -> None:
    a = client.create(core_path("pods", NS), {"metadata": {"name": "a"}})
    b = client.create(group_path("k8s.cni.cncf.io", "v1", "network-attachment-definitions", "other"),
                      {"metadata": {"name": "n"}, "spec": {"config": "{}"}})
    assert int(b["metadata"]["resourceVersion"]) == int(a["metadata"]["resourceVersion"]) + 1


def test_event_namespace_must_match_involved_object(apiserver: ApiServerDouble, client: Client) -> None:
    with pytest.raises(ApiInvalid, match="does not match event.namespace"):
        client.create(core_path("events", NS), {"metadata": {"generateName": "x."},
                                                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}})


def test_unsupported_selectors_and_patch_types_are_refused(apiserver: ApiServerDouble, client: Client) -> None:
    seeded_pod(apiserver)
    with pytest.raises(ApiInvalid) as ei:
        client.list(core_path("pods", NS), field_selector="status.phase=Running")
    assert ei.value.status == 400
    code, body = raw(apiserver, "PATCH", "/api/v1/namespaces/default/pods/p", {"a": 1},
                     {"Authorization": f"Bearer {apiserver.token}", "Content-Type": "application/apply-patch+yaml"})
    assert code == 415 and body["reason"] == "UnsupportedMediaType"


def test_forbid_hook_answers_403_status(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.forbid("*", "/api/v1/nodes")
    with pytest.raises(ApiUnauthorized) as ei:
        client.get_node("n1")
    assert ei.value.status == 403 and ei.value.reason == "Forbidden"


SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def review(client: Client, verb: str, resource: str, group: str = "", **extra: str) -> dict[str, Any]:
    res, _, sub = resource.partition("/")
    attrs = {"verb": verb, "group": group, "resource": res, **({"subresource": sub} if sub else {}), **extra}
    return client.create(SSAR, {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                "spec": {"resourceAttributes": attrs}})


def test_access_review_answers_from_the_same_rules_as_requests(apiserver: ApiServerDouble, client: Client) -> None:
    assert review(client, "update", "pods/status")["status"]["allowed"] is True
    apiserver.deny("update", "pods/status")
    got = review(client, "update", "pods/status")
    assert got["status"]["allowed"] is False and got["status"]["reason"]
    assert got["kind"] == "SelfSubjectAccessReview" and got["spec"]["resourceAttributes"]["subresource"] == "status"
    assert review(client, "get", "pods")["status"]["allowed"] is True  # one verb only
    # ... and the request itself is refused the same way.
    seeded_pod(apiserver)
    pod = client.get_pod(NS, "p")
    with pytest.raises(ApiUnauthorized) as ei:
        client.update(core_path("pods", NS, "p", "status"), pod)
    assert ei.value.status == 403
    # A path rule (forbid) denies what the attributes describe.
    apiserver.forbid("GET", "/api/v1/nodes")
    assert review(client, "get", "nodes", name="n1")["status"]["allowed"] is False
    assert review(client, "list", "network-attachment-definitions", "k8s.cni.cncf.io")["status"]["allowed"] is True
    # Reviews are answered, never stored; they only support create.
    assert apiserver.objects("selfsubjectaccessreviews", "authorization.k8s.io/v1") == []
    code, body = raw(apiserver, "GET", SSAR, headers={"Authorization": f"Bearer {apiserver.token}"})
    assert code == 405 and body["reason"] == "MethodNotAllowed"


def test_access_review_without_attributes_is_invalid(apiserver: ApiServerDouble, client: Client) -> None:
    with pytest.raises(ApiInvalid) as ei:
        client.create(SSAR, {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}})
    assert ei.value.status == 422


# ---- RFC 7386 / RFC 6902 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target, patch, result", [  # RFC 7386 appendix A (a selection)
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_json_merge_patch_rfc7386_examples(target: Any, patch: Any, result: Any) -> None:
    assert json_merge_patch(target, patch) == result


def test_json_patch_rfc6902_operations() -> None:
    doc = {"foo": ["bar", "baz"], "a~b": 1, "q": {"x": 1}}
    out = json_patch(doc, [
        {"op": "add", "path": "/foo/1", "value": "qux"},
        {"op": "add", "path": "/foo/-", "value": "end"},
        {"op": "remove", "path": "/a~0b"},
        {"op": "move", "from": "/q/x", "path": "/moved"},
        {"op": "copy", "from": "/moved", "path": "/copied"},
        {"op": "replace", "path": "/q", "value": None},
        {"op": "test", "path": "/foo", "value": ["bar", "qux", "baz", "end"]},
    ])
    assert out == {"foo": ["bar", "qux", "baz", "end"], "moved": 1, "copied": 1, "q": None}
    assert doc["foo"] == ["bar", "baz"]  # the input is not modified


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/a", "value": True}],       # 1 is not true in JSON
    [{"op": "remove", "path": "/missing"}],
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "add", "path": "/l/5", "value": 1}],
    [{"op": "add", "path": "/l/01", "value": 1}],
    [{"op": "move", "from": "/o", "path": "/o/x"}],
    [{"op": "frob", "path": "/a"}],
])
def test_json_patch_failures(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(JsonPatchError):
        json_patch({"a": 1, "l": [0], "o": {}}, ops)
