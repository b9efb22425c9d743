"""Crash faults: the plugin (thin: the real ``multinic`` exec'd with MULTINIC_FAULTS) or the daemon (thick) is
SIGKILLed at a step of ADD, then the runtime does what it would (DEL, or GC with an empty valid list), and nothing
may be left: no link (host or pod netns), address, route, rule, iptables/nft rule, IPAM reservation (host-local
files, whereabouts file store), plugin state file or cache file.

The pod is the full one (harness.FAULT_POINTS): eth0 = bridge + host-local + portmap (kubelet's portMappings),
net1 = macvlan + host-local + sbr, net2 = macvlan + whereabouts + tuning. The fault points are
``cni.faults.point(...)`` calls in the delegator, invoke, the interface helpers and host-local's store.

Fast (``make test``): every point × {DEL, GC} once in thin mode, and a few in thick mode.
Slow (``make soak``): ≥ 500 faults chosen at random (seeded, the seed is printed), thin and thick.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.conftest import figure
from tests.reliability.harness import FAULT_POINTS, Call, Daemon, Node, Pod, fault_specs
from tests.support.etcd import etcd_cluster  # noqa: F401  (fixture)

SIGKILLED = -9


@dataclass
class Tally:
    injected: int = 0
    not_fired: int = 0
    leaks: list[str] = field(default_factory=list)
    cleanup_failures: list[str] = field(default_factory=list)
    status_left: int = 0
    by_point: dict[str, int] = field(default_factory=dict)

    def report(self, suite: str) -> None:
        figure(suite, faults_injected=self.injected, leaks=len(self.leaks), not_fired=self.not_fired,
               cleanup_failures=len(self.cleanup_failures), status_left=self.status_left)


def _cleanup_thin(node: Node, pod: Pod, how: str) -> Call:
    if how == "gc":
        return node.inproc("GC", None, node.gc_conf())
    if how == "del-exec":
        return node.exec("DEL", pod)
    return node.inproc("DEL", pod)


def _settle(node: Node, pod: Pod, tally: Tally, what: str, first: Call, retry: Callable[[], Call]) -> None:
    """Cleanup must succeed; a failure is retried once (as a runtime would) and counted either way."""
    if not first.ok:
        tally.cleanup_failures.append(f"{what}: rc={first.rc} {first.doc}")
        again = retry()
        if not again.ok:
            tally.cleanup_failures.append(f"{what} (retry): rc={again.rc} {again.doc}")
    leaks = node.leaks([pod])
    if leaks:
        tally.leaks.extend(f"{what}: {leak}" for leak in leaks)
        node.scrub()
    if node.network_status(pod):
        tally.status_left += 1
    node.drop_pod(pod)


def thin_case(node: Node, i: int, spec: str, how: str, tally: Tally, tmp: Path) -> None:
    pod = node.new_pod(f"crash-{i}")
    trace = str(tmp / f"trace-{i}")
    add = node.exec("ADD", pod, faults=spec, trace=trace)
    fired = add.rc == SIGKILLED
    if fired:
        tally.injected += 1
        tally.by_point[spec] = tally.by_point.get(spec, 0) + 1
        assert add.raw == b"", f"a killed plugin printed {add.raw!r}"
    else:
        tally.not_fired += 1
        assert add.ok, f"ADD without the fault firing failed: {add.doc} {add.stderr[-2000:]}"
    what = f"thin #{i} {spec} then {how}"
    _settle(node, pod, tally, what, _cleanup_thin(node, pod, how), lambda: _cleanup_thin(node, pod, how))


def thick_case(node: Node, i: int, spec: str, how: str, tally: Tally, tmp: Path) -> None:
    pod = node.new_pod(f"tcrash-{i}")
    d = Daemon(tmp / f"d{i}", faults=spec)
    try:
        add = node.shim(d, "ADD", pod)
        time.sleep(0.05)
        fired = not d.alive() and d.proc.returncode == SIGKILLED
        if fired:
            tally.injected += 1
            tally.by_point[spec] = tally.by_point.get(spec, 0) + 1
            # the shim reports the lost daemon as "try again later", saying what happened
            assert add.code == 11, add
            assert "closed the connection without answering" in str(add.doc.get("msg")), add
        else:
            tally.not_fired += 1
            assert add.ok, f"ADD without the fault firing failed: {add.doc}"
        what = f"thick #{i} {spec} then {how}"
        if how == "del-fallback":  # daemon still dead: the shim runs DEL itself in thin mode
            first = node.shim(d, "DEL", pod)
            _settle(node, pod, tally, what, first, lambda: node.shim(d, "DEL", pod))
            return
    finally:
        d.stop()
    d2 = Daemon(tmp / f"d{i}b")  # the node restarts the daemon; the runtime's DEL/GC go to it
    try:
        if how == "gc":
            first = node.shim(d2, "GC", None, node.gc_conf())
            _settle(node, pod, tally, what, first, lambda: node.shim(d2, "GC", None, node.gc_conf()))
        else:
            first = node.shim(d2, "DEL", pod)
            _settle(node, pod, tally, what, first, lambda: node.shim(d2, "DEL", pod))
    finally:
        d2.stop()


def _assert_clean(tally: Tally) -> None:
    assert not tally.leaks, f"{len(tally.leaks)} leak(s) after {tally.injected} faults:\n" + "\n".join(tally.leaks[:60])
    assert not tally.cleanup_failures, "\n".join(tally.cleanup_failures[:30])


def test_leak_detector_sees_what_a_crash_leaves_without_cleanup(node: Node, tmp_path: Path) -> None:
    """The oracle itself: killed after eth0 and net1 were made and nobody cleans up → it must see the leftovers."""
    pod = node.new_pod("undetected")
    add = node.exec("ADD", pod, faults="between-attachments@2")
    assert add.rc == SIGKILLED
    leaks = "\n".join(node.leaks([pod]))
    for what in ("host link on", "iptables-save", "cache file", "host-local reservation", f"{pod.netns}: link eth0",
                 f"{pod.netns}: link net1", f"{pod.netns}: address", "state file"):
        assert what in leaks, f"the leak detector missed {what!r}:\n{leaks}"
    assert node.inproc("DEL", pod).ok
    assert node.leaks([pod]) == []


@pytest.mark.timeout(900)  # slower when the machine is shared
def test_every_crash_point_then_del_or_gc_leaves_nothing_thin(node: Node, tmp_path: Path) -> None:
    """Each fault point × {DEL in-process, DEL by exec, GC}: 30 SIGKILLs of the real binary, 0 leaks."""
    tally = Tally()
    cases = [(spec, how) for spec in fault_specs() for how in ("del", "gc")]
    # a third of the DELs go through the binary, as a runtime calls them
    cases = [(s, "del-exec" if h == "del" and n % 3 == 0 else h) for n, (s, h) in enumerate(cases)]
    for i, (spec, how) in enumerate(cases):
        thin_case(node, i, spec, how, tally, tmp_path)
    tally.report("crash-thin-fast")
    assert tally.not_fired == 0, f"fault points not reached (the ADD path changed?): {tally}"
    assert tally.injected == len(cases) == 2 * sum(FAULT_POINTS.values())
    _assert_clean(tally)
    assert tally.status_left == 0, "network-status left on pods after DEL/GC"


@pytest.mark.timeout(900)  # slower when the machine is shared
def test_daemon_killed_mid_add_then_del_or_gc_leaves_nothing_thick(node: Node, tmp_path: Path) -> None:
    """The daemon dies at a step of ADD (the shim says 11); DEL through the shim's thin fallback, or after a restart."""
    tally = Tally()
    cases = [("after-link@1", "del-fallback"), ("after-ipam-reserve@2", "del"), ("between-plugins@4", "gc"),
             ("between-attachments@2", "del-fallback")]
    for i, (spec, how) in enumerate(cases):
        thick_case(node, i, spec, how, tally, tmp_path)
    tally.report("crash-thick-fast")
    assert tally.injected == len(cases), tally
    _assert_clean(tally)


