"""``make bench`` section ``profile``: where one pod ADD and DEL spend their time, thin and thick, and the floor.

The pod is section 1's (eth0 bridge+host-local→tuning→portmap with one host port, net1
macvlan+host-local→sbr, net2 macvlan+static). Every figure is measured, none estimated:

- thin: ``multinic`` exec'd with tests/bench/phasehook on PYTHONPATH and ``MULTINIC_PHASES`` set
  (its sitecustomize times imports, netlink per message type, execs, fsync and named functions);
  interpreter start = process spawn → the hook's first line, exit = atexit → reaped (CLOCK_MONOTONIC
  is shared by both processes); "other Python" is the rest of the wall time.
- thick: a daemon started with the same hook (dumped on SIGUSR2 before and after one request:
  the difference is that request) and the shim run unchanged under a prelude that times its
  socket calls; shim transport = connect + send + wait for the reply − the daemon's own handling
  time (its /metrics), so shim start + shim Python + transport + daemon phases = the wall time.
- floor: the same kernel work by the fastest means available here, timed in one process: one
  ``ip -batch`` in the host namespace (veth into the pod, two macvlans into the pod), one
  ``ip -n <pod> -batch`` (addresses, links up, routes, sbr's rule and table), one
  ``iptables-restore`` (portmap's rules for the host port), the tuning sysctl and host-local's
  reservation files written in-process; DEL: one ``iptables-restore``, one ``ip -n <pod> -batch``
  (sbr's rule, then ``link set … group G`` for the three links and ONE ``link del group G``: the
  kernel unregisters them in one batch with one set of RCU waits, the fastest means here for that
  work and what multinic's pod DEL does), the reservation files unlinked in-process. No CNI
  bookkeeping (cache, status, plan) — only what the kernel and the IPAM files must see.

- go: the reference stack's whole time in the same series (no hook in a Go binary), so the
  profile runs in the interleaving section 1 runs in (go, thin, thick, floor, rotating).

Each case runs ``n`` times after warm-ups; per phase the mean is reported, so the phases of a
case add up to its mean wall time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.bench._harness import (
    GO,
    MULTINIC,
    PY,
    SHIM,
    BenchFailure,
    Daemon,
    Nets,
    Pod,
    World,
    make_nets,
    measured_env,
    meta_conf,
    write_manifests,
)

HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "phasehook")

# Runs the shim file unchanged (as `python -I -S shim.py` does: a script is compiled at every run
# either way) with its socket calls timed; writes the figures without importing json or os (start-up:
# the shim itself imports neither). The shim leaves by posix._exit (no teardown), so the figures are
# written from there; the `finally` covers an exception.
SHIM_PRELUDE = r"""
import time
T0 = time.monotonic()
import _socket, posix, sys
_B = _socket.socket
_acc = [0.0, 0.0, 0.0]
class _S(_B):
    __slots__ = ()
    def connect(self, a):
        t = time.monotonic()
        try:
            return _B.connect(self, a)
        finally:
            _acc[0] += time.monotonic() - t
    def sendall(self, d, *x):
        t = time.monotonic()
        try:
            return _B.sendall(self, d, *x)
        finally:
            _acc[1] += time.monotonic() - t
    def recv(self, n, *x):
        t = time.monotonic()
        try:
            return _B.recv(self, n, *x)
        finally:
            _acc[2] += time.monotonic() - t
_socket.socket = _S
_done = []
def _write():
    if not _done:
        _done.append(1)
        with open(posix.environ[b"MULTINIC_SHIM_PHASES"], "w") as _f:
            _f.write('{"t_start": %r, "t_exit": %r, "connect": %r, "send": %r, "recv": %r}'
                     % (T0, time.monotonic(), _acc[0], _acc[1], _acc[2]))
_real_exit = posix._exit
def _exit(code):
    _write()
    _real_exit(code)
posix._exit = _exit
_shim = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    with open(_shim) as _f:
        _code = compile(_f.read(), _shim, "exec")
    exec(_code, {"__name__": "__main__", "__file__": _shim})
finally:
    _write()
