"""whereabouts at cluster scale (issue #17): 8 simulated nodes (processes with their own NODENAME) × N pods, each pod
with 2 whereabouts attachments on the same /16 with node slices; an ADD storm then a DEL storm, on a real 3-member
etcd cluster and on the Kubernetes API server double. Every address must be unique and every address freed.

``make bench-ipam`` runs it alone and ends with one line::

    whereabouts scale: etcd N alloc/s, api M alloc/s, 1000 pods in S s, D duplicates, L leaks

The chaos variant (``storm(..., chaos=True)``, the slow test) kills an etcd member and SIGKILLs one node process in
the middle of the ADD storm, then checks for duplicates, runs the reconciler (keyed on pod UID; the killed node's
pods are gone, the node too) and checks that nothing is left.

Measurement notes: each node process calls the plugin in-process (``PLUGIN.run``), so what is measured is the
datastore protocol, not Python's start-up per CNI exec; within a node, pods are set up one after another.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODES = 8
PODS_PER_NODE = 125  # 8 × 125 = 1000 pods
IFNAMES = ("net1", "net2")
# Pods a node process works on at once: the thick daemon's default --max-concurrent (cni/daemon/server.py).
CONCURRENCY = 8
RANGE = "10.128.0.0/16"
SLICE = "/24"

# One simulated node. Waits for the go file, then runs CMD for each pod and interface; one JSON line per attachment.
# Code 11 (try again later) is retried as kubelet would.
WORKER = r"""
import json, os, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from cni.spec.errors import CNIError
from cni.spec.request import Request
from ipam.whereabouts import PLUGIN, group
import ipam.whereabouts.manager, ipam.whereabouts.store_etcd, ipam.whereabouts.store_k8s, ipam.whereabouts.slices
import cni.k8s.client
args = json.loads(sys.argv[1])
out_lock = threading.Lock()
calls = {}  # datastore round trips by kind, reported with the totals
_call = ipam.whereabouts.store_etcd.EtcdClient.call
def counted_call(self, path, body):
    k = path.rsplit("/", 1)[-1] + (":ok" if path.endswith("txn") else "")
    doc = _call(self, path, body)
    if path.endswith("txn") and not doc.get("succeeded"):
        k = "txn:failed"
    calls[k] = calls.get(k, 0) + 1
    return doc
ipam.whereabouts.store_etcd.EtcdClient.call = counted_call
_req = cni.k8s.client.Client.request
def counted_req(self, method, path, *a, **kw):
    calls[method] = calls.get(method, 0) + 1
    return _req(self, method, path, *a, **kw)
cni.k8s.client.Client.request = counted_req
print(json.dumps({"ready": args["node"]}), flush=True)
while not os.path.exists(args["go"]):
    time.sleep(0.005)

def pod(i):
    pod = f"{args['node']}-{i}"
    for ifname in args["ifnames"]:  # a pod's attachments one after another, as the meta-plugin makes them
        req = Request(command=args["cmd"], container_id=f"cid-{pod}", netns="/x", ifname=ifname,
                      cni_args={"K8S_POD_NAMESPACE": "scale", "K8S_POD_NAME": pod, "K8S_POD_UID": f"uid-{pod}"},
                      config=args["conf"])
        out = {"pod": pod, "if": ifname, "retries": 0}
        for attempt in range(8):
            try:
                res = PLUGIN.run(req)
                out["ip"] = str(res.ips[0].address.ip) if res is not None else None
                break
            except CNIError as e:
                out["retries"] += 1
                out["error"] = f"{e.code}: {e}"
                if e.code != 11 or attempt == 7:
                    break
                time.sleep(0.1)
        line = json.dumps(out)
        with out_lock:
            print(line, flush=True)

t0 = time.time()
with ThreadPoolExecutor(max_workers=args["concurrency"]) as ex:
    list(ex.map(pod, range(args["count"])))
print(json.dumps({"done": args["node"], "start": t0, "end": time.time(), "calls": calls, **group.stats()}),
      flush=True)
