"""tuning's pure half: sysctl key confinement, override precedence, allowlist, result MAC."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cni.spec.errors import CNIError
from cni.spec.request import Request
from cni.spec.result import from_wire
from plugins import tuning

PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "mac": "aa:aa:aa:aa:aa:aa", "sandbox": "/x"}],
        "ips": [{"address": "10.1.0.5/24", "interface": 0}]}


def req(cmd: str = "ADD", cni_args: dict[str, str] | None = None, prev: Any = PREV, **conf: Any) -> Request:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "n", "type": "tuning", **conf}
    if prev is not None:
        config["prevResult"] = prev
    return Request(command=cmd, container_id="c1", netns="/x", ifname="net1", cni_args=cni_args or {}, config=config)


@pytest.mark.parametrize("key,path", [
    ("net.ipv4.conf.IFNAME.rp_filter", "net/ipv4/conf/net1/rp_filter"),
    ("net/ipv4/conf/eth0.100/rp_filter", "net/ipv4/conf/eth0.100/rp_filter"),  # '/' keeps dots
    ("net.core.somaxconn", "net/core/somaxconn"),
])
def test_sysctl_path(key: str, path: str) -> None:
    assert tuning.sysctl_path(key, "net1") == path


@pytest.mark.parametrize("key", [
    "net/../kernel/hostname", "net/ipv4/../../kernel/x", "/proc/sys/net/ipv4/ip_forward", "kernel.hostname",
    "net..ipv4", "net", "", "net/./ipv4/ip_forward", "net/ipv4/conf//rp_filter",
])
def test_sysctl_keys_that_could_escape_are_error_7(key: str) -> None:
    with pytest.raises(CNIError) as ei:
        tuning.sysctl_path(key, "net1")
    assert ei.value.code == 7


def test_mac_precedence_config_env_runtime_args() -> None:
    base = {"mac": "02:00:00:00:00:01"}
    assert tuning.parse(req(**base)).mac == "02:00:00:00:00:01"
    assert tuning.parse(req(cni_args={"MAC": "02:00:00:00:00:02"}, **base)).mac == "02:00:00:00:00:02"
    rc = {"runtimeConfig": {"mac": "02:00:00:00:00:03"}}
    assert tuning.parse(req(cni_args={"MAC": "02:00:00:00:00:02"}, **base, **rc)).mac == "02:00:00:00:00:03"
    args = {"args": {"cni": {"mac": "02-00-00-00-00-0A"}}}
    assert tuning.parse(req(cni_args={"MAC": "02:00:00:00:00:02"}, **base, **rc, **args)).mac == "02:00:00:00:00:0a"


def test_args_cni_overrides_everything_else() -> None:
    t = tuning.parse(req(mtu=1400, promisc=False, sysctl={"net.core.somaxconn": "100"},
                         args={"cni": {"mtu": 1300, "promisc": True, "allmulti": True, "txQLen": 10,
                                       "sysctl": {"net.ipv4.conf.IFNAME.rp_filter": "2"}}}))
    assert (t.mtu, t.promisc, t.allmulti, t.txqlen) == (1300, True, True, 10)
    assert {s.rel: s.value for s in t.sysctls} == {"net/core/somaxconn": "100", "net/ipv4/conf/net1/rp_filter": "2"}


@pytest.mark.parametrize("conf", [{"mac": "zz:00:00:00:00:01"}, {"mac": "01:00:5e:00:00:01"}, {"mtu": 40},
                                  {"mtu": -1}, {"txQLen": -5}, {"sysctl": {"net.core.somaxconn": 5}}, {"promisc": "maybe"}])
def test_bad_values_are_error_7(conf: dict[str, Any]) -> None:
    with pytest.raises(CNIError) as ei:
        tuning.parse(req(**conf))
    assert ei.value.code == 7


def test_unknown_cni_args_are_refused_unless_ignore_unknown() -> None:
    with pytest.raises(CNIError) as ei:
        tuning.parse(req(cni_args={"FOO": "1"}))
    assert ei.value.code == 4
    assert tuning.parse(req(cni_args={"FOO": "1", "IgnoreUnknown": "1"})).mac is None


def test_missing_prev_result_is_error_7_on_add_and_check() -> None:
    for cmd in ("ADD", "CHECK"):
        with pytest.raises(CNIError) as ei:
            tuning.parse(req(cmd, prev=None))
        assert ei.value.code == 7 and "prevResult" in ei.value.msg
    tuning.parse(req("DEL", prev=None, sysctl={"kernel.hostname": "x"}))  # DEL never fails on config it will not use


def test_allowlist_is_an_unanchored_search_like_the_reference() -> None:
    allow = tuning.parse_allowlist("^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\nnet.core.somaxconn\n", "f")
    assert tuning.refused(["net.ipv4.conf.IFNAME.rp_filter", "net.core.somaxconn", "net.ipv4.ip_forward"], allow) == ["net.ipv4.ip_forward"]
    with pytest.raises(CNIError) as ei:
        tuning.parse_allowlist("([bad", "f")
    assert ei.value.code == 7


def test_result_mac_is_updated_for_the_interface() -> None:
    res = tuning.with_mac(from_wire(PREV), "net1", "02:00:00:00:00:09")
    assert res.interfaces[0].mac == "02:00:00:00:00:09"
    assert re.fullmatch(r"[0-9a-f:]{17}", res.interfaces[0].mac)


@pytest.mark.parametrize("cmd", ["STATUS", "GC"])
def test_status_and_gc_accept_ifname_sysctls_without_an_attachment(cmd: str) -> None:
    """STATUS/GC come without CNI_IFNAME: the "IFNAME" key must not become an empty path component
    (error 7 "empty component" before; found by the conformance harness's ``status`` check)."""
    config = {"cniVersion": "1.1.0", "name": "n", "type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}
    assert tuning.PLUGIN.run(Request(command=cmd, config=config)) is None
