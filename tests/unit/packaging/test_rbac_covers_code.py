"""The node agent's ClusterRole (packaging/manifests/rbac.yaml) allows exactly what the code does.

How the list of calls is built: the code paths that talk to the API — the delegator's ADD/DEL
(pod, NAD, node reads; network-status through pods/status; events), the thick daemon's
informers, native whereabouts with the Kubernetes datastore, and ``multinic reconcile`` — run
unchanged against the API server double (conformance/apiserver.py), and its request log is
mapped to (verb, API group, resource) the way the apiserver's authorizer sees it. Then:
- every observed request is allowed by some rule (else the agent gets 403 in a real cluster);
- every granted (verb, group, resource) was observed (else the role grants more than needed);
- no wildcard anywhere.
A static guard makes sure the driven paths still cover every typed API helper the code calls,
so a new call site cannot slip past this test.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.apiserver import ApiServerDouble
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "packaging" / "manifests"

Triple = tuple[str, str, str]  # (verb, apiGroup, resource[/subresource])


def role_rules(path: Path, name: str) -> list[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == name:
            return list(doc["rules"])
    raise AssertionError(f"no ClusterRole {name} in {path}")


def allowed(rules: list[dict[str, Any]], t: Triple) -> bool:
    verb, group, resource = t
    return any(verb in r.get("verbs", []) and group in r.get("apiGroups", []) and resource in r.get("resources", [])
               for r in rules)


def granted(rules: list[dict[str, Any]]) -> set[Triple]:
    return {(v, g, res) for r in rules for v in r["verbs"] for g in r["apiGroups"] for res in r["resources"]}


def to_triple(method: str, path: str, query: dict[str, str]) -> Triple:
    """How the apiserver's RequestInfo resolver names a request (verb, group, resource)."""
    segs = path.strip("/").split("/")
    if segs[:2] == ["api", "v1"]:
        group, rest = "", segs[2:]
    else:
        assert segs[0] == "apis", path
        group, rest = segs[1], segs[3:]
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
    if method == "GET":
        verb = "watch" if query.get("watch") in ("1", "true") else ("get" if named else "list")
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    return verb, group, resource


# ---- drive the code paths ----------------------------------------------------------------------------------------


NAD_CONF = {"cniVersion": "1.0.0", "type": "macvlan", "master": "eth9",
            "ipam": {"type": "static", "addresses": [{"address": "10.1.1.5/24"}]}}


def seed(api: ApiServerDouble) -> None:
    api.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"net": "yes"}}})
    api.seed({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
              "metadata": {"name": "mv", "namespace": "default",
                           "annotations": {"k8s.v1.cni.cncf.io/nodeSelector": "net=yes"}},
              "spec": {"config": json.dumps(NAD_CONF)}})
    for name, nets in (("p1", "mv"), ("p2", "missing-nad")):
        api.seed({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": name, "namespace": "default",
                               "annotations": {"k8s.v1.cni.cncf.io/networks": nets}},
                  "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]}})


def drive_delegator(api: ApiServerDouble, tmp: Path) -> None:
    from cni.delegator import config as cfgmod
    from cni.delegator import context, core
    from cni.k8s.client import Client
    from cni.k8s.source import ApiSource
    from cni.spec.request import Request
    from cni.spec.result import from_wire

    def fake_add(req: Any, conflist: Any, rc: Any) -> Any:  # no kernel here: the API calls are what we watch
        return from_wire({"cniVersion": "1.0.0", "interfaces": [{"name": req.ifname, "mac": "02:00:00:00:00:01",
                                                                  "sandbox": req.netns}],
                          "ips": [{"address": "10.1.1.5/24", "interface": 0}]}, "1.0.0")

    runner = context.Runner(add=fake_add, delete=lambda *a, **k: None)
    client = Client.from_kubeconfig(api.kubeconfig_path())
    primary = {"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge"}
    cfg = cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "delegates": [primary],
                        "cniDir": str(tmp / "cache"), "kubeconfig": api.kubeconfig_path(),
                        # profiles make ADD read the Namespace's multinic.io/policy label
                        "policyProfiles": {"open": "trusted"}})
    for pod, ok in (("p1", True), ("p2", False)):
        uid = api.get_obj("pods", pod, "default")["metadata"]["uid"]
        args = {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod, "K8S_POD_UID": uid}
        for cmd in ("ADD", "DEL"):
            req = Request(cmd, f"cid-{pod}", "/run/netns/x", "eth0", args, ("/usr/lib/cni",), {})
            ctx = context.Context(req, cfg, ApiSource(client, host="node-a"), runner=runner, node_name="node-a")
            try:
                core.add(ctx) if cmd == "ADD" else core.delete(ctx)
            except Exception:
                if ok:
                    raise
    client.close()


