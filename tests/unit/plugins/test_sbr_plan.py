"""sbr's pure half: config, gateway choice, table ids, rule priority, which routes move."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni.spec.errors import CNIError
from cni.spec.request import Request
from plugins import sbr


def prev(ips: list[dict[str, Any]], routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/x"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": ips, "routes": routes or []}


def req(p: dict[str, Any] | None, cmd: str = "ADD", **conf: Any) -> Request:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "n", "type": "sbr", **conf}
    if p is not None:
        config["prevResult"] = p
    return Request(command=cmd, container_id="c1", netns="/x", ifname="net1", config=config)


def plan(p: dict[str, Any], **conf: Any) -> list[sbr.SourceRoute]:
    parsed = sbr.parse(req(p, **conf))
    assert parsed.prev is not None
    return sbr.plan(parsed.net, parsed.prev, "net1")


def test_gateway_from_prev_result_ip_and_only_this_interface() -> None:
    out = plan(prev([{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
                     {"address": "10.2.0.5/24", "gateway": "10.2.0.1", "interface": 1}]))
    assert [(str(s.ip), str(s.gateway)) for s in out] == [("10.1.0.5/24", "10.1.0.1")]


def test_gateway_from_config_prefers_one_in_the_subnet() -> None:
    out = plan(prev([{"address": "10.1.0.5/24", "interface": 0}, {"address": "fd00::5/64", "interface": 0}]),
               gateways=["192.0.2.1", "10.1.0.254", "fd00::1"])
    assert [str(s.gateway) for s in out] == ["10.1.0.254", "fd00::1"]


def test_gateway_from_prev_default_route() -> None:
    out = plan(prev([{"address": "10.1.0.5/24", "interface": 0}], [{"dst": "0.0.0.0/0", "gw": "10.1.0.9"}]))
    assert str(out[0].gateway) == "10.1.0.9"


def test_no_gateway_anywhere_is_error_7() -> None:
    with pytest.raises(CNIError) as ei:
        plan(prev([{"address": "10.1.0.5/24", "interface": 0}]))
    assert ei.value.code == 7 and "no gateway" in ei.value.msg and "gateways" in ei.value.details


def test_fixed_table_needs_no_gateway() -> None:
    out = plan(prev([{"address": "10.1.0.5/24", "interface": 0}]), table=5001)
    assert out[0].gateway is None


def test_no_ip_for_the_interface_is_error_7() -> None:
    with pytest.raises(CNIError) as ei:
        plan(prev([{"address": "10.2.0.5/24", "gateway": "10.2.0.1", "interface": 1}]))
    assert ei.value.code == 7


@pytest.mark.parametrize("conf", [{"table": 254}, {"table": 0}, {"table": 255}, {"gateways": ["not-an-ip"]}, {"table": "x"}])
def test_bad_config_is_error_7(conf: dict[str, Any]) -> None:
    with pytest.raises(CNIError) as ei:
        sbr.parse(req(prev([]), **conf))
    assert ei.value.code == 7


def test_missing_prev_result_is_error_7_on_add_and_check_only() -> None:
    for cmd in ("ADD", "CHECK"):
        with pytest.raises(CNIError) as ei:
            sbr.parse(req(None, cmd))
        assert ei.value.code == 7
    assert sbr.parse(req(None, "DEL")).prev is None


def test_pick_tables_skips_used_and_reserved() -> None:
    assert sbr.pick_tables({100, 102}, 3) == [101, 103, 104]
    assert sbr.pick_tables(set(), 1, first=253) == [256]


def test_default_rule_priority_is_what_the_kernel_picks() -> None:
    assert sbr.default_rule_priority([0, 32766, 32767]) == 32765
    assert sbr.default_rule_priority([0, 32765, 32766, 32767]) == 32764


def r(dst: str, gw: str | None = None, src: str | None = None, fam: int = 4) -> dict[str, Any]:
    return {"family": fam, "dst": dst, "gateway": gw, "prefsrc": src}


def test_route_belongs_reference_rule() -> None:
    ip = ipaddress.ip_interface("10.1.0.5/24")
    assert sbr.route_belongs(ip, r("10.1.0.0/24", src="10.1.0.5"))
    assert sbr.route_belongs(ip, r("10.9.0.0/16", gw="10.1.0.1"))
    assert sbr.route_belongs(ip, r("10.8.0.0/16"))  # neither src nor gw: generic
    assert not sbr.route_belongs(ip, r("10.9.0.0/16", gw="10.2.0.1"))
    assert not sbr.route_belongs(ip, r("fd00::/64", fam=6))
    assert sbr.keep_in_main(r("fe80::/64", fam=6)) and not sbr.keep_in_main(r("fd00::/64", fam=6))


def test_state_files_of_different_attachments_never_collide(tmp_path: object) -> None:
    from plugins._chained import state_path

    assert state_path(str(tmp_path), "a_b", "c") != state_path(str(tmp_path), "a", "b_c")


def test_del_lock_creates_nothing_when_no_state_dir_exists(tmp_path: object) -> None:
    import os

    from plugins._chained import locked

    d = os.path.join(str(tmp_path), "never-created")
    with locked(d, create=False):
        pass
    assert not os.path.exists(d)
