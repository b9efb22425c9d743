"""static IPAM: config parsing, the precedence of requested addresses, ADD/DEL in-process."""

from __future__ import annotations

from typing import Any

import pytest

from cni import invoke
from cni.spec.args import parse_cni_args
from cni.spec.errors import CNIError
from cni.spec.request import Request
from cni.spec.result import to_wire
from ipam import static


def conf(addresses: Any = None, **top: Any) -> dict[str, Any]:
    ipam: dict[str, Any] = {
        "type": "static",
        "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}] if addresses is None else addresses,
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["8.8.8.8"], "search": ["example.com"]},
    }
    return {"cniVersion": "1.0.0", "name": "st", "type": "macvlan", "ipam": ipam, **top}


def req(config: dict[str, Any], cmd: str = "ADD", args: str = "") -> Request:
    return Request(command=cmd, container_id="c1", netns="/run/netns/none", ifname="net1", cni_args=parse_cni_args(args), path=(), config=config)


def add(config: dict[str, Any], args: str = "") -> dict[str, Any]:
    res = invoke.ipam(req(config, args=args))
    assert res is not None
    return to_wire(res, config["cniVersion"])


def test_add_returns_the_configured_addresses_routes_and_dns_like_the_reference() -> None:
    assert add(conf()) == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["8.8.8.8"], "search": ["example.com"]},
    }


def test_cni_args_ip_appends_and_gateway_applies_to_the_containing_subnets() -> None:
    out = add(conf(), args="IP=10.11.0.2/24,fd00::2/64;GATEWAY=10.11.0.1")
    assert out["ips"] == [
        {"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
        {"address": "10.11.0.2/24", "gateway": "10.11.0.1"},
        {"address": "fd00::2/64"},
    ]


def test_args_cni_ips_replace_the_list_and_runtime_config_ips_replace_it_again() -> None:
    c = conf(args={"cni": {"ips": ["10.12.0.5/16"]}})
    assert [i["address"] for i in add(c, args="IP=10.11.0.2/24")["ips"]] == ["10.12.0.5/16"]
    c["runtimeConfig"] = {"ips": ["10.13.0.5/16", "fd00::5/64"]}
    assert [i["address"] for i in add(c)["ips"]] == ["10.13.0.5/16", "fd00::5/64"]


def test_empty_address_list_is_a_result_without_ips() -> None:
    assert "ips" not in add(conf([]))


@pytest.mark.parametrize(
    "config,args,code,text",
    [
        (conf([{"address": "10.10.0.1"}]), "", 7, "ipam.addresses[0].address"),
        (conf([{"address": "10.10.0.300/24"}]), "", 7, "ipam.addresses[0].address"),
        (conf([{"gateway": "10.10.0.1"}]), "", 7, "ipam.addresses[0].address"),
        (conf([{"address": "10.10.0.1/24", "gateway": "fd00::1"}]), "", 7, "ipam.addresses[0].gateway"),
        (conf("10.10.0.1/24"), "", 7, "ipam.addresses"),
        (conf(runtimeConfig={"ips": ["10.13.0.5"]}), "", 7, "runtimeConfig.ips[0]"),
        (conf(args={"cni": {"ips": ["zzz/8"]}}), "", 7, "args.cni.ips[0]"),
        (conf(), "IP=10.1.1.1", 4, "prefix"),
        (conf(), "IP=bad/24", 4, "CNI_ARGS IP"),
        (conf(), "GATEWAY=bad", 4, "GATEWAY"),
        (conf(), "FOO=1", 4, "FOO"),
        ({"cniVersion": "1.0.0", "name": "st", "type": "x"}, "", 7, "ipam"),
    ],
)
def test_bad_input_is_the_right_code_naming_the_field(config: dict[str, Any], args: str, code: int, text: str) -> None:
    with pytest.raises(CNIError) as ei:
        invoke.ipam(req(config, args=args)) if "ipam" in config else static.PLUGIN.run(req(config, args=args))
    assert ei.value.code == code and text in str(ei.value), str(ei.value)


def test_two_addresses_of_one_family_need_cni_0_3_0() -> None:
    c = conf([{"address": "10.10.0.1/24"}, {"address": "10.10.1.1/24"}])
    c["cniVersion"] = "0.2.0"
    with pytest.raises(CNIError) as ei:
        invoke.ipam(req(c))
    assert ei.value.code == 1


def test_del_is_a_no_op_even_with_a_broken_config_or_args() -> None:
    assert invoke.ipam(req(conf("broken"), "DEL", args="FOO=1")) is None


def test_check_compares_against_prev_result_before_looking_at_the_link() -> None:
    c = conf(prevResult={"cniVersion": "1.0.0", "ips": [{"address": "10.10.0.2/24", "gateway": "10.10.0.254"}]})
    with pytest.raises(CNIError, match="missing from prevResult"):
        invoke.ipam(req(c, "CHECK"))
    c["prevResult"] = {"cniVersion": "1.0.0", "ips": [{"address": "10.10.0.1/24", "gateway": "10.10.0.9"}]}
    with pytest.raises(CNIError, match="gateway"):
        invoke.ipam(req(c, "CHECK"))
