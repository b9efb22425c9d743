"""Go encoding/json decoding rules (cni/spec/gojson.py and the Model base) — what the Go
callers and reference plugins accept is what we accept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field

from cni.spec import gojson
from cni.spec.errors import InvalidConfig
from cni.spec.model import Model, validate
from cni.spec.request import Request
from plugins import portmap


class _Entry(Model):
    host_port: int = Field(alias="hostPort")
    protocol: str = "tcp"
    host_ip: str = Field("", alias="hostIP")


class _Conf(Model):
    snat: bool = True
    mark: int | None = Field(None, alias="markMasqBit")
    ratio: float = 0.0
    entries: list[_Entry] = Field(default_factory=list)
    name: str = "default"


# ---- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["hostPort", "HostPort", "HOSTPORT", "hostport", "hOsTpOrT"])
def test_key_matches_field_case_insensitively(key: str) -> None:
    assert validate(_Entry, {key: 80}).host_port == 80


def test_kelvin_sign_and_long_s_fold_to_ascii_as_in_go() -> None:
    # bytes.EqualFold: U+212A KELVIN SIGN ~ k, U+017F LONG S ~ s.
    assert validate(_Conf, {"\u017fnat": False}).snat is False
    assert gojson.fold("mar\u212a") == "mark"
    # U+0131 dotless i upper-cases to I in Python, but Go's simple fold keeps it apart.
    assert validate(_Conf, {"na\u0131me": "x"}).name == "default"


def test_exact_match_wins_then_last_key_wins() -> None:
    assert validate(_Entry, {"hostPort": 1, "HostPort": 2}).host_port == 2
    assert validate(_Entry, {"HostPort": 2, "hostPort": 1}).host_port == 1
    # A key repeated verbatim: Go applies keys in document order, the last one wins.
    doc = json.loads('{"hostPort":1,"HostPort":2,"hostPort":3}', object_pairs_hook=gojson.decode_object_pairs)
    assert validate(_Entry, doc).host_port == 3


def test_unknown_keys_are_ignored_and_kept_aside() -> None:
    c = validate(_Conf, {"snat": False, "futureKnob": {"x": 1}})
    assert c.snat is False and c.model_extra == {"futureKnob": {"x": 1}}


def test_python_attribute_name_is_not_a_key() -> None:
    assert validate(_Conf, {"markMasqBit": 3, "mark": 5}).mark == 3
    with pytest.raises(InvalidConfig, match="hostPort"):
        validate(_Entry, {"host_port": 80})


# ---- null -----------------------------------------------------------------------------------


def test_null_leaves_every_field_at_its_default() -> None:
    c = validate(_Conf, {"snat": None, "markMasqBit": None, "ratio": None, "entries": None, "name": None})
    assert (c.snat, c.mark, c.ratio, c.entries, c.name) == (True, None, 0.0, [], "default")


def test_null_after_a_value_resets_a_pointer_but_not_a_scalar() -> None:
    # Go: null into *int sets nil; null into bool has no effect (the earlier true stays).
    c = validate(_Conf, {"markMasqBit": 4, "MarkMasqBit": None, "snat": False, "SNAT": None})
    assert c.mark is None and c.snat is False


# ---- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.0, 1e3, "1", True, [1], {"a": 1}])
def test_int_field_takes_only_an_integral_number(bad: Any) -> None:
    with pytest.raises(InvalidConfig) as ei:
        validate(_Entry, {"hostPort": bad})
    assert ei.value.code == 7 and "'hostPort'" in ei.value.msg


@pytest.mark.parametrize("bad", [0, 1, "true", "false", None])
def test_bool_field_takes_only_true_or_false(bad: Any) -> None:
    if bad is None:
        assert validate(_Conf, {"snat": bad}).snat is True  # null: no effect
        return
    with pytest.raises(InvalidConfig, match="'snat'"):
        validate(_Conf, {"snat": bad})


def test_float_field_takes_any_number_but_not_a_string() -> None:
    assert validate(_Conf, {"ratio": 2}).ratio == 2.0
    with pytest.raises(InvalidConfig, match="'ratio'"):
        validate(_Conf, {"ratio": "2"})


def test_string_field_takes_no_number() -> None:
    with pytest.raises(InvalidConfig, match="'entries\\[0\\].protocol'"):
        validate(_Conf, {"entries": [{"hostPort": 1, "protocol": 6}]})


def test_hand_written_value_helpers() -> None:
    assert gojson.go_int(5, "a") == 5
    for bad in (5.0, 1e3, "5", True):
        with pytest.raises(InvalidConfig, match="'a': must be an integer"):
            gojson.go_int(bad, "a")
    with pytest.raises(InvalidConfig, match="out of range"):
        gojson.go_int(70000, "a", lo=1, hi=65535)
    assert gojson.go_bool(False, "b") is False
    with pytest.raises(InvalidConfig, match="'b': must be true or false, got the number 1"):
        gojson.go_bool(1, "b")
    with pytest.raises(InvalidConfig, match="must be a string"):
        gojson.go_str(1, "c")


# ---- schemas (hand-written parsers) ---------------------------------------------------------

_RANGE = {"subnet": gojson.SCALAR, "rangeStart": gojson.SCALAR, "gateway": gojson.SCALAR}
_IPAM = {"type": gojson.SCALAR, "ranges": gojson.ListOf(gojson.ListOf(_RANGE)), "routes": gojson.NILABLE}


def test_canonical_renames_keys_at_every_described_depth() -> None:
    raw = {"Type": "host-local", "RANGES": [[{"Subnet": "10.0.0.0/24", "rangestart": "10.0.0.5", "x": 1}]],
           "Routes": [{"DST": "0.0.0.0/0"}], "other": {"Keep": 1}}
    out = gojson.canonical(raw, _IPAM)
    assert out == {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.5", "x": 1}]],
                   "routes": [{"DST": "0.0.0.0/0"}], "other": {"Keep": 1}}
    assert raw["Type"] == "host-local"  # the input is not modified


def test_canonical_leaves_wrong_types_for_the_parser_to_report() -> None:
    assert gojson.canonical({"ranges": "nope"}, _IPAM) == {"ranges": "nope"}
    assert gojson.canonical([1], _IPAM) == [1]


_KEY_CHARS = st.sampled_from(list("hostPrHOSTPR\u212a\u017f_x"))


@given(st.dictionaries(st.text(_KEY_CHARS, min_size=1, max_size=9), st.integers(1, 65535), max_size=6))
def test_match_keys_agrees_with_a_direct_model_of_go(obj: dict[str, int]) -> None:
    """Reference model: walk keys in order; exact name else EqualFold; the last assignment wins."""
    fields = {"hostPort": False, "protocol": False}

    def equal_fold(a: str, b: str) -> bool:
        norm = {"\u212a": "k", "\u017f": "s"}
        return len(a) == len(b) and all(
            x == y or (x.isascii() and y.isascii() and x.lower() == y.lower()) or norm.get(x, x).lower() == norm.get(y, y).lower()
            for x, y in zip(a, b, strict=True))

    want: dict[str, int] = {}
    for key, val in obj.items():
        name = key if key in fields else next((f for f in fields if equal_fold(f, key)), None)
        if name is not None:
            want[name] = val
    got = gojson.match_keys(obj, fields)
    assert {k: v for k, v in got.items() if k in fields} == want


# ---- the containerd 1.6 shape that started this ---------------------------------------------


def _portmap_req(rc: dict[str, Any]) -> Request:
    conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "portmap", "runtimeConfig": rc,
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                           "ips": [{"address": "10.1.0.5/24", "interface": 0}]}}
    return Request(command="ADD", container_id="c1", netns="/run/netns/x", ifname="eth0", config=conf)


def test_portmap_takes_go_cni_untagged_port_mappings() -> None:
    # go-cni (containerd 1.6) PortMapping has no json tags: the Go field names go on the wire.
    parsed = portmap.parse(_portmap_req({"portMappings": [
        {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
        {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": "127.0.0.1"},
    ]}))
    assert [(m.host_port, m.container_port, m.protocol, str(m.host_ip)) for m in parsed.mappings] == [
        (8080, 80, "tcp", "None"), (5353, 53, "udp", "127.0.0.1")]


def test_portmap_refuses_what_go_refuses_with_the_field_path() -> None:
    with pytest.raises(InvalidConfig) as ei:
        portmap.parse(_portmap_req({"portMappings": [{"HostPort": 8080.0, "ContainerPort": 80}]}))
    assert ei.value.code == 7 and "runtimeConfig.portMappings[0].hostPort" in ei.value.msg


# ---- every Go-decoded input: NetConf, runtimeConfig, args, prevResult, IPAM configs --------


def test_netconf_keys_runtime_config_and_args_fold_like_go() -> None:
    from cni.spec.config import plugin_conf

    conf = plugin_conf({"CNIVersion": "1.0.0", "Name": "n", "TYPE": "bridge", "RuntimeConfig": {
        "portMappings": [{"HOSTPORT": 1, "containerport": 2}], "Mac": "aa:bb:cc:dd:ee:ff",
        "IPRanges": [[{"Subnet": "10.0.0.0/24"}]], "Bandwidth": {"IngressRate": 5}}, "Args": {"CNI": {"IPs": ["10.0.0.9"]}},
        "Unknown": 1})
    assert conf == {"cniVersion": "1.0.0", "name": "n", "type": "bridge", "runtimeConfig": {
        "portMappings": [{"hostPort": 1, "containerPort": 2}], "mac": "aa:bb:cc:dd:ee:ff",
        "ipRanges": [[{"subnet": "10.0.0.0/24"}]], "bandwidth": {"ingressRate": 5}}, "args": {"cni": {"ips": ["10.0.0.9"]}},
        "Unknown": 1}


def test_prev_result_keys_fold_like_go() -> None:
    from cni.spec.result import from_wire

    r = from_wire({"CNIVersion": "1.0.0", "Interfaces": [{"Name": "eth0", "Sandbox": "/run/netns/x", "MAC": "aa:bb:cc:dd:ee:ff"}],
                   "IPs": [{"Address": "10.0.0.5/24", "Gateway": "10.0.0.1", "Interface": 0}],
                   "Routes": [{"Dst": "0.0.0.0/0", "GW": "10.0.0.1"}], "DNS": {"Nameservers": ["10.0.0.53"]}})
    assert r.interfaces[0].mac == "aa:bb:cc:dd:ee:ff" and str(r.ips[0].address) == "10.0.0.5/24"
    assert r.ips[0].interface == 0 and str(r.routes[0].gw) == "10.0.0.1" and r.dns.nameservers == ("10.0.0.53",)


def _ipam_req(ipam: dict[str, Any], **extra: Any) -> Request:
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "IPAM": ipam, **extra}
    from cni.spec.config import plugin_conf

    return Request(command="ADD", container_id="c1", netns="/run/netns/x", ifname="net1", config=plugin_conf(conf))


def test_host_local_config_keys_fold_like_go() -> None:
    from ipam import host_local

    conf = host_local.parse(_ipam_req({"Type": "host-local", "DATADIR": "/tmp/x", "Ranges": [[
        {"Subnet": "10.9.0.0/24", "RANGESTART": "10.9.0.10", "rangeend": "10.9.0.20", "Gateway": "10.9.0.1"}]],
        "Routes": [{"DST": "0.0.0.0/0"}]}))
    (rng,) = conf.rangesets[0]
    assert conf.data_dir == "/tmp/x" and str(rng.gateway) == "10.9.0.1" and str(rng.start) == "10.9.0.10"
    assert str(conf.routes[0].dst) == "0.0.0.0/0"


def test_static_config_keys_fold_like_go() -> None:
    from ipam import static

    conf = static.parse(_ipam_req({"type": "static", "Addresses": [{"Address": "10.9.0.5/24", "GATEWAY": "10.9.0.1"}]}))
    assert [str(a.address) for a in conf.addresses] == ["10.9.0.5/24"] and str(conf.addresses[0].gateway) == "10.9.0.1"


def test_whereabouts_config_keys_fold_like_go(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipam.whereabouts import config as wb

    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", "")
    conf = wb.parse(_ipam_req({"type": "whereabouts", "Range": "10.7.0.0/24", "RANGE_START": "10.7.0.10",
                               "Exclude": ["10.7.0.12/32"], "Gateway": "10.7.0.1", "Log_Level": "debug"}))
    assert str(conf.ranges[0].network) == "10.7.0.0/24" and str(conf.gateways[0]) == "10.7.0.1"
    assert conf.log_level == "debug"


def test_a_repeated_object_is_decoded_into_the_earlier_one_as_go_does() -> None:
    # Seen from the reference: host-local given "ipam" twice uses both objects' ranges, and
    # static keeps addresses[0].gateway from the first "ipam" when the second sets only address.
    doc = gojson.loads('{"ipam":{"type":"static","addresses":[{"address":"10.0.0.5/24","gateway":"10.0.0.1"}]},'
                       '"IPAM":{"addresses":[{"address":"10.0.0.7/24"}]},"Ipam":{"dns":{"domain":"x"}}}')
    from cni.spec.config import plugin_conf

    assert plugin_conf(doc)["ipam"] == {"type": "static", "addresses": [{"address": "10.0.0.7/24", "gateway": "10.0.0.1"}],
                                        "dns": {"domain": "x"}}
    assert gojson.merge([{"a": 1}, {"b": 2}], [{"c": 3}]) == [{"a": 1, "c": 3}]  # cut to the later length
    assert gojson.loads('{"a":{"x":1,"y":1},"a":{"y":2}}') == {"a": {"x": 1, "y": 2}}
