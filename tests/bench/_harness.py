"""The bench's world: namespaces and uplinks it creates (and always removes), the measured
environment, the thick-mode daemon, and one driver per stack that performs a pod operation.

Stacks (every one runs the same network configs; only the machinery differs):
- ``go``: the reference binaries in /usr/lib/cni, exec'd by a tiny libcni written here
  (ADD in order with ``prevResult``; DEL in reverse with the final ADD result; runtimeConfig
  injected for declared capabilities). One exec per plugin per attachment, as thin Multus
  with the reference plugins would do — minus the Multus binary itself (and its API GETs),
  which is reported separately as an exec floor.
- ``thick``: the shim (``python -I -S cni/daemon/shim.py``) → the daemon over its unix socket.
- ``thin``: one exec of ``multinic`` (the meta-plugin) per pod operation; delegates in-process.
- ``dropin``: the same libcni loop exec'ing ``multinic plugin TYPE`` instead of the reference.
- ``inproc``: the native plugins called inside the bench process (``cni.invoke.add_list``),
  i.e. the plugins' own work without any process start.

Rules:
- Measured processes get the caller's environment minus ``PYTHONDONTWRITEBYTECODE`` (set in
  this environment: every Python exec would recompile its modules) and minus
  ``MULTINIC_EXEC_TYPES`` (ours must run its native plugins).
- Everything created is recorded before it exists and removed in ``World.close`` (called from
  a ``finally``; SIGTERM is turned into KeyboardInterrupt by run.py): namespaces, host links,
  the daemon (by its pid), the temp directory, and iptables/nft objects that appeared during
  the run and belong to no pod.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REF = "/usr/lib/cni"
BIN = os.path.dirname(os.path.abspath(sys.executable))
PY = os.path.join(BIN, "python")  # the venv's interpreter (a symlink to the real one, not pyenv's shim)
MULTINIC = os.path.join(BIN, "multinic")
SHIM = os.path.join(ROOT, "cni", "daemon", "shim.py")
DROP_ENV = ("PYTHONDONTWRITEBYTECODE", "MULTINIC_EXEC_TYPES")
STOPPING = threading.Event()  # set when the world is being torn down: burst threads start nothing new


class BenchFailure(Exception):
    """A CNI operation failed during the bench (counted, never fatal for a whole scenario)."""


def measured_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env.update(extra)
    return env


def sh(*args: str, check: bool = True) -> str:
    p = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def exec_cni(argv: list[str], env: dict[str, str], data: bytes, timeout: float = 240.0) -> bytes:
    """One plugin exec as a runtime does it; raises BenchFailure on a non-zero exit or after the
    kubelet's 4-minute sandbox budget (a time-out under load is a failure, as it is for a pod)."""
    if STOPPING.is_set():
        raise BenchFailure("the bench is stopping")
    try:
        p = subprocess.run(argv, input=data, capture_output=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchFailure(f"{' '.join(argv)} {env.get('CNI_COMMAND')}: timed out after {timeout:g}s") from None
    if p.returncode != 0:
        raise BenchFailure(f"{os.path.basename(argv[-1] if argv[0] == PY else argv[0])} {env.get('CNI_COMMAND')} "
                           f"rc={p.returncode}: {p.stdout[:400]!r} {p.stderr[-400:]!r}")
    return p.stdout


# ---- the world ---------------------------------------------------------------------------


def _ipt_state(cmd: str, table: str) -> tuple[set[str], list[str]]:
    try:
        out = sh(cmd, "-w", "-t", table, "-S", check=False)
    except FileNotFoundError:
        return set(), []
    chains = {ln.split()[1] for ln in out.splitlines() if ln.startswith("-N ")}
    rules = [ln for ln in out.splitlines() if ln.startswith("-A ")]
    return chains, rules


def _nft_tables() -> set[str]:
    try:
        return {ln.strip() for ln in sh("nft", "list", "tables", check=False).splitlines() if ln.startswith("table ")}
    except FileNotFoundError:
        return set()


@dataclass
class World:
    """What one bench run creates; ``close`` removes all of it."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    tmp: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="mn-bench-"))
    namespaces: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)
    _ipt_before: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _nft_before: set[str] = field(default_factory=set)
    _counter: int = 0
    _stacks: int = 0
    own_subnets: list[str] = field(default_factory=list)  # pod subnets behind host bridges (portmap DNATs to them)

    def __post_init__(self) -> None:
        for cmd in ("iptables", "ip6tables"):
            for table in ("nat", "filter"):
                self._ipt_before[(cmd, table)] = _ipt_state(cmd, table)[0]
        self._nft_before = _nft_tables()

    def name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self.tag}{self._counter}"[:15]

    def netns(self) -> str:
        """A fresh namespace with lo up; returns its path."""
        name = f"mnb-{self.tag}-{self._next()}"
        self.namespaces.add(name)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return f"/run/netns/{name}"

    def next_stack(self) -> int:
        self._stacks += 1
        return self._stacks - 1

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def drop_netns(self, path: str) -> None:
        name = os.path.basename(path)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self.namespaces.discard(name)

    def uplink(self) -> str:
        """A veth pair in the host namespace; one end is a macvlan master (the peer gives it carrier)."""
        name, peer = self.name("mbu"), self.name("mbp")
        self.links.append(name)
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", name, "up")
        sh("ip", "link", "set", peer, "up")
        return name

    def bridge_name(self) -> str:
        """A bridge name for the bridge plugin (it creates the bridge; we remove it)."""
        name = self.name("mbb")
        self.links.append(name)
        return name

    def dir(self, *parts: str) -> str:
        d = os.path.join(self.tmp, *parts)
        os.makedirs(d, exist_ok=True)
        return d

    def close(self) -> None:
        STOPPING.set()
        for d in self.daemons:
            d.stop()
        for name in sorted(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self.namespaces.clear()
        for link in reversed(self.links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        self.links.clear()
        self._clean_firewall()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _ours_or_no_dnat(self, rule: str) -> bool:
        """A rule that DNATs nowhere, or only to one of this run's pods (left by an interrupted ADD)."""
        if "--to-destination" not in rule:
            return "DNAT" not in rule
        import ipaddress

        dest = rule.split("--to-destination", 1)[1].split()[0].strip("[]")
        host = dest.rsplit(":", 1)[0] if dest.count(":") == 1 or dest.startswith("[") else dest
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n) for n in self.own_subnets)

    def _clean_firewall(self) -> None:
        """Remove chains/tables that appeared during the run and serve no pod (no DNAT left in them).

        Other test suites may run on this machine at the same time: a chain that still DNATs to a
        pod that is not ours, or jumps to one that does, is someone's live state and stays.
        """
        for (cmd, table), before in self._ipt_before.items():
            chains, rules = _ipt_state(cmd, table)
            new = chains - before
            if not new:
                continue
            body: dict[str, list[str]] = {c: [] for c in chains}
            for r in rules:
                body.setdefault(r.split()[1], []).append(r)
            removable = {c for c in new if all(self._ours_or_no_dnat(r) for r in body.get(c, []))}
            changed = True
            while changed:  # a chain is removable only if every chain it jumps to is
                changed = False
                for c in list(removable):
                    targets = {r.split(" -j ", 1)[1].split()[0] for r in body.get(c, []) if " -j " in r}
                    if any(t in chains and t not in removable for t in targets):
                        removable.discard(c)
                        changed = True
            for r in rules:
                owner = r.split()[1]
                if owner not in removable and " -j " in r and r.split(" -j ", 1)[1].split()[0] in removable:
                    subprocess.run([cmd, "-w", "-t", table, "-D", *shlex.split(r)[1:]], capture_output=True, check=False)
            for c in removable:
                subprocess.run([cmd, "-w", "-t", table, "-F", c], capture_output=True, check=False)
            for c in removable:
                subprocess.run([cmd, "-w", "-t", table, "-X", c], capture_output=True, check=False)
        for t in _nft_tables() - self._nft_before:
            fam_name = t.split()[1:]
            if len(fam_name) == 2 and "cni_hostport" in fam_name[1]:
                listing = sh("nft", "list", "table", *fam_name, check=False)
                if "dnat" not in listing:
                    subprocess.run(["nft", "delete", "table", *fam_name], capture_output=True, check=False)


