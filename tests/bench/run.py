"""``make bench``: multinic side by side with the reference Go plugins, reported as ratios.

A benchmark, not a test: nothing here asserts a time. Usage::

    .venv/bin/python -m tests.bench.run [--quick] [-n N] [--only version,pod,single,concurrent,ipam,plugins,cri,profile]
                                        [--out DIR] [--no-readme] [--no-plot]

Sections (cni/ARCHITECTURE.md, "Start-up costs": machines are noisy — only ratios measured in one run mean anything):
0. ``version``: exec floors — ``multinic`` VERSION, the shim's VERSION, a Go binary's VERSION,
   bare interpreter starts and the cost of importing pyroute2 + pydantic (explains thin mode).
1. ``pod``: a pod with three attachments — eth0 bridge+host-local→tuning→portmap (the cluster
   network, with a port mapping), net1 macvlan+host-local→sbr, net2 macvlan+static — ADD and
   DEL; ours thick and thin vs the reference binaries (9 execs per ADD).
2. ``single``: one macvlan+host-local attachment; thick, thin, and ``multinic plugin macvlan``.
3. ``concurrent``: 100 pods (the section-1 pod) ADDed at once, then DELeted at once;
   throughput, p99, failures, the daemon's peak RSS (VmHWM).
4. ``ipam``: tests/bench/ipam_bench.py and tests/bench/whereabouts_bench.py.
5. ``plugins``: chains with our plugins in-process (no exec) and as drop-in binaries
   (``multinic plugin TYPE``) vs the reference: macvlan+host-local, bridge+host-local,
   bridge+host-local→tuning→portmap, macvlan+host-local→sbr.
6. ``cri``: RunPodSandbox/StopPodSandbox through a private containerd (tests/bench/cri.py).
7. ``profile``: where one section-1 pod ADD and DEL spend their time, thin and thick, measured
   per phase (tests/bench/profile.py), next to the floor: the same kernel work by ``ip -batch``
   and ``iptables-restore`` in one process. The targets table explains every miss with it.

Stacks interleave within every iteration (rotating order) so drift hits all alike; the first
iterations are warm-ups and are dropped. Measured processes run without PYTHONDONTWRITEBYTECODE
(set in this environment, it makes every Python exec recompile) and with the venv's interpreter,
never the pyenv shim. Output: ``<out>/latest.json``, ``<out>/latest.md``, ``<out>/latency.png``
and (full runs) README's "## Performance" section.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.bench import _report
from tests.bench._harness import (
    DROPIN,
    GO,
    MULTINIC,
    PY,
    REF,
    SHIM,
    BenchFailure,
    Daemon,
    ExecChain,
    InProc,
    Meta,
    Nets,
    Pod,
    World,
    exec_cni,
    make_nets,
    measured_env,
    meta_conf,
    pod_links,
    write_manifests,
)
from tests.bench._stats import check, ratio, summary

SECTIONS = ("version", "pod", "single", "concurrent", "ipam", "plugins", "cri", "profile")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
POOL = 100  # pods in the manifests (and the size of the concurrent burst)
CHAINS = {  # section 5: conflist key on Nets → label
    "single": "macvlan+host-local",
    "bridge_hl": "bridge+host-local",
    "cluster": "bridge+host-local→tuning→portmap",
    "sbrnet": "macvlan+host-local→sbr",
}


LOAD: list[float] = []  # 1-min load average at each section start and at the end (other suites share the machine)


def log(msg: str) -> None:
    if msg.startswith("["):
        LOAD.append(round(os.getloadavg()[0], 2))
    print(msg, flush=True)


@dataclass
class Stack:
    name: str
    index: int
    nets: Nets
    driver: ExecChain | InProc | Meta
    uids: dict[str, str] = field(default_factory=dict)
    _seq: int = 0

    def new_pod(self, world: World, slot: int) -> Pod:
        self._seq += 1
        name = f"bench-{slot}"
        return Pod(cid=f"{self.name}-{self._seq}-{uuid.uuid4().hex[:8]}", netns=world.netns(), name=name,
                   uid=self.uids[name], host_port=30000 + self.index * 200 + slot)

    def attachments(self, kind: str) -> list[tuple[dict[str, Any], str, bool]]:
        """(conflist, ifname, gets runtimeConfig) per attachment, in ADD order."""
        n = self.nets
        if kind == "pod":
            return [(n.cluster, "eth0", True), (n.sbrnet, "net1", False), (n.staticnet, "net2", False)]
        if kind == "single":
            return [(n.single, "eth0", False)]
        return [(getattr(n, kind), "eth0", kind == "cluster")]

    def op(self, kind: str, command: str, pod: Pod) -> None:
        if isinstance(self.driver, Meta):
            self.driver.call(pod, command, meta_conf(self.nets, pod=pod, kind=kind))
            return
        atts = self.attachments(kind)
        if command == "ADD":
            done = []
            try:
                for cl, ifname, with_rc in atts:
                    self.driver.add(pod, cl, ifname, pod.runtime_config() if with_rc else {})
                    done.append((cl, ifname, with_rc))
            except BenchFailure:
                for cl, ifname, with_rc in reversed(done):  # as Multus: undo the attachments made
                    try:
                        self.driver.delete(pod, cl, ifname, pod.runtime_config() if with_rc else {})
                    except BenchFailure:
                        pass
                raise
            return
        errors = []
        for cl, ifname, with_rc in reversed(atts):
            try:
                self.driver.delete(pod, cl, ifname, pod.runtime_config() if with_rc else {})
            except BenchFailure as exc:
                errors.append(str(exc))
        if errors:
            raise BenchFailure("; ".join(errors))


def expected_ifs(kind: str) -> set[str]:
    return {"eth0", "net1", "net2"} if kind == "pod" else {"eth0"}


# ---- sequential ADD/DEL -------------------------------------------------------------------------


@dataclass
class Series:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (stack, op) → seconds
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, stack: str, op: str, dt: float | None) -> None:
        self.samples.setdefault((stack, op), [])
        self.failures.setdefault((stack, op), 0)
        if dt is None:
            self.failures[(stack, op)] += 1
        else:
            self.samples[(stack, op)].append(dt)


def condense(notes: list[str], keep: int = 600) -> list[str]:
    """Identical failures once, with a count (container IDs, ports and paths differ; the cause does not)."""
    import re

    groups: dict[str, tuple[int, str]] = {}
    for note in notes:
        key = re.sub(r"[0-9a-f]{6,}|\d+", "#", note)[:300]
        n, first = groups.get(key, (0, note))
        groups[key] = (n + 1, first)
    return [(f"{n}× " if n > 1 else "") + first[:keep] for n, first in groups.values()]


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def add_del_series(world: World, stacks: list[Stack], kind: str, n: int, warm: int,
                   on_measure: Callable[[], None] | None = None) -> Series:
    """``warm`` + ``n`` iterations; each: every stack (rotating order) ADDs then DELs a pod in a fresh netns.

    ``on_measure`` is called once, when the warm-ups are done.
    """
    ser = Series()
    for i in range(warm + n):
        if i == warm and on_measure is not None:
            on_measure()
        order = stacks[i % len(stacks):] + stacks[:i % len(stacks)]
        for st in order:
            pod = st.new_pod(world, i % POOL)
            keep = i >= warm
            try:
                try:
                    dt_add: float | None = timed(lambda: st.op(kind, "ADD", pod))  # noqa: B023
                except BenchFailure as exc:
                    dt_add = None
                    ser.notes.append(f"{st.name} {kind} ADD failed: {exc}")
                if i == 0 and dt_add is not None:
                    have = pod_links(pod.netns)
                    if not expected_ifs(kind) <= have:
                        ser.notes.append(f"{st.name} {kind}: after ADD the pod has {sorted(have)}, "
                                         f"expected {sorted(expected_ifs(kind))}")
                try:
                    dt_del: float | None = timed(lambda: st.op(kind, "DEL", pod))  # noqa: B023
                except BenchFailure as exc:
                    dt_del = None
                    ser.notes.append(f"{st.name} {kind} DEL failed: {exc}")
                if i == 0 and dt_del is not None and expected_ifs(kind) & pod_links(pod.netns):
                    ser.notes.append(f"{st.name} {kind}: interfaces left after DEL: "
                                     f"{sorted(expected_ifs(kind) & pod_links(pod.netns))}")
            finally:
                world.drop_netns(pod.netns)
            if keep:
                ser.add(st.name, "ADD", dt_add)
                ser.add(st.name, "DEL", dt_del)
    return ser


def rows_for(section: str, case: str, ser: Series, *, ref: str = "go", extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rows = []
    for (stack, op), samples in ser.samples.items():
        s = summary(samples)
        r = {"section": section, "case": case, "op": op, "stack": stack, **s,
             "failures": ser.failures.get((stack, op), 0)}
        base = summary(ser.samples.get((ref, op), []))
        if stack != ref:
            r["ratio_p50"] = ratio(s["p50_ms"], base["p50_ms"])
            r["ratio_p95"] = ratio(s["p95_ms"], base["p95_ms"])
        r.update(extra or {})
        rows.append(r)
    return rows


def keep_samples(store: dict[str, list[float]], case: str, ser: Series) -> None:
    for (stack, op), samples in ser.samples.items():
        store[f"{case}|{op}|{stack}"] = [round(x * 1e3, 3) for x in samples]


# ---- sections ---------------------------------------------------------------------------------


def section_version(n: int, warm: int, store: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Exec floors: what one process start costs each way, before any CNI work."""
    ver_env = measured_env(CNI_COMMAND="VERSION")
    conf = b'{"cniVersion":"1.0.0"}'
    sock_env = measured_env(CNI_COMMAND="VERSION", MULTINIC_SOCKET="/nonexistent/multinic.sock")
    cases: list[tuple[str, list[str], dict[str, str], bytes]] = [
        ("go", [os.path.join(REF, "macvlan")], ver_env, conf),
        ("thin", [MULTINIC], ver_env, conf),
        ("thick", [PY, "-I", "-S", SHIM], sock_env, conf),
        ("dropin", [MULTINIC, "plugin", "macvlan"], ver_env, conf),
        ("python -I -S -c pass", [PY, "-I", "-S", "-c", "pass"], measured_env(), b""),
        ("python -c pass", [PY, "-c", "pass"], measured_env(), b""),
        ("python: import pyroute2, pydantic, orjson", [PY, "-c", "import pyroute2, pydantic, orjson"], measured_env(), b""),
    ]
    ser = Series()
    for i in range(warm + n):
        for label, argv, env, data in cases[i % len(cases):] + cases[:i % len(cases)]:
            try:
                dt: float | None = timed(lambda: exec_cni(argv, env, data))  # noqa: B023
            except BenchFailure as exc:
                dt = None
                ser.notes.append(f"{label}: {exc}")
            if i >= warm:
                ser.add(label, "VERSION", dt)
    keep_samples(store, "version", ser)
    rows = rows_for("0", "version", ser)
    for r in rows:
        r["what"] = {
            "go": "/usr/lib/cni/macvlan VERSION (Go exec floor)",
            "thin": "multinic VERSION (thin exec floor)",
            "thick": "shim VERSION (thick exec floor; answered by the shim)",
            "dropin": "multinic plugin macvlan VERSION",
        }.get(r["stack"], "context: interpreter start / imports")
    return rows + [{"section": "0", "case": "version", "note": x} for x in condense(ser.notes)]