"""

# Phase → the group the README names (issue 16: "interpreter start, imports, API/manifest read,
# plan and cache writes, netlink per operation kind, IPAM file I/O, iptables/nft, status write,
# shim transport").
GROUPS: list[tuple[str, Callable[[str], bool]]] = [
    ("Go reference (whole)", lambda p: p.startswith("Go:")),
    ("interpreter start/exit", lambda p: p.startswith(("interpreter", "shim: interpreter"))),
    ("imports", lambda p: p.endswith("imports")),
    ("shim transport", lambda p: p.startswith("shim: transport")),
    ("API/manifest read", lambda p: p.endswith("API/manifest read")),
    ("plan and cache writes", lambda p: p.endswith(("config parse", "plan", "cache write", "cache read", "fsync"))),
    ("netlink", lambda p: "netlink" in p or p.startswith(("ip -batch", "ip -n "))),
    ("IPAM (incl. file I/O)", lambda p: "IPAM" in p or p.endswith("file locks")),
    ("iptables/nft/conntrack", lambda p: any(t in p for t in ("iptables", "nft", "conntrack"))),
    ("status write and events", lambda p: p.endswith(("status write", "events"))),
    ("sysctl", lambda p: "sysctl" in p),
]


def group_of(phase: str) -> str:
    for name, match in GROUPS:
        if match(phase):
            return name
    return "Python (plugins, delegator, daemon, shim)"


def _load(path: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                doc: dict[str, Any] = json.load(f)
                return doc
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise BenchFailure(f"no phase profile at {path}") from None
            time.sleep(0.005)


def _hook_env(out: str, **extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return measured_env(MULTINIC_PHASES=out, PYTHONPATH=HOOK + (os.pathsep + path if path else ""), **extra)


def _ms(doc: dict[str, Any]) -> dict[str, float]:
    return {k: float(v[0]) * 1e3 for k, v in doc["phases"].items()}


def thin_sample(world: World, nets: Nets, pod: Pod, command: str) -> dict[str, float]:
    """One thin pod operation with the phase hook: phase → ms (they add up to the wall time, key "total")."""
    out = os.path.join(world.dir("phases"), f"thin-{uuid.uuid4().hex}.json")
    data = json.dumps(meta_conf(nets, pod=pod, kind="pod")).encode()
    env = _hook_env(out, **pod.env(command))
    t0 = time.monotonic()
    p = subprocess.run([MULTINIC], input=data, env=env, capture_output=True, timeout=240, check=False)
    t1 = time.monotonic()
    if p.returncode != 0:
        raise BenchFailure(f"profiled thin {command} rc={p.returncode}: {p.stdout[:300]!r} {p.stderr[-300:]!r}")
    doc = _load(out)
    ph = _ms(doc)
    ph["interpreter start"] = (doc["t_start"] - t0) * 1e3
    ph["interpreter exit"] = (t1 - doc["t_exit"]) * 1e3
    total = (t1 - t0) * 1e3
    ph["other Python"] = total - sum(ph.values())
    ph["total"] = total
    return ph


class ProfiledDaemon:
    """A thick daemon with the phase hook; ``snapshot`` makes it write its cumulative phases."""

    def __init__(self, world: World) -> None:
        self.out = os.path.join(world.dir("phases"), "daemon.json")
        self.daemon = Daemon(world, "profile", env=_hook_env(self.out))

    def snapshot(self) -> dict[str, float]:
        try:
            os.unlink(self.out)
        except FileNotFoundError:
            pass
        os.kill(self.daemon.proc.pid, signal.SIGUSR2)
        return _ms(_load(self.out))

    def stop(self) -> None:
        self.daemon.stop()


def thick_sample(world: World, d: ProfiledDaemon, nets: Nets, pod: Pod, command: str) -> dict[str, float]:
    out = os.path.join(world.dir("phases"), f"shim-{uuid.uuid4().hex}.json")
    data = json.dumps(meta_conf(nets, pod=pod, kind="pod")).encode()
    env = measured_env(**pod.env(command), MULTINIC_SOCKET=d.daemon.sock, MULTINIC_THIN=MULTINIC, MULTINIC_SHIM_PHASES=out)
    m0 = d.daemon.durations().get(command, (0.0, 0))
    before = d.snapshot()
    t0 = time.monotonic()
    p = subprocess.run([PY, "-I", "-S", "-c", SHIM_PRELUDE, SHIM], input=data, env=env, capture_output=True,
                       timeout=240, check=False)
    t1 = time.monotonic()
    after = d.snapshot()
    m1 = d.daemon.durations().get(command, (0.0, 0))
    if p.returncode != 0:
        raise BenchFailure(f"profiled thick {command} rc={p.returncode}: {p.stdout[:300]!r} {p.stderr[-300:]!r}")
    if m1[1] != m0[1] + 1:
        raise BenchFailure(f"the daemon handled {m1[1] - m0[1]} {command} requests during one profiled call")
    handling = (m1[0] - m0[0]) * 1e3
    shim = _load(out)
    ph = {f"daemon: {k}": v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 1e-6}
    ph["daemon: other Python (HTTP, JSON, dispatch, delegator)"] = handling - sum(ph.values())
    wait = (shim["connect"] + shim["send"] + shim["recv"]) * 1e3
    ph["shim: interpreter start"] = (shim["t_start"] - t0) * 1e3
    ph["shim: Python"] = (shim["t_exit"] - shim["t_start"]) * 1e3 - wait
    ph["shim: transport (socket time beyond the daemon's handling)"] = wait - handling
    ph["shim: interpreter exit"] = (t1 - shim["t_exit"]) * 1e3
    ph["total"] = (t1 - t0) * 1e3
    return ph


# ---- the floor ---------------------------------------------------------------------------------------

# The device group the floor's DEL puts the pod's links in (the pod netns has no other link in it).
FLOOR_GROUP = 77


class Floor:
    """The pod's kernel work by ``ip -batch``, ``iptables-restore`` and in-process file/sysctl writes."""

    def __init__(self, world: World, nets: Nets) -> None:
        from plugins import _portmap_rules as R

        self.R = R
        self.world = world
        cluster, sbr = nets.cluster["plugins"], nets.sbrnet["plugins"]
        self.bridge = cluster[0]["bridge"]
        self.uplink = sbr[0]["master"]
        self.net0 = ipaddress.ip_network(cluster[0]["ipam"]["ranges"][0][0]["subnet"])
        self.net1 = ipaddress.ip_network(sbr[0]["ipam"]["ranges"][0][0]["subnet"])
        self.net2 = ipaddress.ip_interface(nets.staticnet["plugins"][0]["ipam"]["addresses"][0]["address"])
        self.ipam_dir = world.dir("floor-ipam")
        self.k = 1
        gw = f"{self.net0.network_address + 1}/{self.net0.prefixlen}"
        # The node state every pod finds in place (the plugins make it once): the bridge with its gateway address.
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], capture_output=True, check=False)
        subprocess.run(["ip", "addr", "add", gw, "dev", self.bridge], capture_output=True, check=False)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def _batch(self, argv: list[str], lines: list[str]) -> None:
        p = subprocess.run(argv, input="\n".join(lines) + "\n", text=True, capture_output=True, check=False)
        if p.returncode != 0:
            raise BenchFailure(f"floor: {' '.join(argv)}: {p.stderr.strip()[-400:]}")

    def _addrs(self) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
        self.k += 1
        a0 = ipaddress.ip_interface(f"{self.net0.network_address + self.k}/{self.net0.prefixlen}")
        a1 = ipaddress.ip_interface(f"{self.net1.network_address + self.k}/{self.net1.prefixlen}")
        return a0, a1  # type: ignore[return-value]

    def add(self, pod: Pod) -> dict[str, float]:
        from cni import netns

        R = self.R
        ns = os.path.basename(pod.netns)
        a0, a1 = self._addrs()
        pod.results["floor"] = (a0, a1)
        veth = f"vf{uuid.uuid4().hex[:10]}"
        pod.results["veth"] = veth
        ph: dict[str, float] = {}
        t = time.monotonic()
        for a, net in ((a0, self.net0), (a1, self.net1)):  # host-local: one reservation file each, last_reserved_ip
            d = os.path.join(self.ipam_dir, str(net).replace("/", "_"))
            os.makedirs(d, exist_ok=True)
            fd = os.open(os.path.join(d, str(a.ip)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, f"{pod.cid}\r\neth0".encode())
            os.close(fd)
            with open(os.path.join(d, "last_reserved_ip.0"), "w") as f:
                f.write(str(a.ip))
        ph["IPAM files (in-process)"] = (time.monotonic() - t) * 1e3
        t = time.monotonic()
        self._batch(["ip", "-batch", "-"], [
            f"link add name {veth} type veth peer name eth0 netns {ns}",
            f"link set {veth} master {self.bridge} up",
            f"link add link {self.uplink} name net1 netns {ns} type macvlan mode bridge",
            f"link add link {self.uplink} name net2 netns {ns} type macvlan mode bridge",
        ])
        ph["ip -batch (host: veth, 2 macvlans)"] = (time.monotonic() - t) * 1e3
        t = time.monotonic()
        self._batch(["ip", "-n", ns, "-batch", "-"], [
            f"addr add {a0} dev eth0", "link set eth0 up", f"route add default via {self.net0.network_address + 1} dev eth0",
            f"addr add {a1} dev net1", "link set net1 up", f"rule add from {a1.ip}/32 table 100",
            f"route add {self.net1} dev net1 table 100", f"route add default via {self.net1.network_address + 1} dev net1 table 100",
            f"addr add {self.net2} dev net2", "link set net2 up",
        ])
        ph["ip -n pod -batch (addresses, routes, rule)"] = (time.monotonic() - t) * 1e3
        t = time.monotonic()
        with netns.entered(pod.netns), open("/proc/sys/net/core/somaxconn", "w") as f:
            f.write("512")
        ph["sysctl (in-process)"] = (time.monotonic() - t) * 1e3
        t = time.monotonic()
        maps = [R.PortMapping(pod.host_port, 80, "tcp")]
        self._batch(["iptables-restore", "--noflush", "-w", "10"],
                    [R.ipt_fast_add_batch("floor", pod.cid, a0, maps, R.Settings()).rstrip("\n")])
        ph["iptables-restore"] = (time.monotonic() - t) * 1e3
        return ph

    def delete(self, pod: Pod) -> dict[str, float]:
        R = self.R
        ns = os.path.basename(pod.netns)
        a0, a1 = pod.results["floor"]
        ph: dict[str, float] = {}
        t = time.monotonic()
        maps = [R.PortMapping(pod.host_port, 80, "tcp")]
        self._batch(["iptables-restore", "--noflush", "-w", "10"],
                    [R.ipt_fast_del_batch("floor", pod.cid, 4, maps, R.Settings()).rstrip("\n")])
        ph["iptables-restore"] = (time.monotonic() - t) * 1e3
        t = time.monotonic()
        # The links as one group (what multinic's pod DEL does: cni.netlink.batched_link_deletes): one
        # unregistration batch, one set of RCU waits, instead of one per `link del`.
        self._batch(["ip", "-n", ns, "-batch", "-"], [
            f"rule del from {a1.ip}/32 table 100",
            *(f"link set {ifname} group {FLOOR_GROUP}" for ifname in ("eth0", "net1", "net2")),
            f"link del group {FLOOR_GROUP}"])
        ph["ip -n pod -batch (rule, links as one group)"] = (time.monotonic() - t) * 1e3
        t = time.monotonic()
        for a, net in ((a0, self.net0), (a1, self.net1)):
            os.unlink(os.path.join(self.ipam_dir, str(net).replace("/", "_"), str(a.ip)))
        ph["IPAM files (in-process)"] = (time.monotonic() - t) * 1e3
        return ph

    def setup_shared_chains(self, pod: Pod) -> None:
        """portmap's shared chains, as the first pod on a node leaves them (untimed)."""
        from plugins import portmap

        a0 = ipaddress.ip_interface(f"{self.net0.network_address + 250}/{self.net0.prefixlen}")
        portmap._ipt_add("floor", pod.cid + "-setup", a0, [self.R.PortMapping(pod.host_port, 80, "tcp")], self.R.Settings())  # type: ignore[arg-type]
        portmap._ipt_remove("floor", pod.cid + "-setup", [4])


# ---- the section ----------------------------------------------------------------------------------------


STACKS = ("go", "thin", "thick", "floor")  # interleaved in a rotating order, as in section 1


def go_sample(nets: Nets, pod: Pod, command: str) -> dict[str, float]:
    """The reference stack in the same series (whole time only: a Go binary has no hook)."""
    atts = [(nets.cluster, "eth0", True), (nets.sbrnet, "net1", False), (nets.staticnet, "net2", False)]
    t = time.monotonic()
    for cl, ifname, with_rc in (atts if command == "ADD" else list(reversed(atts))):
        (GO.add if command == "ADD" else GO.delete)(pod, cl, ifname, pod.runtime_config() if with_rc else {})
    total = (time.monotonic() - t) * 1e3
    return {"Go: 9 plugin execs (reference binaries, whole)": total, "total": total}


def _mean(samples: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for s in samples for k in s))
    return {k: round(sum(s.get(k, 0.0) for s in samples) / len(samples), 2) for k in keys}


