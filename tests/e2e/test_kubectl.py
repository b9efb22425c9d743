"""kubectl, unchanged, as a cluster admin's client of the API server double, around a real multinic ADD and DEL.

What an admin does on a cluster: install the CRDs from ``packaging/manifests/crds.yaml``, apply a
NetworkAttachmentDefinition (then change it and apply again), create a pod asking for it, and after the runtime ran
the CNI ADD read the pod's ``network-status`` with ``kubectl get -o jsonpath`` and its events with ``kubectl
describe``. kubectl does discovery, OpenAPI v3 and ``fieldValidation=Strict`` writes on its own, so these tests fail
if the double stops answering what a real apiserver answers. multinic is the installed binary, exec'd as a runtime
would, against a real network namespace; kubectl's discovery cache lives under the test's temp dir.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.apiserver import ApiServerDouble
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)
from tests.support.nsfix import REF_CNI, Scene, links_in, sh

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "packaging" / "manifests" / "crds.yaml"
MULTINIC = os.path.join(os.path.dirname(sys.executable), "multinic")
KUBECTL = shutil.which("kubectl")
STATUS_KEY = "k8s.v1.cni.cncf.io/network-status"


@dataclass
class Kubectl:
    kubeconfig: str
    home: Path

    def run(self, *args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        # HOME and --cache-dir keep kubectl's discovery/http caches out of the shared machine's ~/.kube.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        proc = subprocess.run([KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", str(self.home / "cache"),
                               "--request-timeout=30s", *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=90, check=False)
        if ok:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: rc={proc.returncode}\n{proc.stderr}"
        return proc


@pytest.fixture
def kubectl(apiserver: ApiServerDouble, tmp_path: Path) -> Kubectl:  # noqa: F811  (fixture argument)
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (the machine image ships /usr/bin/kubectl)")
    home = tmp_path / "kubectl-home"
    home.mkdir()
    return Kubectl(apiserver.kubeconfig_path(), home)


def _multinic(cmd: str, cid: str, netns: str, pod: str, uid: str, conf: dict[str, Any]) -> tuple[int, Any, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": REF_CNI,
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
                       f"K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}"}
    proc = subprocess.run([MULTINIC], input=json.dumps(conf).encode(), capture_output=True, env=env, timeout=120,
                          check=False)
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out) if out.strip() else None, proc.stderr.decode(errors="replace")


def _allocations(root: Path) -> list[str]:
    """host-local's reservation files (one per IP, named after it) under ``root``."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            try:
                ipaddress.ip_address(fn.replace("_", ":"))
            except ValueError:
                continue
            found.append(os.path.join(dirpath, fn))
    return found


def _conf(kubeconfig: str, tmp: Path, cluster_bridge: str, hl_dir: Path) -> dict[str, Any]:
    """multinic's config: the cluster network on a bridge, pods and NADs from the double (same kubeconfig)."""
    return {"cniVersion": "1.0.0", "name": "multinic-cni-network", "type": "multinic", "nodeName": "node-k",
            "kubeconfig": kubeconfig, "allowedPaths": ["/var/lib/cni", "/run/cni", "/var/log", str(tmp)], "cniDir": str(tmp / "cache"), "binDir": REF_CNI, "confDir": str(tmp / "net.d"),
            "logFile": str(tmp / "multinic.log"),
            # Not a latency test: a shared, loaded CI machine must not turn a slow answer into code 11.
            "apiTimeoutSeconds": 30,
            # No isGateway: no host address, so no host route another test on this machine could collide with.
            "delegates": [{"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge", "bridge": cluster_bridge,
                           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.0.0/24"}]],
                                    "dataDir": str(hl_dir)}}]}


def _nad(name: str, master: str, subnet: str, data_dir: Path) -> dict[str, Any]:
    config = {"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": master, "mode": "bridge",
              "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(data_dir)}}
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"config": json.dumps(config)}}


