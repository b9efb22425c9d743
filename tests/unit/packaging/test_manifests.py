"""packaging/manifests: every file parses; the CRDs are valid structural apiextensions/v1 CRDs that
accept what the code writes; the DaemonSets run commands our own argument parsers accept, with
the mounts and identity the code needs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "packaging" / "manifests"
FILES = sorted(MANIFESTS.glob("*.yaml"))


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def crds() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs("crds.yaml") if d["kind"] == "CustomResourceDefinition"}


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_manifest_parses_and_names_its_kind(path: Path) -> None:
    loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert loaded, f"{path.name} is empty"
    for d in loaded:
        assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d


def test_the_expected_manifests_exist() -> None:
    names = {f.name for f in FILES}
    assert {"crds.yaml", "rbac.yaml", "config.yaml", "daemonset-thin.yaml", "daemonset-thick.yaml"} <= names


# ---- CRDs ----------------------------------------------------------------------------------------------------------


def structural_errors(schema: dict[str, Any], where: str = "") -> list[str]:
    """The apiextensions/v1 structural-schema rules that matter for hand-written CRDs."""
    errs: list[str] = []
    if "type" not in schema and not (schema.get("x-kubernetes-int-or-string")
                                     or schema.get("x-kubernetes-preserve-unknown-fields")):
        errs.append(f"{where or '/'}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        errs.append(f"{where}: properties and additionalProperties are exclusive")
    if ("properties" in schema or "additionalProperties" in schema) and schema.get("type") != "object":
        errs.append(f"{where}: properties on a non-object")
    for req in schema.get("required", []):
        if req not in schema.get("properties", {}):
            errs.append(f"{where}: required {req!r} is not a property")
    for k, sub in (schema.get("properties") or {}).items():
        errs += structural_errors(sub, f"{where}/{k}")
    if isinstance(schema.get("additionalProperties"), dict):
        errs += structural_errors(schema["additionalProperties"], f"{where}/*")
    if isinstance(schema.get("items"), dict):
        errs += structural_errors(schema["items"], f"{where}[]")
    return errs


def validate(obj: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """A small OpenAPI v3 validator (type, required, properties, additionalProperties)."""
    t = schema.get("type")
    types = {"object": dict, "string": str, "array": list, "boolean": bool, "integer": int}
    if t in types and not isinstance(obj, types[t]):
        return [f"{where}: expected {t}, got {type(obj).__name__}"]
    errs: list[str] = []
    if t == "object":
        for r in schema.get("required", []):
            if r not in obj:
                errs.append(f"{where}: missing required {r!r}")
        for k, v in obj.items():
            if k in (schema.get("properties") or {}):
                errs += validate(v, schema["properties"][k], f"{where}/{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += validate(v, schema["additionalProperties"], f"{where}/{k}")
    return errs


@pytest.mark.parametrize("name", ["network-attachment-definitions.k8s.cni.cncf.io", "ippools.whereabouts.cni.cncf.io",
                                  "overlappingrangeipreservations.whereabouts.cni.cncf.io"])
def test_crds_are_structural_apiextensions_v1(name: str) -> None:
    crd = crds()[name]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    spec = crd["spec"]
    assert name == f"{spec['names']['plural']}.{spec['group']}", "metadata.name must be <plural>.<group>"
    assert spec["scope"] in ("Namespaced", "Cluster")
    assert spec["names"]["kind"][0].isupper() and spec["names"]["plural"].islower()
    versions = spec["versions"]
    assert versions and all(isinstance(v["served"], bool) and isinstance(v["storage"], bool) for v in versions)
    assert sum(v["storage"] for v in versions) == 1, "exactly one storage version"
    assert any(v["served"] for v in versions)
    for v in versions:
        schema = v["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object"
        assert structural_errors(schema) == []


def test_crd_groups_versions_and_plurals_are_the_ones_the_code_uses() -> None:
    from cni.k8s.client import NAD_GROUP, NAD_PLURAL, NAD_VERSION
    from ipam.whereabouts.store import GROUP, POOL_PLURAL, RES_PLURAL, VERSION

    got = {(d["spec"]["group"], v["name"], d["spec"]["names"]["plural"], d["spec"]["scope"])
           for d in crds().values() for v in d["spec"]["versions"] if v["served"]}
    assert (NAD_GROUP, NAD_VERSION, NAD_PLURAL, "Namespaced") in got
    assert (GROUP, VERSION, POOL_PLURAL, "Namespaced") in got
    assert (GROUP, VERSION, RES_PLURAL, "Namespaced") in got


def _schema(name: str) -> dict[str, Any]:
    return dict(crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_what_whereabouts_writes_is_accepted_by_the_crd_schemas() -> None:
    from ipam.whereabouts.allocator import Allocation
    from ipam.whereabouts.store import Reservation, pool_object, reservation_object

    pool = pool_object("10.1.0.0-24", "10.1.0.0/24", {5: Allocation("cid", "default/p", "net1")}, "kube-system")
    assert validate(pool, _schema("ippools.whereabouts.cni.cncf.io")) == []
    empty = pool_object("10.1.0.0-24", "10.1.0.0/24", {}, "kube-system")
    assert validate(empty, _schema("ippools.whereabouts.cni.cncf.io")) == []
    res = reservation_object(Reservation("10.1.0.5", "cid", "default/p", "net1"), "kube-system")
    assert validate(res, _schema("overlappingrangeipreservations.whereabouts.cni.cncf.io")) == []
    # ...and the validator does reject what the apiserver would.
    assert validate({"spec": {"range": "x"}}, _schema("ippools.whereabouts.cni.cncf.io"))


def test_nad_crd_accepts_a_config_string_and_rejects_an_object() -> None:
    schema = _schema("network-attachment-definitions.k8s.cni.cncf.io")
    assert validate({"spec": {"config": '{"cniVersion":"1.0.0"}'}}, schema) == []
    assert validate({"spec": {"config": {"cniVersion": "1.0.0"}}}, schema)


# ---- DaemonSets ----------------------------------------------------------------------------------------------------


def daemonset(name: str) -> dict[str, Any]:
    (ds,) = [d for d in docs(name) if d["kind"] == "DaemonSet"]
    return ds


def _argv(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


@pytest.mark.parametrize("name", ["daemonset-thin.yaml", "daemonset-thick.yaml"])
def test_daemonset_init_container_runs_multinic_install_with_arguments_it_accepts(name: str) -> None:
    from packaging import install

    spec = daemonset(name)["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    argv = _argv(init)
    assert argv[:2] == ["multinic", "install"], shlex.join(argv)
    args = install.parse_args(argv[2:])
    assert args.mode == ("thin" if "thin" in name else "thick")
    mounts = {m["mountPath"] for m in init["volumeMounts"]}
    assert {args.bin_dir, args.conf_dir} <= mounts
    assert spec["serviceAccountName"] == "multinic"
    assert spec["hostNetwork"] is True
    assert daemonset(name)["spec"]["selector"]["matchLabels"].items() <= \
        daemonset(name)["spec"]["template"]["metadata"]["labels"].items()


def test_thick_daemonset_runs_the_daemon_with_auto_config_and_its_mounts() -> None:
    from cni.daemon import server

    spec = daemonset("daemonset-thick.yaml")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    argv = _argv(c)
    assert argv[:2] == ["multinic", "daemon"]
    args = server.parse_args(argv[2:])
    assert args.auto_config and args.shim_type == "multinic-shim"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/run/multinic", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/var/log", "/run/netns"):
        assert path in mounts, path
    assert mounts["/run/netns"].get("mountPropagation") == "HostToContainer"  # pods' namespaces appear later
    assert args.socket.startswith("/run/multinic/")
    vols = {v["name"]: v for v in spec["volumes"]}
    for m in c["volumeMounts"]:
        assert m["name"] in vols
    assert c["securityContext"]["privileged"] is True
    probe = c["readinessProbe"]["httpGet"]
    assert probe["path"] == "/readyz" and args.metrics_address.endswith(f":{probe['port']}")


def test_thin_daemonset_references_its_projected_token_by_host_path() -> None:
    from packaging import install

    spec = daemonset("daemonset-thin.yaml")["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    token = vols[install.TOKEN_VOLUME]["projected"]["sources"]
    assert any("serviceAccountToken" in s and s["serviceAccountToken"]["path"] == "token" for s in token)
    assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in token)
    (init,) = spec["initContainers"]
    env = {e["name"]: e for e in init["env"]}
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    (watch,) = spec["containers"]
    args = install.parse_args(_argv(watch)[2:])
    assert args.watch and args.skip_binary and args.mode == "thin"
    # Some container must mount the token volume, or kubelet need not keep it fresh.
    assert any(m["name"] == install.TOKEN_VOLUME for m in watch["volumeMounts"])


def test_config_map_keys_are_multinic_config_keys() -> None:
    import json

    from cni.delegator import config as cfgmod

    (cm,) = docs("config.yaml")
    extra = json.loads(cm["data"]["multinic.json"])
    cfg = cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "delegates": [{"type": "bridge"}],
                        **extra})
    assert cfg.log_file == "/var/log/multus.log"


def test_node_slices_claims_and_pod_uids_fit_the_crds() -> None:
    import ipaddress

    from ipam.whereabouts import claims, slices
    from ipam.whereabouts.allocator import Allocation, Range
    from ipam.whereabouts.store import API_VERSION, GROUP, VERSION, pool_object

    got = {(d["spec"]["group"], v["name"], d["spec"]["names"]["plural"]) for d in crds().values()
           for v in d["spec"]["versions"] if v["served"]}
    assert (GROUP, VERSION, slices.PLURAL) in got and (claims.GROUP, claims.VERSION, claims.PLURAL) in got
    pool = pool_object("n-a-10.1.0.0-24", "10.1.0.0/24",
                       {5: Allocation("cid", "default/p", "net1", "uid-1", "default/claim")}, "kube-system")
    schema = _schema("ippools.whereabouts.cni.cncf.io")
    assert validate(pool, schema) == []
    # Structural schemas prune unknown fields: what we write must be declared, or the apiserver drops it.
    props = schema["properties"]["spec"]["properties"]["allocations"]["additionalProperties"]["properties"]
    assert set(pool["spec"]["allocations"]["5"]) <= set(props)
    net = ipaddress.ip_network("10.1.0.0/16")
    claimed = slices.claim(slices.new_pool("fast", net, 24), "node-a", Range.build(net), 24)
    assert claimed is not None
    nsp = slices.to_object(claimed[0], "kube-system", API_VERSION)
    nsp_schema = _schema("nodeslicepools.whereabouts.cni.cncf.io")
    assert validate(nsp, nsp_schema) == []
    assert crds()["nodeslicepools.whereabouts.cni.cncf.io"]["spec"]["versions"][0]["subresources"] == {"status": {}}
    claim = {"apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim", "metadata": {"name": "c"},
             "spec": {"network": "net", "interface": "net1"}, "status": {"ips": ["10.1.0.5/24"]}}
    assert validate(claim, _schema("ipamclaims.k8s.cni.cncf.io")) == []