"""


def _conf(backend: dict[str, Any]) -> dict[str, Any]:
    sliced = {"node_slice_size": SLICE} if not backend.get("_one_pool") else {}
    return {"cniVersion": "1.0.0", "name": "scale", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": RANGE, "network_name": "scale", **sliced,
                     **{k: v for k, v in backend.items() if k != "_one_pool"}}}


def _phase(cmd: str, backend: dict[str, Any], pods: int, which: list[int], workdir: str,
           kill_node: int | None = None, on_half: Any = None) -> dict[str, Any]:
    """Run ``cmd`` on the nodes ``which`` at once; the attachments' results, the wall time and who was killed
    (``kill_node`` is SIGKILLed, and ``on_half`` called, once half of the attachments are done)."""
    go = os.path.join(workdir, f"go-{cmd}-{uuid.uuid4().hex[:6]}")
    env = dict(os.environ, MULTINIC_WHEREABOUTS_FLATFILE="")
    env.pop("NODE_NAME", None)
    procs = []
    for n in which:
        node = f"node-{n}"
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps({"conf": _conf(backend), "node": node, "count": pods,
                                                       "cmd": cmd, "ifnames": IFNAMES, "go": go,
                                                       "concurrency": CONCURRENCY})],
            cwd=ROOT, env={**env, "NODENAME": node}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True))
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert "ready" in line, f"a node process did not start: {line!r}"
        t0 = time.time()
        Path(go).touch()
        rows: list[dict[str, Any]] = []
        spans: list[tuple[float, float]] = []
        killed: str | None = None
        half = len(which) * pods * len(IFNAMES) // 2
        fired = False
        batches = served = 0
        calls: dict[str, int] = {}
        import selectors

        sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            assert p.stdout is not None
            sel.register(p.stdout, selectors.EVENT_READ, i)
        open_ = len(procs)
        while open_:
            for key, _ in sel.select(timeout=600):
                i = which[key.data]
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    sel.unregister(key.fileobj)
                    open_ -= 1
                    continue
                doc = json.loads(line)
                if "done" in doc:
                    spans.append((doc["start"], doc["end"]))
                    batches += doc.get("batches", 0)
                    for k, v in (doc.get("calls") or {}).items():
                        calls[k] = calls.get(k, 0) + v
                    served += doc.get("served", 0)
                    continue
                doc["node"] = f"node-{i}"
                rows.append(doc)
                if not fired and len(rows) >= half:
                    fired = True
                    if on_half is not None:
                        on_half()
                    if kill_node is not None:
                        procs[which.index(kill_node)].send_signal(signal.SIGKILL)
                        killed = f"node-{kill_node}"
        wall = time.time() - t0
        for p in procs:
            p.wait(timeout=60)
        if kill_node is None:
            assert len(spans) == len(which), "a node process died"
        return {"rows": rows, "wall": wall, "killed": killed, "batches": batches, "served": served,
                "calls": calls}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.path.exists(go):
            os.unlink(go)


def duplicates(rows: list[dict[str, Any]]) -> int:
    """Addresses handed to more than one (pod, interface)."""
    owners: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for r in rows:
        if r.get("ip"):
            owners[r["ip"]].add((r["pod"], r["if"]))
    return sum(len(o) - 1 for o in owners.values() if len(o) > 1)


def leftovers(store: Any) -> int:
    """Allocations and reservations still stored."""
    return sum(len(p.allocations) for p in store.list_pools()) + len(store.list_reservations())


def storm(kind: str, backend: dict[str, Any], store: Any, *, pods: int = PODS_PER_NODE, nodes: int = NODES,
          chaos: Any = None, kill_node: int | None = None, reconcile: Any = None) -> dict[str, Any]:
    """ADD storm, DEL storm (of the pods whose node is alive), optional reconcile; the figures."""
    with tempfile.TemporaryDirectory(prefix="multinic-scale-") as d:
        add = _phase("ADD", backend, pods, list(range(nodes)), d, kill_node=kill_node, on_half=chaos)
        ok = [r for r in add["rows"] if r.get("ip")]
        failed = [r for r in add["rows"] if not r.get("ip")]
        dups = duplicates(add["rows"])
        alive = nodes if kill_node is None else nodes - 1
        survivors = [n for n in range(nodes) if n != kill_node]
        # DEL storm on the live nodes (the killed node's pods are for the reconciler).
        dl = _phase("DEL", backend, pods, survivors, d)
        del_rows, del_wall = dl["rows"], dl["wall"]
        freed = None
        if reconcile is not None:
            freed = reconcile([f"node-{n}" for n in survivors])
        left = leftovers(store)
    n = len(add["rows"])
    return {"store": kind, "nodes": nodes, "alive": alive, "pods": nodes * pods, "attachments": n,
            "allocated": len(ok), "failed": len(failed), "errors": [r.get("error") for r in failed][:5],
            "add_seconds": add["wall"], "alloc_per_s": len(ok) / add["wall"] if add["wall"] else 0.0,
            # A DEL that succeeded has "ip" (None); "error" alone is an attempt that was retried (code 11).
            "del_seconds": del_wall, "del_errors": sum(1 for r in del_rows if "ip" not in r),
            "del_retried": [r.get("error") for r in del_rows if r.get("error")][:3],
            "retries": sum(r["retries"] for r in add["rows"]),
            "add_retried": [r.get("error") for r in add["rows"] if r.get("error") and r.get("ip")][:3],
            "duplicates": dups, "leaks": left,
            "killed": add["killed"], "reconciled": freed,
            "mean_batch": round(add["served"] / add["batches"], 2) if add["batches"] else None,
            "calls_per_alloc": {k: round(v / max(len(ok), 1), 2) for k, v in sorted(add["calls"].items())}}


# ---- the two stores ------------------------------------------------------------------------------------------


def run_etcd(pods: int = PODS_PER_NODE, one_pool: bool = False, **kw: Any) -> dict[str, Any]:
    from ipam.whereabouts.config import EtcdConf
    from ipam.whereabouts.store_etcd import EtcdStore
    from tests.support.etcd import running_cluster

    with running_cluster(Path(tempfile.gettempdir())) as cluster:
        prefix = f"/scale-{uuid.uuid4().hex[:6]}/"
        backend: dict[str, Any] = {"datastore": "etcd", "endpoints": cluster.endpoints, "etcd_prefix": prefix,
                                   "_one_pool": one_pool}
        store = EtcdStore(EtcdConf(endpoints=tuple(cluster.endpoints), prefix=prefix))
        try:
            return storm("etcd", backend, store, pods=pods, **kw)
        finally:
            store.close()


def run_api(pods: int = PODS_PER_NODE, **kw: Any) -> dict[str, Any]:
    from cni.k8s.client import Client
    from conformance.apiserver import ApiServerDouble
    from ipam.whereabouts.store_k8s import K8sStore

    with tempfile.TemporaryDirectory(prefix="multinic-scale-api-") as d, ApiServerDouble(d) as api:
        backend = {"kubernetes": {"kubeconfig": api.kubeconfig_path()}}
        client = Client.from_kubeconfig(api.kubeconfig_path())
        try:
            return storm("api", backend, K8sStore(client, "kube-system"), pods=pods, **kw)
        finally:
            client.close()


# ---- the floors: what the stores themselves sustain here, with no whereabouts logic at all -------------------------

# One of 8 client processes: etcd — compare-and-swap puts of a 12 KB value (a half-full /24 slice pool) on a key of
# its own, the one write an allocation batch needs; API double — POSTs of one small OverlappingRangeIPReservation,
# the one request every allocation needs. Same go-file start as the storm.
FLOOR_WORKER = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
if args["kind"] == "etcd":
    from ipam.whereabouts.store_etcd import EtcdClient
    c = EtcdClient(args["endpoints"])
    key, value, rev = f"/floor/{args['i']}".encode(), b"x" * 12000, None
    def op(n):
        global rev
        rev = c.put_if(key, value, rev)
        assert rev is not None
else:
    from cni.k8s.client import Client
    c = Client.from_kubeconfig(args["kubeconfig"])
    def op(n):
        c.create_cr("whereabouts.cni.cncf.io", "v1alpha1", "kube-system", "overlappingrangeipreservations",
                    {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
                     "metadata": {"name": f"floor-{args['i']}-{n}"},
                     "spec": {"containerid": "c", "podref": "floor/p", "ifname": "net1"}})
op(-1)
print("ready", flush=True)
while not os.path.exists(args["go"]):
    time.sleep(0.005)
for n in range(args["count"]):
    op(n)
print("done", flush=True)
"""


