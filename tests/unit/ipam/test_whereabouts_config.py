"""whereabouts config: every key, the flat file merged under the NAD, and error 7 naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cni.spec.errors import CNIError, InvalidConfig
from cni.spec.request import Request
from ipam.whereabouts import config as wconfig


@pytest.fixture(autouse=True)
def no_host_flat_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", str(tmp_path / "absent.conf"))


def req(ipam: dict[str, Any], cni_args: dict[str, str] | None = None) -> Request:
    return Request(command="ADD", container_id="c1", netns="/x", ifname="net1", cni_args=cni_args or {},
                   config={"cniVersion": "1.0.0", "name": "n", "type": "macvlan",
                           "ipam": {"type": "whereabouts", **ipam}})


def parse(ipam: dict[str, Any], **kw: Any) -> wconfig.Conf:
    return wconfig.parse(req(ipam, **kw))


def bad(ipam: dict[str, Any], field: str) -> CNIError:
    with pytest.raises(InvalidConfig) as ei:
        parse(ipam)
    assert ei.value.code == 7
    assert field in ei.value.msg, ei.value.msg
    return ei.value


def test_cidr_host_address_is_normalised_to_the_network() -> None:
    c = parse({"range": "192.168.1.77/24"})
    assert str(c.ranges[0].network) == "192.168.1.0/24"
    assert c.pool_names() == ["192.168.1.0-24"]


def test_start_end_range_form() -> None:
    r = parse({"range": "192.168.1.11-192.168.1.23/24"}).ranges[0]
    assert (str(r.ip_at(r.lo)), str(r.ip_at(r.hi))) == ("192.168.1.11", "192.168.1.23")


def test_ip_ranges_come_after_the_top_level_range_and_gateways_stay_in_their_family() -> None:
    c = parse({"range": "10.0.0.0/24", "gateway": "10.0.0.254",
               "ipRanges": [{"range": "fd00::/64", "gateway": "fd00::1"}, {"range": "10.9.0.0/16"}]})
    assert [str(r.network) for r in c.ranges] == ["10.0.0.0/24", "fd00::/64", "10.9.0.0/16"]
    assert [str(g) if g else None for g in c.gateways] == ["10.0.0.254", "fd00::1", None]


def test_defaults_and_podref() -> None:
    c = parse({"range": "10.0.0.0/24"}, cni_args={"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p", "IgnoreUnknown": "1"})
    assert c.overlapping is True and c.datastore == "file" and c.network_name == ""
    assert c.owner.podref == "ns/p" and c.owner.ifname == "net1" and c.owner.container_id == "c1"


def test_kubeconfig_makes_kubernetes_the_default_datastore() -> None:
    assert parse({"range": "10.0.0.0/24", "kubernetes": {"kubeconfig": "/k"}}).datastore == "kubernetes"


def test_etcd_options_and_password_not_in_repr() -> None:
    c = parse({"range": "10.0.0.0/24", "datastore": "etcd", "etcd_host": "127.0.0.1:2379,10.0.0.2:2379",
               "etcd_username": "u", "etcd_password": "s3cret-pw"})
    assert c.etcd is not None
    assert c.etcd.endpoints == ("http://127.0.0.1:2379", "http://10.0.0.2:2379")
    assert "s3cret-pw" not in repr(c)
    tls = parse({"range": "10.0.0.0/24", "datastore": "etcd", "etcd_host": "h:2379", "etcd_ca_cert_file": "/ca",
                 "etcd_cert_file": "/c", "etcd_key_file": "/k"}).etcd
    assert tls is not None and tls.endpoints == ("https://h:2379",)


def test_flat_file_is_merged_under_the_nad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "kubernetes", "kubernetes": {"kubeconfig": "/flat/kubeconfig"},
                                "log_file": "/flat.log", "log_level": "debug", "range": "10.1.0.0/16"}))
    monkeypatch.setenv("MULTINIC_WHEREABOUTS_FLATFILE", f"{tmp_path / 'nope'}:{flat}")
    c = parse({"range": "10.0.0.0/24", "log_level": "error"})
    assert str(c.ranges[0].network) == "10.0.0.0/24"  # the NAD wins
    assert c.log_level == "error" and c.log_file == "/flat.log"
    assert c.datastore == "kubernetes" and c.kubeconfig == "/flat/kubeconfig"
    # configuration_path points at a specific file; a missing one is an error naming the field.
    other = tmp_path / "other.conf"
    other.write_text(json.dumps({"network_name": "blue"}))
    assert parse({"range": "10.0.0.0/24", "configuration_path": str(other)}).network_name == "blue"
    bad({"range": "10.0.0.0/24", "configuration_path": str(tmp_path / "missing")}, "ipam.configuration_path")


@pytest.mark.parametrize(("ipam", "field"), [
    ({}, "ipam.range"),
    ({"range": "192.168.1.0"}, "ipam.range"),
    ({"range": "300.1.1.0/24"}, "ipam.range"),
    ({"range": "192.168.1.0/33"}, "ipam.range"),
    ({"range": "192.168.1.20-192.168.1.10/24"}, "ipam.range"),
    ({"range": "192.168.1.1-192.168.2.10/24"}, "ipam.range"),
    ({"range": "192.168.1.0/32"}, "ipam.range"),
    ({"range": 5}, "ipam.range"),
    ({"range": "192.168.1.0/24", "range_start": "192.168.2.5"}, "ipam.range_start"),
    ({"range": "192.168.1.0/24", "range_end": "10.0.0.1"}, "ipam.range_end"),
    ({"range": "192.168.1.0/24", "range_end": "fd00::1"}, "ipam.range_end"),
    ({"range": "192.168.1.0/24", "range_start": "192.168.1.50", "range_end": "192.168.1.10"}, "ipam.range_start"),
    ({"range": "192.168.1.0/24", "range_start": "nope"}, "ipam.range_start"),
    ({"range_start": "192.168.1.5"}, "ipam.range_start"),
    ({"range": "192.168.1.0/24", "exclude": ["192.168.1.0/28", "192.168.1.8/29"]}, "ipam.exclude[1]"),
    ({"range": "192.168.1.0/24", "exclude": ["192.168.1.7", "192.168.1.0/28"]}, "ipam.exclude[1]"),
    ({"range": "192.168.1.0/24", "exclude": ["fd00::/64"]}, "ipam.exclude[0]"),
    ({"range": "192.168.1.0/24", "exclude": ["garbage"]}, "ipam.exclude[0]"),
    ({"range": "192.168.1.0/24", "exclude": "192.168.1.0/28"}, "ipam.exclude"),
    ({"range": "192.168.1.0/24", "gateway": "10.0.0.1"}, "ipam.gateway"),
    ({"range": "192.168.1.0/24", "gateway": "fd00::1"}, "ipam.gateway"),
    ({"range": "192.168.1.0/24", "gateway": "not-an-ip"}, "ipam.gateway"),
    ({"range": "10.0.0.0/24", "ipRanges": [{"range": "fd00::/64", "gateway": "fd01::1"}]}, "ipam.ipRanges[0].gateway"),
    ({"ipRanges": [{"range": "10.0.0.0/24"}, {"range": "10.1.0.0/24", "range_start": "10.2.0.1"}]},
     "ipam.ipRanges[1].range_start"),
    ({"ipRanges": "10.0.0.0/24"}, "ipam.ipRanges"),
    ({"range": "10.0.0.0/24", "routes": [{"dst": "nope"}]}, "ipam.routes[0].dst"),
    ({"range": "10.0.0.0/24", "dns": {"nameservers": "1.1.1.1"}}, "ipam.dns.nameservers"),
    ({"range": "10.0.0.0/24", "addresses": [{"address": "10.5.0.1"}]}, "ipam.addresses[0].address"),
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": "maybe"}, "ipam.enable_overlapping_ranges"),
    # Go's encoding/json refuses a string for whereabouts' bool field, whatever the string says.
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": "true"}, "ipam.enable_overlapping_ranges"),
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": "False"}, "ipam.enable_overlapping_ranges"),
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": 1}, "ipam.enable_overlapping_ranges"),
    ({"range": "10.0.0.0/24", "datastore": "consul"}, "ipam.datastore"),
    ({"range": "10.0.0.0/24", "datastore": "etcd"}, "ipam.etcd_host"),
    ({"range": "10.0.0.0/24", "datastore": "etcd", "etcd_host": "h", "etcd_key_file": "/k"}, "ipam.etcd_cert_file"),
    ({"range": "10.0.0.0/24", "log_level": "chatty"}, "ipam.log_level"),
    ({"range": "10.0.0.0/24", "network_name": "Blue_Net"}, "ipam.network_name"),
    ({"range": "10.0.0.0/24", "data_dir": "relative/dir"}, "ipam.data_dir"),
    ({"range": "10.0.0.0/24", "log_file": "relative.log"}, "ipam.log_file"),  # found by the fuzz suite
])
def test_invalid_values_are_error_7_naming_the_field(ipam: dict[str, Any], field: str) -> None:
    bad(ipam, field)


@pytest.mark.parametrize("value, want", [(True, True), (False, False), (None, True)])
def test_enable_overlapping_ranges_takes_json_booleans_and_null_as_absent(value: Any, want: bool) -> None:
    assert parse({"range": "10.0.0.0/24", "enable_overlapping_ranges": value}).overlapping is want


def test_a_quoted_boolean_says_to_drop_the_quotes() -> None:
    err = bad({"range": "10.0.0.0/24", "enable_overlapping_ranges": "true"}, "ipam.enable_overlapping_ranges")
    assert "not a string" in err.msg and '"true"' in err.msg


def test_missing_ipam_is_error_7() -> None:
    with pytest.raises(InvalidConfig):
        wconfig.parse(Request(command="ADD", config={"cniVersion": "1.0.0", "name": "n", "type": "x"}))


def test_bad_cni_args_ip_is_error_4() -> None:
    with pytest.raises(CNIError) as ei:
        parse({"range": "10.0.0.0/24"}, cni_args={"IP": "10.9.9.9"})
    assert ei.value.code == 4