def drive_daemon_informers(api: ApiServerDouble) -> None:
    from cni.daemon.cache import CachedApiSource
    from cni.k8s.client import Client

    src = CachedApiSource(Client.from_kubeconfig(api.kubeconfig_path()), "node-a")
    try:
        assert src.pods.synced.wait(5) and src.nads.synced.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not api.requests_for("GET", "/api/v1/pods") [1:]:
            time.sleep(0.05)  # the watch request follows the list
        assert src.get_pod("default", "p1") is not None
    finally:
        src.pods.stop.set()
        src.nads.stop.set()


def drive_whereabouts(api: ApiServerDouble, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    from cni.spec.request import Request
    from ipam.whereabouts import PLUGIN

    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp / "absent.conf"))
    kc = api.kubeconfig_path(name="wb-kubeconfig")
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": "10.20.0.0/29", "kubernetes": {"kubeconfig": kc}}}
    for pod in ("p1", "p2"):
        req = Request("ADD", f"cid-{pod}", "/run/netns/x", "net1",
                      {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod}, ("/usr/lib/cni",), conf)
        res = PLUGIN.run(req)
        assert res is not None and ipaddress.ip_interface(str(res.ips[0].address)).ip in \
            ipaddress.ip_network("10.20.0.0/29")
    req = Request("DEL", "cid-p1", "/run/netns/x", "net1",
                  {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p1"}, ("/usr/lib/cni",), conf)
    PLUGIN.run(req)
    # Node slices and an IPAMClaim (its pod names it in its annotation).
    api.seed({"apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
              "metadata": {"name": "vm", "namespace": "default"}, "spec": {"network": "net", "interface": "net1"}},
             plural="ipamclaims")
    api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p3", "namespace": "default", "annotations": {
        "k8s.v1.cni.cncf.io/networks": '[{"name": "net", "interface": "net1", "ipam-claim-reference": "vm"}]'}},
        "spec": {"containers": []}})
    sliced = {**conf, "allowPersistentIPs": True, "ipam": {**conf["ipam"], "range": "10.21.0.0/24", "node_slice_size": "/28",
                               "network_name": "fast"}}
    monkeypatch.setenv("NODENAME", "gone-node")
    for pod in ("p3", "p4"):
        PLUGIN.run(Request("ADD", f"cid-{pod}", "/run/netns/x", "net1",
                           {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod}, ("/usr/lib/cni",), sliced))
    PLUGIN.run(Request("DEL", "cid-p4", "/run/netns/x", "net1",
                       {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p4"}, ("/usr/lib/cni",), sliced))
    api.delete_obj("pods", "p3", "default")
    api.delete_obj("ipamclaims", "vm", "default", "k8s.cni.cncf.io/v1alpha1")
    # p2's pod is deleted behind the plugin's back: the reconciler must free its address, p3's claim is gone, and
    # the slice of the node that does not exist is given back once empty.
    api.delete_obj("pods", "p2", "default")
    from ipam import reconcile

    assert reconcile.main(["--kubeconfig", kc, "--grace", "0"]) == 0
    assert reconcile.main(["--kubeconfig", kc, "--grace", "0"]) == 0
    nsp = api.get_obj("nodeslicepools", "fast", "kube-system", "whereabouts.cni.cncf.io/v1alpha1")
    assert nsp is not None and all(a["nodeName"] == "" for a in nsp["status"]["allocations"])


@pytest.fixture
def observed(apiserver: ApiServerDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> set[Triple]:  # noqa: F811
    seed(apiserver)
    drive_delegator(apiserver, tmp_path)
    drive_daemon_informers(apiserver)
    drive_whereabouts(apiserver, monkeypatch, tmp_path)
    got = {to_triple(r.method, r.path, r.query) for r in apiserver.requests}
    return got


def test_the_driven_paths_make_the_calls_we_expect(observed: set[Triple]) -> None:
    # A sanity floor: if a driver silently stopped reaching the API, the coverage checks below
    # would pass vacuously.
    for t in [("get", "", "pods"), ("update", "", "pods/status"), ("get", "", "namespaces"), ("create", "", "events"), ("get", "", "nodes"),
              ("get", "k8s.cni.cncf.io", "network-attachment-definitions"), ("watch", "", "pods"),
              ("list", "k8s.cni.cncf.io", "network-attachment-definitions"), ("list", "", "pods"),
              ("create", "whereabouts.cni.cncf.io", "ippools"), ("patch", "whereabouts.cni.cncf.io", "ippools"),
              ("create", "whereabouts.cni.cncf.io", "overlappingrangeipreservations"),
              ("delete", "whereabouts.cni.cncf.io", "overlappingrangeipreservations"),
              ("update", "whereabouts.cni.cncf.io", "nodeslicepools/status"),
              ("update", "k8s.cni.cncf.io", "ipamclaims/status"), ("update", "coordination.k8s.io", "leases")]:
        assert t in observed, t


def test_every_api_call_the_code_makes_is_allowed_by_the_node_role(observed: set[Triple]) -> None:
    rules = role_rules(MANIFESTS / "rbac.yaml", "multinic")
    denied = sorted(t for t in observed if not allowed(rules, t))
    assert not denied, f"rbac.yaml does not allow: {denied}"


def test_the_node_role_grants_nothing_the_code_does_not_use(observed: set[Triple]) -> None:
    rules = role_rules(MANIFESTS / "rbac.yaml", "multinic")
    for r in rules:
        for key in ("verbs", "apiGroups", "resources"):
            assert "*" not in r[key], f"wildcard in {key}: {r}"
        assert "resourceNames" not in r or r["resourceNames"]
    unused = sorted(granted(rules) - observed)
    assert not unused, f"rbac.yaml grants what no code path uses: {unused}"


def test_the_webhook_role_covers_its_nad_lookups() -> None:
    rules = role_rules(MANIFESTS / "webhook.yaml", "multinic-webhook")
    assert allowed(rules, ("get", "k8s.cni.cncf.io", "network-attachment-definitions"))
    assert allowed(rules, ("get", "", "namespaces"))  # policyProfiles (webhook.NamespaceReader)
    assert all("*" not in r[k] for r in rules for k in ("verbs", "apiGroups", "resources"))


# Verbs and typed helpers of cni.k8s.client; the drivers above must reach each one the code calls
# (checked by scanning the code), so a new call site is never outside this test. get/update/create
# are the API source's network-status write (GET + PUT pods/status) and events (POST).
HELPER_CALLS = {"get_pod", "get_node", "get_nad", "list", "watch", "get_cr", "list_cr", "create_cr", "update_cr",
                "delete_cr", "patch_cr", "list_nads", "get", "create", "update", "patch", "delete"}
DRIVEN = {"get_pod", "get_node", "get_nad", "list", "watch", "get", "update", "create",
          "get_cr", "list_cr", "create_cr", "update_cr", "delete_cr", "patch_cr"}


def test_every_client_call_site_in_the_code_is_driven_by_this_test() -> None:
    pattern = re.compile(r"\b(?:self\.)?client\.(\w+)\b")
    called: dict[str, set[str]] = {}
    for base in ("cni", "ipam", "plugins", "conformance"):
        for f in sorted((ROOT / base).rglob("*.py")):
            rel = str(f.relative_to(ROOT))
            if rel in ("cni/k8s/client.py", "ipam/whereabouts/store_etcd.py", "cni/k8s/webhook.py"):
                continue  # the client itself; an etcd client; the webhook (its own role, checked above)
            for m in pattern.finditer(f.read_text()):
                if m.group(1) in HELPER_CALLS:
                    called.setdefault(m.group(1), set()).add(rel)
    missing = {k: sorted(v) for k, v in called.items() if k not in DRIVEN}
    assert not missing, f"API calls not driven by this test (add them to a driver and to rbac.yaml): {missing}"
