"""NAD resolution, policy and the attachment plan (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cni.delegator.plan import build
from cni.k8s import nad
from cni.k8s.annotations import AnnotationError, parse_networks
from cni.spec.config import conflist_from
from cni.spec.errors import InvalidConfig, NotFound, PolicyDenied


def mknad(name: str, config: dict | None, ns: str = "default", annotations: dict | None = None) -> dict:
    obj: dict = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                 "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}}, "spec": {}}
    if config is not None:
        obj["spec"]["config"] = json.dumps(config)
    return obj


def test_conf_without_name_gets_the_nad_name() -> None:
    net = nad.resolve(mknad("gke-network-1", {"cniVersion": "0.3.1", "type": "macvlan", "master": "ens224"}))
    assert net.key == "default/gke-network-1"
    assert net.conflist.name == "gke-network-1" and net.conflist.plugins[0]["type"] == "macvlan"


def test_conflist_in_spec_config() -> None:
    net = nad.resolve(mknad("n", {"cniVersion": "1.0.0", "plugins": [{"type": "macvlan"}, {"type": "sbr"}]}))
    assert [p["type"] for p in net.conflist.plugins] == ["macvlan", "sbr"]


def test_empty_spec_falls_back_to_conf_dir_by_name() -> None:
    confs = [{"cniVersion": "1.0.0", "name": "other", "type": "bridge"},
             {"cniVersion": "1.0.0", "name": "n", "type": "ipvlan"}]
    assert nad.resolve(mknad("n", None), confs).conflist.plugins[0]["type"] == "ipvlan"
    with pytest.raises(NotFound, match="no file in confDir"):
        nad.resolve(mknad("missing", None), confs)


def test_an_on_disk_conflist_wins_over_a_conf_of_the_same_name_whatever_the_file_order() -> None:
    """NPWG §3.4.1 (found by the multinet conformance profile): conflist, then conf."""
    confs = [{"cniVersion": "1.0.0", "name": "n", "type": "ipvlan"},  # 05-n.conf sorts first
             {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}]},
             {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]}]
    assert nad.resolve(mknad("n", None), confs).conflist.plugins[0]["type"] == "macvlan"
    assert nad.resolve(mknad("n", None), confs[:1]).conflist.plugins[0]["type"] == "ipvlan"


@pytest.mark.parametrize("config", [{"cniVersion": "1.0.0"}, {"cniVersion": "9.9.9", "type": "x"}])
def test_bad_configs_are_refused_naming_the_nad(config: dict) -> None:
    with pytest.raises(Exception) as e:
        nad.resolve(mknad("bad", config))
    assert "default/bad" in str(e.value)


def test_spec_config_not_json() -> None:
    obj = mknad("bad", None)
    obj["spec"]["config"] = "{nope"
    with pytest.raises(InvalidConfig, match="not valid JSON"):
        nad.resolve(obj)


def test_namespace_isolation_message_is_multus_text() -> None:
    nad.check_namespace_isolation("dev", "dev", [])
    nad.check_namespace_isolation("dev", "shared", ["shared"])
    with pytest.raises(PolicyDenied, match="pod is in namespace development but refers to target namespace privileged"):
        nad.check_namespace_isolation("development", "privileged", [])


def test_node_selector_policy() -> None:
    net = nad.resolve(mknad("n", {"cniVersion": "1.0.0", "type": "macvlan"},
                            annotations={"k8s.v1.cni.cncf.io/nodeSelector": "multinic=true"}))
    nad.check_node_selector(net, "node-a", {"multinic": "true"})
    with pytest.raises(PolicyDenied, match="kubectl label nodes node-b multinic=true"):
        nad.check_node_selector(net, "node-b", {})


def test_allowlist_names_refused_types_including_ipam() -> None:
    net = nad.resolve(mknad("n", {"cniVersion": "1.0.0", "type": "macvlan", "ipam": {"type": "dhcp"}}))
    with pytest.raises(PolicyDenied, match="dhcp"):
        nad.check_allowed_types(net, nad.DEFAULT_ALLOWED_TYPES)


def _cl(name: str) -> object:
    return conflist_from({"cniVersion": "1.0.0", "name": name, "type": "macvlan"})


def test_plan_names_interfaces_by_position_and_honours_requests() -> None:
    sels = parse_networks("a,b@fast,a", "default")
    plan = build("cluster", _cl("cluster"), "eth0", {"portMappings": []},
                 [(s, s.key, _cl(s.name)) for s in sels])
    assert [(a.ifname, a.name, a.primary) for a in plan] == [
        ("eth0", "cluster", True), ("net1", "default/a", False), ("fast", "default/b", False), ("net3", "default/a", False)]
    assert plan[0].runtime_config == {"portMappings": []} and plan[1].runtime_config == {}


def test_plan_refuses_duplicate_interface_names() -> None:
    sels = parse_networks("a@eth0", "default")
    with pytest.raises(AnnotationError, match="requested twice"):
        build("cluster", _cl("cluster"), "eth0", {}, [(s, s.key, _cl(s.name)) for s in sels])


def test_cni_args_are_merged_into_every_plugin() -> None:
    (s,) = parse_networks('[{"name":"a","cni-args":{"mac":"x"}}]', "default")
    cl = conflist_from({"cniVersion": "1.0.0", "name": "a", "plugins": [
        {"type": "macvlan", "args": {"cni": {"keep": 1}}}, {"type": "tuning"}]})
    plan = build("c", _cl("c"), "eth0", {}, [(s, s.key, cl)])
    plugins = plan[1].plugin_list().plugins
    assert plugins[0]["args"]["cni"] == {"keep": 1, "mac": "x"} and plugins[1]["args"]["cni"] == {"mac": "x"}


def test_annotation_ips_and_mac_become_cni_args_of_their_attachment_only() -> None:
    from cni.delegator.plan import Attachment
    from cni.spec.config import conflist_from

    cl = conflist_from({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"})
    sec = Attachment(1, "net1", "default/n", cl, {"ips": ["10.1.0.5/24", "10.2.0.5/24"], "mac": "0a:58:00:00:00:01"})
    assert sec.env_args() == {"IgnoreUnknown": "true", "MAC": "0a:58:00:00:00:01", "IP": "10.1.0.5/24,10.2.0.5/24"}
    assert Attachment(1, "net1", "default/n", cl, {"portMappings": []}).env_args() == {}
    # the cluster network's runtimeConfig is kubelet's: never copied into CNI_ARGS
    assert Attachment(0, "eth0", "cbr0", cl, {"ips": ["10.0.0.9/24"]}, primary=True).env_args() == {}
    # it survives the cache (DEL and CHECK get the same CNI_ARGS as ADD)
    assert Attachment.from_json(sec.to_json()).env_args() == sec.env_args()


def test_base_for_merges_the_attachments_cni_args_keeping_the_runtimes_ignore_unknown(tmp_path: Any) -> None:
    from cni.delegator import config as cfgmod
    from cni.delegator.context import Context
    from cni.delegator.plan import Attachment
    from cni.spec.config import conflist_from
    from cni.spec.request import Request

    cl = conflist_from({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"})
    att = Attachment(1, "net1", "default/n", cl, {"mac": "0a:58:00:00:00:01"})
    cfg = cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "cniDir": str(tmp_path),
                        "delegates": [{"cniVersion": "1.0.0", "name": "c", "type": "bridge"}]})
    for runtime_args, ignore in (({"IgnoreUnknown": "1", "K8S_POD_NAME": "p"}, "1"),
                                 ({"K8S_POD_NAME": "p"}, "true"), ({"IgnoreUnknown": "0"}, "true")):
        req = Request(command="ADD", container_id="c1", netns="/run/netns/x", ifname="eth0", cni_args=runtime_args,
                      config={})
        got = Context(req, cfg, None).base_for(att)
        assert got.ifname == "net1" and got.cni_args["MAC"] == "0a:58:00:00:00:01"
        assert got.cni_args["IgnoreUnknown"] == ignore
        assert {k: v for k, v in got.cni_args.items() if k not in ("MAC", "IgnoreUnknown")} == \
            {k: v for k, v in runtime_args.items() if k != "IgnoreUnknown"}
