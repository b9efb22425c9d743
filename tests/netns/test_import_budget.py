"""Import budget of a thin exec (start-up is most of a thin call: cni/ARCHITECTURE.md, rule 10).

The installed ``multinic`` runs VERSION, a real thin ADD (macvlan + host-local into a real pod
namespace) and the DEL that follows it (from the attachment cache) with ``-X importtime``
(``PYTHONPROFILEIMPORTTIME``); the modules each one imported are read from that output, never
timed. A new heavy import on a path that must not need it fails here, not in the bench.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nsfix import Scene, need_root

# pyroute2's package body (``pyroute2/__init__.py`` pulls IPRoute, NDB, IPDB, conntrack, …) and
# the asyncio machinery behind IPRoute: cni/netlink/rtnl.py uses pyroute2's message layer only.
# ``pyroute2`` itself appears in the output only when its ``__init__`` ran through the import system.
NETLINK_HEAVY = ("=pyroute2", "pyroute2.iproute", "pyroute2.ndb", "pyroute2.ipdb", "pyroute2.netlink.nlsocket",
                 "pyroute2.netlink.core", "asyncio")
PYDANTIC = ("pydantic", "pydantic_core")
# Plugins this ADD does not use (it runs macvlan + host-local only): each is imported when used.
UNUSED_PLUGINS = ("plugins.bridge", "plugins.portmap", "plugins.sbr", "plugins.tuning", "plugins.ipvlan",
                  "ipam.static", "ipam.whereabouts", "ipam.dhcp")
# Nothing in a thin call without a Kubernetes API source needs these.
NEVER = ("yaml", "ssl", "http.client", "cni.k8s.client", "cni.daemon")


def imported(stderr: bytes) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    out: set[str] = set()
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                out.add(name)
    return out


def loaded(mods: set[str], forbidden: tuple[str, ...]) -> list[str]:
    """The members of ``mods`` that are ``forbidden`` or inside a forbidden package (``=name``: that module only)."""
    return sorted(m for m in mods if any(m == f.lstrip("=") or (f[0] != "=" and m.startswith(f + ".")) for f in forbidden))


def run(binary: str, env: dict[str, str], stdin: bytes) -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPROFILEIMPORTTIME": "1", **env}
    if "MULTINIC_EXTRA_ALLOWED_PATHS" in os.environ:  # tests/conftest.py: state under the test's tmp dir
        full["MULTINIC_EXTRA_ALLOWED_PATHS"] = os.environ["MULTINIC_EXTRA_ALLOWED_PATHS"]
    p = subprocess.run([binary], input=stdin, env=full, capture_output=True, timeout=120, check=False)
    return p, imported(p.stderr)


def _multinic_bin() -> str:
    """The venv's ``multinic`` executable (the thin exec under test), or a skip saying it is missing."""
    path = os.path.join(os.path.dirname(sys.executable), "multinic")
    if not os.access(path, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    return path


@pytest.fixture(scope="module")
def thin_add_del(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Module sets of VERSION, a thin ADD and its DEL (the pod namespace and uplink are removed after)."""
    need_root()
    multinic_bin = _multinic_bin()
    scene = Scene()
    try:
        yield _measure(scene, multinic_bin, tmp_path_factory.mktemp("budget"))
    finally:
        scene.cleanup()


def _measure(scene: Scene, multinic_bin: str, tmp_path: Path) -> dict[str, set[str]]:
    up = scene.veth_uplink()
    ns = scene.netns("ib")
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "mn-budget", "type": "multinic", "nodeName": "budget",
        "cniDir": str(tmp_path / "cache"), "confDir": str(tmp_path / "net.d"), "binDir": "/usr/lib/cni",
        "delegates": [{"cniVersion": "1.0.0", "name": "budgetnet", "plugins": [
            {"type": "macvlan", "master": up, "mode": "bridge",
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.77.0/24"}]], "dataDir": str(tmp_path / "ipam")}},
        ]}],
    }
    env = {"CNI_CONTAINERID": f"budget-{scene.tag}", "CNI_NETNS": scene.path(ns), "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=budget-{scene.tag}"}
    stdin = json.dumps(conf).encode()
    out: dict[str, set[str]] = {}
    p, out["VERSION"] = run(multinic_bin, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}')
    assert p.returncode == 0, p.stdout
    p, out["ADD"] = run(multinic_bin, {**env, "CNI_COMMAND": "ADD"}, stdin)
    assert p.returncode == 0, p.stdout
    assert json.loads(p.stdout)["interfaces"], p.stdout
    leases = tmp_path / "ipam" / "budgetnet"
    assert list(leases.glob("10.251.77.*")), "ADD left no host-local lease: the DEL check below would mean nothing"
    assert list((tmp_path / "cache").glob(f"*{env['CNI_CONTAINERID']}*")), "ADD left no attachment cache"
    try:
        p, out["DEL"] = run(multinic_bin, {**env, "CNI_COMMAND": "DEL"}, stdin)
        assert p.returncode == 0, p.stdout
        # The DEL did its work (whatever it imported): lease released, link and cache gone.
        assert not list(leases.glob("10.251.77.*"))
        assert not list((tmp_path / "cache").glob(f"*{env['CNI_CONTAINERID']}*"))
        link = subprocess.run(["ip", "-n", ns, "link", "show", "eth0"], capture_output=True, check=False)
        assert link.returncode != 0, link.stdout
    finally:
        subprocess.run([multinic_bin], input=stdin, env={**os.environ, **env, "CNI_COMMAND": "DEL"},
                       capture_output=True, check=False, timeout=120)
    assert all(out.values()), "no -X importtime output: the budget cannot be checked"
    return out


@pytest.mark.root
def test_version_imports_neither_netlink_nor_pydantic(thin_add_del: dict[str, set[str]]) -> None:
    mods = thin_add_del["VERSION"]
    assert loaded(mods, NETLINK_HEAVY + PYDANTIC + NEVER + ("cni.netlink", "plugins", "ipam", "cni.delegator")) == []


@pytest.mark.root
def test_thin_add_uses_pyroute2_message_layer_only(thin_add_del: dict[str, set[str]]) -> None:
    mods = thin_add_del["ADD"]
    assert "pyroute2.netlink.rtnl.ifinfmsg" in mods, "the ADD did not use netlink at all: the test lost its point"
    assert loaded(mods, NETLINK_HEAVY) == []
    assert loaded(mods, NEVER) == []


@pytest.mark.root
def test_thin_add_does_not_load_pydantics_plugin_scan(thin_add_del: dict[str, set[str]]) -> None:
    # Plugins are disabled in an exec (cni.main._no_pydantic_plugins): their loader's importlib.metadata
    # (email, zipfile, csv) is not paid for. The ADD validated models, so pydantic's validator was built.
    mods = thin_add_del["ADD"]
    assert "pydantic.plugin._schema_validator" in mods
    assert loaded(mods, ("importlib.metadata",)) == []


@pytest.mark.root
def test_thin_add_imports_only_the_plugins_it_runs(thin_add_del: dict[str, set[str]]) -> None:
    mods = thin_add_del["ADD"]
    assert {"plugins.macvlan", "ipam.host_local"} <= mods
    assert loaded(mods, UNUSED_PLUGINS) == []


@pytest.mark.root
def test_del_from_cache_uses_pyroute2_message_layer_only(thin_add_del: dict[str, set[str]]) -> None:
    mods = thin_add_del["DEL"]
    assert loaded(mods, NETLINK_HEAVY) == []
    assert loaded(mods, NEVER) == []
    assert loaded(mods, UNUSED_PLUGINS) == []


@pytest.mark.root
def test_del_from_cache_does_not_import_pydantic(thin_add_del: dict[str, set[str]]) -> None:
    assert loaded(thin_add_del["DEL"], PYDANTIC) == []


def test_importtime_parser_reads_module_names() -> None:
    sample = (b"import time: self [us] | cumulative | imported package\n"
              b"import time:       120 |        120 |   _io\n"
              b"import time:      2000 |      40000 | pyroute2.netlink.rtnl.ifinfmsg\n")
    assert imported(sample) == {"_io", "pyroute2.netlink.rtnl.ifinfmsg"}
    assert loaded({"pyroute2", "pyroute2x", "pydantic.main"}, ("pyroute2", "pydantic")) == ["pydantic.main", "pyroute2"]
    assert loaded({"pyroute2.common", "asyncio.events"}, ("=pyroute2", "asyncio")) == ["asyncio.events"]
    assert sys.executable  # the suite runs in the venv that installed multinic


# ---- the bench's pod shape (tests/bench/_harness.py make_nets/meta_conf): a thin DEL of all of it ----

POD_PLUGINS = ("plugins.bridge", "plugins.tuning", "plugins.portmap", "plugins.macvlan", "plugins.sbr", "ipam.host_local")


def _ipt_chains() -> set[str]:
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    return {ln[1:].split()[0] for ln in out.splitlines() if ln.startswith(":")}


def _files(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "lock"] if d.exists() else []


@pytest.fixture(scope="module")
def thin_pod_del(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A thin ADD of the bench's pod (eth0 bridge+host-local→tuning→portmap, net1 macvlan+host-local→sbr
    from a NAD in the pod source) and the DEL from the cache that follows it, with what each left."""
    need_root()
    multinic_bin = _multinic_bin()
    if shutil.which("iptables-restore") is None:
        pytest.skip("iptables-restore is not installed: portmap would use nftables, whose chains this test does not read")
    scene = Scene()
    try:
        yield _measure_pod(scene, multinic_bin, tmp_path_factory.mktemp("podbudget"))
    finally:
        scene.cleanup()


def _measure_pod(scene: Scene, multinic_bin: str, d: Path) -> dict[str, Any]:
    from plugins._portmap_rules import dn_chain

    up = scene.veth_uplink()
    br = f"brb{scene.tag}"[:15]
    scene.host_links.append(br)  # the bridge plugin creates it; the scene removes it
    ns = scene.netns("pb")
    ipam = {"type": "host-local", "dataDir": str(d / "ipam")}
    cluster = {"cniVersion": "1.0.0", "name": "benchpod", "plugins": [
        {"type": "bridge", "bridge": br, "isGateway": True,
         "ipam": {**ipam, "ranges": [[{"subnet": "10.252.77.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}, "dataDir": str(d / "tuning")},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True, "dataDir": str(d / "portmap")},
    ]}
    sbrnet = {"cniVersion": "1.0.0", "name": "sbrnet", "plugins": [
        {"type": "macvlan", "master": up, "mode": "bridge",
         "ipam": {**ipam, "ranges": [[{"subnet": "10.252.78.0/24", "gateway": "10.252.78.1"}]]}},
        {"type": "sbr", "dataDir": str(d / "sbr")},
    ]}
    cid, pod, uid = f"podbudget-{scene.tag}", f"podbudget-{scene.tag}", f"uid-{scene.tag}"
    manifests = d / "manifests"
    manifests.mkdir()
    (manifests / "objects.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
         "metadata": {"name": "sbrnet", "namespace": "default"}, "spec": {"config": json.dumps(sbrnet)}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": "default", "uid": uid, "annotations": {
            "k8s.v1.cni.cncf.io/networks": json.dumps([{"name": "sbrnet", "interface": "net1"}])}},
         "spec": {"nodeName": "podbudget", "containers": [{"name": "c", "image": "busybox"}]}},
    ]}))
    conf = {"cniVersion": "1.0.0", "name": "mn-podbudget", "type": "multinic", "nodeName": "podbudget",
            "cniDir": str(d / "cache"), "confDir": str(d / "net.d"), "binDir": "/usr/lib/cni",
            "allowedPaths": ["/var/lib/cni", "/run/cni", "/var/log", str(d)], "manifestDir": str(manifests),
            "delegates": [cluster],
            "runtimeConfig": {"portMappings": [{"hostPort": 20000 + int(scene.tag, 16) % 20000, "containerPort": 80, "protocol": "tcp"}]}}
    env = {"CNI_CONTAINERID": cid, "CNI_NETNS": scene.path(ns), "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}"}
    stdin = json.dumps(conf).encode()
    chain = dn_chain("benchpod", cid)
    out: dict[str, Any] = {}
    p, out["add modules"] = run(multinic_bin, {**env, "CNI_COMMAND": "ADD"}, stdin)
    try:
        assert p.returncode == 0, p.stdout
        # What the DEL must remove exists, so that its absence afterwards means something.
        out["added"] = {
            "pod links": {"eth0", "net1"} <= set(subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True,
                                                                text=True, check=True).stdout.replace("@", ": ").split(": ")),
            "bridge ports": subprocess.run(["ip", "-o", "link", "show", "master", br], capture_output=True, text=True,
                                           check=False).stdout.strip() != "",
            "leases": len([f for f in _files(d / "ipam") if f.name.startswith("10.252.")]),
            "state": {k: len(_files(d / k)) for k in ("tuning", "portmap", "sbr")},
            "chain": chain in _ipt_chains(),
            "sbr rules": "lookup 100" in subprocess.run(["ip", "-n", ns, "rule", "show"], capture_output=True, text=True,
                                                        check=True).stdout,
            "cache": len(list((d / "cache").glob(f"*{cid}*"))),
        }
        p, out["modules"] = run(multinic_bin, {**env, "CNI_COMMAND": "DEL"}, stdin)
        out["del rc"], out["del stdout"] = p.returncode, p.stdout
        out["left"] = {
            "pod links": sorted(n for n in ("eth0", "net1") if subprocess.run(
                ["ip", "-n", ns, "link", "show", n], capture_output=True, check=False).returncode == 0),
            "bridge ports": subprocess.run(["ip", "-o", "link", "show", "master", br], capture_output=True, text=True,
                                           check=False).stdout.strip(),
            "leases": [f.name for f in _files(d / "ipam") if f.name.startswith("10.252.")],
            "state": {k: [f.name for f in _files(d / k)] for k in ("tuning", "portmap", "sbr")},
            "chain": chain in _ipt_chains(),
            "sbr rules": "lookup 100" in subprocess.run(["ip", "-n", ns, "rule", "show"], capture_output=True, text=True,
                                                        check=True).stdout,
            "cache": [f.name for f in (d / "cache").glob(f"*{cid}*")],
        }
    finally:  # whatever failed above: nothing of this test stays (links, leases, chains)
        subprocess.run([multinic_bin], input=stdin, env={**os.environ, **env, "CNI_COMMAND": "DEL"},
                       capture_output=True, check=False, timeout=120)
    return out