# ---- the thick-mode daemon -----------------------------------------------------------------


class Daemon:
    """``multinic daemon`` started by the bench (stopped by its pid, never by name)."""

    def __init__(self, world: World, label: str, env: dict[str, str] | None = None) -> None:
        self.sock = os.path.join(world.dir("run", label), "multinic.sock")
        self.log = os.path.join(world.dir("log"), f"daemon-{label}.log")
        self._logf = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        world.daemons.append(self)
        self.proc = subprocess.Popen([MULTINIC, "daemon", "--socket", self.sock], stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=measured_env(**(env or {})), start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.log, "rb") as f:
                    raise RuntimeError(f"daemon did not become ready: {f.read()[-2000:].decode(errors='replace')}")
            time.sleep(0.05)

    def get(self, path: str) -> tuple[int, bytes]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(self.sock)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while c := s.recv(65536):
                chunks.append(c)
        finally:
            s.close()
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def ready(self) -> bool:
        try:
            return os.path.exists(self.sock) and self.get("/readyz")[0] == 200
        except OSError:
            return False

    def durations(self) -> dict[str, tuple[float, int]]:
        """Per command: (sum of seconds, count) of the daemon's own request handling, from /metrics."""
        out: dict[str, tuple[float, int]] = {}
        _, body = self.get("/metrics")
        for line in body.decode().splitlines():
            for suffix, i in (("_sum{", 0), ("_count{", 1)):
                head = "multinic_cni_request_duration_seconds" + suffix
                if line.startswith(head):
                    cmd = line.split('command="', 1)[1].split('"', 1)[0]
                    cur = list(out.get(cmd, (0.0, 0)))
                    cur[i] = float(line.rsplit(" ", 1)[1]) if i == 0 else int(float(line.rsplit(" ", 1)[1]))
                    out[cmd] = (cur[0], int(cur[1]))
        return out

    def memory(self) -> dict[str, float]:
        """VmHWM (peak RSS) and VmRSS of the daemon, MiB."""
        out: dict[str, float] = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS"):
                    out[k] = int(v.split()[0]) / 1024
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._logf.closed:
            self._logf.close()