@pytest.mark.parametrize("datastore", ["etcd", "kubernetes"])
def test_kill_between_whereabouts_reservation_and_pool_write_then_del_leaves_nothing_in_the_store(
        node: Node, datastore: str, request: pytest.FixtureRequest) -> None:
    """The one window where a whereabouts store holds a reservation without a pool entry, on the shared stores."""
    from cni.spec.request import Request
    from ipam.whereabouts import config as wconfig
    from ipam.whereabouts.manager import open_store

    backend: dict[str, object]
    if datastore == "etcd":
        cluster = request.getfixturevalue("etcd_cluster")
        backend = {"datastore": "etcd", "endpoints": cluster.endpoints,
                   "etcd_prefix": f"/crash-{node.scene.tag}-{uuid.uuid4().hex[:6]}/"}
    else:
        backend = {"datastore": "kubernetes", "kubernetes": {"kubeconfig": node.api.kubeconfig_path()}}
    ipam = {"type": "whereabouts", "range": "10.214.0.0/24", **backend}
    node.add_nad("net-wbs", {"cniVersion": "1.1.0", "name": f"wbs-{node.scene.tag}", "plugins": [
        {"type": "macvlan", "master": node.uplink, "mode": "bridge", "ipam": ipam}]})
    pod = node.new_pod(f"wbkill-{datastore[:4]}", networks="net-wbs")
    add = node.exec("ADD", pod, faults="after-wb-reserve@1")
    assert add.rc == SIGKILLED, add
    req = Request(command="ADD", container_id="x", ifname="net1",
                  config={"cniVersion": "1.1.0", "name": "n", "type": "macvlan", "ipam": ipam})
    store = open_store(wconfig.parse(req))
    try:
        assert [r.container_id for r in store.list_reservations()] == [pod.cid], "the kill left no reservation?"
        assert node.exec("DEL", pod).ok
        assert store.list_reservations() == []
        assert all(not p.allocations for p in store.list_pools())
    finally:
        store.close()
    assert node.leaks([pod]) == []


@pytest.mark.slow
@pytest.mark.timeout(10800)
def test_soak_500_random_crashes(node: Node, tmp_path: Path) -> None:
    """≥ 500 SIGKILLs at random points (thin exec, with ~10 % in thick mode), each followed by DEL or GC."""
    seed = int(os.environ.get("MULTINIC_SOAK_SEED", str(int(time.time()))))
    print(f"crash soak seed {seed} (MULTINIC_SOAK_SEED to replay)")
    rng = random.Random(seed)
    specs = fault_specs()
    target = int(os.environ.get("MULTINIC_CRASH_FAULTS", "520"))
    thin, thick = Tally(), Tally()
    i = 0
    while thin.injected + thick.injected < target:
        spec = rng.choice(specs)
        if i % 10 == 9:
            thick_case(node, i, spec, rng.choice(["del-fallback", "del", "gc"]), thick, tmp_path)
        else:
            thin_case(node, i, spec, rng.choice(["del", "del-exec", "gc"]), thin, tmp_path)
        i += 1
    thin.report("crash-thin-soak")
    thick.report("crash-thick-soak")
    _assert_clean(thin)
    _assert_clean(thick)
