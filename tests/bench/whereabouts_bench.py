"""whereabouts benchmarks: the pure allocator in big pools, and allocations/s from 8 processes (simulated nodes)
against one pool on a real 3-member etcd cluster and on the Kubernetes API server double.

``run()`` returns one dict per measurement: ``{"name", "value", "unit", ...details}``. Run alone with
``python -m tests.bench.whereabouts_bench``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROCS = 8
PER_PROC = 25

# A simulated node: import everything, wait for "go" on stdin, then ADD PER_PROC pods; print start/end/conflicts.
WORKER = r"""
import json, sys, time
from cni.spec.request import Request
from ipam.whereabouts import PLUGIN
import ipam.whereabouts.manager, ipam.whereabouts.store_etcd, ipam.whereabouts.store_k8s, cni.k8s.client
args = json.loads(sys.argv[1])
sys.stdin.readline()
t0 = time.time()
errors = 0
for i in range(args["count"]):
    pod = f"b-{args['node']}-{i}"
    req = Request(command="ADD", container_id=f"cid-{pod}", netns="/x", ifname="net1",
                  cni_args={"K8S_POD_NAMESPACE": "bench", "K8S_POD_NAME": pod}, config=args["conf"])
    for _ in range(5):
        try:
            PLUGIN.run(req)
            break
        except Exception:
            errors += 1
print(json.dumps({"start": t0, "end": time.time(), "errors": errors}), flush=True)
"""


def _pure() -> list[dict[str, Any]]:
    from ipam.whereabouts.allocator import Range, Taken, first_free

    out = []
    for cidr, n in (("10.0.0.0/16", 60_000), ("fd00::/64", 1_000_000)):
        net = ipaddress.ip_network(cidr)
        rng = Range.build(net)
        t0 = time.perf_counter()
        taken = Taken(range(1, n + 1))
        build = time.perf_counter() - t0
        reps = 1000
        t0 = time.perf_counter()
        for _ in range(reps):
            first_free(rng, taken)
        per = (time.perf_counter() - t0) / reps
        out.append({"name": f"whereabouts allocator first_free {cidr} with {n} taken", "value": per * 1e6,
                    "unit": "us", "build_taken_ms": build * 1000})
    return out


def _hammer(conf: dict[str, Any], label: str) -> dict[str, Any]:
    env = dict(os.environ, MULTINIC_WHEREABOUTS_FLATFILE="")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER,
                               json.dumps({"conf": conf, "node": n, "count": PER_PROC})],
                              cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for n in range(PROCS)]
    time.sleep(1.5)  # let every worker finish its imports
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    rows = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        rows.append(json.loads(out.strip().splitlines()[-1]))
    span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    total = PROCS * PER_PROC
    return {"name": f"whereabouts ADD {label}, {PROCS} processes, one pool", "value": total / span,
            "unit": "alloc/s", "allocations": total, "seconds": span, "errors": sum(r["errors"] for r in rows)}


def _etcd() -> dict[str, Any]:
    from tests.support.etcd import EtcdCluster

    cluster = EtcdCluster(tempfile.mkdtemp(prefix="multinic-bench-etcd-", dir="/dev/shm"
                                           if os.path.isdir("/dev/shm") else None))
    try:
        cluster.start()
        conf = {"cniVersion": "1.0.0", "name": "bench", "type": "macvlan",
                "ipam": {"type": "whereabouts", "range": "10.128.0.0/16", "datastore": "etcd",
                         "endpoints": cluster.endpoints, "etcd_prefix": f"/bench-{uuid.uuid4().hex[:6]}/"}}
        return _hammer(conf, "on etcd (3 members)")
    finally:
        cluster.stop()
        cluster.wipe()


def _apiserver() -> dict[str, Any]:
    from conformance.apiserver import ApiServerDouble

    with tempfile.TemporaryDirectory(prefix="multinic-bench-api-") as d, ApiServerDouble(d) as api:
        conf = {"cniVersion": "1.0.0", "name": "bench", "type": "macvlan",
                "ipam": {"type": "whereabouts", "range": "10.129.0.0/16",
                         "kubernetes": {"kubeconfig": api.kubeconfig_path()}}}
        return _hammer(conf, "on the Kubernetes API double")


def run() -> list[dict[str, Any]]:
    return [*_pure(), _etcd(), _apiserver()]


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
