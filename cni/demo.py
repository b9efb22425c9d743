"""``multinic demo`` (``make demo``): the seed document's multi-NIC examples, live on this machine.

What it builds (every name carries a random tag; nothing outside the demo's namespaces and
its temp directory is touched, nothing in /etc or /var):
- a "node" network namespace standing for the Kubernetes node: the cluster network bridge
  (made by the bridge plugin, eth0 of every pod, 10.244.0.0/24) and an extra uplink ``ens224``;
- a gateway namespace on the other end of ``ens224`` (172.16.0.1) routing to an "outside"
  namespace at 172.16.1.10 on 172.16.1.0/24;
- a local manifest directory (the API stand-in, config key ``manifestDir``) with the node,
  the seed's NADs and pods:
    gke-network-1  macvlan on ens224, whereabouts 172.16.0.0/24, gateway 172.16.0.1,
                   routes [{"dst": "172.16.1.0/24"}]              (the seed's routes example)
    gke-network-2  macvlan on ens224 + sbr, same range            (the seed's sbr example)
    gke-network-3  a bridge of its own, 192.168.50.0/24           (a second data network; its
                   routes-free config is the one a pod can use twice: two attachments of
                   gke-network-1 would both add 172.16.1.0/24 to the main table)
  and pods for each example: one NAD used by many pods, many NADs used by one pod, two NADs
  on one master, the same NAD twice; plus one pod a NAD node selector keeps off this node.
The real ``multinic`` binary is executed for each pod as a runtime would (CNI_* environment,
config on stdin) inside the node namespace. The demo prints each pod's ``ip a``, ``ip route``,
``ip route list table 100`` and network-status, pings over net1, then DELs everything and
removes what it made — also on failure or Ctrl-C.

Native plugins run in-process when they are importable; the others are executed from
/usr/lib/cni (the reference binaries); the demo says which. Without native whereabouts the
NADs use host-local with the same addresses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

REF_CNI = "/usr/lib/cni"
TYPES = {"macvlan": "plugins.macvlan", "bridge": "plugins.bridge", "sbr": "plugins.sbr",
         "host-local": "ipam.host_local", "whereabouts": "ipam.whereabouts"}
GW = "172.16.0.1"
OUTSIDE = "172.16.1.10"

# name -> (networks annotation, what the seed calls this example)
PODS: list[tuple[str, str, str]] = [
    ("pod-a", "default/gke-network-1", "single network attachment used by multiple pods"),
    ("pod-b", "default/gke-network-1", "single network attachment used by multiple pods"),
    ("samplepod", "default/gke-network-1,default/gke-network-3", "multiple network attachments used by one pod"),
    ("pod-two", "default/gke-network-1,default/gke-network-2", "two network attachments on the same interface"),
    ("pod-twice", "default/gke-network-3,default/gke-network-3", "the same network attachment used twice"),
    ("pod-sbr", "default/gke-network-2", "source-based routing (sbr)"),
]
DENIED = ("pod-denied", "default/prod-only")


class DemoError(Exception):
    pass


@dataclass
class Demo:
    out: Any = sys.stdout
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    namespaces: list[str] = field(default_factory=list)
    added: list[tuple[str, str, str]] = field(default_factory=list)  # (pod, cid, netns)
    tmp: str = ""
    native: dict[str, bool] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    # -- helpers --

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def ns(self, name: str) -> str:
        return f"mnd{self.tag}-{name}"

    def ip(self, *args: str, ns: str | None = None, check: bool = True) -> str:
        cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise DemoError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return proc.stdout

    def run_in(self, ns: str, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise DemoError(f"{' '.join(args)} in {ns}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def add_netns(self, short: str) -> str:
        name = self.ns(short)
        self.ip("netns", "add", name)
        self.namespaces.append(name)
        self.ip("link", "set", "lo", "up", ns=name)
        return name

    # -- the scene --

    def build_network(self) -> None:
        node, gw, far = self.add_netns("node"), self.add_netns("gw"), self.add_netns("outside")
        # ens224: the node's extra uplink; its peer is the outside network's gateway port.
        self.ip("link", "add", "ens224", "type", "veth", "peer", "name", "gw0", ns=node)
        self.ip("link", "set", "gw0", "netns", gw, ns=node)
        self.ip("link", "set", "ens224", "up", ns=node)
        self.ip("link", "set", "gw0", "name", "eth0", ns=gw)
        self.ip("addr", "add", f"{GW}/24", "dev", "eth0", ns=gw)
        self.ip("link", "set", "eth0", "up", ns=gw)
        self.ip("link", "add", "eth1", "type", "veth", "peer", "name", "far0", ns=gw)
        self.ip("link", "set", "far0", "netns", far, ns=gw)
        self.ip("addr", "add", "172.16.1.1/24", "dev", "eth1", ns=gw)
        self.ip("link", "set", "eth1", "up", ns=gw)
        self.run_in(gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ip("link", "set", "far0", "name", "eth0", ns=far)
        self.ip("addr", "add", f"{OUTSIDE}/24", "dev", "eth0", ns=far)
        self.ip("link", "set", "eth0", "up", ns=far)
        self.ip("route", "add", "default", "via", "172.16.1.1", ns=far)
        # gke-network-3's own bridge on the node.
        self.ip("link", "add", "br-data", "type", "bridge", ns=node)
        self.ip("link", "set", "br-data", "up", ns=node)

    def ipam(self, name: str, first: str, last: str, *, routes: bool) -> dict[str, Any]:
        if self.native["whereabouts"]:
            conf: dict[str, Any] = {"type": "whereabouts", "range": "172.16.0.0/24", "range_start": first,
                                    "range_end": last, "gateway": GW, "data_dir": f"{self.tmp}/ipam/whereabouts",
                                    "log_file": f"{self.tmp}/log/whereabouts.log", "log_level": "verbose",
                                    "datastore": "file"}
        else:
            conf = {"type": "host-local", "dataDir": f"{self.tmp}/ipam/host-local",
                    "ranges": [[{"subnet": "172.16.0.0/24", "rangeStart": first, "rangeEnd": last, "gateway": GW}]]}
        if routes:
            conf["routes"] = [{"dst": "172.16.1.0/24"}]
        return conf

    def manifests(self) -> str:
        d = os.path.join(self.tmp, "manifests")
        os.makedirs(d)
        nads = {
            "gke-network-1": ({"cniVersion": "1.0.0", "type": "macvlan", "master": "ens224", "mode": "bridge",
                               "ipam": self.ipam("gke-network-1", "172.16.0.10", "172.16.0.99", routes=True)},
                              {"k8s.v1.cni.cncf.io/nodeSelector": "my-label=multinicNP"}),
            "gke-network-2": ({"cniVersion": "1.0.0", "name": "gke-network-2", "plugins": [
                {"type": "macvlan", "master": "ens224", "mode": "bridge",
                 "ipam": self.ipam("gke-network-2", "172.16.0.100", "172.16.0.199", routes=False)},
                {"type": "sbr", "dataDir": f"{self.tmp}/sbr"}]}, {}),
            "gke-network-3": ({"cniVersion": "1.0.0", "type": "bridge", "bridge": "br-data",
                               "ipam": {"type": "host-local", "dataDir": f"{self.tmp}/ipam/host-local",
                                        "ranges": [[{"subnet": "192.168.50.0/24"}]]}}, {}),
            "prod-only": ({"cniVersion": "1.0.0", "type": "macvlan", "master": "ens224",
                           "ipam": self.ipam("prod-only", "172.16.0.200", "172.16.0.250", routes=False)},
                          {"k8s.v1.cni.cncf.io/nodeSelector": "environment=production"}),
        }
        docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": "demo-node", "labels": {"kubernetes.io/hostname": "demo-node", "my-label": "multinicNP"}}}]
        for name, (conf, anns) in nads.items():
            docs.append({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                         "metadata": {"name": name, "namespace": "default", "annotations": anns},
                         "spec": {"config": json.dumps(conf)}})
        for i, (pod, networks) in enumerate([(p, n) for p, n, _ in PODS] + [DENIED]):
            docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": pod, "namespace": "default", "uid": f"00000000-0000-4000-8000-{i:012d}",
                "annotations": {"k8s.v1.cni.cncf.io/networks": networks}}, "spec": {"nodeName": "demo-node"}})
        import yaml

        with open(os.path.join(d, "cluster.yaml"), "w") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
        return d

    def cni_config(self, manifest_dir: str) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0", "name": "multinic-cni-network", "type": "multinic",
            "manifestDir": manifest_dir, "nodeName": "demo-node",
            "cniDir": f"{self.tmp}/cache", "confDir": f"{self.tmp}/net.d", "binDir": REF_CNI,
            "logFile": f"{self.tmp}/log/multus.log", "logLevel": "verbose",
            # The demo keeps its NADs' state in its temp dir, not /var/lib/cni: the node admin (the demo) allows
            # that root for NAD paths. Everything else is the shipped multi-tenant policy (README "Security model").
            "allowedPaths": [self.tmp],
            "delegates": [{"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge", "bridge": "cbr0",
                           "isGateway": True, "ipam": {"type": "host-local", "dataDir": f"{self.tmp}/ipam/host-local",
                                                       "ranges": [[{"subnet": "10.244.0.0/24"}]],
                                                       "routes": [{"dst": "0.0.0.0/0"}]}}],
        }

    # -- the runtime's part --

    def multinic(self, command: str, pod: str, cid: str, netns: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Exec the real binary in the node namespace, as kubelet's runtime would."""
        binary = os.path.join(os.path.dirname(sys.executable), "multinic")
        if not os.access(binary, os.X_OK):
            binary = shutil.which("multinic") or binary
        uid = next((f"00000000-0000-4000-8000-{i:012d}" for i, (p, _, _) in enumerate(PODS) if p == pod),
                   f"00000000-0000-4000-8000-{len(PODS):012d}")
        env = dict(os.environ)
        env.update({
            "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{netns}", "CNI_IFNAME": "eth0",
            "CNI_PATH": REF_CNI,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
                        f"K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}",
            "MULTINIC_EXEC_TYPES": ",".join(t for t, ok in self.native.items() if not ok and t != "whereabouts"),
            "MULTINIC_WHEREABOUTS_FLATFILE": f"{self.tmp}/no-flat-file",
        })
        proc = subprocess.run(["ip", "netns", "exec", self.ns("node"), binary], input=json.dumps(conf).encode(),
                              capture_output=True, env=env, timeout=120, check=False)
        try:
            doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            doc = {"code": 999, "msg": proc.stdout.decode(errors="replace")}
        if proc.returncode != 0 and not doc.get("code"):
            doc = {"code": 999, "msg": proc.stderr.decode(errors="replace")[-500:]}
        return doc

    def status_of(self, manifest_dir: str, pod: str) -> Any:
        path = os.path.join(manifest_dir, ".multinic", "status", f"default_{pod}.json")
        try:
            with open(path) as f:
                return json.loads(json.load(f)["k8s.v1.cni.cncf.io/network-status"])
        except (OSError, ValueError, KeyError):
            return None

    def ping(self, netns: str, target: str, *extra: str, label: str) -> bool:
        proc = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "2", *extra, target],
                              capture_output=True, text=True, check=False)
        ok = proc.returncode == 0
        self.say(f"  ping {label}: {'ok' if ok else 'FAILED'}")
        if not ok:
            self.failures.append(f"ping {label}")
        return ok

    # -- the show --

    def run(self) -> int:
        # MULTINIC_EXEC_TYPES pins types to the reference binaries, as for the meta-plugin itself.
        forced = set(filter(None, os.environ.get("MULTINIC_EXEC_TYPES", "").split(",")))
        self.native = {t: importlib.util.find_spec(m) is not None and t not in forced for t, m in TYPES.items()}
        self.tmp = tempfile.mkdtemp(prefix=f"multinic-demo-{self.tag}-")
        self.say(f"multinic demo (tag {self.tag}, state under {self.tmp})")
        for t, ok in self.native.items():
            how = "native (in-process)" if ok else ("not available: host-local is used instead" if t == "whereabouts"
                                                    else f"reference binary {REF_CNI}/{t}")
            self.say(f"  {t:12} {how}")
        self.build_network()
        mdir = self.manifests()
        conf = self.cni_config(mdir)
        self.say(f"\nnode uplink ens224 -> gateway {GW} -> outside network 172.16.1.0/24 ({OUTSIDE})")
        self.say(f"manifests: {mdir}/cluster.yaml (Node, 4 NetworkAttachmentDefinitions, {len(PODS) + 1} Pods)\n")

        for i, (pod, networks, example) in enumerate(PODS):
            netns = self.add_netns(pod)
            cid = f"demo{self.tag}{i:02d}"
            doc = self.multinic("ADD", pod, cid, netns, conf)
            if "code" in doc:
                raise DemoError(f"ADD of {pod} failed: {doc.get('msg')} {doc.get('details', '')}")
            self.added.append((pod, cid, netns))
            self.say(f"=== {pod}  ({example})  networks: {networks}")
            self.say("# ip a")
            self.say(self.run_in(netns, "ip", "a").rstrip())
            self.say("# ip route")
            self.say(self.run_in(netns, "ip", "route").rstrip())
            self.say("# ip route list table 100")
            self.say(self.run_in(netns, "ip", "route", "list", "table", "100", check=False).rstrip() or "(empty)")
            self.say("# k8s.v1.cni.cncf.io/network-status")
            self.say(json.dumps(self.status_of(mdir, pod), indent=2))
            self.say()

        self.say("=== a NAD restricted to other nodes (k8s.v1.cni.cncf.io/nodeSelector: environment=production)")
        netns = self.add_netns(DENIED[0])
        doc = self.multinic("ADD", DENIED[0], f"demo{self.tag}99", netns, conf)
        self.say(f"  ADD {DENIED[0]}: error {doc.get('code')}: {doc.get('msg')}")
        if not doc.get("code"):
            self.failures.append("the node selector did not refuse pod-denied")
        with open(os.path.join(mdir, ".multinic", "events.jsonl")) as f:
            events = [json.loads(line) for line in f if line.strip()]
        for e in events:
            if e["involvedObject"]["name"] == DENIED[0]:
                self.say(f"  event {e['type']} {e['reason']}: {e['message']}")
        self.say()

        self.say("=== pings")
        addr = {p: self.run_in(n, "ip", "-4", "-o", "addr", "show", "dev", "net1").split()[3].split("/")[0]
                for p, _, n in self.added}
        netns_of = {p: n for p, _, n in self.added}
        self.ping(netns_of["pod-a"], addr["pod-b"], "-I", "net1", label=f"pod-a -> pod-b over net1 ({addr['pod-b']})")
        self.ping(netns_of["pod-a"], GW, "-I", "net1", label=f"pod-a -> gateway {GW} over net1")
        self.ping(netns_of["pod-a"], OUTSIDE, label=f"pod-a -> {OUTSIDE} (route 172.16.1.0/24 via {GW} dev net1)")
        self.ping(netns_of["samplepod"], addr["pod-twice"], "-I", "net2",
                  label=f"samplepod net2 -> pod-twice net1 ({addr['pod-twice']}, gke-network-3)")
        self.ping(netns_of["pod-sbr"], OUTSIDE, "-I", addr["pod-sbr"],
                  label=f"pod-sbr from {addr['pod-sbr']} -> {OUTSIDE} (sbr table 100: default via {GW} dev net1)")
        self.say()
        self.say("=== /var/log/multus.log equivalent (first lines)")
        with open(f"{self.tmp}/log/multus.log") as f:
            for line in f.read().splitlines()[:4]:
                self.say("  " + (line if len(line) < 200 else line[:197] + "..."))
        self.say()
        self.delete_all(conf)
        return 1 if self.failures else 0

    def delete_all(self, conf: dict[str, Any] | None) -> None:
        if conf is None or not self.added:
            return
        self.say("=== DEL every pod")
        for pod, cid, netns in reversed(self.added):
            doc = self.multinic("DEL", pod, cid, netns, conf)
            ok = "code" not in doc
            self.say(f"  DEL {pod}: {'ok' if ok else 'error ' + str(doc.get('msg'))}")
            if not ok:
                self.failures.append(f"DEL {pod}")
        self.added.clear()
        cache = [f for f in os.listdir(f"{self.tmp}/cache") if not f.startswith(".")] \
            if os.path.isdir(f"{self.tmp}/cache") else []  # records; not .history or .pending-events
        self.say(f"  attachment cache entries left: {len(cache)}")
        if cache:
            self.failures.append("cache entries left after DEL")

    def cleanup(self) -> None:
        for netns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        self.namespaces.clear()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.say(f"cleaned up: namespaces mnd{self.tag}-*, {self.tmp or 'no temp dir'}")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if os.geteuid() != 0:
        sys.stderr.write("multinic demo: needs root (it creates network namespaces)\n")
        return 2
    if shutil.which("ip") is None:
        sys.stderr.write("multinic demo: needs iproute2 (apt-get install iproute2)\n")
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    demo = Demo()
    conf: dict[str, Any] | None = None
    rc = 1
    try:
        rc = demo.run()
    except KeyboardInterrupt:
        demo.say("\ninterrupted: cleaning up")
        rc = 130
    except (DemoError, OSError, subprocess.SubprocessError) as exc:
        demo.say(f"\ndemo failed: {exc}")
        rc = 1
    finally:
        try:
            if demo.added and demo.tmp:
                conf = demo.cni_config(os.path.join(demo.tmp, "manifests"))
                demo.delete_all(conf)
        except Exception as exc:  # noqa: BLE001 - cleanup must go on
            demo.say(f"DEL during cleanup failed: {exc}")
        demo.cleanup()
        signal.signal(signal.SIGTERM, old)
    if demo.failures:
        demo.say("problems: " + "; ".join(demo.failures))
    return rc