# ---- configs ---------------------------------------------------------------------------------


@dataclass
class Nets:
    """One stack's copy of the bench networks (own uplink, bridges, subnets and state dirs)."""

    cluster: dict[str, Any]  # bridge + host-local → tuning → portmap (the pod's eth0)
    sbrnet: dict[str, Any]  # macvlan + host-local → sbr (net1)
    staticnet: dict[str, Any]  # macvlan + static (net2)
    single: dict[str, Any]  # macvlan + host-local
    bridge_hl: dict[str, Any]  # bridge + host-local
    manifests: str
    cache: str
    index: int


def make_nets(world: World, stack: str, index: int) -> Nets:
    """The same topology and configs for every stack; subnets differ so stacks never collide."""
    d = world.dir(stack)
    up = world.uplink()
    ipam_dir = os.path.join(d, "ipam")
    # Host-side subnets (bridges) in 10.200+ / 10.230+, pod-only ones (macvlan) in 10.120-10.179.
    a = index
    world.own_subnets += [f"10.{200 + a}.0.0/16", f"10.{230 + a}.0.0/16"]

    def hl(subnet: str, gw: str | None = None, routes: bool = False) -> dict[str, Any]:
        rng: dict[str, Any] = {"subnet": subnet}
        if gw:
            rng["gateway"] = gw
        conf: dict[str, Any] = {"type": "host-local", "ranges": [[rng]], "dataDir": ipam_dir}
        if routes:
            conf["routes"] = [{"dst": "0.0.0.0/0"}]
        return conf

    cluster = {"cniVersion": "1.0.0", "name": "benchpod", "plugins": [
        {"type": "bridge", "bridge": world.bridge_name(), "isGateway": True,
         "ipam": hl(f"10.{200 + a}.0.0/16", routes=True)},
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}, "dataDir": os.path.join(d, "tuning")},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True, "dataDir": os.path.join(d, "portmap")},
    ]}
    sbrnet = {"cniVersion": "1.0.0", "name": "sbrnet", "plugins": [
        {"type": "macvlan", "master": up, "mode": "bridge", "ipam": hl(f"10.{120 + a}.0.0/16", gw=f"10.{120 + a}.0.1")},
        {"type": "sbr", "dataDir": os.path.join(d, "sbr")},
    ]}
    staticnet = {"cniVersion": "1.0.0", "name": "staticnet", "plugins": [
        {"type": "macvlan", "master": up, "mode": "bridge",
         "ipam": {"type": "static", "addresses": [{"address": f"10.{140 + a}.0.5/24", "gateway": f"10.{140 + a}.0.1"}]}},
    ]}
    single = {"cniVersion": "1.0.0", "name": "single", "plugins": [
        {"type": "macvlan", "master": up, "mode": "bridge", "ipam": hl(f"10.{160 + a}.0.0/16")},
    ]}
    bridge_hl = {"cniVersion": "1.0.0", "name": "bridgehl", "plugins": [
        {"type": "bridge", "bridge": world.bridge_name(), "isGateway": True, "ipam": hl(f"10.{230 + a}.0.0/16")},
    ]}
    manifests = world.dir(stack, "manifests")
    return Nets(cluster, sbrnet, staticnet, single, bridge_hl, manifests, os.path.join(d, "cache"), index)


