"""The production client (cni.k8s.client) against the API server double, over real HTTPS."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from cni.k8s.client import (
    JSON_PATCH,
    STRATEGIC_MERGE_PATCH,
    ApiAlreadyExists,
    ApiConflict,
    ApiGone,
    ApiInvalid,
    ApiNotFound,
    ApiUnauthorized,
    ApiUnavailable,
    Client,
    KubeConfig,
    KubeConfigError,
    core_path,
    group_path,
)
from cni.k8s.source import create_event, update_pod_status_annotation
from cni.spec.errors import NotFound, PolicyDenied, TryAgainLater
from conformance.apiserver import ApiServerDouble

NS = "default"
WB = ("whereabouts.cni.cncf.io", "v1alpha1")
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def pod(name: str = "web", ns: str = NS, node: str = "node-1", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                              "uid": "u-rs"}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5"}}


def nad(name: str, ns: str = NS, config: str = '{"cniVersion":"1.0.0","type":"macvlan"}') -> dict[str, Any]:
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns}, "spec": {"config": config}}


@pytest.fixture
def client(apiserver: ApiServerDouble) -> Client:
    return Client(KubeConfig.from_file(apiserver.kubeconfig_path()), timeout=3.0)


# ---- verbs --------------------------------------------------------------------------------------------------------


def test_get_returns_the_stored_object_with_server_metadata(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod())
    got = client.get_pod(NS, "web")
    assert got["metadata"]["name"] == "web"
    assert got["metadata"]["uid"] and got["metadata"]["resourceVersion"] == "1"
    assert apiserver.requests[-1].bearer == apiserver.token


def test_list_filters_by_label_and_field_selector(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod("a", node="node-1", app="x"))
    apiserver.seed(pod("b", node="node-2", app="x"))
    apiserver.seed(pod("c", node="node-1", app="y"))
    apiserver.seed(pod("d", ns="other", node="node-1", app="x"))
    path = core_path("pods", NS)

    def names(lst: dict[str, Any]) -> list[str]:
        return [o["metadata"]["name"] for o in lst["items"]]

    assert names(client.list(path)) == ["a", "b", "c"]
    assert names(client.list(path, label_selector="app=x")) == ["a", "b"]
    assert names(client.list(path, field_selector="spec.nodeName=node-1")) == ["a", "c"]
    assert names(client.list(path, "app!=y", "spec.nodeName=node-1")) == ["a"]
    assert names(client.list(core_path("pods"), field_selector="spec.nodeName=node-1")) == ["a", "c", "d"]
    listed = client.list(path)
    assert listed["kind"] == "PodList" and int(listed["metadata"]["resourceVersion"]) == apiserver.resource_version


def test_list_follows_continue_tokens_to_return_every_item(apiserver: ApiServerDouble, client: Client) -> None:
    for i in range(7):
        apiserver.seed(nad(f"net{i}"))
    got = client.list(group_path("k8s.cni.cncf.io", "v1", "network-attachment-definitions", NS), limit=3)
    assert [o["metadata"]["name"] for o in got["items"]] == [f"net{i}" for i in range(7)]
    assert "continue" not in got["metadata"]
    assert len(apiserver.requests_for("GET", "/apis/k8s.cni.cncf.io")) == 3


def test_create_assigns_uid_resource_version_and_generate_name(apiserver: ApiServerDouble, client: Client) -> None:
    created = client.create(core_path("pods", NS), {"metadata": {"generateName": "job-"}, "spec": {}})
    name = created["metadata"]["name"]
    assert name.startswith("job-") and len(name) == len("job-") + 5
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"].endswith("Z")
    assert apiserver.get_obj("pods", name, NS) is not None


def test_create_of_an_existing_name_raises_already_exists(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod())
    with pytest.raises(ApiAlreadyExists) as ei:
        client.create(core_path("pods", NS), pod())
    assert isinstance(ei.value, ApiConflict) and ei.value.code == 11 and ei.value.reason == "AlreadyExists"


def test_update_with_stale_resource_version_raises_conflict_code_11(apiserver: ApiServerDouble,
                                                                    client: Client) -> None:
    apiserver.seed(pod())
    stale = client.get_pod(NS, "web")
    fresh = client.get_pod(NS, "web")
    fresh["metadata"]["labels"] = {"v": "2"}
    client.update(core_path("pods", NS, "web"), fresh)
    stale["metadata"]["labels"] = {"v": "stale"}
    with pytest.raises(ApiConflict) as ei:
        client.update(core_path("pods", NS, "web"), stale)
    assert ei.value.code == 11 and isinstance(ei.value, TryAgainLater) and ei.value.status == 409
    assert apiserver.get_obj("pods", "web", NS)["metadata"]["labels"] == {"v": "2"}  # type: ignore[index]


def test_merge_json_and_strategic_patches(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod(app="x"))
    path = core_path("pods", NS, "web")
    out = client.patch(path, {"metadata": {"labels": {"tier": "db", "app": None}}})
    assert out["metadata"]["labels"] == {"tier": "db"}
    out = client.patch(path, [{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}},
                              {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"}], "json")
    assert out["metadata"]["annotations"] == {"a/b": "2"}
    out = client.patch(path, {"metadata": {"annotations": {"c": "3"}}}, STRATEGIC_MERGE_PATCH)
    assert out["metadata"]["annotations"] == {"a/b": "2", "c": "3"}
    with pytest.raises(ValueError):
        client.patch(path, {}, "apply")


def test_json_patch_test_of_resource_version_guards_writes(apiserver: ApiServerDouble, client: Client) -> None:
    # whereabouts' optimistic concurrency: a JSON patch whose first op tests metadata.resourceVersion.
    apiserver.seed({"apiVersion": "/".join(WB), "kind": "IPPool", "metadata": {"name": "10.0.0.0-24", "namespace": NS},
                    "spec": {"range": "10.0.0.0/24", "allocations": {}}})
    pool = client.get_cr(*WB, NS, "ippools", "10.0.0.0-24")
    rv = pool["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "add", "path": "/spec/allocations/1", "value": {"id": "c1", "podref": "default/a", "ifname": "net1"}}]
    out = client.patch_cr(*WB, NS, "ippools", "10.0.0.0-24", ops, JSON_PATCH)
    assert out["spec"]["allocations"]["1"]["id"] == "c1"
    with pytest.raises(ApiInvalid) as ei:
        client.patch_cr(*WB, NS, "ippools", "10.0.0.0-24", ops, JSON_PATCH)  # same rv again: stale
    assert ei.value.status == 422 and ei.value.reason == "Invalid"


def test_delete_removes_and_honours_preconditions(apiserver: ApiServerDouble, client: Client) -> None:
    seeded = apiserver.seed(pod())
    with pytest.raises(ApiConflict):
        client.delete(core_path("pods", NS, "web"), preconditions={"uid": "not-the-uid"})
    out = client.delete(core_path("pods", NS, "web"), preconditions={"uid": seeded["metadata"]["uid"]})
    assert out["metadata"]["name"] == "web"
    assert apiserver.get_obj("pods", "web", NS) is None
    with pytest.raises(ApiNotFound):
        client.delete(core_path("pods", NS, "web"))


def test_not_found_maps_to_api_not_found_code_103_naming_the_path(client: Client) -> None:
    with pytest.raises(ApiNotFound) as ei:
        client.get_nad(NS, "missing")
    err = ei.value
    assert isinstance(err, NotFound) and err.code == 103 and err.status == 404 and err.reason == "NotFound"
    assert "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/missing" in str(err)
    assert err.to_wire("1.1.0")["code"] == 103


def test_prefixed_error_keeps_class_and_code(client: Client) -> None:
    with pytest.raises(ApiNotFound) as ei:
        client.get_pod(NS, "nope")
    p = ei.value.prefixed("[default/nope/uid]: ")
    assert isinstance(p, ApiNotFound) and p.code == 103 and str(p).startswith("[default/nope/uid]: ")


def test_wrong_token_maps_to_unauthorized_without_leaking_the_token(apiserver: ApiServerDouble) -> None:
    secret = "sekrit-token-do-not-print"
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path(token=secret)))
    with pytest.raises(ApiUnauthorized) as ei:
        c.get_pod(NS, "web")
    err = ei.value
    assert isinstance(err, PolicyDenied) and err.code == 102 and err.status == 401
    assert "token" in err.msg and secret not in str(err) and secret not in repr(err)
    assert secret not in json.dumps(err.to_wire("1.0.0"))


def test_rbac_forbidden_maps_to_unauthorized_with_rbac_hint(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod())
    apiserver.forbid("PUT", "/api/v1/namespaces/default/pods/web/status")
    with pytest.raises(ApiUnauthorized) as ei:
        update_pod_status_annotation(client, NS, "web", NETWORK_STATUS, "[]")
    assert ei.value.status == 403 and "RBAC" in ei.value.msg
    assert 'cannot update resource "pods/status"' in ei.value.details


@pytest.mark.parametrize("code", [500, 503, 429])
def test_server_errors_map_to_unavailable_code_11(apiserver: ApiServerDouble, client: Client, code: int) -> None:
    apiserver.fail_next(1, code)
    with pytest.raises(ApiUnavailable) as ei:
        client.get_pod(NS, "web")
    assert ei.value.code == 11 and ei.value.status == code


# ---- watch --------------------------------------------------------------------------------------------------------


def test_watch_streams_added_modified_deleted_from_a_resource_version(apiserver: ApiServerDouble,
                                                                       client: Client) -> None:
    apiserver.seed(pod("before"))
    rv = client.list(core_path("pods", NS))["metadata"]["resourceVersion"]
    apiserver.seed(pod("web"))
    apiserver.seed(pod("elsewhere", ns="other"))
    client.patch(core_path("pods", NS, "web"), {"metadata": {"labels": {"x": "1"}}})
    apiserver.delete_obj("pods", "web", NS)
    stream = client.watch(core_path("pods", NS), rv, timeout_seconds=5)
    events = list(itertools.islice(stream, 3))
    stream.close()  # type: ignore[attr-defined]
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "web"), ("MODIFIED", "web"),
                                                              ("DELETED", "web")]
    rvs = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


def test_watch_from_zero_lists_then_streams_live_changes(apiserver: ApiServerDouble, client: Client) -> None:
    import threading

    apiserver.seed(pod("a", app="x"))
    apiserver.seed(pod("b", app="y"))
    stream = client.watch(core_path("pods", NS), "0", label_selector="app=x", timeout_seconds=5)
    first = next(stream)
    assert first[0] == "ADDED" and first[1]["metadata"]["name"] == "a"
    threading.Timer(0.1, lambda: apiserver.seed(pod("c", app="x"))).start()
    t, obj = next(stream)
    assert (t, obj["metadata"]["name"]) == ("ADDED", "c")
    stream.close()  # type: ignore[attr-defined]


def test_watch_from_a_compacted_version_raises_gone(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod("a"))
    apiserver.seed(pod("b"))
    apiserver.compact()
    with pytest.raises(ApiGone) as ei:
        list(client.watch(core_path("pods", NS), "1", timeout_seconds=1))
    assert ei.value.code == 11 and ei.value.status == 410


# ---- typed helpers ------------------------------------------------------------------------------------------------


def test_get_node_get_nad_and_list_nads(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"zone": "a"}}})
    apiserver.seed(nad("macvlan-conf"))
    apiserver.seed(nad("other-net", ns="kube-system"))
    assert client.get_node("node-1")["metadata"]["labels"] == {"zone": "a"}
    assert "macvlan" in client.get_nad(NS, "macvlan-conf")["spec"]["config"]
    assert [n["metadata"]["name"] for n in client.list_nads(NS)] == ["macvlan-conf"]
    assert len(client.list_nads()) == 2


def test_status_annotation_goes_through_the_status_subresource(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod())
    value = json.dumps([{"name": "cbr0", "ips": ["10.0.0.5"], "default": True, "dns": {}}])
    assert update_pod_status_annotation(client, NS, "web", NETWORK_STATUS, value) is True
    stored = apiserver.get_obj("pods", "web", NS)
    assert stored is not None and stored["metadata"]["annotations"][NETWORK_STATUS] == value
    assert stored["spec"]["nodeName"] == "node-1" and stored["metadata"]["ownerReferences"][0]["name"] == "rs"
    puts = apiserver.requests_for("PUT")
    assert [r.path for r in puts] == ["/api/v1/namespaces/default/pods/web/status"]
    rv = stored["metadata"]["resourceVersion"]
    # Writing the same value again is a no-op: no PUT, no new resourceVersion.
    assert update_pod_status_annotation(client, NS, "web", NETWORK_STATUS, value) is True
    assert len(apiserver.requests_for("PUT")) == 1
    assert update_pod_status_annotation(client, NS, "web", NETWORK_STATUS, None) is True
    stored = apiserver.get_obj("pods", "web", NS)
    assert stored is not None and NETWORK_STATUS not in stored["metadata"]["annotations"]
    assert int(stored["metadata"]["resourceVersion"]) > int(rv)


def test_status_annotation_retries_conflicts_then_succeeds(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod())
    apiserver.inject_conflicts(3)
    assert update_pod_status_annotation(client, NS, "web", NETWORK_STATUS, "[]") is True
    assert len(apiserver.requests_for("PUT")) == 4
    assert len(apiserver.requests_for("GET")) == 4  # each retry re-reads the pod
    assert apiserver.get_obj("pods", "web", NS)["metadata"]["annotations"] == {NETWORK_STATUS: "[]"}  # type: ignore[index]


def test_status_annotation_gives_up_after_bounded_conflicts(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod())
    apiserver.inject_conflicts(50)
    with pytest.raises(ApiConflict) as ei:
        update_pod_status_annotation(client, NS, "web", NETWORK_STATUS, "[]")
    assert ei.value.code == 11 and "default/web" in ei.value.msg
    assert len(apiserver.requests_for("PUT")) == 5


def test_status_annotation_on_a_gone_pod_returns_false(apiserver: ApiServerDouble, client: Client) -> None:
    assert update_pod_status_annotation(client, NS, "ghost", NETWORK_STATUS, "[]") is False
    apiserver.seed(pod())
    apiserver.fail_next(1, 404, methods=["PUT"])  # deleted between our GET and our PUT
    assert update_pod_status_annotation(client, NS, "web", NETWORK_STATUS, "[]") is False


def test_create_event_references_the_pod(apiserver: ApiServerDouble, client: Client) -> None:
    p = apiserver.seed(pod())
    ev = create_event(client, NS, p, "AddedInterface", "Add net1 [10.1.1.11/24] from default/macvlan-conf",
                             host="node-1")
    assert ev["metadata"]["name"].startswith("web.")
    stored = apiserver.objects("events", namespace=NS)
    assert len(stored) == 1
    inv = stored[0]["involvedObject"]
    assert inv == {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": NS,
                   "uid": p["metadata"]["uid"], "resourceVersion": p["metadata"]["resourceVersion"]}
    assert stored[0]["type"] == "Normal" and stored[0]["source"] == {"component": "multinic", "host": "node-1"}
    create_event(client, NS, p, "NoNetworkFound", "cannot find a network-attachment-definition", type_="Warning")
    assert {e["type"] for e in apiserver.objects("events")} == {"Normal", "Warning"}
    with pytest.raises(ValueError):
        create_event(client, NS, p, "X", "y", type_="Error")


def test_custom_resource_helpers_round_trip(apiserver: ApiServerDouble, client: Client) -> None:
    obj = {"apiVersion": "/".join(WB), "kind": "OverlappingRangeIPReservation",
           "metadata": {"name": "10.0.0.1"}, "spec": {"podref": "default/a", "ifname": "net1", "containerid": "c1"}}
    created = client.create_cr(*WB, "kube-system", "overlappingrangeipreservations", obj)
    assert created["metadata"]["namespace"] == "kube-system"
    with pytest.raises(ApiAlreadyExists):
        client.create_cr(*WB, "kube-system", "overlappingrangeipreservations", obj)
    got = client.get_cr(*WB, "kube-system", "overlappingrangeipreservations", "10.0.0.1")
    got["spec"]["containerid"] = "c2"
    updated = client.update_cr(*WB, "kube-system", "overlappingrangeipreservations", got)
    assert updated["spec"]["containerid"] == "c2"
    got["spec"]["containerid"] = "c3"  # got still holds the old resourceVersion
    with pytest.raises(ApiConflict):
        client.update_cr(*WB, "kube-system", "overlappingrangeipreservations", got)
    assert len(client.list_cr(*WB, None, "overlappingrangeipreservations")) == 1
    client.delete_cr(*WB, "kube-system", "overlappingrangeipreservations", "10.0.0.1")
    assert client.list_cr(*WB, "kube-system", "overlappingrangeipreservations") == []


# ---- configuration and credentials --------------------------------------------------------------------------------


def test_token_file_rotation_is_picked_up_without_a_new_client(apiserver: ApiServerDouble, tmp_path: Path) -> None:
    apiserver.seed(pod())
    token_file = tmp_path / "token"
    token_file.write_text(apiserver.token)
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path(token_file=token_file)))
    c.get_pod(NS, "web")
    apiserver.rotate_token("rotated-token-2")
    token_file.write_text("rotated-token-2")
    c.get_pod(NS, "web")
    assert apiserver.requests[-1].bearer == "rotated-token-2"


def test_token_file_rewritten_with_same_stat_is_reread_after_401(apiserver: ApiServerDouble, tmp_path: Path) -> None:
    apiserver.seed(pod())
    token_file = tmp_path / "token"
    token_file.write_text("tok-AAAA")
    apiserver.rotate_token("tok-AAAA")
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path(token_file=token_file)))
    c.get_pod(NS, "web")
    st = token_file.stat()
    apiserver.rotate_token("tok-BBBB")
    token_file.write_text("tok-BBBB")
    os.utime(token_file, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the 401 tells
    c.get_pod(NS, "web")
    assert [r.status for r in apiserver.requests[-2:]] == [401, 200]


def test_kubeconfig_rewritten_in_place_is_reloaded_after_401(apiserver: ApiServerDouble) -> None:
    apiserver.seed(pod())
    path = apiserver.kubeconfig_path()
    c = Client(KubeConfig.from_file(path))
    c.get_pod(NS, "web")
    apiserver.rotate_token("fresh-token")
    time.sleep(0.01)
    apiserver.kubeconfig_path(token="fresh-token")  # Multus' daemon rewrites its kubeconfig like this
    c.get_pod(NS, "web")
    assert apiserver.requests[-1].bearer == "fresh-token"


def test_in_cluster_config_from_service_account_dir(apiserver: ApiServerDouble) -> None:
    apiserver.seed(pod())
    sa = apiserver.serviceaccount_dir("kube-system")
    cfg = KubeConfig.in_cluster(env=apiserver.in_cluster_env(), sa_dir=sa)
    assert cfg.namespace == "kube-system" and cfg.server == apiserver.url
    c = Client(cfg)
    assert c.get_pod(NS, "web")["metadata"]["name"] == "web"
    apiserver.rotate_token("projected-2")
    Path(sa, "token").write_text("projected-2")
    c.get_pod(NS, "web")
    assert apiserver.requests[-1].bearer == "projected-2"


def test_load_without_kubeconfig_or_cluster_env_is_an_invalid_config(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError) as ei:
        KubeConfig.load(None, env={}, sa_dir=str(tmp_path))
    assert ei.value.code == 7 and "KUBERNETES_SERVICE_HOST" in ei.value.msg


def test_kubeconfig_with_data_fields_and_client_certificate(apiserver: ApiServerDouble, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    apiserver.seed(pod())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cfg = KubeConfig.from_file(apiserver.kubeconfig_path(embed_ca=True, embed_client_cert=True))
    assert cfg.ca_file is None and cfg.ca_data and cfg.client_cert_data and cfg.client_key_data
    assert "PRIVATE KEY" not in repr(cfg)
    c = Client(cfg)
    assert c.get_pod(NS, "web")["metadata"]["name"] == "web"
    assert apiserver.requests[-1].bearer is None and apiserver.requests[-1].user == "system:node:test"
    assert list(scratch.iterdir()) == []  # the key never stays on disk


def test_kubeconfig_client_certificate_files_and_json_format(apiserver: ApiServerDouble) -> None:
    apiserver.seed(pod())
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path(client_cert=True, fmt="json", namespace="ns1")))
    assert c.config.namespace == "ns1" and c.config.context_namespace == "ns1"
    assert KubeConfig.from_file(apiserver.kubeconfig_path(name="kc2")).context_namespace is None
    assert c.get_pod(NS, "web")["metadata"]["name"] == "web"


def test_json_kubeconfig_does_not_import_yaml_and_loading_does_not_import_tls() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "kc.json")
        path.write_text(json.dumps({
            "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "u", "user": {"token": "t"}}]}))
        code = ("import sys; from cni.k8s.client import KubeConfig, Client; "
                f"Client(KubeConfig.from_file({str(path)!r})); "
                "print(sorted(m for m in ('yaml', 'ssl', 'http.client') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("doc, fragment", [
    ({"current-context": "nope", "contexts": []}, "context 'nope' not found"),
    ({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
      "clusters": [{"name": "k", "cluster": {"server": "https://x"}}],
      "users": [{"name": "u", "user": {"exec": {"command": "aws"}}}]}, "'exec'"),
    ({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k"}}],
      "clusters": [{"name": "k", "cluster": {}}]}, "has no server"),
])
def test_unusable_kubeconfigs_are_invalid_config(tmp_path: Path, doc: dict[str, Any], fragment: str) -> None:
    path = tmp_path / "kc"
    path.write_text(json.dumps(doc))
    with pytest.raises(KubeConfigError) as ei:
        KubeConfig.from_file(str(path))
    assert ei.value.code == 7 and fragment in ei.value.msg


def test_missing_kubeconfig_file_is_invalid_config(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        KubeConfig.from_file(str(tmp_path / "absent"))


def test_repr_never_shows_the_token(apiserver: ApiServerDouble) -> None:
    cfg = KubeConfig.from_file(apiserver.kubeconfig_path(token="very-secret-value"))
    assert "very-secret-value" not in repr(cfg) and "very-secret-value" not in repr(Client(cfg))


# ---- TLS, timeouts, outages ---------------------------------------------------------------------------------------


def test_wrong_ca_fails_tls_verification_as_unavailable(apiserver: ApiServerDouble) -> None:
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path(ca_file=apiserver.pki.other_ca_cert)))
    with pytest.raises(ApiUnavailable) as ei:
        c.get_pod(NS, "web")
    assert "certificate-authority" in ei.value.details


def test_insecure_skip_tls_verify_connects_without_a_ca(apiserver: ApiServerDouble) -> None:
    apiserver.seed(pod())
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path(insecure=True)))
    assert c.get_pod(NS, "web")["metadata"]["name"] == "web"


def test_server_down_fails_fast_with_code_11(apiserver: ApiServerDouble) -> None:
    secret = apiserver.token
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path()), timeout=1.0)
    apiserver.set_down(True)
    t0 = time.monotonic()
    with pytest.raises(ApiUnavailable) as ei:
        c.get_pod(NS, "web")
    assert time.monotonic() - t0 < 0.5
    # the double resets connections while down (it keeps its port); a closed port is "refused": both are 11
    assert ei.value.code == 11 and ("refused" in ei.value.details or "reset" in ei.value.details.lower())
    assert secret not in str(ei.value)


def test_slow_server_times_out_within_the_budget(apiserver: ApiServerDouble) -> None:
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path()), timeout=0.3)
    apiserver.set_latency(2.0)
    t0 = time.monotonic()
    with pytest.raises(ApiUnavailable) as ei:
        c.get_pod(NS, "web")
    assert time.monotonic() - t0 < 1.0
    assert ei.value.code == 11 and "0.3s" in ei.value.details and apiserver.token not in str(ei.value)


def test_keep_alive_connection_cut_by_the_server_is_retried_once(apiserver: ApiServerDouble,
                                                                  client: Client) -> None:
    apiserver.seed(pod())
    client.get_pod(NS, "web")
    apiserver.set_down(True)   # cuts the kept-alive connection
    apiserver.set_down(False)  # and listens again on the same port
    assert client.get_pod(NS, "web")["metadata"]["name"] == "web"


def test_connection_is_reused_between_calls(apiserver: ApiServerDouble, client: Client) -> None:
    apiserver.seed(pod())
    client.get_pod(NS, "web")
    (conn,) = client.transport.idle
    sock = conn.sock
    client.get_pod(NS, "web")
    assert sock is not None and client.transport.idle == [conn] and conn.sock is sock


def test_concurrent_calls_do_not_wait_for_each_other(apiserver: ApiServerDouble, client: Client) -> None:
    """The daemon shares one client between threads: a slow answer must not hold up the others."""
    import threading

    apiserver.seed(pod())
    apiserver.set_latency(0.5)
    took: list[float] = []

    def call() -> None:
        t0 = time.monotonic()
        client.get_pod(NS, "web")
        took.append(time.monotonic() - t0)

    threads = [threading.Thread(target=call) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(took) == 4
    assert time.monotonic() - t0 < 4 * 0.5, "the four calls ran one after another"
    assert 2 <= len(client.transport.idle) <= 4  # their connections are kept for reuse


# ---- a deadline over a sequence of calls ----------------------------------------------------------------------------


def test_deadline_bounds_a_sequence_of_calls_not_each_call(apiserver: ApiServerDouble) -> None:
    from cni.deadline import MIN_CALL_BUDGET, current_deadline, deadline

    apiserver.seed(pod())
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path()), timeout=5.0)
    apiserver.set_latency(0.4)
    t0 = time.monotonic()
    with deadline(t0 + 1.0):
        assert current_deadline() == t0 + 1.0
        assert c.get_pod(NS, "web")["metadata"]["name"] == "web"  # 0.4 s of 1.0
        assert c.get_pod(NS, "web")["metadata"]["name"] == "web"  # 0.8 s of 1.0
        apiserver.set_latency(3.0)
        with pytest.raises(ApiUnavailable) as ei:
            c.get_pod(NS, "web")  # the rest of the second, lifted to the minimum a call gets
    took = time.monotonic() - t0
    assert current_deadline() is None
    assert ei.value.code == 11 and "no answer" in ei.value.details
    # without the deadline the third call alone could have waited 5 s
    assert took < 1.0 + MIN_CALL_BUDGET + 0.5, took


def test_a_call_past_the_deadline_still_gets_the_minimum_budget(apiserver: ApiServerDouble) -> None:
    """A node that started late must not fail against a healthy API just because the clock ran out."""
    from cni.deadline import deadline

    apiserver.seed(pod())
    c = Client(KubeConfig.from_file(apiserver.kubeconfig_path()), timeout=5.0)
    with deadline(time.monotonic() - 10):
        assert c.get_pod(NS, "web")["metadata"]["name"] == "web"
