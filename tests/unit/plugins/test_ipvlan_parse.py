"""ipvlan config parsing: modes, chained master, IP reuse from prevResult (no root, no kernel)."""

from __future__ import annotations

from typing import Any

import pytest

from cni.spec.errors import InvalidConfig
from cni.spec.request import Request
from plugins import ipvlan

PREV_ONE = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}]}
PREV_TWO = {"cniVersion": "1.0.0", "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.1.0.5/24", "interface": 1}]}
IPAM = {"type": "static", "addresses": [{"address": "10.2.0.2/24"}]}


def req(command: str = "ADD", **conf: Any) -> Request:
    config = {"cniVersion": "1.0.0", "name": "iv", "type": "ipvlan", **conf}
    return Request(command=command, container_id="c1", netns="/run/netns/x", ifname="net1", config=config)


def test_defaults_are_l2_and_kernel_mtu() -> None:
    c = ipvlan.parse(req(ipam=IPAM))
    assert (c.net.mode, c.net.mtu, c.master, c.ipam_type) == ("l2", 0, "", "static")


@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
def test_every_mode_is_accepted(mode: str) -> None:
    assert ipvlan.parse(req(mode=mode, ipam=IPAM)).net.mode == mode


@pytest.mark.parametrize(("conf", "field"), [({"mode": "bridge"}, "mode"), ({"mtu": -1}, "mtu"), ({"master": "a b"}, "master")])
def test_bad_values_are_error_7_naming_the_field(conf: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as ei:
        ipvlan.parse(req(ipam=IPAM, **conf))
    assert field in str(ei.value)


def test_chained_master_is_the_single_prev_interface() -> None:
    assert ipvlan.parse(req(prevResult=PREV_ONE)).master == "eth0"


def test_explicit_master_wins_over_prev_result() -> None:
    assert ipvlan.parse(req(master="up0", prevResult=PREV_ONE)).master == "up0"


def test_chained_master_with_two_prev_interfaces_is_error_7_on_add_only() -> None:
    with pytest.raises(InvalidConfig, match="chained master"):
        ipvlan.parse(req(prevResult=PREV_TWO))
    assert ipvlan.parse(req("DEL", prevResult=PREV_TWO)).master == ""


def test_without_ipam_prev_result_ips_are_reused() -> None:
    c = ipvlan.parse(req(prevResult=PREV_ONE))
    assert c.ipam_type == "" and c.prev is not None and str(c.prev.ips[0].address) == "10.1.0.5/24"


def test_without_ipam_and_nothing_to_reuse_add_is_error_7_but_del_is_fine() -> None:
    with pytest.raises(InvalidConfig, match="ipam"):
        ipvlan.parse(req())
    with pytest.raises(InvalidConfig, match="ipam"):
        ipvlan.parse(req(master="up0", prevResult={"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]}))
    ipvlan.parse(req("DEL"))


def test_ipvlan_has_no_mac_capability() -> None:
    assert "mac" not in ipvlan.PLUGIN.capabilities
