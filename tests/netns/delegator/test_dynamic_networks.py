"""dynamicNetworks: the real daemon adds and removes a running pod's secondary interfaces when its
``k8s.v1.cni.cncf.io/networks`` annotation changes — real namespaces, the API double or a manifest directory.

The runtime's ADD runs in-process (as the thin plugin would), the daemon process watches the pod and the
attachment cache; every test ends with the runtime's DEL and checks that nothing is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.daemon.test_thick_mode import SHIM, Daemon
from tests.netns.delegator.conftest import World
from tests.support.nsfix import sh

pytestmark = [pytest.mark.root, pytest.mark.parametrize("plugins", ["native"], indirect=True)]

NETWORKS = "k8s.v1.cni.cncf.io/networks"
REAL_PY = os.path.realpath(sys.executable)
WAIT = 5.0  # the promise: a change reaches the pod within 5 s


def wait_for(what: str, cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.1)


class Node:
    """The world plus a running daemon whose CNI conf dir enables dynamicNetworks."""

    def __init__(self, world: World, tmp: Path, *daemon_env: tuple[str, str]) -> None:
        self.world = world
        self.tmp = tmp
        self.conf = world.conf(dynamicNetworks=True)
        self.conf_dir = tmp / "daemon-net.d"
        self.conf_dir.mkdir(exist_ok=True)
        (self.conf_dir / "00-multinic.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": self.conf["name"], "plugins": [self.conf]}))
        self.daemon: Daemon | None = None
        self.start(*daemon_env)

    def start(self, *env: tuple[str, str]) -> None:
        old = {k: os.environ.get(k) for k, _ in env}
        os.environ.update(dict(env))
        try:
            self.daemon = Daemon(str(self.tmp), "--cni-conf-dir", str(self.conf_dir))
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def add_pod(self, name: str, networks: str | None) -> tuple[str, str]:
        self.world.add_pod(name, networks)
        ns = self.world.scene.netns("dyn")
        r = self.world.cni("ADD", f"cid-{name}", ns, ("default", name), self.conf)
        assert r.ok, r.doc
        return ns, f"cid-{name}"

    def set_networks(self, name: str, value: str) -> None:
        w = self.world
        if w.kind == "api":
            from cni.k8s.client import Client

            c = Client.from_kubeconfig(w.api.kubeconfig_path())
            try:
                c.patch(f"/api/v1/namespaces/default/pods/{name}", {"metadata": {"annotations": {NETWORKS: value}}})
            finally:
                c.close()
        else:
            p = w.manifests / f"Pod_default_{name}.json"
            pod = json.loads(p.read_text())
            pod["metadata"]["annotations"][NETWORKS] = value
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(pod))
            os.replace(tmp, p)

    def status_ifaces(self, name: str) -> list[str]:
        return [e.get("interface", "") for e in self.world.network_status(name) or []]

    def del_pod(self, name: str, ns: str, cid: str) -> None:
        r = self.world.cni("DEL", cid, ns, ("default", name), self.conf)
        assert r.ok, r.doc

    def reasons(self, pod: str) -> list[str]:
        return [e["reason"] for e in self.world.events(pod)]


@pytest.fixture
def node(world: World, tmp_path: Path) -> Iterator[Node]:
    if not os.path.exists("/usr/bin/curl"):
        pytest.skip("needs curl to talk HTTP over the unix socket")
    world.add_nad("blue", world.macvlan("blue", "10.61.1.0/24"))
    world.add_nad("green", world.macvlan("green", "10.61.2.0/24"))
    world.add_nad("red", world.macvlan("red", "10.61.3.0/24", sbr=True, gateway="10.61.3.1"))
    n = Node(world, tmp_path)
    try:
        yield n
    finally:
        n.stop()


def test_added_network_appears_within_seconds_and_removal_releases_it(node: Node) -> None:
    ns, cid = node.add_pod("p1", "blue")
    w = node.world
    assert w.links(ns) >= {"eth0", "net1"}
    node.set_networks("p1", "blue,green")
    wait_for("net2 in the pod", lambda: "net2" in w.links(ns))
    assert w.addrs(ns, "net2")[0].startswith("10.61.2.")
    wait_for("net2 in network-status", lambda: "net2" in node.status_ifaces("p1"))
    assert "AddedInterface" in node.reasons("p1")
    assert [a for a in w.leftovers()["ipam"] if "10.61.2." in a]
    code, metrics = node.daemon.get("/metrics")  # type: ignore[union-attr]
    assert 'multinic_dynamic_changes_total{op="add",result="success"} 1' in metrics
    node.set_networks("p1", "blue")
    wait_for("net2 gone", lambda: "net2" not in w.links(ns))
    wait_for("net2 gone from network-status", lambda: node.status_ifaces("p1") == ["eth0", "net1"])
    assert "RemovedInterface" in node.reasons("p1")
    assert not [a for a in w.leftovers()["ipam"] if "10.61.2." in a]
    node.del_pod("p1", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


def test_two_at_once_then_remove_a_cold_plugged_one(node: Node) -> None:
    ns, cid = node.add_pod("p2", "blue")
    w = node.world
    node.set_networks("p2", "blue,green,red")
    wait_for("net2 and net3", lambda: {"net2", "net3"} <= w.links(ns))
    # red has sbr: its table holds the default route via its gateway
    wait_for("sbr rule", lambda: "lookup" in sh("ip", "rule", ns=ns) and "10.61.3." in sh("ip", "rule", ns=ns))
    node.set_networks("p2", "green,red")  # blue was attached when the sandbox was made
    wait_for("net1 gone", lambda: "net1" not in w.links(ns))
    assert {"net2", "net3"} <= w.links(ns)
    wait_for("status", lambda: node.status_ifaces("p2") == ["eth0", "net2", "net3"])
    node.del_pod("p2", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}
    assert "10.61.3." not in sh("ip", "rule", ns=ns)


def test_rename_is_remove_then_add_and_a_selection_without_name_keeps_its_name(node: Node) -> None:
    ns, cid = node.add_pod("p3", "blue,green")
    w = node.world
    node.set_networks("p3", json.dumps([{"name": "green"}, {"name": "blue", "interface": "fast0"}]))
    wait_for("fast0", lambda: "fast0" in w.links(ns) and "net1" not in w.links(ns))
    assert "net2" in w.links(ns)  # green kept its name
    node.del_pod("p3", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


def test_policy_refusal_is_an_event_and_changes_nothing(node: Node) -> None:
    w = node.world
    w.add_nad("odd", {"cniVersion": "1.0.0", "type": "vlan", "master": w.uplink, "vlanId": 5,
                      "ipam": w.ipam("10.61.9.0/24")})
    w.add_nad("elsewhere", w.macvlan("elsewhere", "10.61.8.0/24"),
              annotations={"k8s.v1.cni.cncf.io/nodeSelector": "zone=far"})
    ns, cid = node.add_pod("p4", "blue")
    before = w.links(ns)
    node.set_networks("p4", "blue,odd,elsewhere")
    wait_for("two FailedAddingInterface events", lambda: node.reasons("p4").count("FailedAddingInterface") >= 2)
    msgs = " ".join(e["message"] for e in w.events("p4") if e["reason"] == "FailedAddingInterface")
    assert "vlan" in msgs and "zone=far" in msgs
    assert w.links(ns) == before
    node.del_pod("p4", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


def test_failed_add_removes_only_that_attachment(node: Node) -> None:
    w = node.world
    w.add_nad("broken", w.macvlan("broken", "10.61.7.0/24", master="nosuchlink0"))
    ns, cid = node.add_pod("p5", "blue")
    addr = w.addrs(ns, "net1")
    node.set_networks("p5", "blue,broken")
    wait_for("FailedAddingInterface", lambda: "FailedAddingInterface" in node.reasons("p5"))
    assert w.links(ns) == {"lo", "eth0", "net1"} and w.addrs(ns, "net1") == addr
    assert not [a for a in w.leftovers()["ipam"] if "10.61.7." in a]
    node.del_pod("p5", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


@pytest.mark.parametrize("world", ["api"], indirect=True)  # only an API can refuse a write
def test_status_patch_refused_is_retried(node: Node) -> None:
    w = node.world
    ns, cid = node.add_pod("p6", "blue")
    w.api.fail_next(3, 500, methods=("PUT",))  # network-status goes through pods/status with PUT
    node.set_networks("p6", "blue,green")
    wait_for("net2", lambda: "net2" in w.links(ns))
    wait_for("network-status after retries", lambda: "net2" in node.status_ifaces("p6"), timeout=15)
    node.del_pod("p6", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


@pytest.mark.parametrize("point", ["hotplug-after-cache-write", "hotplug-after-add"])
def test_daemon_killed_mid_change_finishes_after_restart(node: Node, point: str) -> None:
    w = node.world
    ns, cid = node.add_pod("p7", "blue")
    node.stop()
    node.start(("MULTINIC_FAULTS", f"{point}:kill"))
    node.set_networks("p7", "blue,green")
    assert node.daemon is not None
    wait_for("the daemon to die at the fault point", lambda: node.daemon.proc.poll() is not None)  # type: ignore[union-attr]
    node.daemon = None
    node.start()
    wait_for("net2 after the restart", lambda: "net2" in w.links(ns))
    wait_for("status", lambda: "net2" in node.status_ifaces("p7"))
    green = [a for a in w.leftovers()["ipam"] if "10.61.2." in a]
    assert len(green) == 1, green  # the interrupted attempt's reservation was released, not duplicated
    node.del_pod("p7", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


def test_runtime_del_during_a_hotplug_removes_everything(node: Node) -> None:
    w = node.world
    ns, cid = node.add_pod("p8", "blue")
    node.set_networks("p8", "blue,green,red")
    # The runtime's DEL through the daemon (the shim), racing the hot-plug: it waits for the sandbox lock.
    assert node.daemon is not None
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "DEL", "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{ns}",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "MULTINIC_SOCKET": node.daemon.sock,
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p8;K8S_POD_UID={w.uids[('default', 'p8')]}",
           "MULTINIC_THIN": os.path.join(os.path.dirname(sys.executable), "multinic")}
    time.sleep(0.3)
    r = subprocess.run([REAL_PY, "-I", "-S", SHIM], input=json.dumps(node.conf).encode(), capture_output=True,
                       env=env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(1.5)  # a few daemon passes: nothing may come back for a sandbox that is gone
    assert w.links(ns) == {"lo"}
    assert w.leftovers() == {"cache": [], "ipam": []}


@pytest.mark.parametrize("world", ["local"], indirect=True)  # the loop's behaviour, whatever the source
def test_turning_dynamic_networks_off_in_the_conf_dir_stops_hotplugs_without_a_restart(node: Node) -> None:
    """The latest config for a cache dir wins: the daemon rescans its conf dir every pass, so an admin who sets
    ``dynamicNetworks: false`` (or drops it) in the node's config stops hot-plugs; setting it back resumes them."""
    w = node.world
    ns, cid = node.add_pod("p9", "blue")
    conflist = node.conf_dir / "00-multinic.conflist"
    off = {k: v for k, v in node.conf.items() if k != "dynamicNetworks"}
    tmp = conflist.with_suffix(".tmp")
    tmp.write_text(json.dumps({"cniVersion": "1.0.0", "name": node.conf["name"], "plugins": [off]}))
    os.replace(tmp, conflist)
    time.sleep(1.0)  # two passes of the daemon (0.5 s each): the rescan has seen the new file
    node.set_networks("p9", "blue,green")
    time.sleep(2.0)  # four more passes: none may touch the pod
    assert "net2" not in w.links(ns), "a hot-plug ran after dynamicNetworks was turned off"
    tmp.write_text(json.dumps({"cniVersion": "1.0.0", "name": node.conf["name"], "plugins": [node.conf]}))
    os.replace(tmp, conflist)
    wait_for("net2 once dynamicNetworks is back on", lambda: "net2" in w.links(ns))
    node.del_pod("p9", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


@pytest.mark.parametrize("world", ["local"], indirect=True)  # the loop's behaviour, whatever the source
def test_an_edit_is_tried_at_once_even_while_a_failed_one_backs_off(node: Node) -> None:
    """Retries of a failing annotation back off (1, 2, 4, 8 s …) so a broken NAD does not flood the pod with
    events; the pod's author fixing the annotation must not wait for that backoff (the 5 s promise)."""
    w = node.world
    w.add_nad("broken", w.macvlan("broken", "10.61.7.0/24", master="nosuchlink0"))
    ns, cid = node.add_pod("p10", "blue")
    node.set_networks("p10", "blue,broken")
    # Failures at ≈ 0, 1, 3 and 7 s: the next retry of this value is 8 s away.
    wait_for("four FailedAddingInterface", lambda: node.reasons("p10").count("FailedAddingInterface") >= 4,
             timeout=15)
    node.set_networks("p10", "blue,green")
    wait_for("green as net2 within 5 s of the fix", lambda: "net2" in w.links(ns))
    assert w.addrs(ns, "net2")[0].startswith("10.61.2.")
    node.del_pod("p10", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}


@pytest.mark.parametrize("world", ["local"], indirect=True)  # the loop's behaviour, whatever the source
def test_an_annotation_that_does_not_parse_is_an_event_changes_nothing_and_its_fix_applies_at_once(
        node: Node) -> None:
    w = node.world
    ns, cid = node.add_pod("p11", "blue")
    before = w.links(ns)
    node.set_networks("p11", '[{"name": "green"')
    wait_for("FailedAddingInterface", lambda: "FailedAddingInterface" in node.reasons("p11"))
    msg = next(e["message"] for e in w.events("p11") if e["reason"] == "FailedAddingInterface")
    assert NETWORKS in msg, msg
    # Let the retries of the bad value back off past 5 s (failures at ≈ 0, 1, 3, 7 s) …
    wait_for("four FailedAddingInterface", lambda: node.reasons("p11").count("FailedAddingInterface") >= 4,
             timeout=15)
    assert w.links(ns) == before
    node.set_networks("p11", "blue,green")  # … then the fix must still apply within 5 s
    wait_for("net2 after the fix", lambda: "net2" in w.links(ns))
    node.del_pod("p11", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}
