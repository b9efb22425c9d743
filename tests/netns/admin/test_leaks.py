"""``multinic leaks [--fix]`` against real leftovers: a simulated reboot (every netns gone; the cache, host-local and
whereabouts files and the portmap rules kept) and reservations/rules whose cache record was lost."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess

import pytest

from tests.netns.admin.conftest import Node, iptables_mentions


def host_local_ips(node: Node) -> list[str]:
    out = []
    for root, _dirs, files in os.walk(node.hl_dir):
        for f in files:
            try:
                ipaddress.ip_address(f)
            except ValueError:
                continue
            out.append(os.path.join(root, f))
    return out


def whereabouts_allocations(node: Node) -> list[str]:
    out = []
    for root, _dirs, files in os.walk(node.wb_dir):
        for f in files:
            if not f.endswith(".json"):
                continue
            doc = json.loads(open(os.path.join(root, f)).read() or "{}")
            if "reservation" in root.lower() and doc:
                out.append(f)
            elif (doc.get("spec") or {}).get("allocations"):
                out.append(f)
    return out


def reboot(node: Node) -> None:
    """All netns gone; the cache, the IPAM files and the iptables rules stay."""
    for name in list(node.scene.namespaces):
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_healthy_node_has_no_leaks(node: Node) -> None:
    node.add_pod("web", "mv,wb", ports=True)
    rc, doc = node.run_json("leaks")
    assert rc == 0 and doc["leaks"] == [] and doc["left"] == []


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_after_a_simulated_reboot_fix_removes_everything_through_del(node: Node, backend: str) -> None:
    if shutil.which("nft" if backend == "nftables" else "iptables-restore") is None:
        pytest.skip(f"needs the {backend} tools")
    node.portmap_backend = backend
    doc = node.conf()
    doc["plugins"][0]["delegates"][0]["plugins"][0].update(ipMasq=True, ipMasqBackend=backend)
    node.write_conf(doc)
    node.add_pod("web", "mv,wb", ports=True)
    node.add_pod("db", "mv", ports=True)
    node.add_pod("lost", "wb", ports=True)
    # A record lost with its sandbox (a wiped cache dir, a half-made ADD): its reservations, allocation and
    # host-port rules then belong to no cached attachment.
    lost_cid = node.pods["lost"][0]
    os.unlink(node.cni_dir / lost_cid)
    reboot(node)
    assert host_local_ips(node) and whereabouts_allocations(node) and iptables_mentions(node.cluster)

    rc, doc = node.run_json("leaks")
    assert rc == 1
    kinds = sorted((lk["kind"], lk["owner"].split("/")[0]) for lk in doc["leaks"])
    assert ("sandbox", node.pods["web"][0]) in kinds and ("sandbox", node.pods["db"][0]) in kinds
    assert ("host-local", lost_cid) in kinds  # its cluster network address
    assert ("whereabouts", lost_cid) in kinds
    assert ("portmap", lost_cid) in kinds
    assert ("masquerade", lost_cid) in kinds
    assert all(lk["fixable"] for lk in doc["leaks"])
    # Nothing was touched by looking.
    assert len([f for f in os.listdir(node.cni_dir) if not f.startswith(".")]) == 2 and iptables_mentions(node.cluster)

    rc, out, err = node.run("leaks", "--fix")
    assert rc == 0, out + err
    assert "0 left" in out and "removed" in out
    assert [f for f in os.listdir(node.cni_dir) if not f.startswith(".")] == []
    assert host_local_ips(node) == []
    assert whereabouts_allocations(node) == []
    assert iptables_mentions(node.cluster) == [] and iptables_mentions(lost_cid) == []
    assert masq_mentions(lost_cid) == [] and masq_mentions(node.pods["web"][0]) == []
    rc, doc = node.run_json("leaks")
    assert rc == 0 and doc["leaks"] == []
    node.made.clear()  # nothing left for the runtime's DEL


def test_fix_leaves_live_pods_alone(node: Node) -> None:
    node.add_pod("web", "mv,wb", ports=True)
    node.add_pod("gone", "mv")
    subprocess.run(["ip", "netns", "del", node.pods["gone"][1]], check=True)
    rc, doc = node.run_json("leaks", "--fix")
    assert rc == 0
    assert [(lk["kind"], lk["removed"]) for lk in doc["leaks"]] == [("sandbox", True)]
    # the fix DELs under the sandbox's lock, whose file goes with the record; the live pod's stays with its own
    assert os.listdir(node.cni_dir / ".locks") == [node.pods["web"][0]]
    rc, st = node.run_json("status", "--check")
    assert rc == 0
    assert [s["pod"] for s in st] == ["web"] and all(a["check"] == "ok" for a in st[0]["attachments"])
    assert iptables_mentions(node.pods["web"][0])  # its host-port rule is still there


def test_a_veth_nobody_owns_is_reported_not_removed(node: Node) -> None:
    node.add_pod("web")
    name = f"veth{node.tag}x"[:15]
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"vp{node.tag}x"[:15]], check=True)
    node.scene.host_links.append(name)
    subprocess.run(["ip", "link", "set", name, "master", node.bridge], check=True)
    rc, doc = node.run_json("leaks", "--fix")
    assert rc == 1
    (lk,) = doc["left"]
    assert lk["kind"] == "host-link" and lk["owner"] == name and not lk["fixable"] and "ip link del" in lk["manual"]
    assert "name is not the bridge plugin's" in lk["manual"]
    assert link_exists(name)


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def our_veth(node: Node, peer_ns: str | None = None) -> tuple[str, str]:
    """A veth pair named as the bridge plugin names host ends, enslaved to the cluster bridge, peer on the host or
    in ``peer_ns``."""
    name, peer = "veth" + os.urandom(4).hex(), f"vq{node.tag}{len(node.scene.host_links)}"[:15]
    argv = ["ip", "link", "add", name, "type", "veth", "peer", "name", peer]
    subprocess.run(argv + (["netns", peer_ns] if peer_ns else []), check=True)
    node.scene.host_links.append(name)
    subprocess.run(["ip", "link", "set", name, "master", node.bridge, "up"], check=True)
    return name, peer


def test_an_orphaned_pair_of_ours_is_removed_and_the_doubtful_ones_are_kept_with_the_reason(node: Node) -> None:
    node.add_pod("web")
    orphan, orphan_peer = our_veth(node)  # both ends on the host: an ADD that never moved the peer
    live, _ = our_veth(node, node.scene.netns("peer"))  # the peer's netns is alive
    used, used_peer = our_veth(node)
    subprocess.run(["ip", "addr", "add", "192.0.2.77/32", "dev", used_peer], check=True)  # the host uses its peer

    rc, doc = node.run_json("leaks")
    links = {lk["owner"]: lk for lk in doc["leaks"] if lk["kind"] == "host-link"}
    assert sorted(links) == sorted([orphan, live, used]) and rc == 1
    assert links[orphan]["fixable"] and orphan_peer in links[orphan]["what"]
    assert not links[live]["fixable"] and "another network namespace" in links[live]["manual"]
    assert not links[used]["fixable"] and f"peer {used_peer} is in use" in links[used]["manual"]
    assert link_exists(orphan)  # looking changes nothing

    rc, doc = node.run_json("leaks", "--fix")
    assert rc == 1
    assert [lk["owner"] for lk in doc["leaks"] if lk["removed"]] == [orphan]
    assert sorted(lk["owner"] for lk in doc["left"]) == sorted([live, used])
    assert not link_exists(orphan) and not link_exists(orphan_peer)
    assert link_exists(live) and link_exists(used)
    rc, st = node.run_json("status", "--check")
    assert [a["check"] for a in st[0]["attachments"]] == ["ok"]  # the live pod's own veth was never in question


def masq_mentions(cid: str) -> list[str]:
    """The bridge plugin's masquerade state naming ``cid``: iptables POSTROUTING jumps and nft masq_checks rules."""
    out = []
    for argv in (["iptables-save", "-t", "nat"], ["ip6tables-save", "-t", "nat"],
                 ["nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks"]):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            continue
        out += [line for line in proc.stdout.splitlines() if cid in line and "dnat" not in line]
    return out


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_masquerade_chain_whose_cache_entry_is_gone_is_removed_by_the_bridge_teardown(node: Node,
                                                                                         backend: str) -> None:
    if shutil.which("nft" if backend == "nftables" else "iptables-restore") is None:
        pytest.skip(f"needs the {backend} tools")
    doc = node.conf()
    bridge = doc["plugins"][0]["delegates"][0]["plugins"][0]
    bridge.update(ipMasq=True, ipMasqBackend=backend)
    node.write_conf(doc)
    node.add_pod("kept")
    node.add_pod("lost")
    kept, lost = node.pods["kept"][0], node.pods["lost"][0]
    assert masq_mentions(kept) and masq_mentions(lost)
    os.unlink(node.cni_dir / lost)  # the pod lives on, but no record of it: its chain is no one's

    rc, doc = node.run_json("leaks")
    assert rc == 1
    masq = [lk for lk in doc["leaks"] if lk["kind"] == "masquerade"]
    assert [(lk["network"], lk["owner"].split("/")[0], lk["fixable"]) for lk in masq] == [(node.cluster, lost, True)]
    assert backend.replace("tables", "") in masq[0]["what"] or backend in masq[0]["what"]
    assert masq_mentions(lost)  # looking changes nothing

    rc, doc = node.run_json("leaks", "--fix")
    # What is left is the lost pod's veth: its netns is alive, so it is not provably orphaned.
    assert [lk["kind"] for lk in doc["left"]] == ["host-link"] and rc == 1, doc
    assert [lk["removed"] for lk in doc["leaks"] if lk["kind"] == "masquerade"] == [True]
    assert masq_mentions(lost) == []
    assert masq_mentions(kept)  # the live pod's masquerade stays
    node.made = [m for m in node.made if m[0] != lost]
