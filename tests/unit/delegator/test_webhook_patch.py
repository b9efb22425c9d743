"""The admission webhook's pure core: node selectors of requested NADs → a JSON patch on the pod."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from cni.k8s.webhook import Denied, mutation, review
from cni.spec.errors import TryAgainLater
from conformance.apiserver import json_patch

SEL = "k8s.v1.cni.cncf.io/nodeSelector"


def nad(name: str, ns: str = "default", selector: str | None = None) -> dict[str, Any]:
    anns = {SEL: selector} if selector else {}
    return {"metadata": {"name": name, "namespace": ns, "annotations": anns}, "spec": {"config": "{}"}}


NADS = {
    ("default", "gke-network-1"): nad("gke-network-1", selector="my-label=multinicNP"),
    ("default", "plain"): nad("plain"),
    ("default", "prod"): nad("prod", selector="environment=production,kubernetes.io/arch=amd64"),
    ("default", "staging"): nad("staging", selector="environment=staging"),
    ("other", "gke-network-1"): nad("gke-network-1", "other", selector="my-label=other"),
}


def get_nad(ns: str, name: str) -> dict[str, Any] | None:
    return NADS.get((ns, name))


def pod(networks: str | None, node_selector: dict[str, str] | None = None, ns: str = "default") -> dict[str, Any]:
    p: dict[str, Any] = {"metadata": {"name": "samplepod", "namespace": ns,
                                      "annotations": {"k8s.v1.cni.cncf.io/networks": networks} if networks else {}},
                         "spec": {"containers": [{"name": "c"}]}}
    if node_selector is not None:
        p["spec"]["nodeSelector"] = node_selector
    return p


def test_selector_of_a_requested_nad_becomes_the_pod_node_selector() -> None:
    m = mutation(pod("default/gke-network-1,default/plain"), "default", get_nad)
    assert m.patch == [{"op": "add", "path": "/spec/nodeSelector", "value": {"my-label": "multinicNP"}}]
    assert json_patch(pod("x"), m.patch)["spec"]["nodeSelector"] == {"my-label": "multinicNP"}


def test_merge_with_an_existing_node_selector_escapes_keys() -> None:
    p = pod("prod", {"disk": "ssd", "environment": "production"})
    m = mutation(p, "default", get_nad)
    assert m.patch == [{"op": "add", "path": "/spec/nodeSelector/kubernetes.io~1arch", "value": "amd64"}]
    assert json_patch(p, m.patch)["spec"]["nodeSelector"] == {
        "disk": "ssd", "environment": "production", "kubernetes.io/arch": "amd64"}


def test_no_networks_or_no_selectors_means_no_patch() -> None:
    assert mutation(pod(None), "default", get_nad).patch == []
    assert mutation(pod("plain,plain"), "default", get_nad).patch == []


def test_namespace_comes_from_the_pod_or_the_request() -> None:
    m = mutation(pod("gke-network-1", ns="other"), "default", get_nad)
    assert m.patch[0]["value"] == {"my-label": "other"}
    p = pod("gke-network-1")
    del p["metadata"]["namespace"]
    assert mutation(p, "other", get_nad).patch[0]["value"] == {"my-label": "other"}


def test_conflicts_are_denied_naming_key_values_and_networks() -> None:
    with pytest.raises(Denied, match=r"networks default/prod and default/staging require different values of "
                                     r"node label environment \('production' and 'staging'\)"):
        mutation(pod("prod,staging"), "default", get_nad)
    with pytest.raises(Denied, match="the pod's nodeSelector has environment=dev but network default/prod requires "
                                     "environment=production"):
        mutation(pod("prod", {"environment": "dev"}), "default", get_nad)


def test_invalid_annotation_is_denied_and_missing_nad_is_a_warning() -> None:
    with pytest.raises(Denied, match="invalid k8s.v1.cni.cncf.io/networks annotation"):
        mutation(pod("a/b/c"), "default", get_nad)
    m = mutation(pod("nope,gke-network-1"), "default", get_nad)
    assert m.patch and "default/nope does not exist" in m.warnings[0]


def test_api_failure_denies_with_500() -> None:
    def down(ns: str, name: str) -> None:
        raise TryAgainLater("GET …: Kubernetes API unreachable; retry later")

    with pytest.raises(Denied) as ei:
        mutation(pod("gke-network-1"), "default", down)
    assert ei.value.code == 500


def _review(obj: dict[str, Any], op: str = "CREATE", kind: str = "Pod") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "", "version": "v1", "kind": kind},
                        "operation": op, "namespace": "default", "object": obj}}


def test_review_answers_admission_review_v1() -> None:
    ans = review(_review(pod("gke-network-1")), get_nad)
    assert ans["apiVersion"] == "admission.k8s.io/v1" and ans["kind"] == "AdmissionReview"
    r = ans["response"]
    assert r["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002" and r["allowed"] is True and r["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(r["patch"]))[0]["path"] == "/spec/nodeSelector"
    denied = review(_review(pod("prod,staging")), get_nad)["response"]
    assert denied["allowed"] is False and denied["status"]["code"] == 403 and "environment" in denied["status"]["message"]
    assert "patch" not in review(_review(pod("gke-network-1"), op="UPDATE"), get_nad)["response"]
    assert "patch" not in review(_review(pod(None)), get_nad)["response"]
    with pytest.raises(ValueError):
        review({"request": {}}, get_nad)
