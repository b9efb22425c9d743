"""A node for the reliability suites: a cluster bridge, an uplink, NADs and pods in the API server double, the
multinic config for them, ways to run a CNI call (exec of the real binary, the daemon through the shim, or
in-process through ``skel.dispatch``) and a leak detector for everything a pod may leave behind.

Everything lives under the test's tmp dir; names carry the scene's random tag. Host-wide state (iptables, nft,
routes, rules) is shared with whatever else runs on the machine, so leaks are looked for by what is OURS: our
container IDs, the chain names derived from them, our subnets, our bridge and uplink.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.nsfix import Scene

ROOT = Path(__file__).resolve().parents[2]
MULTINIC = os.path.join(os.path.dirname(sys.executable), "multinic")
SHIM = str(ROOT / "cni" / "daemon" / "shim.py")
REAL_PY = os.path.realpath(sys.executable)
REF_CNI = "/usr/lib/cni"

# Fault points and how many times one ADD of a FULL pod (see Node.pod_networks) passes each:
# eth0 = bridge + host-local + portmap, net1 = macvlan + host-local + sbr, net2 = macvlan + whereabouts + tuning.
FAULT_POINTS: dict[str, int] = {
    "after-cache-write": 1,
    "after-link": 2,            # net1's and net2's macvlan (bridge makes its veth on its own)
    "after-ipam-reserve": 2,    # eth0's and net1's host-local reservation
    "after-wb-reserve": 1,      # net2's whereabouts reservation, before its pool write
    "between-plugins": 6,       # bridge|portmap, macvlan|sbr, macvlan|tuning (after each plugin of a chain)
    "between-attachments": 3,   # after eth0, after net1, after net2
    "mid-status-write": 1,
}


def fault_specs() -> list[str]:
    return [f"{name}@{n}" for name, hits in FAULT_POINTS.items() for n in range(1, hits + 1)]


def ip_out(*args: str, ns: str | None = None) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def cmd_out(*args: str) -> str:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


@dataclass
class Call:
    rc: int
    doc: dict[str, Any]
    seconds: float
    stderr: str = ""
    raw: bytes = b""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def code(self) -> int | None:
        return self.doc.get("code") if isinstance(self.doc, dict) else None

    def ips(self) -> list[str]:
        return [str(ipaddress.ip_interface(i["address"]).ip) for i in self.doc.get("ips", [])]


def parse_out(out: bytes) -> dict[str, Any]:
    text = out.decode(errors="replace").strip()
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {"_unparsable": text[:2000]}
    return doc if isinstance(doc, dict) else {"_not_an_object": doc}


@dataclass
class Pod:
    name: str
    uid: str
    cid: str
    netns: str  # name under /run/netns
    ns: str = "default"

    @property
    def path(self) -> str:
        return f"/run/netns/{self.netns}"


@dataclass
class Node:
    """One node: bridges, NADs, pods in the API double; state dirs under ``tmp``."""

    tmp: Path
    scene: Scene
    api: Any
    name: str = "node-a"
    subnet_octet: int = 0  # 10.<octet>.x.x: our address space (unique per node object)
    pods: dict[str, Pod] = field(default_factory=dict)
    with_portmap: bool = True

    def __post_init__(self) -> None:
        if not self.subnet_octet:
            self.subnet_octet = 100 + int(self.scene.tag[:2], 16) % 100
        o = self.subnet_octet
        self.primary_subnet = f"10.{o}.0.0/17"
        self.hl_subnet = f"10.{o}.128.0/18"
        self.wb_subnet = f"10.{o}.192.0/18"
        self.cni_dir = self.tmp / "cache"
        self.hl_dir = self.tmp / "ipam-hl"
        self.wb_dir = self.tmp / "ipam-wb"
        self.sbr_dir = self.tmp / "sbr"
        self.tuning_dir = self.tmp / "tuning"
        self.portmap_dir = self.tmp / "portmap"
        self.log_file = self.tmp / "log" / "multus.log"
        self.wb_log = self.tmp / "log" / "whereabouts.log"
        # written once: kubeconfig_path() rewrites the file, and a concurrent reader would see it half written
        self.kubeconfig = self.api.kubeconfig_path()
        self.cluster_bridge = self.scene.bridge_uplink()
        self.uplink = self.scene.bridge_uplink()
        self.api.seed({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name}}}, plural="nodes")

    # ---- configs -----------------------------------------------------------------------------

    def primary(self) -> dict[str, Any]:
        plugins: list[dict[str, Any]] = [
            {"type": "bridge", "bridge": self.cluster_bridge, "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": self.primary_subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.hl_dir)}}]
        if self.with_portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "dataDir": str(self.portmap_dir)})
        return {"cniVersion": "1.1.0", "name": f"cbr-{self.scene.tag}", "plugins": plugins}

    def nad_hl(self) -> dict[str, Any]:
        gw = str(ipaddress.ip_network(self.hl_subnet)[1])
        return {"cniVersion": "1.1.0", "name": f"hl-{self.scene.tag}", "plugins": [
            {"type": "macvlan", "master": self.uplink, "mode": "bridge",
             "ipam": {"type": "host-local", "ranges": [[{"subnet": self.hl_subnet, "gateway": gw}]],
                      "dataDir": str(self.hl_dir)}},
            {"type": "sbr", "dataDir": str(self.sbr_dir)}]}

    def nad_wb(self) -> dict[str, Any]:
        return {"cniVersion": "1.1.0", "name": f"wb-{self.scene.tag}", "plugins": [
            {"type": "macvlan", "master": self.uplink, "mode": "bridge",
             "ipam": {"type": "whereabouts", "range": self.wb_subnet, "datastore": "file",
                      "data_dir": str(self.wb_dir), "log_file": str(self.wb_log), "log_level": "error"}},
            {"type": "tuning", "dataDir": str(self.tuning_dir), "sysctl": {"net.ipv4.conf.IFNAME.arp_ignore": "1"}}]}

    def add_standard_nads(self) -> None:
        self.add_nad("net-hl", self.nad_hl())
        wb = self.nad_wb()
        # tuning's sysctl names the interface; it is net2 in the full pod
        wb["plugins"][1]["sysctl"] = {"net.ipv4.conf.net2.arp_ignore": "1"}
        self.add_nad("net-wb", wb)

    def add_nad(self, name: str, config: dict[str, Any] | None, ns: str = "default",
                annotations: dict[str, str] | None = None) -> None:
        obj: dict[str, Any] = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                               "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
                               "spec": {}}
        if config is not None:
            obj["spec"]["config"] = json.dumps(config)
        self.api.seed(obj, plural="network-attachment-definitions")

    def conf(self, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.1.0", "name": "multinic-cni-network", "type": "multinic",
            "kubeconfig": self.kubeconfig, "delegates": [self.primary()],
            "cniDir": str(self.cni_dir), "binDir": REF_CNI, "confDir": str(self.tmp / "net.d"),
            "logFile": str(self.log_file), "logLevel": "verbose", "nodeName": self.name,
        }
        conf.update(extra)
        return conf

    # ---- pods ---------------------------------------------------------------------------------

    def new_pod(self, name: str, networks: str | None = "net-hl,net-wb", ns: str = "default",
                netns: bool = True) -> Pod:
        meta: dict[str, Any] = {"name": name, "namespace": ns, "annotations": {}}
        if networks:
            meta["annotations"]["k8s.v1.cni.cncf.io/networks"] = networks
        stored = self.api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                                "spec": {"nodeName": self.name, "containers": [{"name": "c", "image": "busybox"}]}},
                               plural="pods")
        nsname = self.scene.netns("p") if netns else ""
        pod = Pod(name, stored["metadata"]["uid"], f"{self.scene.tag}-{uuid.uuid4().hex[:12]}", nsname, ns)
        self.pods[name] = pod
        return pod

    def env(self, cmd: str, pod: Pod | None, ifname: str = "eth0") -> dict[str, str]:
        env = {"CNI_COMMAND": cmd, "CNI_PATH": REF_CNI, "CNI_IFNAME": ifname}
        if pod is not None:
            env.update({"CNI_CONTAINERID": pod.cid, "CNI_NETNS": pod.path if pod.netns else "",
                        "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.ns};K8S_POD_NAME={pod.name};"
                                     f"K8S_POD_INFRA_CONTAINER_ID={pod.cid};K8S_POD_UID={pod.uid}")})
        return env

    def port_mappings(self, pod: Pod) -> dict[str, Any]:
        port = 20000 + int(pod.cid[-4:], 16) % 20000
        return {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}

    def exec(self, cmd: str, pod: Pod | None, conf: dict[str, Any] | None = None, *,
             faults: str = "", trace: str = "", timeout: float = 60, extra_env: dict[str, str] | None = None) -> Call:
        """One call of the real ``multinic`` binary, as a runtime makes it (thin mode)."""
        conf = conf if conf is not None else self.conf(runtimeConfig=self.port_mappings(pod) if pod else {})
        env = base_env()
        env.update(self.env(cmd, pod))
        if faults:
            env["MULTINIC_FAULTS"] = faults
        if trace:
            env["MULTINIC_FAULTS_TRACE"] = trace
        env.update(extra_env or {})
        t0 = time.monotonic()
        proc = subprocess.run([MULTINIC], input=json.dumps(conf).encode(), capture_output=True, env=env,
                              timeout=timeout, check=False)
        return Call(proc.returncode, parse_out(proc.stdout), time.monotonic() - t0,
                    proc.stderr.decode(errors="replace"), proc.stdout)

    def inproc(self, cmd: str, pod: Pod | None, conf: dict[str, Any] | None = None,
               extra_env: dict[str, str] | None = None) -> Call:
        """One call through ``skel.dispatch`` in this process (the same path the binary takes)."""
        from cni import skel
        from cni.delegator import entry

        conf = conf if conf is not None else self.conf(runtimeConfig=self.port_mappings(pod) if pod else {})
        env = self.env(cmd, pod)
        env.update(extra_env or {})
        out, err = io.BytesIO(), io.StringIO()
        t0 = time.monotonic()
        rc = skel.dispatch(entry.handle, env, io.BytesIO(json.dumps(conf).encode()), out, err)
        return Call(rc, parse_out(out.getvalue()), time.monotonic() - t0, err.getvalue(), out.getvalue())

    def shim(self, daemon: Daemon, cmd: str, pod: Pod | None, conf: dict[str, Any] | None = None,
             timeout: float = 120) -> Call:
        conf = conf if conf is not None else self.conf(runtimeConfig=self.port_mappings(pod) if pod else {})
        conf = dict(conf, type="multinic-shim")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "MULTINIC_SOCKET": daemon.sock,
               "MULTINIC_THIN": MULTINIC, "MULTINIC_WHEREABOUTS_FLATFILE": ""}
        env.update(self.env(cmd, pod))
        t0 = time.monotonic()
        proc = subprocess.run([REAL_PY, "-I", "-S", SHIM], input=json.dumps(conf).encode(), capture_output=True,
                              env=env, timeout=timeout, check=False)
        return Call(proc.returncode, parse_out(proc.stdout), time.monotonic() - t0,
                    proc.stderr.decode(errors="replace"), proc.stdout)

    def gc_conf(self, valid: list[dict[str, str]] | None = None) -> dict[str, Any]:
        return self.conf(**{"cni.dev/valid-attachments": valid or []})

    # ---- leak detection --------------------------------------------------------------------------

    def our_names(self, pods: list[Pod]) -> list[str]:
        """Strings that only our rules can contain: container IDs and the chain names derived from them."""
        names = [self.scene.tag]
        nets = [self.primary()["name"], self.nad_hl()["name"], self.nad_wb()["name"],
                "default/net-hl", "default/net-wb"]
        try:
            from plugins import _masq, _portmap_rules
        except ImportError:  # pragma: no cover - the chain names then only show up through the tag
            return names
        for p in pods:
            names.append(p.cid)
            for n in nets:
                names.append(_portmap_rules.dn_chain(n, p.cid))
                names.append(_masq.chain_name(n, p.cid))
        return names

    def host_leaks(self, pods: list[Pod]) -> list[str]:
        """Host state still referring to ``pods`` (links on our bridge, rules naming them, routes to their IPs)."""
        out: list[str] = []
        for line in ip_out("-o", "link", "show", "master", self.cluster_bridge).splitlines():
            out.append(f"host link on {self.cluster_bridge}: {line.split(': ')[1] if ': ' in line else line}")
        names = self.our_names(pods)
        for tool in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
            text = cmd_out(*tool)
            for line in text.splitlines():
                if any(n in line for n in names):
                    out.append(f"{tool[0]}: {line.strip()}")
        nets = [ipaddress.ip_network(s) for s in (self.primary_subnet, self.hl_subnet, self.wb_subnet)]
        for fam in ("-4", "-6"):
            for line in ip_out(fam, "route", "show", "table", "all").splitlines():
                first = line.split()[0] if line.split() else ""
                if first in ("local", "broadcast", "unicast", "multicast") and len(line.split()) > 1:
                    first = line.split()[1]
                try:
                    dst = ipaddress.ip_network(first, strict=False)
                except ValueError:
                    continue
                words = line.split()
                dev = words[words.index("dev") + 1] if "dev" in words[:-1] else ""
                # Another node object's (or another test run's) link may use the same 10.x space: not ours. The
                # cluster bridge keeps its own gateway address and subnet routes, as with the reference bridge.
                if (dev and dev != self.uplink) or dev == self.cluster_bridge:
                    continue
                if dst.prefixlen >= 24 and any(dst.subnet_of(n) for n in nets if n.version == dst.version):
                    out.append(f"host route: {line}")
            for line in ip_out(fam, "rule").splitlines():
                if any(str(n.network_address).rsplit(".", 2)[0] in line for n in nets if n.version == 4):
                    out.append(f"host rule: {line}")
        return out

    def netns_leaks(self, pod: Pod) -> list[str]:
        """Anything but a fresh namespace's lo in the pod's netns."""
        if not pod.netns or not os.path.exists(pod.path):
            return []
        out: list[str] = []
        for line in ip_out("-o", "link", "show", ns=pod.netns).splitlines():
            name = line.split(": ")[1].split("@")[0] if ": " in line else line
            if name != "lo":
                out.append(f"{pod.netns}: link {name}")
        for line in ip_out("-o", "addr", "show", ns=pod.netns).splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[1] != "lo":
                out.append(f"{pod.netns}: address {parts[3]} on {parts[1]}")
        for fam in ("-4", "-6"):
            for line in ip_out(fam, "route", "show", "table", "all", ns=pod.netns).splitlines():
                if " dev lo" in line or line.startswith(("local ::1", "anycast", "multicast ff00::/8 dev lo")):
                    continue
                out.append(f"{pod.netns}: route {line}")
            for line in ip_out(fam, "rule", ns=pod.netns).splitlines():
                if not any(line.startswith(p) for p in ("0:", "32766:", "32767:")):
                    out.append(f"{pod.netns}: rule {line}")
        return out

    def store_leaks(self) -> list[str]:
        """Cache files, IPAM reservations (host-local, whereabouts file store) and plugin state files."""
        out: list[str] = []
        if self.cni_dir.exists():
            # Events kept for the API (an ADD failed during an outage) are not pod state: the outage tests check them.
            out += [f"cache file {f}" for f in sorted(os.listdir(self.cni_dir))
                    if f not in (".pending-events", ".history", ".locks")]
            locks = self.cni_dir / ".locks"  # a sandbox's lock file goes with its cache record (the directory, when the command that made it leaves it empty)
            out += [f"sandbox lock file {f}" for f in sorted(os.listdir(locks))] if locks.is_dir() else []
        out += [f"host-local reservation {p}" for p in host_local_reservations(self.hl_dir)]
        out += [f"whereabouts {p}" for p in whereabouts_allocations(self.wb_dir)]
        for d in (self.sbr_dir, self.tuning_dir, self.portmap_dir):
            out += [f"state file {p}" for p in state_files(d)]
        return out

    def leaks(self, pods: list[Pod]) -> list[str]:
        out = self.host_leaks(pods) + self.store_leaks()
        for p in pods:
            out += self.netns_leaks(p)
        return out

    def network_status(self, pod: Pod) -> str | None:
        obj = self.api.get_obj("pods", pod.name, pod.ns) or {}
        return ((obj.get("metadata") or {}).get("annotations") or {}).get("k8s.v1.cni.cncf.io/network-status")

    def drop_pod(self, pod: Pod) -> None:
        """The runtime removes the sandbox: its netns goes (the kernel then frees what was in it)."""
        if pod.netns:
            subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True, check=False)
            if pod.netns in self.scene.namespaces:
                self.scene.namespaces.remove(pod.netns)
        self.pods.pop(pod.name, None)

    def scrub(self) -> None:
        """After a leak was counted: remove what is ours so the next case starts clean."""
        for line in ip_out("-o", "link", "show", "master", self.cluster_bridge).splitlines():
            if ": " in line:
                subprocess.run(["ip", "link", "del", line.split(": ")[1].split("@")[0]], capture_output=True,
                               check=False)
        for d in (self.cni_dir, self.hl_dir, self.wb_dir, self.sbr_dir, self.tuning_dir, self.portmap_dir):
            shutil.rmtree(d, ignore_errors=True)


SHARED_CHAINS = frozenset({"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK", "MASQUERADE", "ACCEPT"})


def purge_host_rules(tag: str) -> list[str]:
    """Remove iptables/ip6tables rules whose comment names ``tag`` (and the per-pod chains they jump to).

    The node fixture's last resort: a test that failed (or was killed) before its DEL must not leave rules that slow
    every later ``iptables-save`` on the machine. Returns what it removed, for the test log.
    """
    removed: list[str] = []
    for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
        text = cmd_out(save, "-t", "nat")
        dels, chains = [], set()
        for line in text.splitlines():
            if line.startswith("-A ") and tag in line:
                dels.append("-D " + line[3:])
                target = line.split(" -j ", 1)[1].split()[0] if " -j " in line else ""
                if target.startswith("CNI-") and target not in SHARED_CHAINS:
                    chains.add(target)
        if not dels:
            continue
        batch = ["*nat", *dels, *(f"-F {c}" for c in sorted(chains)), *(f"-X {c}" for c in sorted(chains)), "COMMIT", ""]
        subprocess.run([restore, "--noflush", "-w", "10"], input="\n".join(batch), capture_output=True, text=True,
                       check=False)
        removed += dels
    return removed


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "MULTINIC_FAULTS"))}
    env["MULTINIC_WHEREABOUTS_FLATFILE"] = ""
    env.pop("MULTINIC_EXEC_TYPES", None)
    return env


def host_local_reservations(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            if fn == "lock" or fn.startswith("last_reserved_ip."):
                continue
            out.append(os.path.join(dirpath, fn))  # an address file, or a temp file left by a crash
    return sorted(out)


def whereabouts_allocations(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            path = os.path.join(dirpath, fn)
            if fn.endswith(".lock"):
                continue
            if not fn.endswith(".json"):
                out.append(path)  # temp files
                continue
            try:
                doc = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                out.append(path + " (unreadable)")
                continue
            if "overlappingrange" in dirpath.lower():
                out.append(path)
            else:
                allocs = (doc.get("spec") or {}).get("allocations") or {}
                out.extend(f"{path}: offset {k} -> {v}" for k, v in allocs.items())
    return sorted(out)


def state_files(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            if fn in ("lock", ".lock") or fn.endswith(".lock"):
                continue
            out.append(os.path.join(dirpath, fn))
    return sorted(out)


class Daemon:
    """``multinic daemon`` on a socket under ``tmp``; optionally armed with faults (then it dies at one)."""

    def __init__(self, tmp: Path, *, faults: str = "", trace: str = "", extra: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.sock = str(tmp / "run" / "multinic.sock")
        env = base_env()
        if faults:
            env["MULTINIC_FAULTS"] = faults
        if trace:
            env["MULTINIC_FAULTS_TRACE"] = trace
        self.stderr = open(tmp / "daemon.stderr", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([MULTINIC, "daemon", "--socket", self.sock, *extra], stderr=self.stderr,
                                     stdout=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"daemon did not start: {(tmp / 'daemon.stderr').read_text()[-3000:]}")
            time.sleep(0.05)

    def ready(self) -> bool:
        import socket

        if not os.path.exists(self.sock):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(self.sock)
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
        except OSError:
            return False
        finally:
            s.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode
