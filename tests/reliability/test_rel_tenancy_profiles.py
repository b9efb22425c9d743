"""policyProfiles chosen by the ``multinic.io/policy`` label of the Namespace, read through the API (the API server
double): the same choice in-process, through the thin binary, through the daemon (thick), and at the webhook —
the label's profile lets a host port through; an unknown profile, a missing Namespace and an API error give the
node's policy (fail closed) with a log line. Hot-plug: tests/netns/delegator/test_dynamic_tenancy.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cni.delegator.tenancy import PROFILE_LABEL
from tests.reliability.harness import Call, Daemon, Node, Pod, cmd_out
from tests.reliability.test_rel_tenancy import PORTMAP, _macvlan, _nad, _pm, canary, real_defaults  # noqa: F401

PROFILES = {"policyProfiles": {"ports": {"hostPortPolicy": [{"ports": "30000-32767", "protocols": ["tcp"]}]}}}


def namespace(node: Node, name: str, profile: str | None) -> None:
    labels = {"kubernetes.io/metadata.name": name}
    if profile is not None:
        labels[PROFILE_LABEL] = profile
    node.api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
                  plural="namespaces")


def port_pod(node: Node, ns: str, door: str, port: int) -> Pod:
    node.add_nad("pm", _nad(node, _macvlan(node), dict(PORTMAP, dataDir=str(node.portmap_dir))), ns=ns)
    return node.new_pod(f"{door}-{ns}", networks=json.dumps([{"name": "pm", "portMappings": [_pm(port)]}]), ns=ns)


def namespace_gets(node: Node, name: str) -> int:
    return sum(r.path == f"/api/v1/namespaces/{name}" for r in node.api.requests_for("GET", "/api/v1/namespaces/"))


def log_text(node: Node) -> str:
    return node.log_file.read_text() if node.log_file.exists() else ""


def run(node: Node, door: str, cmd: str, pod: Pod, conf: dict[str, Any], daemon: Daemon | None) -> Call:
    if door == "inproc":
        return node.inproc(cmd, pod, conf)
    if door == "thin":
        return node.exec(cmd, pod, conf)
    assert daemon is not None
    return node.shim(daemon, cmd, pod, conf)


def through(node: Node, door: str, daemon: Daemon | None = None) -> None:
    conf = node.conf(allowedPaths=[str(node.tmp)], **PROFILES)  # the node's state is under tmp; profiles inherit it
    namespace(node, f"{door}-lab", "ports")
    namespace(node, f"{door}-typo", "portz")
    base = {"inproc": 30100, "thin": 30200, "thick": 30300}[door]
    # The profile the label names: the host port is mapped.
    ok = port_pod(node, f"{door}-lab", door, base)
    c = run(node, door, "ADD", ok, conf, daemon)
    assert c.ok, c.doc
    if door != "thick":
        assert namespace_gets(node, f"{door}-lab") == 1  # one read per command, for the pod's and the NAD's policy
    assert str(base) in cmd_out("iptables-save", "-t", "nat") + cmd_out("nft", "list", "ruleset")
    assert run(node, door, "DEL", ok, conf, daemon).ok
    # Fail closed: a label naming no profile, no Namespace at all, the Namespace unreadable.
    node.api.missing_namespaces.add(f"{door}-none")  # the double's namespaces are implicit; this one is not there
    refusals = [(f"{door}-typo", "no such profile"), (f"{door}-none", "no such Namespace")]
    for i, (ns, logged) in enumerate(refusals, 1):
        pod = port_pod(node, ns, door, base + i)
        c = run(node, door, "ADD", pod, conf, daemon)
        assert c.code == 102 and "hostPortPolicy" in c.doc["msg"] + c.doc.get("details", ""), (ns, c.doc)
        assert logged in log_text(node), (ns, logged)
        assert str(base + i) not in cmd_out("iptables-save", "-t", "nat") + cmd_out("nft", "list", "ruleset")
        assert run(node, door, "DEL", pod, conf, daemon).ok
    node.api.deny("get", "namespaces")
    try:
        namespace(node, f"{door}-denied", "ports")
        pod = port_pod(node, f"{door}-denied", door, base + 9)
        c = run(node, door, "ADD", pod, conf, daemon)
        assert c.code == 102, c.doc
        assert f"namespace {door}-denied: cannot read its {PROFILE_LABEL} label" in log_text(node)
        assert run(node, door, "DEL", pod, conf, daemon).ok
    finally:
        node.api.allow("get", "namespaces")
    assert node.leaks(list(node.pods.values())) == []


@pytest.mark.parametrize("door", ["inproc", "thin"])
def test_the_namespace_label_selects_the_profile_and_fails_closed(node: Node, door: str) -> None:
    through(node, door)


def test_the_namespace_label_through_the_daemon(node: Node) -> None:
    d = Daemon(node.tmp / "daemon")
    try:
        through(node, "thick", d)
        assert d.alive()
    finally:
        d.stop()


def test_without_profiles_no_namespace_is_read(node: Node) -> None:
    namespace(node, "plain", "ports")
    pod = port_pod(node, "plain", "inproc", 30500)
    conf = node.conf(allowedPaths=[str(node.tmp)])
    c = node.inproc("ADD", pod, conf)
    assert c.code == 102, c.doc
    assert namespace_gets(node, "plain") == 0
    assert node.inproc("DEL", pod, conf).ok


def test_the_webhook_reads_the_label_through_the_api(node: Node, tmp_path: Path) -> None:
    import dataclasses

    from cni.k8s import webhook
    from cni.k8s.client import Client

    namespace(node, "wh-lab", "ports")
    client = Client.from_kubeconfig(node.kubeconfig)
    policy = webhook.Tenancy.from_config(node.conf(**PROFILES))
    policy = dataclasses.replace(policy, namespaces=webhook.NamespaceReader(client))

    def review(ns: str) -> dict[str, Any]:
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns, "annotations": {
            "k8s.v1.cni.cncf.io/networks": json.dumps([{"name": "pm", "portMappings": [_pm(31234)]}])}}}
        doc = {"request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "namespace": ns, "object": obj}}
        out: dict[str, Any] = webhook.review(doc, lambda _ns, _n: None, policy)["response"]
        return out

    node.api.missing_namespaces.add("wh-none")
    assert review("wh-lab")["allowed"] is True
    assert review("wh-none")["allowed"] is False  # no Namespace: the node's policy
    review("wh-lab")
    assert namespace_gets(node, "wh-lab") == 1  # the TTL cache
    client.close()