POD_NETWORKS = json.dumps([{"name": "sbrnet", "interface": "net1"}, {"name": "staticnet", "interface": "net2"}])


def write_manifests(nets: Nets, pods: list[tuple[str, str]]) -> None:
    """One JSON List with the two NADs and every pod (name, uid): one file read per call, as a cache would."""
    items: list[dict[str, Any]] = []
    for nad in (nets.sbrnet, nets.staticnet):
        items.append({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                      "metadata": {"name": nad["name"], "namespace": "default"}, "spec": {"config": json.dumps(nad)}})
    for name, uid in pods:
        items.append({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": "default", "uid": uid,
                                   "annotations": {"k8s.v1.cni.cncf.io/networks": POD_NETWORKS}},
                      "spec": {"nodeName": "bench", "containers": [{"name": "c", "image": "busybox"}]}})
    with open(os.path.join(nets.manifests, "objects.json"), "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)


# ---- pods and drivers --------------------------------------------------------------------------


@dataclass
class Pod:
    """One pod sandbox: its container ID, namespace path, API identity and host port."""

    cid: str
    netns: str
    name: str
    uid: str
    host_port: int
    results: dict[str, Any] = field(default_factory=dict)  # libcni's result cache (go/dropin/inproc)

    def env(self, command: str, ifname: str = "eth0") -> dict[str, str]:
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": self.cid, "CNI_NETNS": self.netns, "CNI_IFNAME": ifname,
                "CNI_PATH": REF,
                "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={self.name};"
                             f"K8S_POD_INFRA_CONTAINER_ID={self.cid};K8S_POD_UID={self.uid}")}

    def runtime_config(self) -> dict[str, Any]:
        return {"portMappings": [{"hostPort": self.host_port, "containerPort": 80, "protocol": "tcp"}]}


def plugin_conf(p: dict[str, Any], conflist: dict[str, Any], prev: Any, rc: dict[str, Any]) -> dict[str, Any]:
    """libcni buildOneConfig: name, cniVersion, prevResult, runtimeConfig for declared capabilities."""
    conf = dict(p)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist["cniVersion"]
    if prev is not None:
        conf["prevResult"] = prev
    caps = conf.pop("capabilities", None)
    if isinstance(caps, dict):
        sel = {k: v for k, v in rc.items() if caps.get(k)}
        if sel:
            conf["runtimeConfig"] = sel
    return conf


