"""A pod DEL unregisters the pod's links in one kernel batch (cni.netlink.batched_link_deletes).

The native plugins register their pod link with the delegator's batch instead of deleting it; the
batch gives the links a device group no link of the pod netns has and deletes that group with one
RTM_DELLINK. What the tests can see: every pod link is gone after the DEL, links of the netns that
are in some group (one in exactly the group the search starts from) survive, a crash after the
group was set leaves links that the retried DEL removes, a failing group delete falls back to
deleting by name, and a plugin exec'd on its own (no batch) deletes at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni import faults
from cni.netlink import FIRST_GROUP
from tests.support.nsfix import REF_CNI, sh

# The group a bystander link of the pod netns is in besides FIRST_GROUP.
OTHER_GROUP = 7


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> str:
    """Native plugins only: the batch is theirs (an exec'd plugin deletes its link itself, at once)."""
    from cni import invoke

    monkeypatch.setattr(invoke, "_force_exec", set())
    return "native"


@pytest.fixture
def trace(tmp_path: Path) -> Iterator[Path]:
    """The fault points this process reaches, one line each (cni.faults' trace), disarmed afterwards."""
    path = tmp_path / "trace"
    faults.arm(trace=str(path))
    try:
        yield path
    finally:
        faults.arm()


def _group_deletes(trace: Path) -> int:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return sum(1 for line in lines if line.split()[1:2] == ["after-link-group"])


def _groups(ns: str) -> dict[str, int]:
    """Link name → device group in ``ns`` (``ip -d`` prints ``group default`` for 0)."""
    out: dict[str, int] = {}
    for line in sh("ip", "-o", "-d", "link", "show", ns=ns).splitlines():
        name = line.split(": ")[1].split("@")[0]
        m = re.search(r" group (\S+)", line)
        assert m, line
        out[name] = 0 if m.group(1) == "default" else int(m.group(1), 0)
    return out


def _pod(world: Any, name: str) -> tuple[str, str]:
    """A pod with the bench's shape: eth0 bridge (cluster network), net1 and net2 macvlans; ADD done.

    The pod netns also holds links that are not the pod's: a veth pair, one end in group FIRST_GROUP
    (the number the group search starts from), the other in OTHER_GROUP. Returns (netns, containerID).
    """
    world.add_nad("net-a", world.macvlan("net-a", "172.16.0.0/24"))
    world.add_nad("net-b", world.macvlan("net-b", "172.18.0.0/24"))
    world.add_pod(name, "net-a,net-b")
    ns = world.scene.netns("p")
    sh("ip", "link", "add", "keep0", "group", str(FIRST_GROUP), "type", "veth", "peer", "name", "keep1", ns=ns)
    sh("ip", "link", "set", "keep1", "group", str(OTHER_GROUP), ns=ns)
    cid = f"cid-{name}"
    call = world.cni("ADD", cid, ns, ("default", name))
    assert call.ok, call.doc
    assert world.links(ns) == {"lo", "eth0", "net1", "net2", "keep0", "keep1"}
    return ns, cid


def _bridge_ports(world: Any) -> set[str]:
    out = sh("ip", "-o", "link", "show", "master", world.cluster_bridge)
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


BYSTANDERS = {"lo": 0, "keep0": FIRST_GROUP, "keep1": OTHER_GROUP}


def test_pod_del_removes_every_pod_link_with_one_group_delete_and_spares_other_groups(world: Any, trace: Path) -> None:
    ns, cid = _pod(world, "gd1")
    host_ports = _bridge_ports(world)
    assert len(host_ports) == 1  # the pod's host veth end
    call = world.cni("DEL", cid, ns, ("default", "gd1"))
    assert call.ok, call.doc
    assert _groups(ns) == BYSTANDERS  # the pod's links gone; the others there, in their groups
    assert not _bridge_ports(world) & host_ports  # the host end went with the pod end
    assert _group_deletes(trace) == 1  # eth0, net1 and net2 in one group operation
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_crash_after_the_group_was_set_leaves_links_the_retried_del_removes(world: Any, tmp_path: Path) -> None:
    ns, cid = _pod(world, "gd2")
    trace = tmp_path / "exec-trace"
    crashed = world.cni("DEL", cid, ns, ("default", "gd2"), binary=True,
                        extra_env={"MULTINIC_FAULTS": "after-link-group:kill", "MULTINIC_FAULTS_TRACE": str(trace)})
    assert crashed.rc == -9, (crashed.rc, crashed.stderr)
    groups = _groups(ns)
    pod_groups = {groups[n] for n in ("eth0", "net1", "net2")}
    # All three were put in one group, and it is none of the groups the netns used (0, the bystanders').
    assert len(pod_groups) == 1 and not pod_groups & set(BYSTANDERS.values()), groups
    assert {n: groups[n] for n in BYSTANDERS} == BYSTANDERS
    assert world.leftovers()["cache"]  # the record is still there for the retry
    retried = world.cni("DEL", cid, ns, ("default", "gd2"))
    assert retried.ok, retried.doc
    assert _groups(ns) == BYSTANDERS
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_failed_group_delete_falls_back_to_deleting_each_link(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between "group set" and the group delete, the real kernel state changes: ``lo`` (which cannot be
    deleted) joins the group, so the group delete fails with EOPNOTSUPP and deletes nothing, and net1
    vanishes. The fallback deletes the others by name; the vanished one is success."""
    from cni.netlink import rtnl

    ns, cid = _pod(world, "gd3")
    real = rtnl.Rtnl.link
    seen: list[int] = []

    def link(self: Any, command: str, **kw: Any) -> list[Any]:
        if command == "del" and kw.get("index") == 0 and "group" in kw:
            seen.append(kw["group"])
            sh("ip", "link", "set", "lo", "group", str(kw["group"]), ns=ns)
            sh("ip", "link", "del", "net1", ns=ns)
        return real(self, command, **kw)

    monkeypatch.setattr(rtnl.Rtnl, "link", link)
    call = world.cni("DEL", cid, ns, ("default", "gd3"))
    assert call.ok, call.doc
    assert len(seen) == 1
    assert world.links(ns) == {"lo", "keep0", "keep1"}
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_undeletable_link_is_a_del_error_naming_network_and_interface(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the fallback fails too, DEL fails naming the pod, the network and the interface; the cache
    stays, and the retry (the kernel state repaired) finishes the job."""
    from cni.netlink import rtnl

    ns, cid = _pod(world, "gd4")
    real = rtnl.Rtnl.link

    def link(self: Any, command: str, **kw: Any) -> list[Any]:
        if command == "del" and kw.get("ifname") == "net2":
            raise rtnl.netlink_error()(1, "Operation not permitted")  # EPERM, as a kernel policy would refuse
        if command == "del" and kw.get("index") == 0 and "group" in kw:
            sh("ip", "link", "set", "lo", "group", str(kw["group"]), ns=ns)
        return real(self, command, **kw)

    monkeypatch.setattr(rtnl.Rtnl, "link", link)
    call = world.cni("DEL", cid, ns, ("default", "gd4"))
    assert not call.ok
    assert re.search(r"default/gd4.*net-b.*error deleting net2: failed to delete net2 in /run/netns/", call.doc["msg"]), call.doc
    assert "net2" in world.links(ns) and not {"eth0", "net1"} & world.links(ns)
    assert world.leftovers()["cache"]
    monkeypatch.setattr(rtnl.Rtnl, "link", real)
    sh("ip", "link", "set", "lo", "group", "default", ns=ns)
    again = world.cni("DEL", cid, ns, ("default", "gd4"))
    assert again.ok, again.doc
    assert world.links(ns) == {"lo", "keep0", "keep1"}
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_drop_in_plugin_exec_deletes_its_link_at_once(scene: Any, multinic_bin: str, tmp_path: Path) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    conf = {"cniVersion": "1.0.0", "name": "gd", "type": "macvlan", "master": master, "mode": "bridge"}
    trace = tmp_path / "trace"
    env = {**os.environ, "CNI_CONTAINERID": "gd5", "CNI_NETNS": f"/run/netns/{ns}", "CNI_IFNAME": "net1",
           "CNI_PATH": REF_CNI, "MULTINIC_FAULTS_TRACE": str(trace)}
    for command in ("ADD", "DEL"):
        out = subprocess.run([multinic_bin, "plugin", "macvlan"], input=json.dumps(conf).encode(), capture_output=True,
                             env={**env, "CNI_COMMAND": command}, check=False, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    assert "net1" not in sh("ip", "-o", "link", "show", ns=ns)
    assert _group_deletes(trace) == 0


def test_add_rollback_removes_the_made_links_with_one_group_delete(world: Any, trace: Path) -> None:
    """net2's master does not exist: ADD fails after eth0 and net1 were made, and the rollback's DELs
    unregister both together (the failed attachment's own undo ran before, inside its plugin)."""
    world.add_nad("net-a", world.macvlan("net-a", "172.16.0.0/24"))
    world.add_nad("net-b", world.macvlan("net-b", "172.18.0.0/24", master="gdnomaster0"))
    world.add_pod("gd6", "net-a,net-b")
    ns = world.scene.netns("p")
    sh("ip", "link", "add", "keep0", "group", str(FIRST_GROUP), "type", "veth", "peer", "name", "keep1", ns=ns)
    sh("ip", "link", "set", "keep1", "group", str(OTHER_GROUP), ns=ns)
    call = world.cni("ADD", "cid-gd6", ns, ("default", "gd6"))
    assert not call.ok and "gdnomaster0" in call.doc["msg"], call.doc
    assert _groups(ns) == BYSTANDERS
    assert _group_deletes(trace) == 1
    assert world.leftovers() == {"cache": [], "ipam": []}
