"""Typed configs on pydantic: any failure is error 7 naming the field path as an admin reads it."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from cni.spec.errors import InvalidConfig
from cni.spec.model import Model, validate


class _Range(Model):
    subnet: str
    range_start: str | None = Field(default=None, alias="rangeStart")


class _Ipam(Model):
    type: str
    ranges: list[list[_Range]] = []


class _Conf(Model):
    master: str = ""
    mtu: int = 0
    ipam: _Ipam | None = None


def test_valid_config_keeps_unknown_keys_and_reads_camel_case() -> None:
    conf = validate(_Conf, {"master": "eth0", "mtu": 1400, "futureKey": 1, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.5"}]]}})
    assert conf.master == "eth0" and conf.mtu == 1400
    assert conf.model_extra == {"futureKey": 1}
    assert conf.ipam is not None and conf.ipam.ranges[0][0].range_start == "10.0.0.5"


def test_nested_list_field_path() -> None:
    with pytest.raises(InvalidConfig) as ei:
        validate(_Conf, {"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}, {"rangeStart": "x"}]]}})
    assert ei.value.code == 7
    assert ei.value.msg.startswith("invalid network config field 'ipam.ranges[0][1].subnet': ")
    assert "ipam.ranges[0][1].subnet: Field required" in ei.value.details


def test_keys_match_fields_case_insensitively_like_go() -> None:
    conf = validate(_Conf, {"MASTER": "eth0", "Mtu": 1400, "IPAM": {"Type": "t", "ranges": [[{"Subnet": "s", "rangestart": "x"}]]}})
    assert conf.master == "eth0" and conf.mtu == 1400
    assert conf.ipam is not None and conf.ipam.type == "t" and conf.ipam.ranges[0][0].range_start == "x"
    assert not conf.model_extra


def test_python_field_name_is_not_a_key() -> None:
    conf = validate(_Conf, {"ipam": {"type": "t", "ranges": [[{"subnet": "s", "range_start": "x"}]]}})
    assert conf.ipam is not None and conf.ipam.ranges[0][0].range_start is None


def test_every_bad_field_is_listed_and_where_prefixes() -> None:
    with pytest.raises(InvalidConfig) as ei:
        validate(_Conf, {"mtu": "big", "ipam": {"ranges": []}}, where="delegates[1]")
    assert ei.value.msg.startswith("invalid network config field 'delegates[1].mtu': ")
    assert "delegates[1].ipam.type" in ei.value.details


def test_wrong_top_level_type() -> None:
    with pytest.raises(InvalidConfig) as ei:
        validate(_Conf, ["not", "an", "object"])
    assert "<config>" in ei.value.msg
    with pytest.raises(InvalidConfig) as ei:
        validate(_Conf, "x", where="ipam")
    assert "'ipam'" in ei.value.msg


def test_models_are_immutable() -> None:
    conf = validate(_Conf, {"master": "eth0"})
    with pytest.raises(ValidationError):
        conf.master = "eth1"  # type: ignore[misc]


def test_field_path_uses_the_json_spelling() -> None:
    with pytest.raises(InvalidConfig) as ei:
        validate(_Conf, {"ipam": {"type": "t", "ranges": [[{"subnet": "s", "rangeStart": 5}]]}})
    assert ei.value.msg.startswith("invalid network config field 'ipam.ranges[0][0].rangeStart': ")