def _floor(kind: str, count: int, **kw: Any) -> float:
    """Operations per second of 8 client processes doing ``kind``'s floor operation ``count`` times each."""
    with tempfile.TemporaryDirectory(prefix="multinic-floor-") as d:
        go = os.path.join(d, "go")
        procs = [subprocess.Popen([sys.executable, "-c", FLOOR_WORKER,
                                   json.dumps({"kind": kind, "i": i, "count": count, "go": go, **kw})],
                                  cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
                 for i in range(NODES)]
        try:
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            t0 = time.time()
            Path(go).touch()
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "done"
            return NODES * count / (time.time() - t0)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()


def floors() -> dict[str, float]:
    """etcd's compare-and-swap puts/s (3 members, this disk) and the API double's POSTs/s, 8 clients each."""
    from conformance.apiserver import ApiServerDouble
    from tests.support.etcd import running_cluster

    with running_cluster(Path(tempfile.gettempdir())) as cluster:
        etcd = _floor("etcd", 150, endpoints=cluster.endpoints)
    with tempfile.TemporaryDirectory(prefix="multinic-floor-api-") as d, ApiServerDouble(d) as api:
        post = _floor("api", 150, kubeconfig=api.kubeconfig_path())
    return {"etcd_cas_12kb_per_s": etcd, "api_post_per_s": post}


def summary(etcd: dict[str, Any], api: dict[str, Any]) -> str:
    return (f"whereabouts scale: etcd {etcd['alloc_per_s']:.0f} alloc/s, api {api['alloc_per_s']:.0f} alloc/s, "
            f"{etcd['pods']} pods in {etcd['add_seconds']:.1f} s, {etcd['duplicates'] + api['duplicates']} "
            f"duplicates, {etcd['leaks'] + api['leaks']} leaks")


def main() -> int:
    # The same storm without slices (every node on one pool, as before issue #17), smaller, under the same load:
    # the ratio says what slicing buys on this machine whatever else runs on it.
    base = run_etcd(pods=25, one_pool=True)
    print(json.dumps({"baseline_one_pool": base}), flush=True)
    etcd = run_etcd()
    print(json.dumps({k: v for k, v in etcd.items()}), flush=True)
    api = run_api()
    print(json.dumps({k: v for k, v in api.items()}), flush=True)
    fl = floors()
    print(json.dumps({"floors": fl}), flush=True)
    print(f"etcd: node slices {etcd['alloc_per_s']:.1f} alloc/s vs one pool {base['alloc_per_s']:.1f} alloc/s "
          f"(200 pods) = {etcd['alloc_per_s'] / max(base['alloc_per_s'], 1e-9):.2f}x", flush=True)
    print(f"floors (8 clients, no whereabouts logic): etcd {fl['etcd_cas_12kb_per_s']:.0f} CAS puts/s of a 12 KB "
          f"pool, API double {fl['api_post_per_s']:.0f} POSTs/s; whereabouts = {etcd['alloc_per_s'] / fl['etcd_cas_12kb_per_s']:.2f}x "
          f"and {api['alloc_per_s'] / fl['api_post_per_s']:.2f}x of them (load average "
          f"{os.getloadavg()[0]:.1f})", flush=True)
    print(summary(etcd, api), flush=True)
    bad = etcd["duplicates"] + api["duplicates"] + etcd["leaks"] + api["leaks"] + etcd["failed"] + api["failed"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