def _stacks(world: World, names: list[str], pods: list[tuple[str, str]], daemon: Daemon | None,
            inproc: InProc | None = None) -> list[Stack]:
    out = []
    for name in names:
        i = world.next_stack()  # unique per run: own subnets, bridges and host ports
        nets = make_nets(world, f"{name}{i}", i)
        write_manifests(nets, pods)
        driver: ExecChain | InProc | Meta
        if name == "go":
            driver = GO
        elif name == "dropin":
            driver = DROPIN
        elif name == "inproc":
            driver = inproc or InProc()
        elif name == "thick":
            assert daemon is not None
            driver = Meta("thick", daemon)
        else:
            driver = Meta("thin")
        out.append(Stack(name, i, nets, driver, uids=dict(pods)))
    return out


def section_adddel(world: World, section: str, kind: str, case: str, names: list[str], n: int, warm: int,
                   pods: list[tuple[str, str]], daemon: Daemon | None, store: dict[str, list[float]],
                   inproc: InProc | None = None, floor_ms: float | None = None) -> list[dict[str, Any]]:
    stacks = _stacks(world, names, pods, daemon, inproc)
    before: dict[str, tuple[float, int]] = {}

    def mark() -> None:
        if daemon is not None:
            before.update(daemon.durations())

    ser = add_del_series(world, stacks, kind, n, warm, mark)
    after = daemon.durations() if daemon else {}
    keep_samples(store, case, ser)
    rows = rows_for(section, case, ser)
    for r in rows:
        if r["stack"] == "thick" and r["op"] in after:
            # The daemon's own handling time (its /metrics), so thick = shim start + transport + this.
            s0, c0 = before.get(r["op"], (0.0, 0))
            s1, c1 = after[r["op"]]
            if c1 > c0:
                r["daemon_mean_ms"] = round((s1 - s0) / (c1 - c0) * 1e3, 2)
    for st in stacks:
        if st.name == "thin":
            rows += import_breakdown(world, st, kind, section, case)
    if floor_ms is not None:
        # Thin Multus is itself one Go exec per pod operation (plus API GETs) before it execs the
        # delegates; the "go" stack leaves that out. Show the ratio against Go + that floor too.
        for r in rows:
            if "op" in r and r["stack"] != "go":
                go = next((x for x in rows if x.get("stack") == "go" and x.get("op") == r["op"]), None)
                if go and go["p50_ms"] is not None:
                    r["ratio_p50_vs_go_plus_meta_floor"] = ratio(r["p50_ms"], go["p50_ms"] + floor_ms)
    return rows + [{"section": section, "case": case, "note": x} for x in condense(ser.notes)]


