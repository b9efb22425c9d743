"""A node installed the way ``multinic install`` leaves it, in a temp dir: conf dir, binDir with the executable and
plugin links, the API double with a kubeconfig, a cluster network (bridge + host-local + portmap) on a bridge of
this test's own, and pods ADDed by the real meta-plugin in real namespaces.

Everything (namespaces, bridges, iptables rules through each pod's DEL) is removed afterwards, even on failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance.apiserver import ApiServerDouble
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)
from tests.support.nsfix import REF_CNI, Scene

MULTINIC = os.path.join(os.path.dirname(sys.executable), "multinic")
NATIVE = ("macvlan", "ipvlan", "bridge", "sbr", "tuning", "portmap", "host-local", "static", "whereabouts")


def jwt(exp: float) -> str:
    """A token shaped like a service-account JWT (header.payload.signature) with ``exp``."""
    def b64(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'RS256'})}.{b64({'sub': 'system:serviceaccount:kube-system:multinic', 'exp': int(exp)})}.c2ln"


@dataclass
class Node:
    tmp: Path
    scene: Scene
    api: ApiServerDouble
    name: str = "node-a"
    pods: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> (cid, netns name, uid)
    made: list[tuple[str, str, str]] = field(default_factory=list)  # (cid, netns name, pod) ADDed, for cleanup
    portmap_backend: str = "iptables"

    def __post_init__(self) -> None:
        self.tag = self.scene.tag
        self.net_d = self.tmp / "net.d"
        self.bin = self.tmp / "bin"
        self.cni_dir = self.tmp / "cache"
        self.hl_dir = self.tmp / "ipam" / "hl"
        self.wb_dir = self.tmp / "ipam" / "wb"
        self.log_file = self.tmp / "log" / "multus.log"
        self.pm_dir = self.tmp / "portmap"
        self.net_d.mkdir()
        self.bin.mkdir()
        self.bridge = self.scene.bridge_uplink()
        self.uplink = self.scene.bridge_uplink()
        self.cluster = f"cbr-{self.tag}"  # network names carry the tag: leaks only judge networks multinic knows
        self.port = random.randint(20000, 60000)
        os.symlink(MULTINIC, self.bin / "multinic")
        for t in (*NATIVE, "multinic-shim"):
            os.symlink("multinic", self.bin / t)
        os.symlink(os.path.join(REF_CNI, "bandwidth"), self.bin / "bandwidth")
        self.api.rotate_token(jwt(time.time() + 86400), keep_old=False)
        token_file = self.tmp / "token"
        token_file.write_text(self.api.token)
        self.kubeconfig = self.api.kubeconfig_path(token_file=token_file)
        self.api.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": {"rack": "r1"}}})
        self.add_nad("mv", {"cniVersion": "1.0.0", "type": "macvlan", "master": self.uplink, "mode": "bridge",
                            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.1.0/24"}]],
                                     "dataDir": str(self.hl_dir)}})
        self.add_nad("wb", {"cniVersion": "1.0.0", "name": f"wb-{self.tag}", "type": "macvlan", "master": self.uplink,
                            "mode": "bridge", "ipam": {"type": "whereabouts", "range": "10.77.2.0/24",
                                                       "datastore": "file", "data_dir": str(self.wb_dir)}})
        self.write_conf(self.conf())

    # -- install --

    def primary(self) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": self.cluster, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(self.hl_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "backend": self.portmap_backend,
             "dataDir": str(self.pm_dir)}]}

    def conf(self, **extra: Any) -> dict[str, Any]:
        plugin: dict[str, Any] = {"type": "multinic", "delegates": [self.primary()], "cniDir": str(self.cni_dir),
                                  "binDir": str(self.bin), "confDir": str(self.tmp / "multus.d"),
                                  "kubeconfig": self.kubeconfig, "logFile": str(self.log_file), "logLevel": "verbose",
                                  "nodeName": self.name, "capabilities": {"portMappings": True}}
        plugin.update(extra)
        return {"cniVersion": "1.0.0", "name": "multinic-cni-network", "plugins": [plugin]}

    @property
    def conf_path(self) -> Path:
        return self.net_d / "00-multinic.conflist"

    def write_conf(self, doc: dict[str, Any], name: str = "00-multinic.conflist") -> Path:
        p = self.net_d / name
        p.write_text(json.dumps(doc, indent=1))
        return p

    def add_nad(self, name: str, config: dict[str, Any], ns: str = "default") -> None:
        self.api.seed({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                       "metadata": {"name": name, "namespace": ns}, "spec": {"config": json.dumps(config)}},
                      plural="network-attachment-definitions")

    # -- pods --

    def add_pod(self, name: str, networks: str = "", ns: str = "default", *, ports: bool = False) -> dict[str, Any]:
        """Seed the pod and ADD it through the real meta-plugin (in-process, as a runtime's exec would run it)."""
        anns = {"k8s.v1.cni.cncf.io/networks": networks} if networks else {}
        pod = self.api.seed({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": name, "namespace": ns, "annotations": anns},
                             "spec": {"nodeName": self.name, "containers": [{"name": "c", "image": "x"}]}})
        uid = pod["metadata"]["uid"]
        netns = self.scene.netns("adm")
        cid = f"{name}-{self.tag}-" + os.urandom(8).hex()
        self.made.append((cid, netns, f"{ns}/{name}"))
        self.pods[name] = (cid, netns, uid)
        rc_args = {"portMappings": [{"hostPort": self.port + len(self.pods), "containerPort": 80,
                                     "protocol": "tcp"}]} if ports else None
        rc, doc = self.cni("ADD", cid, netns, ns, name, uid, runtime_config=rc_args)
        assert rc == 0, doc
        return doc

    def cni(self, cmd: str, cid: str, netns: str, ns: str, name: str, uid: str,
            runtime_config: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """One CNI call with the plugin conf the runtime builds from our conflist (libcni buildOneConfig)."""
        from cni import skel
        from cni.delegator import entry
        from cni.spec.config import build_plugin_conf

        cl = json.loads(self.conf_path.read_text())
        conf = build_plugin_conf(cl["plugins"][0], name=cl["name"], cni_version=cl["cniVersion"],
                                 runtime_config=runtime_config)

        env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": self.scene.path(netns) if netns else "",
               "CNI_IFNAME": "eth0", "CNI_PATH": str(self.bin),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_UID={uid}"}
        out = io.BytesIO()
        rc = skel.dispatch(entry.handle, env, io.BytesIO(json.dumps(conf).encode()), out, io.StringIO())
        return rc, json.loads(out.getvalue() or b"{}")

    def cleanup(self) -> None:
        """DEL every pod this test ADDed (the runtime's job), so its rules and reservations go too."""
        for cid, netns, pod in reversed(self.made):
            ns, name = pod.split("/")
            try:
                self.cni("DEL", cid, netns if os.path.exists(self.scene.path(netns)) else "", ns, name, "")
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass

    # -- the admin commands --

    def run(self, *args: str, conf: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``multinic <args> --conf <conf>`` as the admin runs it: a real exec of the installed executable."""
        argv = [MULTINIC, *args]
        if conf != "":
            argv += ["--conf", conf or str(self.conf_path)]
        full = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        full.update(env or {})
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=full, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def run_json(self, *args: str, **kw: Any) -> tuple[int, Any]:
        rc, out, err = self.run(*args, "-o", "json", **kw)
        assert out.strip(), f"no output (rc {rc}): {err}"
        return rc, json.loads(out)


@pytest.fixture
def node(tmp_path: Path, scene: Scene, apiserver: ApiServerDouble) -> Iterator[Node]:  # noqa: F811
    if not os.access(MULTINIC, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    n = Node(tmp_path, scene, apiserver)
    try:
        yield n
    finally:
        n.cleanup()


def iptables_mentions(text: str) -> list[str]:
    """Host-port rules that name ``text`` (a network or container ID), in iptables' nat table and nft's cni_hostport."""
    out = []
    for argv in (["iptables-save", "-t", "nat"], ["ip6tables-save", "-t", "nat"],
                 ["nft", "list", "table", "ip", "cni_hostport"], ["nft", "list", "table", "ip6", "cni_hostport"]):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            continue
        out += [line for line in proc.stdout.splitlines() if text in line]
    return out
