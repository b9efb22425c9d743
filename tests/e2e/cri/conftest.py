"""Fixtures of the containerd CRI suite: one private containerd per session, multinic as its CNI, leak checks.

``node`` (per test, parametrised ``thin``/``thick``) writes the node CNI config that ``multinic
install`` would write (cni.daemon.autoconf.generate over the cluster network, capabilities
declared) with ``type: multinic`` (thin) or ``type: multinic-shim`` (thick: the shim forwards to a
``multinic daemon`` that this module starts), and after the test stops and removes every sandbox
and asserts nothing is left (``Node.leaks``).

Names carry a random tag (shared host); everything on disk lives under the session's temp dir.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni.daemon import autoconf
from conformance.apiserver import ApiServerDouble
from ipam.whereabouts.store import API_VERSION as WB_API

from .runtime import VENV_MULTINIC, Containerd, Daemon, install_multinic, missing

CLUSTER_SUBNET = "10.93.{n}.0/24"


def sh(*args: str, check: bool = True) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} → {r.returncode}: {r.stderr}")
    return r.stdout


def in_netns(path: str, *args: str, check: bool = True) -> str:
    return sh("nsenter", f"--net={path}", *args, check=check)


@dataclass
class Node:
    """One node: containerd, multinic's dirs, the cluster bridge and the macvlan master, in one mode."""

    ctd: Containerd
    scratch: Path
    tag: str
    daemon: Daemon
    bridge: str
    master: str
    peer: str
    api: ApiServerDouble | None = None
    mode: str = "thin"
    sandboxes: set[str] = field(default_factory=set)
    rules_before: str = ""

    @property
    def cri(self) -> Any:
        assert self.ctd.cri is not None
        return self.ctd.cri

    @property
    def manifests(self) -> Path:
        return self.scratch / "manifests"

    @property
    def cache(self) -> Path:
        return self.scratch / "cache"

    def path(self, name: str) -> str:
        return str(self.scratch / name)

    def log(self, tail: int = 4000) -> str:
        p = self.scratch / "multus.log"
        text = p.read_text(errors="replace") if p.exists() else ""
        return text[-tail:] if tail else text

    # -- configuration --------------------------------------------------------------------------

    def cluster_network(self) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": "cluster", "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True,
             "ipam": {"type": "host-local", "subnet": CLUSTER_SUBNET.format(n=self.subnet_octet),
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.path("ipam-cluster")}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "dataDir": self.path("portmap")},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}

    @property
    def subnet_octet(self) -> int:
        return int(self.tag[:2], 16) % 200 + 20

    def write_conf(self, mode: str, **keys: Any) -> None:
        """The node CNI config for ``mode``; ``keys`` are extra multinic config keys (e.g. dynamicNetworks)."""
        self.mode = mode
        extra = {"manifestDir": str(self.manifests), "cniDir": str(self.cache), "binDir": str(self.ctd.bin_dir),
                 "logFile": self.path("multus.log"), "logLevel": "debug",
                 # The test NADs keep their IPAM and plugin state in this test's temp dir (tenancy: allowedPaths).
                 "allowedPaths": ["/var/lib/cni", "/run/cni", "/var/log", str(self.tmp) if hasattr(self, "tmp")
                                  else tempfile.gettempdir()], **keys}
        doc = autoconf.generate(self.cluster_network(), "multinic" if mode == "thin" else "multinic-shim", extra)
        self.ctd.write_conf(doc, autoconf.OUR_FILE)
        if mode == "thick" and not self.daemon.running():
            self.daemon.start()
        self.ctd.wait_network_ready()

    def nad(self, name: str, config: dict[str, Any]) -> None:
        doc = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": name, "namespace": "default"}, "spec": {"config": json.dumps(config)}}
        (self.manifests / f"nad-{name}.yaml").write_text(yaml.safe_dump(doc))

    def pod(self, name: str, networks: str = "", uid: str = "") -> None:
        meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}"}
        if networks:
            meta["annotations"] = {"k8s.v1.cni.cncf.io/networks": networks}
        doc = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": {"containers": [{"name": "c", "image": "pause"}]}}
        # Atomically (write, rename): a thick daemon with dynamicNetworks reads the manifests at any moment.
        tmp = self.manifests / f".pod-{name}.yaml.tmp"
        tmp.write_text(yaml.safe_dump(doc))
        tmp.rename(self.manifests / f"pod-{name}.yaml")

    # -- pods -----------------------------------------------------------------------------------

    def run(self, name: str, networks: str = "", **kw: Any) -> str:
        self.pod(name, networks)
        sid: str = self.cri.run(self.cri.sandbox_config(name, **kw))
        self.sandboxes.add(sid)
        return sid

    def status_of(self, name: str) -> list[dict[str, Any]]:
        p = self.manifests / ".multinic" / "status" / f"default_{name}.json"
        doc = json.loads(p.read_text())
        return list(json.loads(next(iter(doc.values()))))

    # -- leak checks ----------------------------------------------------------------------------

    def leaks(self) -> list[str]:
        """Everything a pod could have left behind, named; [] when clean."""
        out: list[str] = []
        if self.ctd.leftover_netns():
            out.append(f"netns left: {self.ctd.leftover_netns()}")
        ports = sh("ip", "-o", "link", "show", "master", self.bridge, check=False).strip()
        if ports:
            out.append(f"host veths left on {self.bridge}: {ports}")
        for d in self.scratch.glob("ipam-*"):
            held = [f.name for f in d.rglob("*") if f.is_file() and not f.name.startswith(("last_reserved_ip", "lock"))]
            if held:
                out.append(f"host-local reservations left in {d.name}: {held}")
        pm = self.scratch / "portmap"
        if pm.exists() and [f for f in pm.iterdir() if not f.name.startswith(("lock", "."))]:
            out.append(f"portmap state left: {[f.name for f in pm.iterdir()]}")
        for pool in (self.scratch / "wb").glob("ippools/*.json"):
            allocs = json.loads(pool.read_text()).get("spec", {}).get("allocations") or {}
            if allocs:
                out.append(f"whereabouts file-store allocations left in {pool.name}: {allocs}")
        res = list((self.scratch / "wb").glob("overlappingrangeipreservations/*.json"))
        if res:
            out.append(f"whereabouts file-store reservations left: {[r.name for r in res]}")
        if self.api is not None:
            for obj in self.api.objects("ippools", WB_API):
                if obj.get("spec", {}).get("allocations"):
                    out.append(f"whereabouts API allocations left: {obj['spec']['allocations']}")
            res_api = self.api.objects("overlappingrangeipreservations", WB_API)
            if res_api:
                out.append(f"whereabouts API reservations left: {[r['metadata']['name'] for r in res_api]}")
        cached = [f for f in os.listdir(self.cache) if not f.startswith(".")] if self.cache.exists() else []
        if cached:
            out.append(f"attachment cache files left: {cached}")
        locks = self.cache / ".locks"  # a sandbox's lock file goes with its cache record
        if locks.is_dir() and list(locks.iterdir()):
            out.append(f"sandbox lock files left: {[f.name for f in locks.iterdir()]}")
        status = self.manifests / ".multinic" / "status"
        if status.exists() and list(status.iterdir()):
            out.append(f"network-status left: {[f.name for f in status.iterdir()]}")
        nat = sh("iptables-save", "-t", "nat", check=False) + sh("ip6tables-save", "-t", "nat", check=False)
        ruleset = sh("nft", "list", "ruleset", check=False)
        for sid in self.sandboxes:
            if sid in nat or sid[:12] in ruleset:
                out.append(f"iptables/nft rules of sandbox {sid[:12]} left")
        prefix = CLUSTER_SUBNET.format(n=self.subnet_octet).rsplit(".", 2)[0] + "."
        if re.search(re.escape(prefix) + r"\d+(/32|:\d+)", nat):  # a pod address (DNAT target or hairpin source)
            out.append(f"NAT rules naming {prefix}x left")
        # Host rules: only ours can be judged (other suites on this shared host add and remove their own).
        ours = [r for r in sh("ip", "rule", "show").splitlines()
                if r not in self.rules_before and (prefix in r or "10.94." in r or "10.95." in r or self.tag in r)]
        if ours:
            out.append(f"host ip rules left: {ours}")
        return out

    def remove_all(self) -> None:
        for sid in list(self.sandboxes):
            for call in (self.cri.stop, self.cri.remove):
                try:
                    call(sid)
                except Exception:  # noqa: BLE001 - already removed, or the leak check will say what is left
                    pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