def import_breakdown(world: World, st: Stack, kind: str, section: str, case: str) -> list[dict[str, Any]]:
    """One extra, untimed-for-the-table thin ADD and DEL with PYTHONPROFILEIMPORTTIME: how much of an exec is imports."""
    out: list[dict[str, Any]] = []
    pod = st.new_pod(world, POOL - 2)
    try:
        for command in ("ADD", "DEL"):
            env = measured_env(**pod.env(command), PYTHONPROFILEIMPORTTIME="1")
            t = time.perf_counter()
            p = subprocess.run([MULTINIC], input=json.dumps(meta_conf(st.nets, pod=pod, kind=kind)).encode(),
                               capture_output=True, env=env, check=False, timeout=180)
            total = (time.perf_counter() - t) * 1e3
            top: list[tuple[float, str]] = []
            for line in p.stderr.decode(errors="replace").splitlines():
                if not line.startswith("import time:") or "cumulative" in line:
                    continue
                _, cum, name = line[len("import time:"):].split("|", 2)
                if not name.startswith("  "):  # a top-level import: its cumulative time covers its children
                    top.append((int(cum) / 1e3, name.strip()))
            imports = sum(x for x, _ in top)
            out.append({"section": section, "case": case, "stack": "thin", "breakdown": command,
                        "exit": p.returncode, "total_ms": round(total, 1), "imports_ms": round(imports, 1),
                        "top_imports": [f"{name} {ms:.0f} ms" for ms, name in sorted(top, reverse=True)[:6]],
                        "note": f"thin {command} with PYTHONPROFILEIMPORTTIME: {total:.0f} ms wall, "
                                f"{imports:.0f} ms of it imports (top: "
                                + ", ".join(f"{name} {ms:.0f}" for ms, name in sorted(top, reverse=True)[:4]) + ")"})
    finally:
        world.drop_netns(pod.netns)
    return out


