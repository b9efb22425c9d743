"""Pod network annotation parsing (multi-net spec §4.1, Multus behaviour)."""

from __future__ import annotations

import pytest

from cni.k8s.annotations import AnnotationError, parse_default_network, parse_networks, parse_node_selector


def test_comma_form_defaults_namespace_and_trims_items() -> None:
    sels = parse_networks(" macvlan-conf , other/ipvlan@data0 ,default/br", "dev")
    assert [(s.namespace, s.name, s.interface) for s in sels] == [
        ("dev", "macvlan-conf", ""), ("other", "ipvlan", "data0"), ("default", "br", "")]


@pytest.mark.parametrize("value", ["a/b/c", "a@b@c", "Upper", "-bad", "ok,,ok2", "ns/na_me", "x@bad/if"])
def test_comma_form_rejects_malformed_items_with_the_item_named(value: str) -> None:
    with pytest.raises(AnnotationError) as e:
        parse_networks(value, "default")
    assert e.value.code == 7


def test_comma_form_rejects_bad_interface_names() -> None:
    with pytest.raises(AnnotationError, match="longer than 15"):
        parse_networks("net@abcdefghijklmnop", "default")


def test_json_form_carries_runtime_config() -> None:
    sels = parse_networks(
        '[{"name":"mv","interface":"fast0","ips":["10.1.1.11/24"],"mac":"c2:b0:57:49:47:f1",'
        '"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],'
        '"cni-args":{"foo":"bar"},"default-route":["10.1.1.1"]}]', "team")
    (s,) = sels
    assert s.key == "team/mv" and s.interface == "fast0"
    assert s.runtime_config() == {"ips": ["10.1.1.11/24"], "mac": "c2:b0:57:49:47:f1",
                                  "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert s.cni_args == {"foo": "bar"} and s.default_route == ("10.1.1.1",)


def test_json_single_object_is_accepted() -> None:
    assert parse_networks('{"name":"a"}', "ns")[0].key == "ns/a"


@pytest.mark.parametrize("value,match", [
    ('[{"interface":"x"}]', "no 'name'"),
    ('[{"name":"a","ips":["nope"]}]', "invalid IP"),
    ('[{"name":"a","mac":"zz"}]', "invalid MAC"),
    ('[{"name":"a","default-route":["x"]}]', "invalid gateway"),
    ('[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["10.0.1.1"]}]', "more than one"),
    ('[1]', "must be an object"),
    ('[{"name":"a"', "not valid JSON"),
])
def test_json_form_errors_name_the_problem(value: str, match: str) -> None:
    with pytest.raises(AnnotationError, match=match):
        parse_networks(value, "default")


def test_empty_annotation_means_no_networks() -> None:
    assert parse_networks("  ", "default") == []


def test_oversized_annotation_is_refused() -> None:
    with pytest.raises(AnnotationError, match="larger than"):
        parse_networks("a," * 200_000, "default")


def test_default_network_must_be_exactly_one() -> None:
    assert parse_default_network("kube-system/calico", "x").key == "kube-system/calico"
    with pytest.raises(AnnotationError):
        parse_default_network("a,b", "x")


def test_node_selector_terms() -> None:
    assert parse_node_selector("zone=a, rack=r1") == {"zone": "a", "rack": "r1"}
    with pytest.raises(Exception, match="LABEL_KEY=LABEL_VALUE"):
        parse_node_selector("justakey")


def test_ipam_claim_reference_is_parsed_and_ips_with_a_claim_is_invalid() -> None:
    (sel,) = parse_networks('[{"name": "net", "ipam-claim-reference": "vm-a.net1"}]', "ns")
    assert sel.ipam_claim_reference == "vm-a.net1" and "ipam-claim-reference" not in sel.extra
    with pytest.raises(AnnotationError, match="both 'ips' and 'ipam-claim-reference'"):
        parse_networks('[{"name": "net", "ips": ["10.0.0.5/24"], "ipam-claim-reference": "c"}]', "ns")
    for bad in ('"Bad_Name"', "7", '"a/b"'):
        with pytest.raises(AnnotationError, match="ipam-claim-reference"):
            parse_networks(f'[{{"name": "net", "ipam-claim-reference": {bad}}}]', "ns")
