"""leaks' pure readers: which masquerade chains and rules prove they are the bridge plugin's, for which attachment."""

from __future__ import annotations

import ipaddress

from cni.admin import leaks
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
