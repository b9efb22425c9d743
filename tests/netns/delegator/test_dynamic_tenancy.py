"""The hostile tenant through hot-plug (dynamicNetworks): a running pod's annotation is edited to ask for what the
node's multi-tenant policy refuses (cni/delegator/tenancy.py). The daemon refuses each new attachment with a
FailedAddingInterface event naming the key that would allow it, and nothing changes: the pod's links, the host's
NAT rules for the attacked ports, the canary outside the allowed paths, the host bridge's addresses.

(The rest of the hostile-tenant suite, thin and thick mode: tests/reliability/test_rel_tenancy.py.)
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni.delegator import tenancy
from tests.netns.delegator.test_dynamic_networks import Node, node, wait_for  # noqa: F401  (fixture)
from tests.support.nsfix import sh

pytestmark = [pytest.mark.root, pytest.mark.parametrize("plugins", ["native"], indirect=True)]


@pytest.fixture
def canary() -> Iterator[Path]:
    # Outside /tmp (which the test suites add to allowedPaths) and outside the default roots.
    d = Path("/var/tmp") / f"multinic-hotplug-canary-{secrets.token_hex(3)}"
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_hotplug_attacks_are_refused_and_change_nothing(node: Node, canary: Path) -> None:  # noqa: F811
    w = node.world
    uplinks = sorted(tenancy.uplinks_from_proc(Path("/proc/net/route").read_text(),
                                               Path("/proc/net/ipv6_route").read_text()))
    evil = w.macvlan("evil-path", "10.61.21.0/24")
    evil["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "10.61.21.0/24"}]], "dataDir": str(canary / "x")}
    w.add_nad("evil-path", evil)
    w.add_nad("evil-bridge", {"cniVersion": "1.0.0", "type": "bridge", "bridge": w.cluster_bridge,
                              "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.61.22.0/24"}]],
                                       "dataDir": str(w.ipam_dir / "hl")}})
    w.add_nad("evil-gw", {"cniVersion": "1.0.0", "type": "bridge", "bridge": f"bx{secrets.token_hex(3)}",
                          "isGateway": True, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.61.23.0/24"}]],
                                                      "dataDir": str(w.ipam_dir / "hl")}})
    expected = {"hostPortPolicy", "allowedPaths", "allowedBridges", "hostNetworkChanges"}
    items = [{"name": "blue"}, {"name": "blue", "interface": "hp0", "portMappings": [{"hostPort": 22,
                                                                                      "containerPort": 22}]},
             {"name": "evil-path"}, {"name": "evil-bridge"}, {"name": "evil-gw"}]
    if uplinks:
        w.add_nad("evil-master", w.macvlan("evil-master", "10.61.24.0/24", master=uplinks[0]))
        items.append({"name": "evil-master"})
        expected.add("allowedMasters")
    ns, cid = node.add_pod("hostile", "blue")
    links_before = w.links(ns)
    bridge_before = sh("ip", "-o", "-4", "addr", "show", "dev", w.cluster_bridge)
    on_bridge_before = sh("ip", "-o", "link", "show", "master", w.cluster_bridge)
    node.set_networks("hostile", json.dumps(items))
    wait_for(f"{len(expected)} FailedAddingInterface events",
             lambda: node.reasons("hostile").count("FailedAddingInterface") >= len(expected), timeout=15)
    msgs = [e["message"] for e in w.events("hostile") if e["reason"] == "FailedAddingInterface"]
    for key in expected:
        assert any(key in m for m in msgs), (key, msgs)
    assert any("host port 22/tcp" in m for m in msgs)
    assert w.links(ns) == links_before
    assert not canary.exists()
    assert sh("ip", "-o", "-4", "addr", "show", "dev", w.cluster_bridge) == bridge_before
    assert sh("ip", "-o", "link", "show", "master", w.cluster_bridge) == on_bridge_before
    assert "--dport 22 " not in "\n".join(line for line in sh("iptables-save", "-t", "nat").splitlines()
                                          if cid in line)
    node.del_pod("hostile", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}
    assert not canary.exists()


def test_hotplug_uses_the_profile_the_namespace_label_selects(node: Node) -> None:  # noqa: F811
    """policyProfiles through hot-plug: the pod's Namespace is labelled with a profile that allows a host-port
    window; a hot-added attachment asking for a port in it is added, one asking for port 22 is refused naming the
    profile's key."""
    w = node.world
    ns_obj = {"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "default", "labels": {tenancy.PROFILE_LABEL: "ports"}}}
    if w.kind == "api":
        w.api.seed(ns_obj, plural="namespaces")
    else:
        (w.manifests / "Namespace__default.json").write_text(json.dumps(ns_obj))
    node.stop()
    node.conf = w.conf(dynamicNetworks=True, policyProfiles={"ports": {"hostPortPolicy": [{"ports": "30000-32767"}]}})
    (node.conf_dir / "00-multinic.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": node.conf["name"], "plugins": [node.conf]}))
    node.start()
    ns, cid = node.add_pod("labelled", "blue")
    items = [{"name": "blue"},
             {"name": "green", "interface": "ok0", "portMappings": [{"hostPort": 30999, "containerPort": 80}]},
             {"name": "green", "interface": "hp0", "portMappings": [{"hostPort": 22, "containerPort": 22}]}]
    node.set_networks("labelled", json.dumps(items))
    wait_for("the allowed attachment and the refusal",
             lambda: "ok0" in node.status_ifaces("labelled")
             and "FailedAddingInterface" in node.reasons("labelled"), timeout=15)
    msgs = [e["message"] for e in w.events("labelled") if e["reason"] == "FailedAddingInterface"]
    assert len(msgs) == 1 and "host port 22/tcp" in msgs[0] and "policyProfiles.ports.hostPortPolicy" in msgs[0], msgs
    assert "hp0" not in node.status_ifaces("labelled")
    node.del_pod("labelled", ns, cid)
    assert w.leftovers() == {"cache": [], "ipam": []}
