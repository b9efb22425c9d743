"""bridge ``vlan``/``vlanTrunk``/``preserveDefaultVlan`` and isGateway+vlan — inside UML only.

Why UML: these keys need bridge VLAN filtering (vlan_filtering=1), which the host kernel lacks
("Operation not supported" when creating such a bridge); the UML kernel's bridge module has it.
No 802.1q module is needed: the VLAN tagging happens inside the bridge.

The plugin runs in-process with a namespace of the test standing in for the node ("host")
namespace, so the bridge and host veths live in that namespace and vanish with it (guest rule:
nothing in the guest's root namespace). IPAM is the reference host-local exec'd from /usr/lib/cni.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cni import invoke, netns
from cni.spec.request import Request
from cni.spec.result import Result
from plugins import bridge

IpFn = Callable[..., subprocess.CompletedProcess[str]]
FEATURES = ("bridge vlan_filtering",)
REF_CNI = "/usr/lib/cni"


@pytest.fixture(autouse=True)
def _reference_ipam(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoke, "_force_exec", {"host-local", "static"})


def add(node: str, pod: str, config: dict[str, Any], cid: str) -> Result:
    req = Request(command="ADD", container_id=cid, netns=f"/run/netns/{pod}", ifname="net1", path=(REF_CNI,), config=config)
    with netns.entered(f"/run/netns/{node}"):
        res = bridge.PLUGIN.run(req)
    assert res is not None
    return res


def delete(node: str, pod: str, config: dict[str, Any], cid: str) -> None:
    req = Request(command="DEL", container_id=cid, netns=f"/run/netns/{pod}", ifname="net1", path=(REF_CNI,), config=config)
    with netns.entered(f"/run/netns/{node}"):
        bridge.PLUGIN.run(req)


def conf(tmp_path: Path, subnet: str = "10.60.0.0/24", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "vlannet", "type": "bridge", "bridge": "gbr0",
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(tmp_path / "ipam")}, **extra}


def port_vlans(ip: IpFn, node: str, port: str) -> dict[int, set[str]]:
    out = subprocess.run(["ip", "netns", "exec", node, "bridge", "-j", "vlan", "show", "dev", port],
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out or "[]")
    return {v["vlan"]: set(v.get("flags", [])) for entry in doc for v in entry.get("vlans", [])}


def ping(pod: str, dst: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", pod, "ping", "-c1", "-W1", dst], capture_output=True, check=False).returncode == 0


@pytest.mark.uml_guest(*FEATURES)
def test_access_ports_isolate_vlans(ip: IpFn, make_netns: Callable[[], str], tmp_path: Path) -> None:
    node, a, b, c = make_netns(), make_netns(), make_netns(), make_netns()
    ra = add(node, a, conf(tmp_path, vlan=100), "a")
    add(node, b, conf(tmp_path, vlan=100), "b")
    add(node, c, conf(tmp_path, vlan=200), "c")
    br = json.loads(ip("-n", node, "-d", "-j", "link", "show", "gbr0").stdout)[0]
    assert br["linkinfo"]["info_data"]["vlan_filtering"] == 1
    vlans = port_vlans(ip, node, ra.interfaces[1].name)
    assert {"PVID", "Egress Untagged"} <= vlans[100]
    assert 1 in vlans  # preserveDefaultVlan defaults to true: the bridge's default VLAN stays
    assert ping(a, "10.60.0.3"), "pods on VLAN 100 must reach each other"
    assert not ping(a, "10.60.0.4"), "a pod on VLAN 200 must not be reachable from VLAN 100"
    delete(node, a, conf(tmp_path, vlan=100), "a")
    assert len(ip("-n", a, "-o", "link", "show").stdout.splitlines()) == 1  # only lo left


@pytest.mark.uml_guest(*FEATURES)
def test_preserve_default_vlan_false_removes_vlan_1(make_netns: Callable[[], str], ip: IpFn, tmp_path: Path) -> None:
    node, a = make_netns(), make_netns()
    res = add(node, a, conf(tmp_path, vlan=100, preserveDefaultVlan=False), "a")
    vlans = port_vlans(ip, node, res.interfaces[1].name)
    assert set(vlans) == {100} and {"PVID", "Egress Untagged"} <= vlans[100]


@pytest.mark.uml_guest(*FEATURES)
def test_vlan_trunk_adds_tagged_vids(make_netns: Callable[[], str], ip: IpFn, tmp_path: Path) -> None:
    node, a = make_netns(), make_netns()
    trunk = [{"id": 42}, {"minID": 300, "maxID": 302}]
    res = add(node, a, conf(tmp_path, vlanTrunk=trunk), "a")
    vlans = port_vlans(ip, node, res.interfaces[1].name)
    assert {42, 300, 301, 302} <= set(vlans)
    assert all("PVID" not in vlans[v] and "Egress Untagged" not in vlans[v] for v in (42, 300, 301, 302))
    assert 1 in vlans


@pytest.mark.uml_guest(*FEATURES)
def test_gateway_with_vlan_lives_on_bridge_dot_vlan(make_netns: Callable[[], str], ip: IpFn, tmp_path: Path) -> None:
    node, a = make_netns(), make_netns()
    res = add(node, a, conf(tmp_path, vlan=100, isGateway=True), "a")
    assert [i.name for i in res.interfaces][3] == "gbr0.100" and len(res.interfaces) == 4
    addrs = json.loads(ip("-n", node, "-j", "addr", "show", "dev", "gbr0.100").stdout)[0]["addr_info"]
    assert "10.60.0.1" in [x["local"] for x in addrs]
    assert ping(a, "10.60.0.1")