def burst(st: Stack, op: str, batch: list[Pod]) -> tuple[list[float | None], list[str], float]:
    """``op`` on every pod of ``batch`` at once (one thread each, released together); latencies, errors, wall time."""
    lat: list[float | None] = [None] * len(batch)
    errs: list[str] = []
    gate = threading.Barrier(len(batch) + 1)

    def one(j: int) -> None:
        gate.wait()
        t = time.perf_counter()
        try:
            st.op("pod", op, batch[j])
            lat[j] = time.perf_counter() - t
        except BenchFailure as exc:
            errs.append(str(exc))

    threads = [threading.Thread(target=one, args=(j,), daemon=True) for j in range(len(batch))]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return lat, errs, time.perf_counter() - t0


def section_concurrent(world: World, names: list[str], pods: list[tuple[str, str]], count: int,
                       store: dict[str, list[float]]) -> list[dict[str, Any]]:
    """``count`` pod ADDs started together, then ``count`` DELs; per stack, one stack at a time."""
    rows: list[dict[str, Any]] = []
    for name in names:
        daemon = Daemon(world, "burst") if name == "thick" else None
        try:
            (st,) = _stacks(world, [name], pods, daemon)
            # One untimed pod first: page cache, daemon's first request, the bridge and iptables chains.
            warm_pod = st.new_pod(world, POOL - 1)
            try:
                st.op("pod", "ADD", warm_pod)
                st.op("pod", "DEL", warm_pod)
            except BenchFailure as exc:
                rows.append({"section": "3", "case": "concurrent", "note": f"{name} warm-up failed: {exc}"})
            world.drop_netns(warm_pod.netns)
            batch = [st.new_pod(world, j) for j in range(count)]
            mem_before = daemon.memory() if daemon else {}
            for op in ("ADD", "DEL"):
                lat, errs, wall = burst(st, op, batch)
                ok = [x for x in lat if x is not None]
                s = summary(ok)
                row = {"section": "3", "case": "concurrent", "op": op, "stack": name, **s, "pods": count,
                       "failures": count - len(ok), "wall_s": round(wall, 3),
                       "throughput_pods_per_s": round(len(ok) / wall, 2) if wall > 0 else None}
                if daemon:
                    mem = daemon.memory()
                    row["daemon_peak_rss_mib"] = round(mem.get("VmHWM", 0), 1)
                    row["daemon_rss_mib"] = round(mem.get("VmRSS", 0), 1)
                    row["daemon_rss_before_mib"] = round(mem_before.get("VmRSS", 0), 1)
                rows.append(row)
                store[f"concurrent|{op}|{name}"] = [round(x * 1e3, 3) for x in ok]
                rows += [{"section": "3", "case": "concurrent", "note": f"{name} {op}: {x}"} for x in condense(errs)]
                log(f"  concurrent {name} {op}: {len(ok)}/{count} ok in {wall:.2f}s, p99 {s['p99_ms']} ms")
            for p in batch:
                world.drop_netns(p.netns)
        finally:
            if daemon:
                daemon.stop()
    for r in rows:
        if r.get("op") and r["stack"] != "go":
            go = next((x for x in rows if x.get("stack") == "go" and x.get("op") == r["op"]), None)
            if go:
                r["ratio_throughput"] = ratio(r["throughput_pods_per_s"], go["throughput_pods_per_s"])
                r["ratio_p99"] = ratio(r["p99_ms"], go["p99_ms"])
    return rows


