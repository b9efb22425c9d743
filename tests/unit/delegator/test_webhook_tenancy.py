"""The webhook applies the nodes' multi-tenant policy at admission, with the node's message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cni.delegator import tenancy
from cni.k8s import webhook as wh
from cni.spec.config import conflist_from
from cni.spec.errors import PolicyDenied

MACVLAN = {"cniVersion": "1.0.0", "type": "macvlan", "master": "ens224",
           "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}


def nad(name: str, conf: dict[str, Any] | None, ns: str = "team-a") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                           "metadata": {"name": name, "namespace": ns}, "spec": {}}
    if conf is not None:
        obj["spec"]["config"] = json.dumps(conf)
    return obj


def getter(*objs: dict[str, Any]) -> wh.GetNad:
    by = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}
    return lambda ns, name: by.get((ns, name))


def pod_review(annotation: Any, get_nad: wh.GetNad, policy: wh.Tenancy | None = None,
               ns: str = "team-a") -> dict[str, Any]:
    value = annotation if isinstance(annotation, str) else json.dumps(annotation)
    pod = {"metadata": {"name": "p", "namespace": ns, "annotations": {"k8s.v1.cni.cncf.io/networks": value}},
           "spec": {}}
    doc = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
           "request": {"uid": "u1", "kind": {"kind": "Pod"}, "operation": "CREATE", "namespace": ns, "object": pod}}
    return dict(wh.review(doc, get_nad, policy)["response"])


def nad_review(obj: dict[str, Any], op: str = "CREATE", policy: wh.Tenancy | None = None) -> dict[str, Any]:
    doc = {"request": {"uid": "u2", "kind": {"kind": "NetworkAttachmentDefinition"}, "operation": op,
                       "namespace": obj["metadata"]["namespace"], "object": obj}}
    return dict(wh.review(doc, lambda ns, n: None, policy)["response"])


@pytest.mark.parametrize("port", [22, 6443, 10250])
def test_pod_asking_for_a_host_port_is_denied_with_the_nodes_message(port: int) -> None:
    ann = [{"name": "mv", "portMappings": [{"hostPort": port, "containerPort": 80}]}]
    resp = pod_review(ann, getter(nad("mv", MACVLAN)))
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    with pytest.raises(PolicyDenied) as node:
        tenancy.check_attachment("team-a/mv", pod_policy=tenancy.policies({}, "kube-system").for_namespace("team-a"),
                                 annotation_ports=ann[0]["portMappings"], nad_policy=None, conflist=None,
                                 facts=tenancy.Facts(), resolved={})
    assert resp["status"]["message"] == str(node.value)
    assert "hostPortPolicy" in resp["status"]["message"]


def test_the_same_nad_twice_checks_each_items_ports() -> None:
    ann = [{"name": "mv"}, {"name": "mv", "portMappings": [{"hostPort": 22, "containerPort": 22}]}]
    assert pod_review(ann, getter(nad("mv", MACVLAN)))["allowed"] is False


def test_pod_selecting_a_nad_the_node_would_refuse_is_denied() -> None:
    evil = dict(MACVLAN, ipam={"type": "host-local", "subnet": "10.9.0.0/24", "dataDir": "/etc/x"})
    resp = pod_review("mv", getter(nad("mv", evil)))
    assert resp["allowed"] is False and "dataDir" in resp["status"]["message"]
    assert "allowedPaths" in resp["status"]["message"]
    # allowed with the override for that namespace, and pods without a bad request pass unchanged
    policy = wh.Tenancy.from_config({"multinicPolicy": {"team-a": {"allowedPaths": ["/etc/x"]}}})
    assert pod_review("mv", getter(nad("mv", evil)), policy)["allowed"] is True
    assert pod_review("mv", getter(nad("mv", MACVLAN)))["allowed"] is True


def test_a_missing_or_confdir_nad_is_not_judged_here() -> None:
    resp = pod_review("gone", getter())
    assert resp["allowed"] is True and resp["warnings"]
    assert pod_review("mv", getter(nad("mv", None)))["allowed"] is True


def test_cluster_bridge_known_from_the_config_delegates() -> None:
    policy = wh.Tenancy.from_config({"delegates": [{"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge",
                                                    "bridge": "cbr0", "ipam": {}}]})
    resp = nad_review(nad("br", {"cniVersion": "1.0.0", "type": "bridge", "bridge": "cbr0"}), policy=policy)
    assert resp["allowed"] is False and "cluster network" in resp["status"]["message"]
    assert nad_review(nad("br", {"cniVersion": "1.0.0", "type": "bridge", "bridge": "br1"}), policy=policy)["allowed"]


@pytest.mark.parametrize("op", ["CREATE", "UPDATE"])
@pytest.mark.parametrize(("conf", "words"), [
    ({"type": "bridge", "bridge": "br1", "isGateway": True}, "hostNetworkChanges"),
    ({"type": "bridge", "bridge": "br1", "ipMasq": True}, "hostNetworkChanges"),
    ({"type": "macvlan", "master": "ens224", "ipam": {"type": "whereabouts", "range": "10.0.0.0/24",
                                                      "log_file": "/etc/cron.d/x"}}, "allowedPaths"),
    ({"type": "macvlan", "master": "ens224", "ipam": {"type": "host-local", "subnet": "10.0.0.0/24",
                                                      "dataDir": "relative/dir"}}, "absolute"),
    ({"plugins": [MACVLAN, {"type": "portmap", "runtimeConfig": {"portMappings": [{"hostPort": 22}]}}]},
     "hostPortPolicy"),
])
def test_nad_the_nodes_would_refuse_is_denied(op: str, conf: dict[str, Any], words: str) -> None:
    doc = {"cniVersion": "1.0.0", "name": "evil", **conf}
    resp = nad_review(nad("evil", doc), op)
    assert resp["allowed"] is False and words in resp["status"]["message"], resp
    # the node gives the same text (its resolve step prefixes the pod)
    with pytest.raises(Exception) as node:  # noqa: PT011 - PolicyDenied or InvalidConfig, as the node raises
        tenancy.check_nad(conflist_from(doc), tenancy.policies({}, "kube-system").for_namespace("team-a"),
                          tenancy.Facts(), {}, "team-a/evil")
    assert resp["status"]["message"] == str(node.value)


def test_nad_in_the_multus_namespace_or_without_config_is_allowed() -> None:
    gw = {"cniVersion": "1.0.0", "name": "gw", "type": "bridge", "bridge": "br1", "isGateway": True}
    assert nad_review(nad("gw", gw, ns="kube-system"))["allowed"] is True
    assert nad_review(nad("gw", None))["allowed"] is True
    assert nad_review(nad("gw", gw), "DELETE")["allowed"] is True
