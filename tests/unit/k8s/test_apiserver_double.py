"""The API server double behaves like kube-apiserver where our code depends on it (keeps the fixture honest)."""

from __future__ import annotations

import http.client
import itertools
import json
import ssl
from typing import Any

import pytest

from cni.k8s.client import ApiGone, ApiInvalid, ApiUnauthorized, Client, KubeConfig, core_path, group_path
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


# ---- what kubectl asks first: version, discovery, OpenAPI, CRDs, fieldValidation ----------------------------------

NAD_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
    "spec": {"group": "k8s.cni.cncf.io", "scope": "Namespaced",
             "names": {"plural": "network-attachment-definitions", "kind": "NetworkAttachmentDefinition",
                       "singular": "network-attachment-definition", "shortNames": ["nad"]},
             "versions": [
                 {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "properties": {
                         "config": {"type": "string"}, "extra": {"type": "object", "additionalProperties": {
                             "type": "string"}}}}}}}},
                 {"name": "v1beta1", "served": True, "storage": False},
                 {"name": "v1alpha9", "served": False, "storage": False}]},
}


def call(apiserver: ApiServerDouble, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         *, raw_body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One authenticated request; the answer's status, headers (lower-case names; repeated ones joined) and body."""
    ctx = ssl.create_default_context(cafile=apiserver.ca_file)
    conn = http.client.HTTPSConnection(apiserver.host, apiserver.port, context=ctx, timeout=5)
    hdrs = {"Authorization": f"Bearer {apiserver.token}", "Content-Type": "application/json", **(headers or {})}
    data = raw_body if raw_body is not None else None if body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        out: dict[str, str] = {}
        for k, v in resp.getheaders():
            out[k.lower()] = f"{out[k.lower()]}\n{v}" if k.lower() in out else v
        return resp.status, out, resp.read()
    finally:
        conn.close()


def get_json(apiserver: ApiServerDouble, path: str, accept: str = "application/json") -> Any:
    code, headers, body = call(apiserver, "GET", path, headers={"Accept": accept})
    assert code == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def test_version_needs_authentication_and_names_a_kubernetes_version(apiserver: ApiServerDouble) -> None:
    code, _ = raw(apiserver, "GET", "/version")
    assert code == 401
    v = get_json(apiserver, "/version")
    assert (v["major"], v["minor"]) == ("1", "32") and v["gitVersion"].startswith("v1.32.")


def test_discovery_is_the_plain_form_even_when_aggregated_is_asked(apiserver: ApiServerDouble) -> None:
    # kubectl 1.32 asks for APIGroupDiscoveryList first; a server without aggregated discovery answers plain JSON
    # and kubectl falls back on the Content-Type.
    aggregated = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
    api = get_json(apiserver, "/api", aggregated)
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    assert api["serverAddressByClientCIDRs"][0]["serverAddress"] == f"127.0.0.1:{apiserver.port}"
    groups = get_json(apiserver, "/apis", aggregated)
    assert groups["kind"] == "APIGroupList"
    assert {g["name"] for g in groups["groups"]} == {"apiextensions.k8s.io", "coordination.k8s.io"}
    core = get_json(apiserver, "/api/v1")
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert pods["namespaced"] is True and pods["kind"] == "Pod" and "po" in pods["shortNames"]
    assert "watch" in pods["verbs"] and "deletecollection" not in pods["verbs"]  # the double has no deletecollection
    assert any(r["name"] == "pods/status" for r in core["resources"])
    nodes = next(r for r in core["resources"] if r["name"] == "nodes")
    assert nodes["namespaced"] is False


def test_a_created_crd_makes_its_served_versions_discoverable(apiserver: ApiServerDouble) -> None:
    code, _, _ = call(apiserver, "GET", "/apis/k8s.cni.cncf.io/v1")
    assert code == 404  # not before the CRD exists
    code, _, body = call(apiserver, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", NAD_CRD)
    assert code == 201, body
    crd = json.loads(body)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["listKind"] == "NetworkAttachmentDefinitionList"
    assert crd["status"]["storedVersions"] == ["v1"]
    group = next(g for g in get_json(apiserver, "/apis")["groups"] if g["name"] == "k8s.cni.cncf.io")
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]  # v1alpha9 is not served
    assert group["preferredVersion"] == {"groupVersion": "k8s.cni.cncf.io/v1", "version": "v1"}
    assert get_json(apiserver, "/apis/k8s.cni.cncf.io")["kind"] == "APIGroup"
    res = get_json(apiserver, "/apis/k8s.cni.cncf.io/v1")
    assert res["resources"] == [{"name": "network-attachment-definitions",
                                 "singularName": "network-attachment-definition", "namespaced": True,
                                 "kind": "NetworkAttachmentDefinition",
                                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                                 "shortNames": ["nad"]}]
    code, _, _ = call(apiserver, "GET", "/apis/k8s.cni.cncf.io/v1alpha9")
    assert code == 404


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["metadata"].update(name="nads.k8s.cni.cncf.io"), 'must be spec.names.plural+"."+spec.group'),
    (lambda c: c["spec"].update(scope="Global"), 'spec.scope: Unsupported value: "Global"'),
    (lambda c: c["spec"]["versions"][1].update(storage=True), "exactly one version marked as storage version"),
    (lambda c: c["spec"].update(group="nodots"), "should be a domain with at least one dot"),
])
def test_an_invalid_crd_is_refused_with_422_and_not_stored(apiserver: ApiServerDouble, mutate: Any,
                                                            message: str) -> None:
    crd = json.loads(json.dumps(NAD_CRD))
    mutate(crd)
    code, _, body = call(apiserver, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    status = json.loads(body)
    assert code == 422 and status["reason"] == "Invalid" and message in status["message"]
    assert status["details"]["kind"] == "CustomResourceDefinition"
    assert apiserver.objects("customresourcedefinitions", "apiextensions.k8s.io/v1") == []


def test_version_priority_follows_kubernetes_order() -> None:
    from conformance.apiserver import version_priority

    versions = ["v1alpha1", "foo", "v2", "v1beta2", "v1", "v10beta1", "v1beta1", "bar"]
    assert sorted(versions, key=version_priority) == [
        "v2", "v1", "v10beta1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]


def test_openapi_v3_lists_every_group_version_and_declares_field_validation(apiserver: ApiServerDouble) -> None:
    call(apiserver, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", NAD_CRD)
    root = get_json(apiserver, "/openapi/v3")["paths"]
    assert {"api/v1", "apis/apiextensions.k8s.io/v1", "apis/k8s.cni.cncf.io/v1"} <= root.keys()
    url = root["apis/k8s.cni.cncf.io/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/k8s.cni.cncf.io/v1?hash=")
    doc = get_json(apiserver, url)
    item = doc["paths"]["/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/{name}"]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "k8s.cni.cncf.io", "version": "v1",
                                                        "kind": "NetworkAttachmentDefinition"}
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch["parameters"][0].items()
    schema = doc["components"]["schemas"]["io.cncf.cni.k8s.v1.NetworkAttachmentDefinition"]
    assert schema["properties"]["spec"]["properties"]["config"] == {"type": "string"}  # the CRD's own schema
    # The hash changes with the document (a client may cache a hashed URL for ever).
    crd2 = json.loads(json.dumps(NAD_CRD).replace("network-attachment-definitions", "other-things")
                      .replace("NetworkAttachmentDefinition", "OtherThing"))
    call(apiserver, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd2)
    assert get_json(apiserver, "/openapi/v3")["paths"]["apis/k8s.cni.cncf.io/v1"]["serverRelativeURL"] != url
    code, _, _ = call(apiserver, "GET", "/openapi/v3/apis/nothing.example/v1")
    assert code == 404


def test_openapi_v2_is_an_empty_document_in_protobuf_or_json(apiserver: ApiServerDouble) -> None:
    code, headers, body = call(apiserver, "GET", "/openapi/v2",
                               headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert code == 200 and headers["content-type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    # gnostic openapi.v2.Document: field 1 (swagger) = "2.0", field 2 (info) = {title, version}.
    assert body.startswith(b"\x0a\x032.0\x12") and b"Kubernetes" in body
    doc = get_json(apiserver, "/openapi/v2")
    assert doc["swagger"] == "2.0" and doc["paths"] == {} and doc["definitions"] == {}


def test_discovery_endpoints_only_answer_get(apiserver: ApiServerDouble) -> None:
    code, _, body = call(apiserver, "POST", "/apis", {})
    assert code == 405 and json.loads(body)["reason"] == "MethodNotAllowed"
    code, _, body = call(apiserver, "GET", "/healthz/nope")
    assert code == 404 and json.loads(body)["reason"] == "NotFound"


NADS = "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions"


def test_field_validation_strict_refuses_unknown_and_duplicate_fields(apiserver: ApiServerDouble) -> None:
    call(apiserver, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", NAD_CRD)
    bad = {"metadata": {"name": "n", "lables": {}}, "spec": {"config": "{}", "conifg": "x", "extra": {"a": "b"}}}
    code, _, body = call(apiserver, "POST", NADS + "?fieldValidation=Strict", bad)
    status = json.loads(body)
    assert code == 400 and status["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "metadata.lables", unknown field "spec.conifg"' in status["message"]
    dup = b'{"metadata": {"name": "n"}, "spec": {"config": "{}", "config": "{}"}}'
    code, _, body = call(apiserver, "POST", NADS + "?fieldValidation=Strict", raw_body=dup)
    assert code == 400 and 'duplicate field "config"' in json.loads(body)["message"]
    assert apiserver.objects("network-attachment-definitions", "k8s.cni.cncf.io/v1") == []
    good = {"metadata": {"name": "n"}, "spec": {"config": "{}", "extra": {"a": "b"}}}  # additionalProperties
    code, _, _ = call(apiserver, "POST", NADS + "?fieldValidation=Strict", good)
    assert code == 201
    code, _, body = call(apiserver, "PATCH", NADS + "/n?fieldValidation=Strict", {"spec": {"conifg": "x"}},
                         {"Content-Type": "application/merge-patch+json"})
    assert code == 400 and 'unknown field "spec.conifg"' in json.loads(body)["message"]


def test_field_validation_warn_is_the_default_and_ignore_is_silent(apiserver: ApiServerDouble) -> None:
    call(apiserver, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", NAD_CRD)
    code, headers, _ = call(apiserver, "POST", NADS, {"metadata": {"name": "w"}, "spec": {"conifg": "x"}})
    assert code == 201 and headers["warning"] == '299 - "unknown field \\"spec.conifg\\""'
    code, headers, _ = call(apiserver, "POST", NADS + "?fieldValidation=Ignore",
                            {"metadata": {"name": "i"}, "spec": {"conifg": "x"}})
    assert code == 201 and "warning" not in headers
    code, _, body = call(apiserver, "POST", NADS + "?fieldValidation=Loud", {"metadata": {"name": "l"}})
    assert code == 400 and "fieldValidation" in json.loads(body)["message"]


def test_events_are_selectable_by_involved_object_as_kubectl_describe_asks(apiserver: ApiServerDouble,
                                                                          client: Client) -> None:
    for name, pod in (("e1", "p"), ("e2", "q")):
        apiserver.seed({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NS},
                        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NS, "uid": f"uid-{pod}"},
                        "reason": "AddedInterface", "type": "Normal"})
    out = client.list(core_path("events", NS), field_selector="involvedObject.name=p,involvedObject.namespace="
                      "default,involvedObject.uid=uid-p,involvedObject.kind=Pod")
    assert [e["metadata"]["name"] for e in out["items"]] == ["e1"]
    out = client.list(core_path("events", NS), field_selector="reason=AddedInterface,type!=Warning")
    assert len(out["items"]) == 2


def test_deleting_a_crd_deletes_its_objects_and_its_discovery(apiserver: ApiServerDouble) -> None:
    call(apiserver, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", NAD_CRD)
    call(apiserver, "POST", NADS, {"metadata": {"name": "n"}, "spec": {"config": "{}"}})
    other = apiserver.seed({"apiVersion": "example.com/v1", "kind": "Widget",
                            "metadata": {"name": "network-attachment-definitions", "namespace": NS}})
    code, _, _ = call(apiserver, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                           "network-attachment-definitions.k8s.cni.cncf.io")
    assert code == 200
    assert apiserver.objects("network-attachment-definitions", "k8s.cni.cncf.io/v1") == []
    assert apiserver.get_obj("widgets", other["metadata"]["name"], NS, "example.com/v1") is not None
    code, _, _ = call(apiserver, "GET", "/apis/k8s.cni.cncf.io/v1")
    assert code == 404


# ---- what the double shares instead of copying (stored objects are never changed in place) -----------------------


def test_watch_events_carry_each_object_as_it_was_at_that_version(apiserver: ApiServerDouble,
                                                                   client: Client) -> None:
    import itertools

    seeded_pod(apiserver)  # resourceVersion "0" would mean "any": start from a real one
    start = client.list(core_path("pods", NS))["metadata"]["resourceVersion"]
    made = client.create(core_path("pods", NS), {"metadata": {"name": "w"}})
    patched = client.patch(core_path("pods", NS, "w"), {"metadata": {"labels": {"x": "1"}}})
    client.delete(core_path("pods", NS, "w"))
    stream = client.watch(core_path("pods", NS), start, timeout_seconds=5)
    events = list(itertools.islice(stream, 3))
    stream.close()  # type: ignore[attr-defined]
    assert [t for t, _ in events] == ["ADDED", "MODIFIED", "DELETED"]
    (_, added), (_, modified), (_, deleted) = events
    # The history holds the stored objects themselves: a later write or the delete must not show through.
    assert added["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    assert "labels" not in added["metadata"]
    assert modified["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    assert modified["metadata"]["labels"] == {"x": "1"}
    assert int(deleted["metadata"]["resourceVersion"]) > int(patched["metadata"]["resourceVersion"])


def test_hooks_return_copies_that_do_not_reach_the_store(apiserver: ApiServerDouble, client: Client) -> None:
    seeded = seeded_pod(apiserver)
    seeded["metadata"]["labels"] = {"changed": "by-test"}
    got = apiserver.get_obj("pods", "p", NS)
    assert got is not None and "labels" not in got["metadata"]
    got["spec"]["nodeName"] = "elsewhere"
    apiserver.objects("pods", namespace=NS)[0]["spec"]["nodeName"] = "elsewhere"
    assert client.get_pod(NS, "p")["spec"]["nodeName"] == "n1"


def test_seed_stores_json_values(apiserver: ApiServerDouble) -> None:
    # A tuple is an array once it has been over the wire; the hooks see what a client would.
    apiserver.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": NS},
                    "data": {"k": "v"}, "binaryData": None, "extra": ("a", "b")})
    got = apiserver.get_obj("configmaps", "c", NS)
    assert got is not None and got["extra"] == ["a", "b"]


def test_listen_backlog_takes_a_burst_of_connecting_clients(apiserver: ApiServerDouble) -> None:
    # socketserver's default backlog (5) dropped SYNs when 64 clients connected at once; the retried SYN came after
    # the client's 2 s connect budget and a DEL's reservation release failed as "API unreachable".
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        pytest.skip("this machine has no 'ss' (iproute2) to read the listening socket's backlog")
    out = subprocess.run(["ss", "-Hltn", f"sport = :{apiserver.port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "LISTEN" and int(out[2]) >= 128, out


@pytest.mark.parametrize("raw, dups", [
    (b'{"a":1,"b":{"c":":x","d":"y:"}}', []),
    (b'{"a":1,"a":2}', ["a"]),
    (b'{"k":":x","k":":x"}', ["k"]),  # a value opening with ":" counts on both sides
    (b'{"a" :1,"a":2}', ["a"]),  # a space before the colon: the exact check decides
    (b'{"s":"q\\"","s":1}', ["s"]),  # an escaped quote: the exact check decides
    (b'{"o":{"x":1,"x":1},"p":[{"y":1,"y":2}]}', ["x", "y"]),
])
def test_duplicate_fields_fast_path_never_hides_a_duplicate(raw: bytes, dups: list[str]) -> None:
    from conformance.apiserver import _duplicate_fields

    assert _duplicate_fields(raw, json.loads(raw)) == dups
    assert _duplicate_fields(raw) == dups


# ---- bounded memory, as kube-apiserver's watch cache ------------------------------------------------------------


def test_watch_history_is_a_window_per_resource_older_versions_get_410_expired(apiserver: ApiServerDouble,
                                                                               client: Client) -> None:
    apiserver.watch_cache_size = 3
    seeded_pod(apiserver)
    start = client.list(core_path("pods", NS))["metadata"]["resourceVersion"]
    for i in range(4):  # four pod events: the oldest falls out of the pods' window
        client.create(core_path("pods", NS), {"metadata": {"name": f"w{i}"}})
    for i in range(10):  # another resource's events do not push pods out
        client.create(core_path("configmaps", NS), {"metadata": {"name": f"c{i}"}})
    with pytest.raises(ApiGone) as gone:
        list(client.watch(core_path("pods", NS), start, timeout_seconds=1))
    assert gone.value.status == 410 and "too old resource version" in str(gone.value)
    code, body = raw(apiserver, "GET", f"/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={start}&timeoutSeconds=1",
                     headers={"Authorization": f"Bearer {apiserver.token}"})
    assert code == 200 and body["type"] == "ERROR" and body["object"]["reason"] == "Expired"
    assert body["object"]["code"] == 410 and body["object"]["message"].startswith(f"too old resource version: {start} (")
    # From the newest dropped version on, every event is still there.
    w0 = apiserver.get_obj("pods", "w0", NS)
    assert w0 is not None
    stream = client.watch(core_path("pods", NS), w0["metadata"]["resourceVersion"], timeout_seconds=5)
    names = [o["metadata"]["name"] for _, o in itertools.islice(stream, 3)]
    stream.close()  # type: ignore[attr-defined]
    assert names == ["w1", "w2", "w3"]


def test_the_request_log_keeps_the_newest_requests(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.request_log_size = 5
    for i in range(8):
        client.get(core_path("namespaces", None, f"ns{i}"))
    assert len(apiserver.requests) == 5
    assert apiserver.requests[-1].path == "/api/v1/namespaces/ns7"


def test_a_watcher_that_falls_behind_the_window_has_its_stream_ended_without_a_gap(apiserver: ApiServerDouble,
                                                                                   client: Client) -> None:
    """As kube-apiserver's cacher closes a watcher it cannot feed: the watcher sees an unbroken prefix of the events,
    then the end of the stream (and re-watches or re-lists), never a stream with events missing from its middle."""
    apiserver.watch_cache_size = 5
    seeded_pod(apiserver)
    start = client.list(core_path("pods", NS))["metadata"]["resourceVersion"]
    apiserver.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b000", "namespace": NS}})
    stream = client.watch(core_path("pods", NS), start, timeout_seconds=60)
    assert next(stream)[1]["metadata"]["name"] == "b000"
    big = "x" * 200_000  # 200 of these are more than the socket buffers hold: the server blocks while we do not read
    for i in range(1, 200):
        apiserver.seed({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"b{i:03}", "namespace": NS, "annotations": {"big": big}}})
    names = [o["metadata"]["name"] for _, o in stream]  # to the end of the stream: well before its 60 s
    assert names == [f"b{i:03}" for i in range(1, len(names) + 1)], "a gap in the stream"
    assert len(names) < 199, "the watcher never fell behind the window: the socket buffers held everything"