def section_ipam(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mod_name in ("tests.bench.ipam_bench", "tests.bench.whereabouts_bench"):
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(mod_name)
            params = inspect.signature(mod.run).parameters
            got = mod.run(quick=quick) if "quick" in params else mod.run()
            for r in got:
                rows.append({"section": "4", "case": mod_name.rsplit(".", 1)[1], **r})
            log(f"  {mod_name}: {len(got)} rows in {time.monotonic() - t0:.1f}s")
        except Exception as exc:  # noqa: BLE001 - one IPAM bench failing must not lose the others' figures
            rows.append({"section": "4", "case": mod_name.rsplit(".", 1)[1],
                         "note": f"not measured: {type(exc).__name__}: {exc}"[:800]})
            log(f"  {mod_name}: failed: {exc}")
    return rows


# ---- targets ------------------------------------------------------------------------------------


def targets(rows: list[dict[str, Any]], burst: int = POOL) -> list[dict[str, Any]]:
    """Issue 16's targets table; a missed row carries ``why``: the profile's figures (section 7)."""
    def row(case: str, op: str, stack: str) -> dict[str, Any] | None:
        return next((r for r in rows if r.get("case") == case and r.get("op") == op and r.get("stack") == stack), None)

    out = []
    for key, case, op, stack, limit, label in (
            ("pod-add-thick", "pod-3-attachments", "ADD", "thick", 0.5, "pod ADD thick (3 attachments)"),
            ("pod-del-thick", "pod-3-attachments", "DEL", "thick", 0.5, "pod DEL thick"),
            ("single-add-thick", "single-macvlan", "ADD", "thick", 2.0, "single macvlan+host-local ADD thick"),
            ("pod-add-thin", "pod-3-attachments", "ADD", "thin", 3.0, "pod ADD thin"),
            ("pod-del-thin", "pod-3-attachments", "DEL", "thin", 2.0, "pod DEL thin")):
        r, go = row(case, op, stack), row(case, op, "go")
        out.append({"key": key, **check(f"{label} ≤ {limit:g}× Go", r.get("ratio_p50") if r else None, limit,
                                         ours_ms=r.get("p50_ms") if r else None, ref_ms=go.get("p50_ms") if go else None)})
    b = row("concurrent", "ADD", "thick")
    out.append({"key": "burst-thick", **check(f"{burst}-pod burst thick, pods/s ≥ 1.5× Go", b.get("ratio_throughput") if b else None,
                                              1.5, at_least=True)})
    for key, stack, limit in (("cri-thick", "thick+2", 1.2), ("cri-thin", "thin+2", 3.0)):
        r, go = row("cri", "RunPodSandbox", stack), row("cri", "RunPodSandbox", "go")
        label = stack.removesuffix("+2")
        out.append({"key": key, **check(f"CRI RunPodSandbox {label}, 3 interfaces vs Go 1 interface ≤ {limit:g}×",
                                        r.get("ratio_p50") if r else None, limit, ours_ms=r.get("p50_ms") if r else None,
                                        ref_ms=go.get("p50_ms") if go else None)})
    peak = [float(r["daemon_peak_rss_mib"]) for r in rows
            if r.get("case") == "concurrent" and r.get("stack") == "thick" and r.get("daemon_peak_rss_mib") is not None]
    out.append({"key": "rss", **check(f"daemon peak RSS, {burst} concurrent pods ≤ 64 MiB", max(peak) if peak else None, 64.0, " MiB")})
    for stack in ("thick", "thin", "go"):
        fails = [r.get("failures", 0) for r in rows if r.get("case") == "concurrent" and r.get("stack") == stack]
        out.append({"key": f"failures-{stack}", **check(f"{burst}-pod burst: 0 failures, {stack}", sum(fails) if fails else None, 0,
                                                         " failures")})
    for t in out:
        if t["met"] is False:
            t["why"] = _report.why_not(t["key"], rows)
    return out


# ---- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "interpreter": os.path.realpath(PY),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "reference": subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"],
                                    capture_output=True, text=True, check=False).stdout or "unknown",
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small N, few concurrent pods: a smoke run")
    p.add_argument("-n", type=int, default=None, help="measured iterations per case (default 30; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations dropped (default 2; --quick 1)")
    p.add_argument("--concurrent", type=int, default=None, help="pods in the burst (default 100; --quick 10)")
    p.add_argument("--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--out", default=RESULTS, help="results directory")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite README's Performance section")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--rerender", action="store_true",
                   help="measure nothing: rewrite latest.md, the plot and README from <out>/latest.json")
    return p.parse_args(argv)


