"""host-local config parsing and the plugin run in-process (cni.invoke) against a tmp dataDir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cni import invoke
from cni.spec.errors import CNIError
from cni.spec.request import Request
from ipam import _common
from ipam.host_local import parse, store
from ipam.host_local.allocator import Owner


def conf(tmp: Path, ipam: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "host-local", "dataDir": str(tmp)}
    if ipam is None:
        base["ranges"] = [[{"subnet": "10.1.0.0/24"}]]
    else:
        base.update(ipam)
    return {"cniVersion": "1.0.0", "name": "hlnet", "type": "macvlan", "ipam": base, **top}


def req(config: dict[str, Any], cmd: str = "ADD", cid: str = "ctr1", ifname: str = "net1", args: str = "") -> Request:
    from cni.spec.args import parse_cni_args

    return Request(command=cmd, container_id=cid, netns="/run/netns/x", ifname=ifname, cni_args=parse_cni_args(args), path=("/usr/lib/cni",), config=config)


def err(fn: Any, *a: Any) -> CNIError:
    with pytest.raises(CNIError) as ei:
        fn(*a)
    return ei.value


# ---- parsing ---------------------------------------------------------------------------------


def test_range_sets_are_ordered_runtime_ipranges_then_legacy_then_ranges(tmp_path: Path) -> None:
    c = conf(tmp_path, {"subnet": "10.2.0.0/24", "ranges": [[{"subnet": "10.3.0.0/24"}]]},
             runtimeConfig={"ipRanges": [[{"subnet": "10.4.0.0/24"}]]})
    p = parse(req(c))
    assert [str(rs[0].subnet) for rs in p.rangesets] == ["10.4.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]
    assert p.wheres == ("runtimeConfig.ipRanges[0]", "ipam", "ipam.ranges[0]")


@pytest.mark.parametrize(
    "ipam,code,field",
    [
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.9.0.1"}]]}, 7, "ipam.ranges[0][0].rangeStart"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.9.0.1"}]]}, 7, "ipam.ranges[0][0].gateway"),
        ({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.128/25"}]]}, 7, "ipam.ranges[1]"),
        ({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/16"}]]}, 7, "ipam.ranges[0][1]"),
        ({"ranges": [[{"subnet": "banana"}]]}, 7, "ipam.ranges[0][0].subnet"),
        ({"ranges": [[{"rangeStart": "10.1.0.1"}]]}, 7, "ipam.ranges[0][0].subnet"),
        ({"ranges": [[{"subnet": "10.1.0.0/32"}]]}, 7, "ipam.ranges[0][0].subnet"),
        ({"ranges": []}, 7, "ipam.ranges"),
        ({}, 7, "ipam.ranges"),
        ({"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.9"}, 7, "ipam.rangeEnd"),
        ({"ranges": [[{"subnet": "10.1.0.0/24"}]], "routes": [{"dst": "nope"}]}, 7, "ipam.routes[0].dst"),
        ({"ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": 5}, 7, "ipam.dataDir"),
    ],
)
def test_bad_config_is_the_right_code_naming_the_field_and_leaves_no_file(tmp_path: Path, ipam: dict[str, Any], code: int, field: str) -> None:
    data = tmp_path / "data"
    c = conf(data, ipam)
    c["ipam"].setdefault("dataDir", str(data))
    e = err(invoke.ipam, req(c))
    assert e.code == code and field in str(e), str(e)
    assert not data.exists()


@pytest.mark.parametrize(
    "args,extra,code,text",
    [
        ("FOO=1", {}, 4, "FOO"),
        ("IP=10.1.0.300", {}, 4, "CNI_ARGS IP"),
        ("IP=10.7.0.5", {}, 7, "10.7.0.5"),
        ("IP=10.1.0.5,10.1.0.6", {}, 7, "10.1.0.6"),
        ("IP=10.1.0.1", {}, 7, "gateway"),
        ("", {"args": {"cni": {"ips": ["x"]}}}, 7, "args.cni.ips[0]"),
        ("", {"runtimeConfig": {"ips": "10.1.0.9"}}, 7, "runtimeConfig.ips"),
        ("", {"name": "../etc"}, 7, "network name"),
    ],
)
def test_bad_requests_fail_before_touching_the_disk(tmp_path: Path, args: str, extra: dict[str, Any], code: int, text: str) -> None:
    data = tmp_path / "d"
    c = conf(data)
    c.update(extra)
    e = err(invoke.ipam, req(c, args=args))
    assert e.code == code and text in str(e), str(e)
    assert not data.exists()


def test_more_than_one_address_per_family_needs_cni_0_3_0(tmp_path: Path) -> None:
    c = conf(tmp_path, {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]})
    c["cniVersion"] = "0.2.0"
    assert err(parse, req(c)).code == 1


def test_ignore_unknown_lets_kubelet_args_through(tmp_path: Path) -> None:
    c = conf(tmp_path)
    res = invoke.ipam(req(c, args="IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.0.44"))
    assert res is not None and str(res.ips[0].address) == "10.1.0.44/24"


def test_del_parses_only_where_the_files_are(tmp_path: Path) -> None:
    c = conf(tmp_path, {"ranges": [[{"subnet": "garbage"}]]})
    p = parse(req(c, "DEL", args="FOO=1"))
    assert p.data_dir == str(tmp_path) and p.rangesets == ()


def test_resolv_conf_parsing_follows_the_reference() -> None:
    dns = _common.parse_resolv_conf(
        "# c\n; c\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain a.example\ndomain b.example\n"
        "search x.example y.example\nsearch z.example\noptions ndots:5 edns0\nbogus\n"
    )
    assert dns.nameservers == ("10.0.0.53", "fd00::53") and dns.domain == "b.example"
    assert dns.search == ("x.example", "y.example", "z.example") and dns.options == ("ndots:5", "edns0")


def test_requested_ip_sources_union_keeps_order_and_drops_duplicates(tmp_path: Path) -> None:
    c = conf(tmp_path, runtimeConfig={"ips": ["10.1.0.7/24", "10.1.0.5"]}, args={"cni": {"ips": ["10.1.0.6"]}})
    r = _common.requested_ips(req(c, args="IP=10.1.0.5"))
    assert [str(x.ip) for x in r.union()] == ["10.1.0.5", "10.1.0.6", "10.1.0.7"]
    assert r.overriding() == r.runtime


# ---- the plugin, in-process ----------------------------------------------------------------------


def test_add_result_layout_and_files_are_byte_identical_to_the_reference(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.0.0.53\nsearch svc.example\n")
    c = conf(tmp_path, {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00:2::/64", "gw": "fd00:1::99"}],
                        "resolvConf": str(rc)})
    res = invoke.ipam(req(c, cid="abc123"))
    assert res is not None and res.interfaces == ()
    assert [(str(i.address), str(i.gateway), i.interface) for i in res.ips] == [("10.1.0.2/24", "10.1.0.1", None), ("fd00:1::2/64", "fd00:1::1", None)]
    assert [str(r.dst) for r in res.routes] == ["0.0.0.0/0", "fd00:2::/64"]
    assert res.dns.nameservers == ("10.0.0.53",) and res.dns.search == ("svc.example",)
    d = tmp_path / "hlnet"
    assert sorted(os.listdir(d)) == ["10.1.0.2", "fd00:1::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    assert (d / "10.1.0.2").read_bytes() == b"abc123\r\nnet1"
    assert (d / "last_reserved_ip.1").read_bytes() == b"fd00:1::2"
    assert oct((d / "10.1.0.2").stat().st_mode & 0o777) == "0o600"


def test_missing_resolv_conf_is_an_io_error_and_reserves_nothing(tmp_path: Path) -> None:
    c = conf(tmp_path, {"ranges": [[{"subnet": "10.1.0.0/24"}]], "resolvConf": str(tmp_path / "nope")})
    assert err(invoke.ipam, req(c)).code == 5
    assert not (tmp_path / "hlnet").exists()


def test_failure_in_a_later_range_set_undoes_the_earlier_reservations(tmp_path: Path) -> None:
    c = conf(tmp_path, {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/30"}]]})
    invoke.ipam(req(c, cid="first"))  # takes the only address of 10.2.0.0/30
    e = err(invoke.ipam, req(c, cid="second"))
    assert e.code == 101 and "10.2.0.1-10.2.0.2" in e.msg and "ipam.ranges[1]" in e.msg
    with store.locked(str(tmp_path), "hlnet") as st:
        assert st is not None and st.owned_by(Owner("second", "net1")) == []


def test_del_is_idempotent_and_check_follows_the_reservation(tmp_path: Path) -> None:
    c = conf(tmp_path)
    res = invoke.ipam(req(c))
    assert res is not None
    c_check = dict(c, prevResult={"cniVersion": "1.0.0", "ips": [{"address": str(res.ips[0].address)}]})
    invoke.ipam(req(c_check, "CHECK"))
    wrong = dict(c, prevResult={"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.99/24"}]})
    assert err(invoke.ipam, req(wrong, "CHECK")).code == 3
    invoke.ipam(req(c, "DEL"))
    invoke.ipam(req(c, "DEL"))
    assert err(invoke.ipam, req(c, "CHECK")).code == 3
    assert sorted(os.listdir(tmp_path / "hlnet")) == ["last_reserved_ip.0", "lock"]


def test_del_of_a_network_never_used_creates_nothing(tmp_path: Path) -> None:
    invoke.ipam(req(conf(tmp_path), "DEL"))
    assert os.listdir(tmp_path) == []


def test_del_releases_legacy_container_id_only_files_when_no_exact_match(tmp_path: Path) -> None:
    d = tmp_path / "hlnet"
    d.mkdir()
    (d / "10.1.0.9").write_text("ctr1")
    (d / "10.1.0.10").write_bytes(b"ctr1\r\nnet2")
    invoke.ipam(req(conf(tmp_path), "DEL"))
    assert sorted(os.listdir(d)) == ["10.1.0.10", "lock"]


def test_gc_releases_what_is_not_in_valid_attachments_under_either_key(tmp_path: Path) -> None:
    c = conf(tmp_path)
    for cid in ("keep", "drop1", "drop2"):
        invoke.ipam(req(c, cid=cid))
    d = tmp_path / "hlnet"
    (d / "10.1.0.200").write_text("keep")  # legacy form: kept because the container is valid
    (d / "10.1.0.201").write_text("gone")
    (d / "10.1.0.202").write_bytes(b"")  # a reference crash leftover: nobody can own it
    (d / ".multinic-tmp-1-abcd").write_bytes(b"x")
    g = {k: v for k, v in c.items()}
    g["cni.dev/attachments"] = [{"containerID": "keep", "ifname": "net1"}]
    g["cniVersion"] = "1.1.0"
    invoke.ipam(req(g, "GC", cid="", ifname=""))
    assert sorted(os.listdir(d)) == ["10.1.0.2", "10.1.0.200", "last_reserved_ip.0", "lock"]


def test_gc_without_a_valid_list_collects_nothing(tmp_path: Path) -> None:
    c = dict(conf(tmp_path), cniVersion="1.1.0")
    invoke.ipam(req(c, cid="a"))
    invoke.ipam(req(c, "GC", cid="", ifname=""))
    assert "10.1.0.2" in os.listdir(tmp_path / "hlnet")


def test_forced_exec_of_host_local_uses_the_reference_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.access("/usr/lib/cni/host-local", os.X_OK):
        pytest.skip("needs the reference /usr/lib/cni/host-local (containernetworking-plugins)")
    monkeypatch.setattr(invoke, "_force_exec", {"host-local"})
    res = invoke.ipam(req(conf(tmp_path), cid="viaexec"))
    assert res is not None and str(res.ips[0].address) == "10.1.0.2/24"
    assert (tmp_path / "hlnet" / "10.1.0.2").read_bytes() == b"viaexec\r\nnet1"


def test_a_reservation_appearing_behind_the_listing_is_skipped_not_overwritten(tmp_path: Path) -> None:
    import ipaddress

    from ipam.host_local import allocator

    rs = (allocator.make_range(ipaddress.ip_network("10.1.0.0/29")),)
    with store.locked(str(tmp_path), "hlnet") as st:
        assert st is not None
        st.taken(4)  # list the (empty) directory now
        (tmp_path / "hlnet" / "10.1.0.2").write_bytes(b"other\r\neth0")  # e.g. written by hand
        got = allocator.allocate(rs, 0, st, Owner("me", "eth0"))
    assert str(got.address) == "10.1.0.3/29"
    assert (tmp_path / "hlnet" / "10.1.0.2").read_bytes() == b"other\r\neth0"
