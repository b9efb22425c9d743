"""Parsing result documents: malformed input gets the caller's error class and a precise message."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni.spec.errors import DecodeFailure, IncompatibleVersion, InvalidConfig
from cni.spec.result import IPConfig, Result, from_wire, parse_cidr, to_wire


def _doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1"}],
        "ips": [{"interface": 0, "address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
    }
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (_doc(ips=[{"address": "10.0.0.2"}]), "ips[0].address '10.0.0.2' is not an address in CIDR notation"),
        (_doc(ips=[{"address": "10.0.0.300/24"}]), "ips[0].address"),
        (_doc(ips=[{"address": "10.0.0.2/33"}]), "ips[0].address"),
        (_doc(ips=[{"address": "10.0.0.2/24", "gateway": "fd00::1"}]), "not of the address family"),
        (_doc(ips=[{"address": "fd00::2/64", "gateway": "10.0.0.1"}]), "not of the address family"),
        (_doc(ips=[{"address": "10.0.0.2/24", "interface": 1}]), "ips[0].interface 1 does not index into interfaces"),
        (_doc(ips=[{"address": "10.0.0.2/24", "interface": -1}]), "ips[0].interface -1"),
        (_doc(interfaces=[], ips=[{"address": "10.0.0.2/24", "interface": 0}]), "does not index"),
        (_doc(ips=[{"address": "10.0.0.2/24", "interface": "0"}]), "ips[0].interface must be an integer"),
        (_doc(ips=[{"address": "10.0.0.2/24", "interface": True}]), "ips[0].interface must be an integer"),
        (_doc(ips=[{"version": "6", "address": "10.0.0.2/24"}]), "ips[0].version '6' does not match"),
        (_doc(ips=[{"gateway": "10.0.0.1"}]), "ips[0].address is missing"),
        (_doc(routes=[{"dst": "10.0.0.0"}]), "routes[0].dst"),
        (_doc(routes=[{"gw": "10.0.0.1"}]), "routes[0].dst is missing"),
        (_doc(routes=[{"dst": "0.0.0.0/0", "gw": "nope"}]), "routes[0].gw 'nope' is not an IP address"),
        (_doc(routes=[{"dst": "0.0.0.0/0", "mtu": "1400"}]), "routes[0].mtu must be an integer"),
        (_doc(interfaces=[{"mac": "aa"}]), "interfaces[0].name is missing"),
        (_doc(interfaces={"name": "x"}), "result.interfaces must be a list"),
        (_doc(interfaces=["net1"]), "interfaces[0] must be an object"),
        (_doc(dns={"nameservers": "10.0.0.1"}), "dns.nameservers must be a list"),
        (_doc(dns={"nameservers": [1]}), "dns.nameservers must be a list of strings"),
        ({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2"}}, "ip4.ip"),
        ({"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}, "ip4.ip is missing"),
        ({"cniVersion": "0.2.0", "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "x"}]}}, "ip6.routes[0].dst"),
    ],
)
def test_malformed_result_is_a_decode_failure_naming_the_field(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(DecodeFailure) as ei:
        from_wire(doc)
    assert ei.value.code == 6
    assert needle in ei.value.msg


def test_malformed_prev_result_in_a_config_is_invalid_config() -> None:
    with pytest.raises(InvalidConfig) as ei:
        from_wire(_doc(ips=[{"address": "bad"}]), err_cls=InvalidConfig)
    assert ei.value.code == 7


def test_not_an_object_is_rejected() -> None:
    with pytest.raises(DecodeFailure):
        from_wire(["not", "a", "result"])


def test_unknown_result_version_is_error_1() -> None:
    with pytest.raises(IncompatibleVersion) as ei:
        from_wire({"cniVersion": "0.9.0"})
    assert ei.value.code == 1


def test_missing_cni_version_reads_as_legacy_0_1_0() -> None:
    res = from_wire({"ip4": {"ip": "10.0.0.2/24"}})
    assert res.cni_version == "0.1.0"
    assert res.ips == (IPConfig(ipaddress.ip_interface("10.0.0.2/24")),)


def test_explicit_version_overrides_the_document() -> None:
    res = from_wire({"cniVersion": "0.2.0", "ips": [{"address": "10.0.0.2/24"}]}, "1.0.0")
    assert res.cni_version == "1.0.0"
    assert len(res.ips) == 1


def test_parse_cidr_takes_error_class() -> None:
    with pytest.raises(InvalidConfig):
        parse_cidr("10.0.0.1", "ipam.addresses[0].address", InvalidConfig)


def test_add_interface_returns_index() -> None:
    res, idx = Result().add_interface(__import__("cni.spec.result", fromlist=["Interface"]).Interface("a"))
    res, idx2 = res.add_interface(__import__("cni.spec.result", fromlist=["Interface"]).Interface("b"))
    assert (idx, idx2) == (0, 1)
    assert [i.name for i in res.interfaces] == ["a", "b"]


def test_round_trip_through_wire_is_lossless_at_1_1() -> None:
    doc = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "n", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1400, "sandbox": "/x", "socketPath": "/s", "pciID": "0000:00:01.0"}],
        "ips": [{"interface": 0, "address": "fd00::5/64", "gateway": "fd00::1"}],
        "routes": [{"dst": "::/0", "gw": "fd00::1", "mtu": 1300, "advmss": 1200, "priority": 5, "table": 0, "scope": 0}],
        "dns": {"nameservers": ["fd00::53"]},
    }
    assert to_wire(from_wire(doc), "1.1.0") == doc
