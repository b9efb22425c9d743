"""Orchestration decisions that need no kernel: plan building, runtimeConfig routing, allowlist, pod reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cni.delegator import config as cfgmod
from cni.delegator import resolve
from cni.delegator.context import Context, pod_ref
from cni.spec.config import build_plugin_conf
from cni.spec.errors import PolicyDenied, TryAgainLater
from cni.spec.request import Request


class FakeSource:
    def __init__(self, objs: dict[tuple[str, str, str], dict[str, Any]], down: bool = False) -> None:
        self.objs, self.down, self.gets = objs, down, 0

    def _get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        if self.down:
            raise TryAgainLater("GET: Kubernetes API unreachable; retry later")
        return self.objs.get((kind, ns, name))

    def get_pod(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get("Pod", ns, name)

    def get_nad(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get("NAD", ns, name)

    def get_node(self, name: str) -> dict[str, Any] | None:
        return self._get("Node", "", name)

    def set_network_status(self, ns: str, name: str, value: str, sandbox: str = "") -> bool:
        return True

    def clear_network_status(self, ns: str, name: str, uid: str, container_id: str = "") -> bool:
        return True

    def event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal",
              at: float | None = None) -> None:
        pass


PRIMARY = {"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge", "capabilities": {"portMappings": True}}
MACVLAN = {"cniVersion": "1.0.0", "plugins": [
    {"type": "macvlan", "master": "ens224", "capabilities": {"mac": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def ctx_for(annotation: Any, **conf: Any) -> tuple[Context, FakeSource]:
    nad = {"metadata": {"name": "mv", "namespace": "default"}, "spec": {"config": json.dumps(MACVLAN)}}
    pod = {"metadata": {"name": "p", "namespace": "default", "uid": "u1",
                        "annotations": {"k8s.v1.cni.cncf.io/networks": json.dumps(annotation)}}}
    src = FakeSource({("Pod", "default", "p"): pod, ("NAD", "default", "mv"): nad})
    cfg = cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "delegates": [PRIMARY],
                        "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]},
                        **conf})
    req = Request("ADD", "cid", "/run/netns/x", "eth0",
                  {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p", "K8S_POD_UID": "u1"}, ("/opt/cni/bin",), {})
    return Context(req, cfg, src, node_name="n"), src


def test_kubelet_runtime_config_goes_to_the_cluster_network_only() -> None:
    # (host ports from an annotation need the node's hostPortPolicy: cni.delegator.tenancy)
    ctx, src = ctx_for([{"name": "mv", "mac": "02:00:00:00:00:01"}, {"name": "mv", "portMappings": [
        {"hostPort": 9000, "containerPort": 90, "protocol": "udp"}]}], hostPortPolicy=[{"ports": 9000}])
    pod = resolve.read_pod(ctx, pod_ref(ctx.req))
    plan = resolve.plan_for(ctx, pod)
    assert [a.ifname for a in plan] == ["eth0", "net1", "net2"]
    assert plan[0].runtime_config["portMappings"][0]["hostPort"] == 80
    assert plan[1].runtime_config == {"mac": "02:00:00:00:00:01"}
    assert plan[2].runtime_config["portMappings"][0]["hostPort"] == 9000
    assert src.gets == 2  # the pod, and the NAD once although requested twice
    # Only plugins declaring a capability receive it (libcni buildOneConfig).
    mac_conf = build_plugin_conf(plan[1].conflist.plugins[0], name="mv", cni_version="1.0.0",
                                 runtime_config=plan[1].runtime_config)
    pm_conf = build_plugin_conf(plan[1].conflist.plugins[1], name="mv", cni_version="1.0.0",
                                runtime_config=plan[1].runtime_config)
    assert mac_conf["runtimeConfig"] == {"mac": "02:00:00:00:00:01"} and "runtimeConfig" not in pm_conf


def test_allowlist_includes_cluster_network_types_and_is_configurable() -> None:
    ctx, _ = ctx_for([{"name": "mv"}])
    pod = resolve.read_pod(ctx, pod_ref(ctx.req))
    assert len(resolve.plan_for(ctx, pod)) == 2
    ctx, _ = ctx_for([{"name": "mv"}], allowedPluginTypes=["macvlan"])
    with pytest.raises(PolicyDenied, match=r"plugin type\(s\) portmap"):
        resolve.plan_for(ctx, resolve.read_pod(ctx, pod_ref(ctx.req)))


def test_api_errors_on_pod_read_are_code_11() -> None:
    ctx, src = ctx_for([{"name": "mv"}])
    src.down = True
    with pytest.raises(TryAgainLater, match=r"\[default/p/u1\]: cannot read the pod"):
        resolve.read_pod(ctx, pod_ref(ctx.req))


def test_cluster_network_setting_wins_over_delegates(tmp_path: Any) -> None:
    f = tmp_path / "primary.conf"
    f.write_text(json.dumps({"cniVersion": "1.0.0", "name": "from-file", "type": "ptp"}))
    ctx, _ = ctx_for([], clusterNetwork=str(f))
    assert resolve.configured_cluster_network(ctx)[0] == "from-file"


@pytest.mark.parametrize("args", [
    {"K8S_POD_NAME": "..", "K8S_POD_NAMESPACE": "default"},
    {"K8S_POD_NAME": "a/b", "K8S_POD_NAMESPACE": "default"},
    {"K8S_POD_NAME": "p", "K8S_POD_NAMESPACE": "../kube-system"},
    {"K8S_POD_NAME": "p", "K8S_POD_NAMESPACE": "d", "K8S_POD_UID": "x/../y"},
])
def test_pod_identity_from_cni_args_must_be_kubernetes_names(args: dict[str, str]) -> None:
    from cni.spec.errors import InvalidEnvironment
    from cni.spec.request import Request

    with pytest.raises(InvalidEnvironment):
        pod_ref(Request("ADD", cni_args=args))


@pytest.mark.parametrize("key", ["logFile", "cniDir", "confDir", "binDir", "manifestDir", "kubeconfig",
                                 "readinessindicatorfile"])
def test_paths_in_the_multinic_config_must_be_absolute(key: str) -> None:
    from cni.delegator import config as cfgmod
    from cni.spec.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match=key):
        cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", key: "relative/dir"})
