"""Scenario fixtures for the delegator: a pod source (API server double or local manifests), real
namespaces, and the meta-plugin run in-process (through ``skel.dispatch``, the same path the
binary takes) or by exec of the installed ``multinic``.

Parametrised twice:
- ``source``: ``api`` (conformance/apiserver.py over HTTPS, through cni.k8s.client) or
  ``local`` (a manifest directory, config key ``manifestDir``);
- ``plugins``: ``reference`` (every delegate type exec'd from /usr/lib/cni, as
  MULTINIC_EXEC_TYPES does) or ``native`` (in-process; skipped while a native module is missing).
Everything (cache, IPAM stores, logs, manifests) lives under ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import io
import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)
from tests.support.nsfix import REF_CNI, Scene, need_reference, sh

NATIVE_MODULES = {"macvlan": "plugins.macvlan", "bridge": "plugins.bridge", "host-local": "ipam.host_local",
                  "sbr": "plugins.sbr", "static": "ipam.static"}
REFERENCE_TYPES = ("macvlan", "bridge", "host-local", "sbr", "static", "ipvlan", "tuning", "portmap")
MULTINIC = os.path.join(os.path.dirname(sys.executable), "multinic")


def whereabouts_native() -> bool:
    return importlib.util.find_spec("ipam.whereabouts") is not None


@pytest.fixture(params=["reference", "native"])
def plugins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which plugin implementations run the delegates (the delegator must not care)."""
    from cni import invoke

    if request.param == "native":
        missing = [t for t, m in NATIVE_MODULES.items() if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"native plugin module(s) for {', '.join(missing)} not written yet")
        monkeypatch.setattr(invoke, "_force_exec", set())
    else:
        need_reference("macvlan", "bridge", "host-local", "sbr")
        monkeypatch.setattr(invoke, "_force_exec", set(REFERENCE_TYPES))
    return str(request.param)


def ipam_allocations(root: Path) -> list[str]:
    """Every IP allocation recorded under an IPAM store root (host-local files, whereabouts file store)."""
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            path = os.path.join(dirpath, fn)
            try:
                ipaddress.ip_address(fn.replace("_", ":"))
                out.append(path)
                continue
            except ValueError:
                pass
            if fn.endswith(".json"):
                try:
                    doc = json.loads(Path(path).read_text())
                except (OSError, ValueError):
                    continue
                if "reservation" in dirpath.lower() and doc:
                    out.append(path)
                elif ((doc.get("spec") or {}).get("allocations") or {}):
                    out.append(path)
    return out


