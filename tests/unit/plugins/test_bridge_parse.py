"""bridge: config parsing, result planning and netfilter rule texts — pure, no root."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import pytest

from cni.spec.errors import CNIError, InvalidConfig
from cni.spec.request import Request
from cni.spec.result import DNS, IPConfig, Result, Route
from plugins import _masq, bridge


def req(conf: dict[str, Any], **kw: Any) -> Request:
    base = {"cniVersion": "1.0.0", "name": "net", "type": "bridge"}
    return Request(command=kw.pop("command", "ADD"), container_id="c1", netns="/run/netns/x", ifname="net1",
                   config={**base, **conf}, **kw)


def test_defaults_match_the_reference() -> None:
    c = bridge.parse(req({}))
    assert c.bridge == "cni0"
    assert c.net.preserve_default_vlan is True
    assert not c.is_gateway and not c.vlan_filtering and c.trunk == ()
    assert c.ipam_type == "" and c.mac == "" and c.dns is None


def test_is_default_gateway_implies_gateway() -> None:
    assert bridge.parse(req({"isDefaultGateway": True})).is_gateway


@pytest.mark.parametrize("vlan", [-1, 4095, 5000])
def test_vlan_outside_0_to_4094_is_error_7(vlan: int) -> None:
    with pytest.raises(InvalidConfig) as exc:
        bridge.parse(req({"vlan": vlan}))
    assert exc.value.code == 7 and "vlan" in str(exc.value)


@pytest.mark.parametrize(
    "trunk, vids",
    [
        ([{"id": 5}], (5,)),
        ([{"minID": 10, "maxID": 12}, {"id": 11}, {"id": 2}], (2, 10, 11, 12)),
        ([{"minID": 4094, "maxID": 4094, "id": 1}], (1, 4094)),
        # Go's decoder: keys fold case, unknown keys are ignored (the reference takes both).
        ([{"MinID": 7, "maxid": 8, "ID": 1, "vid": 3}], (1, 7, 8)),
    ],
)
def test_vlan_trunk_collects_sorted_unique_ids(trunk: list[dict[str, int]], vids: tuple[int, ...]) -> None:
    c = bridge.parse(req({"vlanTrunk": trunk}))
    assert c.trunk == vids and c.vlan_filtering


@pytest.mark.parametrize(
    "trunk, needle",
    [
        ([{"minID": 5}], "maxID is missing"),
        ([{"maxID": 5}], "minID is missing"),
        ([{"minID": 9, "maxID": 3}], "greater than maxID"),
        ([{"minID": 0, "maxID": 3}], "minID"),
        ([{"id": 4095}], "vlanTrunk[0].id"),
    ],
)
def test_bad_vlan_trunk_is_error_7(trunk: list[dict[str, int]], needle: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        bridge.parse(req({"vlanTrunk": trunk}))
    assert needle in str(exc.value)


def test_vlan_and_vlan_trunk_are_exclusive() -> None:
    with pytest.raises(InvalidConfig, match="vlan and vlanTrunk"):
        bridge.parse(req({"vlan": 10, "vlanTrunk": [{"id": 20}]}))


@pytest.mark.parametrize(
    "conf, field",
    [
        ({"ipMasqBackend": "pf"}, "ipMasqBackend"),
        ({"mtu": -1}, "mtu"),
        ({"hairpinMode": "yes"}, "hairpinMode"),  # Go's decoder refuses a string for a bool too
        ({"bridge": "a-name-longer-than-15"}, "bridge"),
        ({"bridge": "br/0"}, "bridge"),
    ],
)
def test_bad_fields_are_error_7_naming_the_field(conf: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        bridge.parse(req(conf))
    assert field in str(exc.value)


def test_mac_precedence_runtime_config_over_args_over_cni_args() -> None:
    conf = {"runtimeConfig": {"mac": "0a:00:00:00:00:01"}, "args": {"cni": {"mac": "0a:00:00:00:00:02"}}}
    assert bridge.parse(req(conf, cni_args={"MAC": "0a:00:00:00:00:03"})).mac == "0a:00:00:00:00:01"
    assert bridge.parse(req({"args": {"cni": {"mac": "0A-00-00-00-00-02"}}}, cni_args={"MAC": "0a:00:00:00:00:03"})).mac == "0a:00:00:00:00:02"
    assert bridge.parse(req({}, cni_args={"MAC": "0a:00:00:00:00:03"})).mac == "0a:00:00:00:00:03"


def test_unknown_cni_args_refused_unless_ignore_unknown() -> None:
    with pytest.raises(CNIError) as exc:
        bridge.parse(req({}, cni_args={"FOO": "1"}))
    assert exc.value.code == 4
    bridge.parse(req({}, cni_args={"FOO": "1", "IgnoreUnknown": "1"}))


def _ipam(*cidrs: str, gw: str | None = None, routes: tuple[Route, ...] = ()) -> Result:
    return Result(
        ips=tuple(IPConfig(ipaddress.ip_interface(c), ipaddress.ip_address(gw) if gw else None) for c in cidrs),
        routes=routes,
        dns=DNS(nameservers=("10.0.0.53",)),
    )


def test_plan_l3_puts_every_ip_on_the_container_veth_and_keeps_ipam_gateway() -> None:
    plan = bridge.plan_l3(_ipam("10.1.0.5/24", gw="10.1.0.254"), bridge.parse(req({"isGateway": True})))
    assert [(str(i.address), str(i.gateway), i.interface) for i in plan.ips] == [("10.1.0.5/24", "10.1.0.254", 2)]
    assert plan.routes == () and plan.dns.nameservers == ("10.0.0.53",)


def test_plan_l3_gateway_defaults_to_first_address_only_with_is_gateway() -> None:
    assert bridge.plan_l3(_ipam("10.1.0.5/24"), bridge.parse(req({}))).ips[0].gateway is None
    plan = bridge.plan_l3(_ipam("10.1.0.5/24", "fd00:1::5/64"), bridge.parse(req({"isGateway": True})))
    assert [str(i.gateway) for i in plan.ips] == ["10.1.0.1", "fd00:1::1"]


def test_plan_l3_default_route_per_family_unless_ipam_has_one() -> None:
    c = bridge.parse(req({"isDefaultGateway": True}))
    plan = bridge.plan_l3(_ipam("10.1.0.5/24", "10.2.0.5/24", "fd00:1::5/64"), c)
    assert [(str(r.dst), str(r.gw)) for r in plan.routes] == [("0.0.0.0/0", "10.1.0.1"), ("::/0", "fd00:1::1")]
    given = (Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.1.0.9")),)
    plan = bridge.plan_l3(_ipam("10.1.0.5/24", routes=given), c)
    assert plan.routes == given


def test_bridge_gateways_carry_the_pod_prefix_without_repeats() -> None:
    ips = (
        IPConfig(ipaddress.ip_interface("10.1.0.5/24"), ipaddress.ip_address("10.1.0.1"), 2),
        IPConfig(ipaddress.ip_interface("10.1.0.6/24"), ipaddress.ip_address("10.1.0.1"), 2),
        IPConfig(ipaddress.ip_interface("fd00::5/64"), None, 2),
    )
    assert [str(g) for g in bridge.bridge_gateways(ips)] == ["10.1.0.1/24"]


def test_random_veth_name_looks_like_the_reference() -> None:
    name = bridge.random_veth_name()
    assert len(name) == 12 and name.startswith("veth") and int(name[4:], 16) >= 0


# ---- _masq -----------------------------------------------------------------------------------


def test_chain_name_is_cni_plus_sha512_of_network_and_container_cut_to_28() -> None:
    expect = "CNI-" + hashlib.sha512(b"mynetabc123").hexdigest()[:24]
    assert _masq.chain_name("mynet", "abc123") == expect and len(expect) == 28


def test_comments_match_the_reference_formats() -> None:
    assert _masq.iptables_comment("n", "c") == 'name: "n" id: "c"'
    h = hashlib.sha512(b"n").hexdigest()[:16] + "-" + hashlib.sha512(b"eth0:c").hexdigest()[:16]
    assert _masq.nft_comment("n", "eth0", "c") == f"{h}, net: n, if: eth0, id: c"
    assert len(_masq.nft_comment("n" * 200, "eth0", "c")) == 128


SAVE = """# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j CNI-x
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
{extra}COMMIT
"""


def test_iptables_setup_script_adds_chain_and_three_rules_once() -> None:
    addr = ipaddress.ip_interface("10.1.0.5/24")
    chain, comment = _masq.chain_name("n", "c"), _masq.iptables_comment("n", "c")
    script = _masq.iptables_setup_script(SAVE.format(extra=""), [addr], chain, comment)
    assert script is not None
    lines = script.splitlines()
    assert lines[0] == "*nat" and lines[1] == f":{chain} - [0:0]" and lines[-1] == "COMMIT"
    assert f'-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "name: \\"n\\" id: \\"c\\"" -j {chain}' in lines
    assert "! -d 224.0.0.0/4" in script and "-d 10.1.0.0/24" in script
    # Feed the rules back as iptables-save would print them: nothing left to add (AppendUnique).
    body = f":{chain} - [0:0]\n" + "\n".join(lines[2:-1]) + "\n"
    assert _masq.iptables_setup_script(SAVE.format(extra=body), [addr], chain, comment) is None


def test_iptables_rules_for_ipv6_use_host_prefix_and_ff00() -> None:
    rules = _masq.iptables_rules(ipaddress.ip_interface("fd00::5/64"), "CNI-x", "c")
    assert "-s fd00::5/128" in rules[2] and "! -d ff00::/8" in rules[1] and "-d fd00::/64" in rules[0]


def test_iptables_teardown_removes_every_jump_to_the_chain_whatever_the_address() -> None:
    chain = "CNI-abc"
    body = (
        f":{chain} - [0:0]\n:CNI-other - [0:0]\n"
        f'-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "x" -j {chain}\n'
        f"-A POSTROUTING -s 10.1.0.0/24 -j {chain}\n"
        "-A POSTROUTING -s 10.1.0.7/32 -j CNI-other\n"
        f"-A {chain} -d 10.1.0.0/24 -j ACCEPT\n"
    )
    script = _masq.iptables_teardown_script(SAVE.format(extra=body), chain)
    assert script is not None
    assert script.splitlines()[1:] == [
        f'-D POSTROUTING -s 10.1.0.5/32 -m comment --comment "x" -j {chain}',
        f"-D POSTROUTING -s 10.1.0.0/24 -j {chain}",
        f"-F {chain}",
        f"-X {chain}",
        "COMMIT",
    ]
    assert _masq.iptables_teardown_script(SAVE.format(extra=""), chain) is None


def test_nft_setup_script_replaces_stale_rules_and_keeps_multicast() -> None:
    script = _masq.nft_setup_script([ipaddress.ip_interface("10.1.0.5/24")], "cmt", [7])
    assert "add table inet cni_plugins_masquerade" in script
    assert "delete rule inet cni_plugins_masquerade masq_checks handle 7" in script
    assert 'ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade comment "cmt"' in script
    assert "ip daddr 224.0.0.0/4 return" in script and "ip6 daddr ff00::/8 return" in script


def test_nft_rules_with_comment_selects_by_prefix() -> None:
    listing = {"nftables": [{"metainfo": {}}, {"chain": {"name": "masq_checks"}},
                            {"rule": {"handle": 4, "comment": "abc-def, net: n"}},
                            {"rule": {"handle": 5, "comment": "abc-xyz"}}, {"rule": {"handle": 6}}]}
    assert _masq.nft_rules_with_comment(listing, "abc-def") == [4]
    assert _masq.nft_rules_with_comment(listing, "abc-") == [4, 5]


def test_spoofcheck_script_names_chains_like_the_reference() -> None:
    declare, rules = _masq.spoof_setup_script("veth01", "0a:00:00:00:00:01", "c1-net1")
    assert "add chain bridge nat cni-br-iface-c1-net1" in declare
    assert "add chain bridge nat cni-br-iface-c1-net1-mac" in declare
    assert "priority -300" in declare
    assert 'iifname "veth01" jump cni-br-iface-c1-net1 comment "macspoofchk-c1-net1"' in rules
    assert "ether saddr 0a:00:00:00:00:01 return" in rules and rules.strip().endswith('drop comment "macspoofchk-c1-net1"')


def test_unknown_cni_args_fail_add_but_never_del() -> None:
    from cni.spec.errors import InvalidEnvironment
    from cni.spec.request import Request
    from plugins import bridge

    conf = {"cniVersion": "1.0.0", "name": "br", "type": "bridge"}
    with pytest.raises(InvalidEnvironment):
        bridge.parse(Request("ADD", cni_args={"K8S_POD_NAME": "p"}, config=conf))
    bridge.parse(Request("DEL", cni_args={"K8S_POD_NAME": "p"}, config=conf))


def test_iptables_fast_scripts_assert_a_new_chain_and_delete_exact_jumps() -> None:
    a4, a6 = ipaddress.ip_interface("10.1.2.3/24"), ipaddress.ip_interface("fd00::3/64")
    chain, comment = _masq.chain_name("n", "c"), _masq.iptables_comment("n", "c")
    setup = _masq.iptables_fast_setup_script([a4], chain, comment).splitlines()
    assert setup == ["*nat", f"-N {chain}", *_masq.iptables_rules(a4, chain, comment), "COMMIT"]
    down = _masq.iptables_fast_teardown_script([a4, a6], chain, comment).splitlines()
    jump4 = next(r for r in _masq.iptables_rules(a4, chain, comment) if r.startswith("-A POSTROUTING"))
    jump6 = next(r for r in _masq.iptables_rules(a6, chain, comment) if r.startswith("-A POSTROUTING"))
    assert down == ["*nat", "-D" + jump4[2:], "-D" + jump6[2:], f"-F {chain}", f"-X {chain}", "COMMIT"]


def test_spoof_teardown_from_one_table_listing_removes_only_this_attachments_jump_and_chains() -> None:
    ref = _masq.spoof_ref("c1", "net1")
    iface, mac = _masq.spoof_chains(ref)
    other_iface, _ = _masq.spoof_chains(_masq.spoof_ref("c2", "net1"))
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "bridge", "name": "nat"}},
        {"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING"}},
        {"chain": {"family": "bridge", "table": "nat", "name": iface}},
        {"chain": {"family": "bridge", "table": "nat", "name": mac}},
        {"chain": {"family": "bridge", "table": "nat", "name": other_iface}},
        {"rule": {"chain": "PREROUTING", "handle": 4, "comment": _masq.spoof_comment(ref)}},
        {"rule": {"chain": "PREROUTING", "handle": 9, "comment": _masq.spoof_comment(_masq.spoof_ref("c2", "net1"))}},
        {"rule": {"chain": iface, "handle": 5, "comment": _masq.spoof_comment(ref)}},  # goes with its chain
    ]}
    assert _masq.spoof_teardown_script(listing, ref).splitlines() == [
        "delete rule bridge nat PREROUTING handle 4",
        f"flush chain bridge nat {iface}", f"flush chain bridge nat {mac}",
        f"delete chain bridge nat {iface}", f"delete chain bridge nat {mac}"]
    assert _masq.spoof_teardown_script({}, ref) == ""