def write_outputs(doc: dict[str, Any], out: str, *, plot: bool, readme: bool) -> str:
    """latest.json (unless it is the source), latest.md, latency.png, README; returns the Markdown."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "latest.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
    md = _report.markdown(doc)
    with open(os.path.join(out, "latest.md"), "w") as f:
        f.write(md)
    plotted = plot and bool(doc["samples"]) and _report.plot(path, os.path.join(out, "latency.png"))
    if readme:
        _report.update_readme(doc, plotted)
        log("README.md: Performance section updated")
    return md


def rerender(args: argparse.Namespace) -> int:
    with open(os.path.join(args.out, "latest.json")) as f:
        doc = json.load(f)
    m = doc["meta"]
    full = set(m["sections"]) == set(SECTIONS) and not m["quick"] and not m["interrupted"]
    print(write_outputs(doc, args.out, plot=not args.no_plot, readme=full and not args.no_readme))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.rerender:
        return rerender(args)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        sys.stderr.write(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}\n")
        return 2
    n = args.n or (5 if args.quick else 30)
    warm = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    burst = args.concurrent or (10 if args.quick else 100)
    needs_root = set(only) & {"pod", "single", "concurrent", "plugins", "cri", "profile"}
    if needs_root and os.geteuid() != 0:
        sys.stderr.write("sections pod/single/concurrent/plugins need root (real network namespaces)\n")
        return 2
    cmd = "make bench" if argv is None and not sys.argv[1:] else "python -m tests.bench.run " + " ".join(
        sys.argv[1:] if argv is None else argv)

    # Every process this bench starts (including ipam_bench's and whereabouts_bench's) must not
    # inherit PYTHONDONTWRITEBYTECODE: with it, each Python exec recompiles what it imports.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    # Ctrl-C and SIGTERM both unwind through the finally below (namespaces, links, daemon, tmp).
    def term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, term)
    started = time.time()
    rows: list[dict[str, Any]] = []
    store: dict[str, list[float]] = {}
    world = World() if needs_root else None
    daemon = None
    interrupted = False
    try:
        if "version" in only:
            log("[0] exec floors")
            rows += section_version(n, warm, store)
        floor = next((r["p50_ms"] for r in rows if r.get("case") == "version" and r.get("stack") == "go"), None)
        pods = [(f"bench-{j}", str(uuid.uuid4())) for j in range(POOL)]
        if world is not None and {"pod", "single"} & set(only):
            daemon = Daemon(world, "seq")
        if world is not None and "pod" in only:
            log(f"[1] pod with 3 attachments, n={n}")
            rows += section_adddel(world, "1", "pod", "pod-3-attachments", ["go", "thick", "thin"], n, warm, pods,
                                   daemon, store, floor_ms=floor)
        if world is not None and "single" in only:
            log(f"[2] single macvlan+host-local, n={n}")
            rows += section_adddel(world, "2", "single", "single-macvlan", ["go", "thick", "thin", "dropin"], n, warm,
                                   pods, daemon, store, floor_ms=floor)
        if daemon is not None:
            mem = daemon.memory()
            rows.append({"section": "2", "case": "daemon", "stack": "thick",
                         "daemon_peak_rss_mib": round(mem.get("VmHWM", 0), 1),
                         "daemon_rss_mib": round(mem.get("VmRSS", 0), 1),
                         "note": "daemon memory after sections 1-2"})
            daemon.stop()
        if world is not None and "concurrent" in only:
            log(f"[3] {burst} concurrent pods")
            rows += section_concurrent(world, ["go", "thick", "thin"], pods, burst, store)
        if "ipam" in only:
            log("[4] IPAM")
            rows += section_ipam(args.quick)
        if world is not None and "plugins" in only:
            stacks = _stacks(world, ["go", "inproc", "dropin"], pods, None, InProc())
            for key, label in CHAINS.items():
                log(f"[5] {label}, n={n}")
                ser = add_del_series(world, stacks, key, n, warm)
                keep_samples(store, f"chain {label}", ser)
                rows += rows_for("5", f"chain {label}", ser)
                rows += [{"section": "5", "case": f"chain {label}", "note": x} for x in condense(ser.notes)]
        if "cri" in only:  # tests/bench/cri.py: RunPodSandbox/StopPodSandbox through containerd
            from tests.bench import cri

            log(f"[6] CRI through containerd, n={n}")
            rows += cri.section(n, warm, log)
        if world is not None and "profile" in only:  # tests/bench/profile.py
            from tests.bench import profile

            pn = 2 if args.quick else max(3, min(n, 6))
            log(f"[7] per-phase profile of one pod ADD/DEL and the floor, n={pn}")
            rows += profile.section(world, pods, pn, 1, log)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up")
    finally:
        if world is not None:
            world.close()
    doc: dict[str, Any] = {
        "meta": {"command": cmd, "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
                 "duration_s": round(time.time() - started, 1), "quick": args.quick, "n": n, "warmup": warm,
                 "concurrent": burst, "sections": only, "interrupted": interrupted, **machine(),
                 "load_1m": [*LOAD, round(os.getloadavg()[0], 2)],
                 "notes": ["measured processes run without PYTHONDONTWRITEBYTECODE (set in this environment; with it "
                           "every Python exec recompiles its modules) and with the venv's interpreter "
                           f"({PY} → {os.path.realpath(PY)}), never the pyenv shim",
                           "the go stack is the reference binaries exec'd by the bench's own libcni loop; the Multus "
                           "binary itself (≥ 1 Go exec + API GETs per pod operation) is absent from it — see "
                           "ratio_p50_vs_go_plus_meta_floor"]},
        "rows": rows,
        "targets": targets(rows, burst) if {"pod", "single", "concurrent", "cri"} & set(only) else [],
        "samples": store,
    }
    full = set(only) == set(SECTIONS) and not args.quick and not interrupted
    md = write_outputs(doc, args.out, plot=not args.no_plot, readme=full and not args.no_readme)
    print(md)
    log(f"results: {os.path.join(args.out, 'latest.json')} ({doc['meta']['duration_s']}s)")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
