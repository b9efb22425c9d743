"""Network configurations and conflists as the runtime hands them over (libcni semantics)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni.spec.config import build_plugin_conf, check_plugin_conf, cni_version_of, conflist_from, decode
from cni.spec.errors import DecodeFailure, IncompatibleVersion, InvalidConfig
from cni.spec.result import IPConfig, Result, from_wire


def test_decode_object() -> None:
    assert decode(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b'"s"', b"null", b"\xff\xfe"])
def test_decode_refuses_non_objects_with_error_6(raw: bytes) -> None:
    with pytest.raises(DecodeFailure) as ei:
        decode(raw)
    assert ei.value.code == 6


def test_cni_version_defaults_to_0_1_0_and_must_be_a_string() -> None:
    assert cni_version_of({}) == "0.1.0"
    assert cni_version_of({"cniVersion": ""}) == "0.1.0"
    assert cni_version_of({"cniVersion": "1.0.0"}) == "1.0.0"
    with pytest.raises(InvalidConfig):
        cni_version_of({"cniVersion": 1.0})


# ---- conflist_from ---------------------------------------------------------------------


def test_single_conf_is_promoted_to_a_list_of_one() -> None:
    conf = {"cniVersion": "0.3.1", "name": "mynet", "type": "macvlan", "master": "eth0"}
    cl = conflist_from(conf)
    assert (cl.cni_version, cl.name, cl.plugins) == ("0.3.1", "mynet", (conf,))
    assert not cl.disable_check


def test_single_conf_needs_a_valid_name() -> None:
    with pytest.raises(InvalidConfig, match="'name'"):
        conflist_from({"cniVersion": "1.0.0", "type": "macvlan"})
    with pytest.raises(InvalidConfig, match="invalid network name"):
        conflist_from({"cniVersion": "1.0.0", "name": "../../etc", "type": "macvlan"})


def test_conflist_fields() -> None:
    doc = {"cniVersion": "1.0.0", "name": "chain", "disableCheck": True, "plugins": [{"type": "bridge"}, {"type": "tuning"}]}
    cl = conflist_from(doc)
    assert cl.cni_version == "1.0.0" and cl.name == "chain" and len(cl.plugins) == 2
    assert cl.disable_check is True and cl.disable_gc is False
    assert cl.raw is doc


@pytest.mark.parametrize(("value", "expect"), [(True, True), ("true", True), (False, False), ("false", False), ("yes", False)])
def test_disable_check_accepts_bool_or_string_true(value: object, expect: bool) -> None:
    cl = conflist_from({"cniVersion": "1.0.0", "name": "n", "disableCheck": value, "plugins": [{"type": "x"}]})
    assert cl.disable_check is expect


def test_cni_versions_array_picks_highest_supported() -> None:
    doc = {"cniVersion": "0.4.0", "cniVersions": ["0.3.1", "1.1.0", "9.9.9", "1.0.0"], "name": "n", "plugins": [{"type": "x"}]}
    assert conflist_from(doc).cni_version == "1.1.0"


def test_cni_versions_array_is_ordered_semantically_not_lexically() -> None:
    doc = {"cniVersions": ["0.4.0", "0.10.0", "0.3.1"], "name": "n", "plugins": [{"type": "x"}]}
    assert conflist_from(doc).cni_version == "0.4.0"  # 0.10.0 is not one we speak


def test_cni_versions_without_supported_entry_falls_back_to_cni_version() -> None:
    doc = {"cniVersion": "1.0.0", "cniVersions": ["2.0.0"], "name": "n", "plugins": [{"type": "x"}]}
    assert conflist_from(doc).cni_version == "1.0.0"


def test_unsupported_list_version_is_error_1() -> None:
    with pytest.raises(IncompatibleVersion):
        conflist_from({"cniVersion": "0.5.0", "name": "n", "plugins": [{"type": "x"}]})


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"cniVersion": "1.0.0", "name": "n"}, "plugins"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, "plugins"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": {"type": "x"}}, "plugins"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": ["bridge"]}, "plugins[0]"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}, {"mtu": 1}]}, "plugins[1].type"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": ""}]}, "plugins[0].type"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": 5}]}, "plugins[0].type"),
        ({"cniVersion": "1.0.0", "plugins": [{"type": "a"}]}, "name"),
    ],
)
def test_missing_plugins_or_type_is_error_7_with_field_path(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as ei:
        conflist_from(doc)
    assert ei.value.code == 7
    assert f"'{field}'" in ei.value.msg


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"cniVersion": "1.0.0", "name": "n", "type": "x", "capabilities": []}, "capabilities"),
        ({"cniVersion": "1.0.0", "name": "n", "type": "x", "runtimeConfig": "x"}, "runtimeConfig"),
        ({"cniVersion": "1.0.0", "name": "n"}, "type"),
    ],
)
def test_check_plugin_conf_fields(conf: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig, match=f"'{field}'"):
        check_plugin_conf(conf)


# ---- build_plugin_conf (libcni buildOneConfig) -------------------------------------------


def _prev() -> Result:
    return Result(ips=(IPConfig(ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_address("10.0.0.1")),))


def test_build_injects_name_version_and_keeps_unknown_keys() -> None:
    plugin = {"type": "tuning", "cniVersion": "0.1.0", "name": "ignored", "sysctl": {"a": "1"}, "x-custom": [1]}
    conf = build_plugin_conf(plugin, name="chain", cni_version="1.0.0")
    assert conf == {"type": "tuning", "cniVersion": "1.0.0", "name": "chain", "sysctl": {"a": "1"}, "x-custom": [1]}
    assert plugin["name"] == "ignored", "the conflist entry itself is not modified"


@pytest.mark.parametrize(("version", "has_ip_version"), [("0.3.1", True), ("0.4.0", True), ("1.0.0", False), ("1.1.0", False)])
def test_prev_result_injected_in_the_lists_version(version: str, has_ip_version: bool) -> None:
    conf = build_plugin_conf({"type": "tuning"}, name="n", cni_version=version, prev_result=_prev())
    assert conf["prevResult"]["cniVersion"] == version
    assert ("version" in conf["prevResult"]["ips"][0]) is has_ip_version
    assert from_wire(conf["prevResult"]).ips == _prev().ips


def test_prev_result_in_legacy_list_uses_ip4() -> None:
    conf = build_plugin_conf({"type": "x"}, name="n", cni_version="0.2.0", prev_result=_prev())
    assert conf["prevResult"] == {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"}, "dns": {}}


def test_capabilities_filter_runtime_config_and_key_is_removed() -> None:
    plugin = {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}}
    rc = {"portMappings": [{"hostPort": 80, "containerPort": 8080}], "bandwidth": {"x": 1}, "ips": ["10.0.0.5/24"]}
    conf = build_plugin_conf(plugin, name="n", cni_version="1.0.0", runtime_config=rc)
    assert conf["runtimeConfig"] == {"portMappings": rc["portMappings"]}
    assert "capabilities" not in conf
    assert "capabilities" in plugin


def test_no_declared_capability_means_no_runtime_config() -> None:
    conf = build_plugin_conf({"type": "bridge"}, name="n", cni_version="1.0.0", runtime_config={"mac": "aa"})
    assert "runtimeConfig" not in conf
    conf = build_plugin_conf({"type": "bridge", "capabilities": {"ips": True}}, name="n", cni_version="1.0.0", runtime_config={"mac": "aa"})
    assert "runtimeConfig" not in conf and "capabilities" not in conf
