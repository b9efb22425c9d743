"""8 simulated nodes (processes) hammer one etcd-backed whereabouts pool while an etcd member is killed:
no address is handed out twice, and after every pod is released nothing is left (no allocation, no reservation)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from cni.spec.request import Request
from ipam.whereabouts import config as wconfig
from ipam.whereabouts.manager import open_store
from tests.support.etcd import EtcdCluster, etcd_cluster  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[3]

# One simulated node: run CMD for pods node-<n>-<i> through the plugin, print one JSON line per pod.
# A CNI error with code 11 (try again later) is retried as kubelet would, at most 5 times, and counted.
WORKER = r"""
import json, sys, time
from cni.spec.errors import CNIError
from cni.spec.request import Request
from ipam.whereabouts import PLUGIN
args = json.loads(sys.argv[1])
if args.get("go"):  # start together: every node is up before any allocates
    import os
    print(json.dumps({"ready": args["node"]}), flush=True)
    while not os.path.exists(args["go"]):
        time.sleep(0.01)
for i in range(args["count"]):
    pod = f"node-{args['node']}-{i}"
    req = Request(command=args["cmd"], container_id=f"cid-{pod}", netns="/x", ifname="net1",
                  cni_args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": pod}, path=("/usr/lib/cni",),
                  config=args["conf"])
    out = {"pod": pod, "retries": 0}
    for attempt in range(6):
        try:
            res = PLUGIN.run(req)
            out["ip"] = str(res.ips[0].address) if res is not None else None
            break
        except CNIError as e:
            out["retries"] += 1
            out["error"] = f"{e.code}: {e}"
            if e.code != 11 or attempt == 5:
                break
            time.sleep(0.2)
    else:
        pass
    print(json.dumps(out), flush=True)
"""

NODES = 8
PER_NODE = 10


def spawn(conf: dict[str, Any], node: int, cmd: str, go: str = "") -> subprocess.Popen[str]:
    env = dict(os.environ, MULTINIC_WHEREABOUTS_FLATFILE="")
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(
        {"conf": conf, "node": node, "count": PER_NODE, "cmd": cmd, "go": go})], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(procs: list[subprocess.Popen[str]], already: str = "") -> list[dict[str, Any]]:
    rows = [json.loads(already)] if already.strip() else []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        rows.extend(json.loads(line) for line in out.splitlines() if line.strip())
    return rows


def test_eight_nodes_with_a_member_killed_no_duplicates_no_leaks(etcd_cluster: EtcdCluster,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    cluster = etcd_cluster
    ipam = {"type": "whereabouts", "range": "10.200.0.0/16", "datastore": "etcd",
            "endpoints": cluster.endpoints, "etcd_prefix": f"/chaos-{uuid.uuid4().hex[:8]}/"}
    conf = {"cniVersion": "1.0.0", "name": "chaos", "type": "macvlan", "ipam": ipam}

    go = tmp_path / "go"
    procs = [spawn(conf, n, "ADD", str(go)) for n in range(NODES)]
    # Every node's interpreter is up before any allocates (a slow start of one must not let the others finish
    # first); then a member is killed as soon as node 0 has its first address: the nodes are under way.
    for p in procs:
        assert p.stdout is not None and "ready" in p.stdout.readline(), (p.stderr.read() if p.stderr else "")
    go.write_text("")
    assert procs[0].stdout is not None
    first = procs[0].stdout.readline()
    victim = 1
    running = sum(p.poll() is None for p in procs)
    assert running > 1, "the nodes finished before the member was killed"
    cluster.kill(victim)
    rows = collect(procs, first)

    assert all("ip" in r for r in rows), [r for r in rows if "ip" not in r][:5]
    ips = [r["ip"] for r in rows]
    assert len(ips) == NODES * PER_NODE
    assert len(set(ips)) == len(ips), "duplicate addresses handed out"

    store = open_store(wconfig.parse(Request(command="ADD", container_id="x", ifname="net1", config=conf)))
    pool = store.read_pool("10.200.0.0-16", "10.200.0.0/16")
    base = int(ipaddress.ip_address("10.200.0.0"))
    stored = {str(ipaddress.ip_address(base + off)): a.podref for off, a in pool.allocations.items()}
    assert {ip.split("/")[0]: f"default/{r['pod']}" for ip, r in zip(ips, rows, strict=True)} == stored
    assert len(store.list_reservations()) == len(ips)

    # Release everything from every node (member still down), then nothing is left.
    rows = collect([spawn(conf, n, "DEL") for n in range(NODES)])
    assert all("error" not in r or r.get("ip", "x") is None for r in rows), [r for r in rows if "error" in r][:5]
    assert store.read_pool("10.200.0.0-16", "10.200.0.0/16").allocations == {}
    assert store.list_reservations() == []
    store.close()


@pytest.fixture(autouse=True, scope="module")
def _restore_member(etcd_cluster: EtcdCluster) -> Any:  # noqa: F811
    yield
    # Leave the module's cluster whole for any later test in this module.
    if etcd_cluster.procs[1] is not None and etcd_cluster.procs[1].poll() is not None:
        etcd_cluster.restart(1)