@dataclass
class Call:
    rc: int
    doc: dict[str, Any]
    seconds: float
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass
class World:
    """One node, its pods and NADs, and the multinic config for them."""

    kind: str  # api | local
    tmp: Path
    scene: Scene
    plugins: str
    api: Any = None
    node: str = "node-a"
    uids: dict[tuple[str, str], str] = field(default_factory=dict)
    extra_conf: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.manifests = self.tmp / "manifests"
        self.manifests.mkdir(exist_ok=True)
        self.cni_dir = self.tmp / "cache"
        self.ipam_dir = self.tmp / "ipam"
        self.log_file = self.tmp / "log" / "multus.log"
        self.cluster_bridge = self.scene.bridge_uplink()
        self.uplink = self.scene.bridge_uplink()  # the node's extra uplink ("ens224")
        self.use_whereabouts = self.plugins == "native" and whereabouts_native()

    # -- objects --

    def _put(self, obj: dict[str, Any]) -> None:
        if self.kind == "api":
            plural = {"Pod": "pods", "Node": "nodes", "NetworkAttachmentDefinition": "network-attachment-definitions"}
            self.api.seed(obj, plural=plural[obj["kind"]])
        else:
            meta = obj["metadata"]
            name = f"{obj['kind']}_{meta.get('namespace', '')}_{meta['name']}.json"
            (self.manifests / name).write_text(json.dumps(obj))

    def add_node(self, labels: dict[str, str] | None = None, name: str | None = None) -> None:
        self._put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name or self.node, "labels": labels or {}}})

    def add_nad(self, name: str, config: dict[str, Any] | None, ns: str = "default",
                annotations: dict[str, str] | None = None) -> None:
        obj: dict[str, Any] = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                               "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
                               "spec": {}}
        if config is not None:
            obj["spec"]["config"] = json.dumps(config)
        self._put(obj)

    def add_pod(self, name: str, networks: str | list[dict[str, Any]] | None = None, ns: str = "default",
                annotations: dict[str, str] | None = None) -> str:
        anns = dict(annotations or {})
        if networks is not None:
            anns["k8s.v1.cni.cncf.io/networks"] = networks if isinstance(networks, str) else json.dumps(networks)
        uid = str(uuid.uuid4())
        meta: dict[str, Any] = {"name": name, "namespace": ns, "annotations": anns}
        if self.kind == "local":
            meta["uid"] = uid
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": self.node, "containers": [
            {"name": "c", "image": "busybox"}]}}
        if self.kind == "api":
            stored = self.api.seed(obj, plural="pods")
            uid = stored["metadata"]["uid"]
        else:
            self._put(obj)
        self.uids[(ns, name)] = uid
        return uid

    def delete_nad(self, name: str, ns: str = "default") -> None:
        if self.kind == "api":
            assert self.api.delete_obj("network-attachment-definitions", name, ns, api_version="k8s.cni.cncf.io/v1")
        else:
            (self.manifests / f"NetworkAttachmentDefinition_{ns}_{name}.json").unlink()

    def delete_pod(self, name: str, ns: str = "default") -> None:
        if self.kind == "api":
            assert self.api.delete_obj("pods", name, ns)
        else:
            (self.manifests / f"Pod_{ns}_{name}.json").unlink()

    def network_status(self, name: str, ns: str = "default") -> list[dict[str, Any]] | None:
        key = "k8s.v1.cni.cncf.io/network-status"
        if self.kind == "api":
            pod = self.api.get_obj("pods", name, ns)
            value = ((pod or {}).get("metadata", {}).get("annotations") or {}).get(key)
        else:
            p = self.manifests / ".multinic" / "status" / f"{ns}_{name}.json"
            value = json.loads(p.read_text()).get(key) if p.exists() else None
        return json.loads(value) if value else None

    def events(self, pod: str | None = None) -> list[dict[str, Any]]:
        if self.kind == "api":
            evs = sorted(self.api.objects("events"), key=lambda e: int(e["metadata"]["resourceVersion"]))
        else:
            p = self.manifests / ".multinic" / "events.jsonl"
            evs = [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []
        return [e for e in evs if pod is None or e["involvedObject"]["name"] == pod]

    def log_lines(self) -> list[str]:
        return self.log_file.read_text().splitlines() if self.log_file.exists() else []

    # -- configs --

    def ipam(self, subnet: str, gateway: str | None = None, routes: list[dict[str, str]] | None = None,
             whereabouts: bool = False, range_start: str | None = None) -> dict[str, Any]:
        """whereabouts (native, when asked and available) or host-local with the same addresses."""
        if whereabouts and self.use_whereabouts:
            conf: dict[str, Any] = {"type": "whereabouts", "range": subnet, "data_dir": str(self.ipam_dir / "wb"),
                                    "log_file": str(self.tmp / "log" / "whereabouts.log"), "datastore": "file"}
            if range_start:
                conf["range_start"] = range_start
        else:
            rng: dict[str, Any] = {"subnet": subnet}
            if range_start:
                rng["rangeStart"] = range_start
            conf = {"type": "host-local", "ranges": [[rng]], "dataDir": str(self.ipam_dir / "hl")}
        if gateway:
            if conf["type"] == "host-local":
                conf["ranges"][0][0]["gateway"] = gateway
            else:
                conf["gateway"] = gateway
        if routes:
            conf["routes"] = routes
        return conf

    def macvlan(self, name: str, subnet: str, *, master: str | None = None, sbr: bool = False,
                whereabouts: bool = False, gateway: str | None = None, routes: list[dict[str, str]] | None = None,
                version: str = "1.0.0", range_start: str | None = None) -> dict[str, Any]:
        """A NAD config like the seed's: macvlan on the node uplink (+ sbr chained)."""
        plugin = {"type": "macvlan", "master": master or self.uplink, "mode": "bridge",
                  "ipam": self.ipam(subnet, gateway, routes, whereabouts, range_start)}
        if not sbr:
            return {"cniVersion": version, **plugin}
        return {"cniVersion": version, "name": name, "plugins": [
            plugin, {"type": "sbr", "dataDir": str(self.tmp / "sbr")}]}

    def primary(self) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge", "bridge": self.cluster_bridge,
                "isGateway": True, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.7.0/24"}]],
                                            "routes": [{"dst": "0.0.0.0/0"}],
                                            "dataDir": str(self.ipam_dir / "hl")}}

    def conf(self, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": "multinic-cni-network", "type": "multinic",
            "delegates": [self.primary()], "cniDir": str(self.cni_dir), "binDir": REF_CNI,
            "confDir": str(self.tmp / "net.d"), "logFile": str(self.log_file), "logLevel": "verbose",
            "nodeName": self.node,
        }
        if self.kind == "api":
            conf["kubeconfig"] = self.api.kubeconfig_path()
        else:
            conf["manifestDir"] = str(self.manifests)
        conf.update(self.extra_conf)
        conf.update(extra)
        return conf

    # -- running the meta-plugin --

    def env(self, cmd: str, cid: str, netns: str, pod: tuple[str, str] | None, ifname: str = "eth0") -> dict[str, str]:
        env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
               "CNI_PATH": REF_CNI}
        if pod is not None:
            ns, name = pod
            env["CNI_ARGS"] = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};"
                               f"K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={self.uids.get(pod, '')}")
        return env

    def cni(self, cmd: str, cid: str, netns: str = "", pod: tuple[str, str] | None = None,
            conf: dict[str, Any] | None = None, *, binary: bool = False, extra_env: dict[str, str] | None = None) -> Call:
        """One CNI call of the meta-plugin, in-process (skel.dispatch) or by exec of the real binary."""
        conf = conf if conf is not None else self.conf()
        env = self.env(cmd, cid, self.scene.path(netns) if netns else "", pod)
        env.update(extra_env or {})
        data = json.dumps(conf).encode()
        t0 = time.monotonic()
        if binary:
            full = dict(os.environ)
            full.update(env)
            from cni import invoke

            full["MULTINIC_EXEC_TYPES"] = ",".join(sorted(invoke._force_exec))
            proc = subprocess.run([MULTINIC], input=data, capture_output=True, env=full, timeout=60, check=False)
            out, rc, err = proc.stdout, proc.returncode, proc.stderr.decode(errors="replace")
        else:
            from cni import skel
            from cni.delegator import entry

            stdout = io.BytesIO()
            stderr = io.StringIO()
            rc = skel.dispatch(entry.handle, env, io.BytesIO(data), stdout, stderr)
            out, err = stdout.getvalue(), stderr.getvalue()
        dt = time.monotonic() - t0
        doc = json.loads(out) if out.strip() else {}
        return Call(rc, doc, dt, err)

    # -- kernel state --

    def links(self, netns: str) -> set[str]:
        out = sh("ip", "-o", "link", "show", ns=netns)
        return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}

    def addrs(self, netns: str, ifname: str) -> list[str]:
        out = sh("ip", "-o", "-4", "addr", "show", "dev", ifname, ns=netns)
        return [line.split()[3] for line in out.splitlines()]

    def leftovers(self) -> dict[str, Any]:
        """What must be empty after a complete DEL or a rolled-back ADD."""
        # events kept for an API that was down are not pod state (tests that cause them check them)
        cache = sorted(f for f in os.listdir(self.cni_dir) if f not in (".pending-events", ".history", ".locks")) if self.cni_dir.exists() else []
        locks = self.cni_dir / ".locks"  # a sandbox's lock file goes with its cache record (the directory, when the command that made it leaves it empty)
        cache += sorted(f".locks/{f}" for f in os.listdir(locks)) if locks.is_dir() else []
        return {"cache": cache, "ipam": ipam_allocations(self.ipam_dir)}


@pytest.fixture(params=["api", "local"])
def world(request: pytest.FixtureRequest, tmp_path: Path, scene: Scene, plugins: str) -> Iterator[World]:
    """A node with a cluster network bridge and an uplink, pods and NADs from the chosen source."""
    api = None
    if request.param == "api":
        api = request.getfixturevalue("apiserver")
    w = World(str(request.param), tmp_path, scene, plugins, api)
    w.add_node({"kubernetes.io/hostname": w.node})
    yield w
