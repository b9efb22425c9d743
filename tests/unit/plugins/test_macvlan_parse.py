"""macvlan config parsing and the pure helpers it shares with ipvlan (no root, no kernel)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni.spec.errors import CheckFailed, IncompatibleVersion, InvalidConfig, InvalidEnvironment
from cni.spec.request import Request
from cni.spec.result import DNS, Interface, IPConfig, Result
from plugins import _iface, macvlan


def req(command: str = "ADD", cni_args: dict[str, str] | None = None, **conf: Any) -> Request:
    config = {"cniVersion": "1.0.0", "name": "mv", "type": "macvlan", **conf}
    return Request(command=command, container_id="c1", netns="/run/netns/x", ifname="net1",
                   cni_args=cni_args or {}, path=("/usr/lib/cni",), config=config)


def test_defaults_are_bridge_mode_kernel_mtu_and_l2_only() -> None:
    c = macvlan.parse(req())
    assert (c.net.master, c.net.mode, c.net.mtu, c.mac, c.ipam_type) == ("", "bridge", 0, "", "")
    assert c.net.link_in_container is False and c.net.bcqueuelen == 0


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru"])
def test_every_reference_mode_is_accepted(mode: str) -> None:
    assert macvlan.parse(req(mode=mode)).net.mode == mode


def test_empty_mode_means_bridge_like_the_reference() -> None:
    assert macvlan.parse(req(mode="")).net.mode == "bridge"


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"mode": "l2"}, "mode"),
        ({"mtu": -1}, "mtu"),
        ({"bcqueuelen": -5}, "bcqueuelen"),
        ({"master": "eth0/x"}, "master"),
        ({"master": "a" * 16}, "master"),
        ({"linkInContainer": "maybe"}, "linkInContainer"),
        ({"dns": {"nameservers": "1.1.1.1"}}, "dns.nameservers"),
    ],
)
def test_bad_values_are_error_7_naming_the_field(conf: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as ei:
        macvlan.parse(req(**conf))
    assert ei.value.code == 7
    assert field in str(ei.value)


def test_ipam_type_must_be_a_string() -> None:
    with pytest.raises(InvalidConfig, match="ipam.type"):
        macvlan.parse(req(ipam={"type": 3}))


def test_ipam_type_is_taken_and_empty_ipam_means_l2() -> None:
    assert macvlan.parse(req(ipam={"type": "host-local"})).ipam_type == "host-local"
    assert macvlan.parse(req(ipam={})).ipam_type == ""


def test_camel_case_keys_and_unknown_keys_are_kept() -> None:
    c = macvlan.parse(req(linkInContainer=True, bcqueuelen=3000, somethingElse={"a": 1}))
    assert c.net.link_in_container is True and c.net.bcqueuelen == 3000
    assert c.net.model_extra == {"cniVersion": "1.0.0", "name": "mv", "type": "macvlan", "somethingElse": {"a": 1}}


MAC_RC, MAC_ARGS, MAC_ENV, MAC_CONF = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03", "02:00:00:00:00:04"


def test_mac_precedence_runtime_config_over_args_over_cni_args_over_config() -> None:
    full = dict(runtimeConfig={"mac": MAC_RC}, args={"cni": {"mac": MAC_ARGS}}, mac=MAC_CONF)
    env = {"MAC": MAC_ENV}
    assert macvlan.parse(req(cni_args=env, **full)).mac == MAC_RC
    full.pop("runtimeConfig")
    assert macvlan.parse(req(cni_args=env, **full)).mac == MAC_ARGS
    full.pop("args")
    assert macvlan.parse(req(cni_args=env, **full)).mac == MAC_ENV
    assert macvlan.parse(req(**full)).mac == MAC_CONF


def test_mac_is_normalised_to_lower_case_colons() -> None:
    assert macvlan.parse(req(mac="0A-58-0A-F4-00-05")).mac == "0a:58:0a:f4:00:05"


@pytest.mark.parametrize("bad", ["zz:00:00:00:00:01", "02:00:00:00:00", "02:00:00:00:00:01:02", "02:00-00:00:00:01", "01:00:5e:00:00:01"])
def test_bad_or_multicast_mac_is_error_7(bad: str) -> None:
    with pytest.raises(InvalidConfig, match="MAC"):
        macvlan.parse(req(runtimeConfig={"mac": bad}))


def test_unknown_cni_args_are_refused_unless_ignore_unknown() -> None:
    with pytest.raises(InvalidEnvironment) as ei:
        macvlan.parse(req(cni_args={"K8S_POD_NAME": "p"}))
    assert ei.value.code == 4
    assert macvlan.parse(req(cni_args={"K8S_POD_NAME": "p", "IgnoreUnknown": "1"})).mac == ""


def test_del_does_not_fail_on_inputs_only_add_uses() -> None:
    # A DEL that failed here would leak the IPAM reservation.
    c = macvlan.parse(req("DEL", cni_args={"MAC": "garbage", "X": "y"}, ipam={"type": "static"}))
    assert c.ipam_type == "static"


def test_check_below_0_4_0_is_error_1() -> None:
    r = req("CHECK")
    r = r.with_config({**r.config, "cniVersion": "0.3.1"})
    with pytest.raises(IncompatibleVersion):
        macvlan.PLUGIN.run(r)


def test_plugin_declares_the_mac_capability() -> None:
    assert macvlan.PLUGIN.type == "macvlan"
    assert "mac" in macvlan.PLUGIN.capabilities


def test_merge_dns_config_fields_win_ipam_fills_the_rest() -> None:
    ipam = DNS(nameservers=("10.0.0.53",), domain="ipam.local", search=("a",))
    conf = DNS(nameservers=("1.1.1.1",))
    assert _iface.merge_dns(ipam, conf) == DNS(("1.1.1.1",), "ipam.local", ("a",), ())
    assert _iface.merge_dns(ipam, DNS()) == ipam


def test_prev_result_is_parsed_into_the_canonical_result_and_bad_one_is_error_7() -> None:
    prev = {"cniVersion": "0.4.0", "interfaces": [{"name": "net1", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "address": "10.1.0.2/24", "interface": 0}]}
    got = _iface.prev_result(req(prevResult=prev))
    assert got is not None and got.ips[0].address == ipaddress.ip_interface("10.1.0.2/24")
    with pytest.raises(InvalidConfig):
        _iface.prev_result(req(prevResult={"cniVersion": "1.0.0", "ips": [{"address": "nope"}]}))


def test_own_interface_needs_name_and_sandbox_to_match() -> None:
    prev = Result(interfaces=(Interface("net1", sandbox="/run/netns/other"), Interface("net1", sandbox="/run/netns/x")))
    assert _iface.own_interface(prev, "net1", "/run/netns/x") is prev.interfaces[1]
    with pytest.raises(CheckFailed):
        _iface.own_interface(prev, "net2", "/run/netns/x")


def test_assign_to_points_every_ip_at_interface_0() -> None:
    ipam = Result(ips=(IPConfig(ipaddress.ip_interface("10.0.0.2/24")), IPConfig(ipaddress.ip_interface("fd00::2/64"), interface=3)))
    got = _iface.assign_to(ipam, Interface("net1"), DNS())
    assert [ip.interface for ip in got.ips] == [0, 0]
    assert got.interfaces == (Interface("net1"),)


@pytest.mark.parametrize("plugin", ["macvlan", "ipvlan"])
def test_del_reads_only_ipam_type_and_tolerates_the_rest(plugin: str) -> None:
    # DEL goes through ``delete_only`` (no pydantic): a config ADD would refuse (bad mtu/mode) is still
    # cleaned up. The netns is gone, and there is no IPAM: nothing to do, and success.
    from plugins import ipvlan

    mod = {"macvlan": macvlan, "ipvlan": ipvlan}[plugin]
    assert mod.PLUGIN.delete_only is not None
    r = req("DEL", mtu="x", mode="nonsense", master="not/a/name")
    r = r.with_config({**r.config, "type": plugin})
    with pytest.raises(InvalidConfig):
        mod.PLUGIN.run(r.with_(command="ADD"))
    assert mod.PLUGIN.run(r) is None
    with pytest.raises(InvalidConfig):  # which IPAM holds the lease cannot be told: error 7, as parse says it
        mod.PLUGIN.run(r.with_config({**r.config, "ipam": {"type": 7}}))
