"""The scale proof of issue #17 (tests/bench/whereabouts_scale.py): 8 simulated nodes × pods × 2 attachments with
node slices, ADD storm then DEL storm, on a 3-member etcd cluster and on the API server double — every address unique,
every address freed; and with an etcd member killed and a node process SIGKILLed mid-storm: no duplicates, and
nothing left after ``multinic reconcile``'s reconciler.

The fast variants (a few pods per node) run in ``make test``; the full 1000-pod proof is ``slow`` (``make soak``).
Rates are reported, never asserted (the machine's load decides them)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from ipam import reconcile
from ipam.whereabouts.config import EtcdConf
from ipam.whereabouts.store_etcd import EtcdStore
from tests.bench import whereabouts_scale as ws
from tests.support.etcd import running_cluster


def _check(r: dict[str, Any], *, killed: bool = False) -> None:
    print(json.dumps(r))
    assert r["duplicates"] == 0
    assert r["leaks"] == 0
    if not killed:
        assert r["failed"] == 0, r["errors"]
        assert r["allocated"] == r["attachments"] == r["pods"] * 2
        assert r["del_errors"] == 0


def test_storm_on_etcd_fast() -> None:
    _check(ws.run_etcd(pods=3, nodes=4))


def test_storm_on_the_api_double_fast() -> None:
    _check(ws.run_api(pods=3, nodes=4))


def _chaos(tmp_path: Path, pods: int, nodes: int = ws.NODES) -> dict[str, Any]:
    with running_cluster(tmp_path) as cluster:
        prefix = f"/chaos-{uuid.uuid4().hex[:6]}/"
        backend = {"datastore": "etcd", "endpoints": cluster.endpoints, "etcd_prefix": prefix}
        store = EtcdStore(EtcdConf(endpoints=tuple(cluster.endpoints), prefix=prefix))

        def reconcile_now(live_nodes: list[str]) -> int:
            # Every pod was deleted (the storm's DELs, the killed node's pods with their node): no pod is listed.
            rec = reconcile.Reconciler(store, lambda: [], grace=0.0, sleep=lambda s: None,
                                       list_nodes=lambda: set(live_nodes))
            rep = rec.run_once()
            assert not rep.errors, rep.errors
            return len(rep.freed) + len(rep.freed_reservations) + len(rep.freed_slices)

        try:
            return ws.storm("etcd", backend, store, pods=pods, nodes=nodes, chaos=lambda: cluster.kill(0), kill_node=3,
                            reconcile=reconcile_now)
        finally:
            store.close()


def test_member_killed_and_node_sigkilled_mid_storm_fast(tmp_path: Path) -> None:
    r = _chaos(tmp_path, pods=4, nodes=4)
    _check(r, killed=True)
    assert r["killed"] == "node-3" and r["reconciled"] > 0 and r["alive"] == 3


@pytest.mark.slow
def test_scale_proof_1000_pods_on_etcd_and_the_api_double() -> None:
    etcd = ws.run_etcd()
    api = ws.run_api()
    _check(etcd)
    _check(api)
    print(ws.summary(etcd, api))


@pytest.mark.slow
def test_scale_proof_with_chaos(tmp_path: Path) -> None:
    r = _chaos(tmp_path, pods=ws.PODS_PER_NODE)
    _check(r, killed=True)
    assert r["reconciled"] > 0