class ExecChain:
    """A libcni written for the bench: exec each plugin of a conflist, in order, with prevResult."""

    def __init__(self, argv_for: Any) -> None:
        self.argv_for = argv_for  # type → argv

    def add(self, pod: Pod, conflist: dict[str, Any], ifname: str, rc: dict[str, Any]) -> None:
        env = measured_env(**pod.env("ADD", ifname))
        prev = None
        for p in conflist["plugins"]:
            out = exec_cni(self.argv_for(p["type"]), env, json.dumps(plugin_conf(p, conflist, prev, rc)).encode())
            prev = json.loads(out)
        pod.results[ifname] = prev

    def delete(self, pod: Pod, conflist: dict[str, Any], ifname: str, rc: dict[str, Any]) -> None:
        env = measured_env(**pod.env("DEL", ifname))
        prev = pod.results.pop(ifname, None)
        errors = []
        for p in reversed(conflist["plugins"]):
            try:
                exec_cni(self.argv_for(p["type"]), env, json.dumps(plugin_conf(p, conflist, prev, rc)).encode())
            except BenchFailure as exc:
                errors.append(str(exc))
        if errors:
            raise BenchFailure("; ".join(errors))


GO = ExecChain(lambda t: [os.path.join(REF, t)])
DROPIN = ExecChain(lambda t: [MULTINIC, "plugin", t])


class InProc:
    """Our native plugins inside this process (cni.invoke's conflist runner): the work without any exec."""

    def __init__(self) -> None:
        os.environ.pop("MULTINIC_EXEC_TYPES", None)
        from cni import invoke

        invoke._force_exec.clear()  # ours must be ours, whatever the caller's environment says
        self.invoke = invoke

    def _req(self, pod: Pod, command: str, ifname: str) -> Any:
        from cni.spec.request import Request

        return Request(command=command, container_id=pod.cid, netns=pod.netns, ifname=ifname, path=(REF,), config={})

    def add(self, pod: Pod, conflist: dict[str, Any], ifname: str, rc: dict[str, Any]) -> None:
        from cni.spec.config import conflist_from
        from cni.spec.errors import CNIError

        try:
            pod.results[ifname] = self.invoke.add_list(self._req(pod, "ADD", ifname), conflist_from(conflist), rc)
        except CNIError as exc:
            raise BenchFailure(f"in-process ADD: {exc}") from None

    def delete(self, pod: Pod, conflist: dict[str, Any], ifname: str, rc: dict[str, Any]) -> None:
        from cni.spec.config import conflist_from
        from cni.spec.errors import CNIError

        try:
            self.invoke.del_list(self._req(pod, "DEL", ifname), conflist_from(conflist), pod.results.pop(ifname, None), rc)
        except CNIError as exc:
            raise BenchFailure(f"in-process DEL: {exc}") from None


def meta_conf(nets: Nets, *, pod: Pod | None, kind: str) -> dict[str, Any]:
    """The multinic config for a ``pod`` (3 attachments, from manifests) or a ``single`` attachment."""
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "multinic-bench", "type": "multinic",
                            "cniDir": nets.cache, "binDir": REF, "confDir": os.path.join(nets.cache, "net.d"),
                            "nodeName": "bench"}
    if kind == "pod":
        # The NADs keep their IPAM and plugin state in this stack's temp dir: tenancy refuses NAD
        # paths outside allowedPaths (the defaults plus it).
        conf["allowedPaths"] = ["/var/lib/cni", "/run/cni", "/var/log", os.path.dirname(nets.cache)]
        conf["delegates"] = [nets.cluster]
        conf["manifestDir"] = nets.manifests
        if pod is not None:
            conf["runtimeConfig"] = pod.runtime_config()
    else:
        conf["delegates"] = [nets.single]
    return conf


class Meta:
    """Our meta-plugin, ``thin`` (exec multinic) or ``thick`` (exec the shim → daemon)."""

    def __init__(self, mode: str, daemon: Daemon | None = None) -> None:
        self.mode, self.daemon = mode, daemon

    def argv(self) -> list[str]:
        return [PY, "-I", "-S", SHIM] if self.mode == "thick" else [MULTINIC]

    def call(self, pod: Pod, command: str, conf: dict[str, Any]) -> None:
        extra = {"MULTINIC_SOCKET": self.daemon.sock, "MULTINIC_THIN": MULTINIC} if self.daemon else {}
        exec_cni(self.argv(), measured_env(**pod.env(command), **extra), json.dumps(conf).encode())


def pod_links(netns: str) -> set[str]:
    out = sh("ip", "-n", os.path.basename(netns), "-o", "link", "show")
    return {ln.split(": ")[1].split("@")[0] for ln in out.splitlines() if ": " in ln}
