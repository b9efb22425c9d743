"""``multinic webhook`` over HTTPS, reading NADs from the API server double through cni.k8s.client."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cni.k8s.client import Client
from cni.k8s.webhook import make_server, nad_getter
from conformance.apiserver import ApiServerDouble, json_patch
from tests.support.fixtures_apiserver import apiserver  # noqa: F401,F811  (fixture)


@pytest.fixture
def webhook(apiserver: ApiServerDouble) -> Iterator[tuple[str, int]]:  # noqa: F811
    client = Client.from_kubeconfig(apiserver.kubeconfig_path(), timeout=2.0)
    pki = apiserver.pki
    server = make_server("127.0.0.1", 0, str(pki.server_cert), str(pki.server_key), nad_getter(client))
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        client.close()


def _post(addr: tuple[str, int], ca: str, body: Any, path: str = "/mutate") -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(*addr, context=ctx, timeout=5)
    try:
        data = json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_webhook_patches_pod_from_nad_node_selector_over_https(apiserver: ApiServerDouble, webhook) -> None:  # noqa: F811
    apiserver.seed({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": "gke-network-1", "namespace": "default",
                                 "annotations": {"k8s.v1.cni.cncf.io/nodeSelector": "my-label=multinicNP"}},
                    "spec": {"config": '{"cniVersion":"1.0.0","type":"macvlan"}'}},
                   plural="network-attachment-definitions")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "samplepod", "namespace": "default",
                        "annotations": {"k8s.v1.cni.cncf.io/networks": "default/gke-network-1"}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeSelector": {"disk": "ssd"}}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "operation": "CREATE", "namespace": "default", "object": pod}}
    status, body = _post(webhook, apiserver.ca_file, review)
    assert status == 200
    resp = json.loads(body)["response"]
    assert resp["uid"] == "u-1" and resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    patched = json_patch(pod, json.loads(base64.b64decode(resp["patch"])))
    assert patched["spec"]["nodeSelector"] == {"disk": "ssd", "my-label": "multinicNP"}
    # The NAD was read through the real client.
    assert apiserver.requests_for("GET", "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/"
                                         "gke-network-1")
    # Health and bad input.
    ctx = ssl.create_default_context(cafile=apiserver.ca_file)
    conn = http.client.HTTPSConnection(*webhook, context=ctx, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok"
    conn.close()
    assert _post(webhook, apiserver.ca_file, {"nope": 1})[0] == 400


def test_webhook_denies_with_500_when_the_api_is_down(apiserver: ApiServerDouble, webhook) -> None:  # noqa: F811
    apiserver.set_down(True)
    pod = {"metadata": {"name": "p", "namespace": "default",
                        "annotations": {"k8s.v1.cni.cncf.io/networks": "gke-network-1"}}, "spec": {}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u-2", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": pod}}
    resp = json.loads(_post(webhook, apiserver.ca_file, review)[1])["response"]
    assert resp["allowed"] is False and resp["status"]["code"] == 500
    assert "Kubernetes API unreachable" in resp["status"]["message"]