@pytest.mark.root
def test_thin_pod_add_made_everything_its_del_must_remove(thin_pod_del: dict[str, Any]) -> None:
    assert thin_pod_del["added"] == {"pod links": True, "bridge ports": True, "leases": 2,
                                     "state": {"tuning": 1, "portmap": 1, "sbr": 1}, "chain": True,
                                     "sbr rules": True, "cache": 1}


@pytest.mark.root
def test_thin_pod_del_removes_everything(thin_pod_del: dict[str, Any]) -> None:
    assert thin_pod_del["del rc"] == 0, thin_pod_del["del stdout"]
    assert thin_pod_del["left"] == {"pod links": [], "bridge ports": "", "leases": [],
                                    "state": {"tuning": [], "portmap": [], "sbr": []}, "chain": False,
                                    "sbr rules": False, "cache": []}


@pytest.mark.root
def test_thin_pod_del_from_cache_does_not_import_pydantic(thin_pod_del: dict[str, Any]) -> None:
    mods = thin_pod_del["modules"]
    assert mods, "no -X importtime output: the budget cannot be checked"
    assert set(POD_PLUGINS) <= mods, "the DEL did not run the pod's plugins: the test lost its point"
    assert loaded(mods, PYDANTIC) == []
    assert loaded(mods, NETLINK_HEAVY + NEVER) == []