def test_kubectl_installs_crds_applies_nads_and_reads_network_status_after_a_real_add(
        kubectl: Kubectl, apiserver: ApiServerDouble, scene: Scene, tmp_path: Path) -> None:  # noqa: F811
    if not os.access(MULTINIC, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    server = json.loads(kubectl.run("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == "v1.32.0-multinic-double"

    # The CRDs as shipped; afterwards discovery names the NAD resource under its group, short names included.
    out = kubectl.run("apply", "-f", str(CRDS)).stdout
    assert out.count(" created") == CRDS.read_text().count("kind: CustomResourceDefinition"), out
    rows = [line.split() for line in
            kubectl.run("api-resources", "--api-group=k8s.cni.cncf.io", "--no-headers").stdout.splitlines()]
    nad_row = next(r for r in rows if r and r[0] == "network-attachment-definitions")
    assert nad_row[1:4] == ["nad,net-attach-def", "k8s.cni.cncf.io/v1", "true"]
    assert "ippools" in kubectl.run("api-resources", "-o", "name").stdout

    # The NAD: applied with a wrong subnet first, then corrected; the pod must get the corrected one, so this
    # proves kubectl's GET + last-applied-configuration merge PATCH reached the store.
    uplink = scene.veth_uplink()
    hl_dir = tmp_path / "host-local"
    nad_file = tmp_path / "nad.yaml"
    nad_file.write_text(yaml.safe_dump(_nad("macvlan-conf", uplink, "10.251.1.0/24", hl_dir)))
    assert "created" in kubectl.run("apply", "-f", str(nad_file)).stdout
    assert "unchanged" in kubectl.run("apply", "-f", str(nad_file)).stdout
    nad_file.write_text(yaml.safe_dump(_nad("macvlan-conf", uplink, "10.251.7.0/24", hl_dir)))
    assert "configured" in kubectl.run("apply", "-f", str(nad_file)).stdout
    assert kubectl.run("get", "nad", "-o", "name").stdout.split() == [
        "networkattachmentdefinition.k8s.cni.cncf.io/macvlan-conf"]
    stored = apiserver.get_obj("network-attachment-definitions", "macvlan-conf", "default", "k8s.cni.cncf.io/v1")
    assert stored is not None and "10.251.7.0/24" in stored["spec"]["config"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]

    # The pod (and its node) as kubectl creates them.
    pod = "kubectl-pod"
    manifests = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-k", "labels": {"kubernetes.io/hostname":
                                                                                       "node-k"}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": "default", "annotations": {
            "k8s.v1.cni.cncf.io/networks": "macvlan-conf"}},
         "spec": {"nodeName": "node-k", "containers": [{"name": "c", "image": "busybox"}]}}]
    kubectl.run("create", "-f", "-", stdin=yaml.safe_dump_all(manifests))
    uid = kubectl.run("get", "pod", pod, "-o", "jsonpath={.metadata.uid}").stdout
    assert uuid.UUID(uid)

    cluster_bridge = scene.bridge_uplink()
    conf = _conf(kubectl.kubeconfig, tmp_path, cluster_bridge, hl_dir)
    netns = scene.netns("kc")
    cid = uuid.uuid4().hex
    deleted = False
    try:
        rc, result, err = _multinic("ADD", cid, scene.path(netns), pod, uid, conf)
        assert rc == 0, (result, err)
        net1 = sh("ip", "-o", "-4", "addr", "show", "dev", "net1", ns=netns).split()[3]
        assert ipaddress.ip_interface(net1).ip in ipaddress.ip_network("10.251.7.0/24")  # the re-applied subnet
        mac = sh("cat", "/sys/class/net/net1/address", ns=netns).strip()

        # network-status, read the way an admin reads it.
        raw = kubectl.run("get", "pod", pod, "-o",
                          "jsonpath={.metadata.annotations.k8s\\.v1\\.cni\\.cncf\\.io/network-status}").stdout
        status = json.loads(raw)
        by_if = {s.get("interface"): s for s in status}
        assert by_if["net1"]["name"] == "default/macvlan-conf"
        assert by_if["net1"]["ips"] == [str(ipaddress.ip_interface(net1).ip)]
        assert by_if["net1"]["mac"] == mac
        assert by_if["eth0"]["default"] is True

        # The event multinic posted, found by kubectl describe's involvedObject field selector.
        described = kubectl.run("describe", "pod", pod).stdout
        assert "AddedInterface" in described and f"Add net1 [{ipaddress.ip_interface(net1).ip}" in described
        rows = kubectl.run("get", "events", "--field-selector", f"involvedObject.name={pod},reason=AddedInterface",
                           "-o", "custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MSG:.message",
                           "--no-headers").stdout.splitlines()
        assert any(r.split()[:3] == ["AddedInterface", pod, "Add"] and "net1" in r for r in rows), rows

        # An admin's annotation on the pod (merge PATCH) survives next to multinic's.
        kubectl.run("annotate", "pod", pod, "example.com/owner=admin")
        anns = json.loads(kubectl.run("get", "pod", pod, "-o", "jsonpath={.metadata.annotations}").stdout)
        assert anns["example.com/owner"] == "admin" and STATUS_KEY in anns

        rc, result, err = _multinic("DEL", cid, scene.path(netns), pod, uid, conf)
        assert rc == 0, (result, err)
        deleted = True
        assert links_in(netns) == {"lo"}
        assert _allocations(hl_dir) == []
        assert [f for f in os.listdir(tmp_path / "cache") if f not in (".pending-events", ".history", ".locks")] == []
        assert os.listdir(tmp_path / "cache" / ".locks") == []  # the sandbox's lock file went with its record
        # The host end of the cluster network's veth is gone (other tests on this shared host add their own links,
        # so the check is about what hangs off our bridge, not the host's whole link list).
        assert sh("ip", "-o", "link", "show", "master", cluster_bridge).strip() == ""
    finally:
        if not deleted:
            _multinic("DEL", cid, scene.path(netns), pod, uid, conf)

    kubectl.run("delete", "pod", pod, "--wait=false")
    kubectl.run("delete", "-f", str(nad_file))
    assert kubectl.run("get", "pods,nad", "-o", "name").stdout.strip() == ""
    kubectl.run("delete", "-f", str(CRDS))
    assert kubectl.run("get", "crd", "-o", "name").stdout.strip() == ""