def _need() -> None:
    why = missing()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def cri_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The session's node: containerd + multinic (daemon started on first thick use) + API double."""
    _need()
    tag = uuid.uuid4().hex[:6]
    scratch = Path(tmp_path_factory.mktemp(f"cri-{tag}"))
    for d in ("manifests", "cache", "run"):
        (scratch / d).mkdir()
    (scratch / "run").chmod(0o700)
    sock = scratch / "run" / "multinic.sock"
    ctd = Containerd(scratch / "containerd", env={"MULTINIC_SOCKET": str(sock), "MULTINIC_THIN": VENV_MULTINIC})
    install_multinic(ctd.bin_dir)
    names = {"bridge": f"mncb{tag}", "master": f"mncm{tag}", "peer": f"mncp{tag}"}
    api = ApiServerDouble(scratch / "apiserver")
    node = Node(ctd, scratch, tag, Daemon(sock, scratch / "daemon.log", ctd.conf_dir), names["bridge"], names["master"],
                names["peer"], api=api)
    try:
        sh("ip", "link", "add", names["master"], "type", "veth", "peer", "name", names["peer"])
        sh("ip", "link", "set", names["master"], "up")
        sh("ip", "link", "set", names["peer"], "up")
        api.start()
        ctd.start()
        node.rules_before = sh("ip", "rule", "show")
        yield node
    finally:
        try:
            node.remove_all()
        finally:
            ctd.cleanup()
            node.daemon.stop()
            api.stop()
            for link in (names["master"], names["bridge"]):
                subprocess.run(["ip", "link", "del", link], capture_output=True)


@pytest.fixture(params=["thin", "thick"])
def node(request: pytest.FixtureRequest, cri_node: Node) -> Iterator[Node]:
    """``cri_node`` configured for one mode; after the test every sandbox is removed and nothing may be left."""
    cri_node.sandboxes.clear()
    cri_node.write_conf(request.param)
    try:
        yield cri_node
    finally:
        cri_node.remove_all()
        leaks = cri_node.leaks()
        for f in cri_node.manifests.glob("pod-*.yaml"):
            f.unlink()
        rep = getattr(request.node, "rep_call", None)
        failed = rep is None or rep.failed  # a failed test reports its own error; leaks then are a consequence
        if leaks and not failed:
            pytest.fail("left behind after the test:\n  " + "\n  ".join(leaks) + f"\n--- multinic log ---\n{cri_node.log()}")


def ipv4(netns: str, ifname: str) -> list[ipaddress.IPv4Interface]:
    out = in_netns(netns, "ip", "-4", "-o", "addr", "show", "dev", ifname)
    return [ipaddress.IPv4Interface(m) for m in re.findall(r"inet (\S+)", out)]
