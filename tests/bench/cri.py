"""``make bench`` section ``cri``: RunPodSandbox / StopPodSandbox through containerd 1.6's CRI.

What kubelet waits for on a node, measured end to end (gRPC → containerd → go-cni → the CNI
conf → plugins → sandbox task), for five networks served by one private containerd
(tests/e2e/cri/runtime.py), each behind its own runtime handler (per-handler ``cni_conf_dir``),
so every iteration runs all stacks in a rotating order and machine drift hits them alike:

- ``go``: the reference conflist bridge+host-local+portmap (1 interface) — Debian's Go binaries;
- ``thin`` / ``thick``: multinic (``type: multinic`` / ``multinic-shim`` + daemon) with the same
  cluster network natively (1 interface);
- ``thin+2`` / ``thick+2``: the same plus 2 NADs (macvlan+host-local; macvlan+host-local→sbr)
  from a manifest directory (3 interfaces).

Every sandbox asks for one TCP host port (a CRI ``PortMapping``), so portmap does real work.
StopPodSandbox is timed; RemovePodSandbox follows untimed. A benchmark: nothing asserts a time;
ratios are against ``go``.

    .venv/bin/python -m tests.bench.cri [-n 12] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.bench._stats import ratio, summary

STACKS = ("go", "thin", "thick", "thin+2", "thick+2")
HANDLER = {"go": "go", "thin": "thin", "thick": "thick", "thin+2": "thin3", "thick+2": "thick3"}
IFACES = {"go": 1, "thin": 1, "thick": 1, "thin+2": 3, "thick+2": 3}


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self) -> None:
        from tests.e2e.cri.runtime import VENV_MULTINIC, Containerd, Daemon, install_multinic

        self.tag = uuid.uuid4().hex[:5]
        self.scratch = Path(tempfile.mkdtemp(prefix=f"multinic-cri-bench-{self.tag}-"))
        for d in ("manifests", "cache", "run"):
            (self.scratch / d).mkdir()
        (self.scratch / "run").chmod(0o700)
        sock = self.scratch / "run" / "multinic.sock"
        self.ctd = Containerd(self.scratch / "containerd", env={"MULTINIC_SOCKET": str(sock),
                                                                  "MULTINIC_THIN": VENV_MULTINIC},
                              handlers=tuple(HANDLER.values()))
        # The go stack must exec the reference binaries: no plugin faces of multinic in bin_dir.
        install_multinic(self.ctd.bin_dir, links="none")
        for plugin in ("bridge", "host-local", "portmap"):
            (self.ctd.bin_dir / plugin).symlink_to(f"/usr/lib/cni/{plugin}")
        self.daemon = Daemon(sock, self.scratch / "daemon.log")
        self.links = [f"mnbg{self.tag}", f"mnbm{self.tag}", f"mnbv{self.tag}"]
        self.port = _free_tcp_port()

    def _cluster(self, bridge: str, subnet: str, name: str) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": "cluster", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True,
             "ipam": {"type": "host-local", "subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(self.scratch / f"ipam-{name}")}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}

    def setup(self) -> None:
        from cni.daemon import autoconf

        master, peer = self.links[2], f"mnbp{self.tag}"
        subprocess.run(["ip", "link", "add", master, "type", "veth", "peer", "name", peer], check=True)
        for link in (master, peer):
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        s = self.scratch
        self.ctd.write_conf(self._cluster(self.links[0], "10.96.10.0/24", "go"), "10-go.conflist", handler="go")
        for stack in STACKS[1:]:
            extra: dict[str, Any] = {"cniDir": str(s / "cache"), "binDir": str(self.ctd.bin_dir)}
            if IFACES[stack] == 3:
                extra["manifestDir"] = str(s / "manifests")
                # The NADs keep their IPAM state in this scratch dir: tenancy refuses NAD paths outside allowedPaths.
                extra["allowedPaths"] = ["/var/lib/cni", "/run/cni", "/var/log", str(s)]
            shim = "multinic-shim" if stack.startswith("thick") else "multinic"
            doc = autoconf.generate(self._cluster(self.links[1], "10.96.11.0/24", "mn"), shim, extra)
            self.ctd.write_conf(doc, autoconf.OUR_FILE, handler=HANDLER[stack])
        for name, cfg in (
                ("mv", {"cniVersion": "1.0.0", "type": "macvlan", "master": master, "mode": "bridge",
                        "ipam": {"type": "host-local", "subnet": "10.96.12.0/24", "dataDir": str(s / "ipam-mv")}}),
                ("mv-sbr", {"cniVersion": "1.0.0", "name": "mv-sbr", "plugins": [
                    {"type": "macvlan", "master": master, "mode": "bridge",
                     "ipam": {"type": "host-local", "subnet": "10.96.13.0/24", "gateway": "10.96.13.254",
                              "dataDir": str(s / "ipam-mvsbr")}}, {"type": "sbr"}]})):
            doc = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                   "metadata": {"name": name, "namespace": "default"}, "spec": {"config": json.dumps(cfg)}}
            (s / "manifests" / f"nad-{name}.yaml").write_text(yaml.safe_dump(doc))
        self.daemon.start()
        self.ctd.start()

    def pod(self, name: str) -> None:
        doc = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                            "annotations": {"k8s.v1.cni.cncf.io/networks": "mv,mv-sbr"}},
               "spec": {"containers": [{"name": "c", "image": "pause"}]}}
        (self.scratch / "manifests" / f"pod-{name}.yaml").write_text(yaml.safe_dump(doc))

    def one(self, stack: str, i: int) -> tuple[float, float]:
        from tests.e2e.cri.runtime import Port

        cri = self.ctd.cri
        assert cri is not None
        name = f"bench-{stack.replace('+', 'x')}-{i}"
        self.pod(name)
        cfg = cri.sandbox_config(name, ports=(Port(8080, self.port),))
        t0 = time.perf_counter()
        sid = cri.run(cfg, handler=HANDLER[stack])
        t1 = time.perf_counter()
        cri.stop(sid)
        t2 = time.perf_counter()
        cri.remove(sid)
        return t1 - t0, t2 - t1

    def close(self) -> None:
        try:
            self.ctd.cleanup()
        finally:
            self.daemon.stop()
            for link in self.links:
                subprocess.run(["ip", "link", "del", link], capture_output=True)
            shutil.rmtree(self.scratch, ignore_errors=True)


def section(n: int = 12, warm: int = 2, log: Any = None) -> list[dict[str, Any]]:
    """Rows in tests/bench/run.py's shape (section "6"), ratios against ``go``."""
    from tests.e2e.cri.runtime import missing

    why = missing()
    if why:
        return [{"section": "6", "case": "cri", "note": f"skipped: {why}"}]
    b = Bench()
    samples: dict[tuple[str, str], list[float]] = {(s, op): [] for s in STACKS
                                                   for op in ("RunPodSandbox", "StopPodSandbox")}
    failures: dict[str, int] = {s: 0 for s in STACKS}
    try:
        b.setup()
        for i in range(n + warm):
            order = STACKS[i % len(STACKS):] + STACKS[:i % len(STACKS)]
            for stack in order:
                try:
                    run_s, stop_s = b.one(stack, i)
                except Exception as exc:  # noqa: BLE001 - a benchmark reports failures, it does not stop
                    failures[stack] += 1
                    if log:
                        log(f"  cri {stack}: {str(exc)[:300]}")
                    continue
                if i >= warm:
                    samples[stack, "RunPodSandbox"].append(run_s)
                    samples[stack, "StopPodSandbox"].append(stop_s)
            if log:
                log(f"  cri iteration {i + 1}/{n + warm}")
    finally:
        b.close()
    rows: list[dict[str, Any]] = []
    for (stack, op), xs in samples.items():
        s = summary(xs)
        base = summary(samples["go", op])
        r = {"section": "6", "case": "cri", "op": op, "stack": stack, "interfaces": IFACES[stack], **s,
             "failures": failures[stack]}
        if stack != "go":
            r["ratio_p50"] = ratio(s["p50_ms"], base["p50_ms"])
            r["ratio_p95"] = ratio(s["p95_ms"], base["p95_ms"])
        rows.append(r)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| stack | interfaces | RunPodSandbox p50 / p95 ms | × go p50 | StopPodSandbox p50 / p95 ms | × go p50 | failures |",
           "|---|---|---|---|---|---|---|"]
    by = {(r.get("stack"), r.get("op")): r for r in rows if r.get("op")}
    for stack in STACKS:
        run, stop = by.get((stack, "RunPodSandbox")), by.get((stack, "StopPodSandbox"))
        if not run or not stop:
            continue
        label = {"go": "Go conflist bridge+host-local+portmap"}.get(stack, f"multinic {stack}")
        out.append(f"| {label} | {IFACES[stack]} | {run['p50_ms']} / {run['p95_ms']} | {run.get('ratio_p50', 1.0)} "
                   f"| {stop['p50_ms']} / {stop['p95_ms']} | {stop.get('ratio_p50', 1.0)} | {run['failures']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.cri")
    p.add_argument("-n", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    rows = section(args.n, args.warmup, log=lambda m: sys.stderr.write(m + "\n"))
    print(markdown(rows))
    for r in rows:
        if r.get("note"):
            print(r["note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