# Not on the thin pod ADD either: pydantic's plugin scan (importlib.metadata, email, zipfile, csv; cni.main stubs the
# loader), the plugins and IPAMs this pod does not use (each is imported when it runs), the Kubernetes client (the pod
# comes from manifests here), pyroute2's package body and asyncio, nor stdlib modules no step of it needs.
POD_ADD_NEVER = NETLINK_HEAVY + NEVER + ("importlib.metadata", "email", "zipfile", "csv", "plugins.ipvlan",
                                         "ipam.static", "ipam.whereabouts", "ipam.dhcp", "cni.k8s.transport", "argparse",
                                         "tempfile", "concurrent", "xml", "unittest", "gzip", "tomllib", "pprint")


@pytest.mark.root
def test_thin_pod_add_imports_only_what_its_plugins_need(thin_pod_del: dict[str, Any]) -> None:
    # The bench's pod shape (5 plugins in 2 attachments, a NAD from the pod source): parsed, not timed.
    mods = thin_pod_del["add modules"]
    assert mods, "no -X importtime output: the budget cannot be checked"
    assert set(POD_PLUGINS) | {"cni.delegator.config", "plugins._confs", "pydantic"} <= mods, "the ADD lost its point"
    assert loaded(mods, POD_ADD_NEVER) == []