def test_kubectl_describe_shows_why_a_pod_asking_for_a_missing_nad_got_no_network(
        kubectl: Kubectl, scene: Scene, tmp_path: Path) -> None:
    if not os.access(MULTINIC, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    kubectl.run("apply", "-f", str(CRDS))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lost", "namespace": "default", "annotations": {
        "k8s.v1.cni.cncf.io/networks": "no-such-net"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    kubectl.run("create", "-f", "-", stdin=yaml.safe_dump(pod))
    uid = kubectl.run("get", "pod", "lost", "-o", "jsonpath={.metadata.uid}").stdout
    hl_dir = tmp_path / "host-local"
    cluster_bridge = scene.bridge_uplink()
    conf = _conf(kubectl.kubeconfig, tmp_path, cluster_bridge, hl_dir)
    netns = scene.netns("kc")
    cid = uuid.uuid4().hex
    rc, result, err = _multinic("ADD", cid, scene.path(netns), "lost", uid, conf)
    try:
        assert rc != 0 and isinstance(result, dict), (rc, result, err)
        assert result["cniVersion"] == "1.0.0" and isinstance(result["code"], int)
        assert "no-such-net" in result["msg"] + result.get("details", "")
        # Nothing half-made: no interface in the pod, no address reserved, no host veth on the cluster bridge.
        assert links_in(netns) == {"lo"}
        assert _allocations(hl_dir) == []
        assert sh("ip", "-o", "link", "show", "master", cluster_bridge).strip() == ""
        # The admin sees why, without node access.
        described = kubectl.run("describe", "pod", "lost").stdout
        assert "Warning" in described and "no-such-net" in described, described
        status = kubectl.run("get", "pod", "lost", "-o",
                             "jsonpath={.metadata.annotations.k8s\\.v1\\.cni\\.cncf\\.io/network-status}").stdout
        assert status == ""
    finally:
        _multinic("DEL", cid, scene.path(netns), "lost", uid, conf)


def test_kubectl_strict_validation_refuses_an_unknown_nad_field_and_stores_nothing(
        kubectl: Kubectl, apiserver: ApiServerDouble, tmp_path: Path) -> None:  # noqa: F811
    kubectl.run("apply", "-f", str(CRDS))
    bad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": "typo", "namespace": "default"}, "spec": {"conifg": "{}"}}
    proc = kubectl.run("apply", "-f", "-", ok=False, stdin=yaml.safe_dump(bad))
    assert proc.returncode != 0
    assert 'strict decoding error: unknown field "spec.conifg"' in proc.stderr
    assert apiserver.objects("network-attachment-definitions", "k8s.cni.cncf.io/v1") == []
    # --validate=false is Ignore: stored as sent (the double does not prune, see its header).
    kubectl.run("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(bad))
    assert apiserver.get_obj("network-attachment-definitions", "typo", "default", "k8s.cni.cncf.io/v1") is not None


def test_kubectl_refuses_a_nad_before_its_crd_is_installed(kubectl: Kubectl, tmp_path: Path) -> None:
    nad = _nad("early", "eth0", "10.251.9.0/24", tmp_path / "hl")
    proc = kubectl.run("apply", "-f", "-", ok=False, stdin=yaml.safe_dump(nad))
    assert proc.returncode != 0
    assert 'no matches for kind "NetworkAttachmentDefinition" in version "k8s.cni.cncf.io/v1"' in proc.stderr