def section(world: World, pods: list[tuple[str, str]], n: int, warm: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Rows (section "7"): per stack and op, the mean phases of ``n`` profiled runs; the floor's; and the Go
    stack's whole time in the same series (so the profile sees the interleaving section 1 sees)."""
    rows: list[dict[str, Any]] = []
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    notes: list[str] = []
    daemon = ProfiledDaemon(world)
    try:
        nets: dict[str, Nets] = {}
        for name in STACKS:
            i = world.next_stack()
            nets[name] = make_nets(world, f"p{name}{i}", i)
            write_manifests(nets[name], pods)
        floor = Floor(world, nets["floor"])
        uids = dict(pods)
        seq = 0
        for it in range(warm + n):
            for name in STACKS[it % len(STACKS):] + STACKS[:it % len(STACKS)]:
                seq += 1
                slot = it % len(pods)
                pod = Pod(cid=f"prof{name}-{seq}-{uuid.uuid4().hex[:8]}", netns=world.netns(), name=f"bench-{slot}",
                          uid=uids[f"bench-{slot}"], host_port=32000 + nets[name].index * 10 + it % 10)
                try:
                    for command in ("ADD", "DEL"):
                        if name == "floor":
                            if it == 0 and command == "ADD":
                                floor.setup_shared_chains(pod)
                            t = time.monotonic()
                            ph = floor.add(pod) if command == "ADD" else floor.delete(pod)
                            ph["total"] = (time.monotonic() - t) * 1e3
                        elif name == "go":
                            ph = go_sample(nets[name], pod, command)
                        elif name == "thin":
                            ph = thin_sample(world, nets[name], pod, command)
                        else:
                            ph = thick_sample(world, daemon, nets[name], pod, command)
                        if it >= warm:
                            samples.setdefault((name, command), []).append(ph)
                except BenchFailure as exc:
                    notes.append(f"{name}: {exc}")
                finally:
                    world.drop_netns(pod.netns)
            log(f"  profile iteration {it + 1}/{warm + n}")
    finally:
        daemon.stop()
    for (stack, op), ss in samples.items():
        mean = _mean(ss)
        total = mean.pop("total")
        groups: dict[str, float] = {}
        for phase, ms in mean.items():
            groups[group_of(phase)] = round(groups.get(group_of(phase), 0.0) + ms, 2)
        rows.append({"section": "7", "case": "profile", "stack": stack, "op": op, "n": len(ss), "mean_ms": total,
                     "phases": dict(sorted(mean.items(), key=lambda kv: -kv[1])),
                     "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]))})
    for row in rows:
        fl = next((r for r in rows if r["stack"] == "floor" and r["op"] == row["op"]), None)
        if fl and row["stack"] != "floor" and fl["mean_ms"] > 0:
            row["vs_floor"] = round(row["mean_ms"] / fl["mean_ms"], 2)
    return rows + [{"section": "7", "case": "profile", "note": x} for x in notes]


def main() -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    world = World()
    try:
        pods = [(f"bench-{j}", str(uuid.uuid4())) for j in range(10)]
        rows = section(world, pods, args.n, args.warmup, lambda m: sys.stderr.write(m + "\n"))
    finally:
        world.close()
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
