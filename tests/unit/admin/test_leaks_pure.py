"""leaks' pure readers: which masquerade chains and rules prove they are the bridge plugin's, for which attachment."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

from cni.admin import leaks, leaks_stores
from plugins import _masq as M


def _save(*rules: str) -> str:
    return "*nat\n:POSTROUTING ACCEPT [0:0]\n" + "\n".join(rules) + "\nCOMMIT\n"


def test_iptables_masquerade_jumps_are_recognised_by_their_chain_name() -> None:
    ours = M.iptables_rules(ipaddress.ip_interface("10.1.0.5/24"), M.chain_name("net-a", "cid1"),
                            M.iptables_comment("net-a", "cid1"))
    forged = M.iptables_rules(ipaddress.ip_interface("10.1.0.6/24"), "CNI-000000000000000000000000",
                              M.iptables_comment("net-a", "cid2"))
    portmap = ('-A POSTROUTING -m comment --comment "dnat name: \\"net-a\\" id: \\"cid3\\"" '
               f'-j {M.chain_name("net-a", "cid3")}')
    got = leaks.masq_rules({4: _save(*ours, *forged, portmap)}, {})
    assert got == {("iptables", "net-a", "", "cid1")}


def test_nft_masquerade_rules_prove_themselves_by_their_hash() -> None:
    good = M.nft_comment("net-b", "net1", "cid4")
    bad = good.replace("net1", "net2", 1)  # fields changed, hash not: not ours to judge
    long_cid = "c" * 200  # the comment is cut at 128 characters: it cannot prove itself
    listing = {"nftables": [{"metainfo": {}}, {"rule": {"handle": 3, "comment": good}},
                            {"rule": {"handle": 4, "comment": bad}},
                            {"rule": {"handle": 5, "comment": M.nft_comment("net-b", "net1", long_cid)}}]}
    assert leaks.masq_rules({}, listing) == {("nftables", "net-b", "net1", "cid4")}


def test_veth_verdict() -> None:
    port = {"ifname": "veth0a1b2c3d", "link": "p1"}
    assert leaks.veth_verdict(port, {"ifname": "p1"}, "cni0") == ""
    assert "name is not" in leaks.veth_verdict({**port, "ifname": "vethfoo"}, {"ifname": "p1"}, "cni0")
    assert "another network namespace (nsid 3)" in leaks.veth_verdict({**port, "link_netnsid": 3}, None, "cni0")
    assert "cannot be found" in leaks.veth_verdict(port, None, "cni0")
    assert leaks.veth_verdict(port, {"ifname": "cni0.100"}, "cni0").startswith(leaks.GATEWAY_PORT)
    assert "in use" in leaks.veth_verdict(port, {"ifname": "p1", "master": "br1"}, "cni0")
    assert "in use" in leaks.veth_verdict(port, {"ifname": "p1", "addr_info": [{"local": "10.0.0.1"}]}, "cni0")
    assert leaks.veth_verdict(port, {"ifname": "p1", "addr_info": [{"local": "fe80::1", "scope": "link"}]}, "cni0") == ""


def test_judge_shared_places_and_dates_an_allocation() -> None:
    from ipam.whereabouts.allocator import Allocation

    now, grace = 10_000.0, 60.0
    a = Allocation("cid1", "default/p", "net1", pod_uid="u1")

    def pod(node: str, uid: str = "u1", phase: str = "Running", ips: str = "10.0.0.9", age: float = 600) -> Any:
        status = json.dumps([{"name": "n", "ips": [ips]}])
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - age))
        return {"metadata": {"name": "p", "namespace": "default", "uid": uid, "creationTimestamp": ts,
                             "annotations": {"k8s.v1.cni.cncf.io/network-status": status}},
                "spec": {"nodeName": node}, "status": {"phase": phase}}

    def judge(al: Any = a, **kw: Any) -> str:
        args = {"node": "me", "slice_owner": "", "pod": None, "hist": None, "now": now, "grace": grace, **kw}
        return leaks_stores.judge_shared(al, "10.0.0.9", **args)[0]

    assert judge(pod=pod("other")) == leaks_stores.OTHER  # another node's pod, whatever else
    assert judge(pod=pod("other"), hist=(0.0, "default/p"), slice_owner="me") == leaks_stores.OTHER
    assert judge(pod=pod("me")) == leaks_stores.KEEP  # running here with the IP
    # reconcile's rules: an allocation recording its pod's UID is stale only when that pod is gone or terminated …
    assert judge(pod=pod("me", ips="10.0.0.8")) == leaks_stores.KEEP
    assert judge(pod=pod("me", phase="Succeeded")) == leaks_stores.LEAK
    assert judge(pod=pod("me", phase="Pending")) == leaks_stores.KEEP
    # … one without falls back to the name: running here, past the grace period, without the IP in network-status.
    b = Allocation("cid1", "default/p", "net1")
    assert judge(b, pod=pod("me", ips="10.0.0.8")) == leaks_stores.LEAK
    assert judge(b, pod=pod("me", ips="10.0.0.8", age=5)) == leaks_stores.KEEP  # young: its ADD may be in flight
    # The pod is gone (or re-created under its name): whose it was is the slice's owner or this node's history.
    assert judge(pod=pod("me", uid="u2")) == leaks_stores.OTHER  # a new incarnation says nothing of the old one's node
    assert judge(pod=pod("other", uid="u2"), slice_owner="me") == leaks_stores.LEAK
    assert judge(slice_owner="me") == leaks_stores.LEAK
    assert judge(slice_owner="node-b") == leaks_stores.OTHER
    assert judge(hist=(now - 3600, "default/p")) == leaks_stores.LEAK
    assert judge(hist=(now - 5, "default/p")) == leaks_stores.KEEP  # planned 5 s ago: in flight
    assert judge(hist=(now - 5, "default/p"), grace=0) == leaks_stores.LEAK
    # Never: an IPAMClaim's address, an allocation without a pod.
    assert judge(Allocation("cid1", "default/p", "net1", claim="default/vm"), slice_owner="me") == leaks_stores.KEEP
    assert judge(Allocation("cid1", "", "net1"), slice_owner="me") == leaks_stores.KEEP
