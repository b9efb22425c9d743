"""CNI_ARGS parsing and the validation of names that reach the kernel or the file system."""

from __future__ import annotations

import pytest

from cni.spec import args
from cni.spec.errors import InvalidConfig, InvalidEnvironment


def test_cni_args_parse_in_order_and_skip_empty_segments() -> None:
    got = args.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web-0;;K8S_POD_NAMESPACE=default;IP=10.0.0.5,fd00::5;")
    assert list(got.items()) == [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAME", "web-0"),
        ("K8S_POD_NAMESPACE", "default"),
        ("IP", "10.0.0.5,fd00::5"),
    ]


def test_cni_args_value_may_contain_equals_and_be_empty() -> None:
    assert args.parse_cni_args("A=b=c;B=") == {"A": "b=c", "B": ""}
    assert args.parse_cni_args("") == {}


@pytest.mark.parametrize("raw", ["NOEQUALS", "A=1;B", "=value"])
def test_cni_args_pair_without_key_or_equals_is_error_4(raw: str) -> None:
    with pytest.raises(InvalidEnvironment) as ei:
        args.parse_cni_args(raw)
    assert ei.value.code == 4


@pytest.mark.parametrize(("value", "ignored"), [("1", True), ("true", True), ("TRUE", True), ("0", False), ("false", False), ("yes", False)])
def test_ignore_unknown_values(value: str, ignored: bool) -> None:
    assert args.ignore_unknown({"IgnoreUnknown": value}) is ignored


def test_check_known_rejects_unknown_keys_naming_them() -> None:
    with pytest.raises(InvalidEnvironment) as ei:
        args.check_known({"IP": "10.0.0.1", "FOO": "x", "BAR": "y"}, frozenset({"IP"}))
    assert "FOO, BAR" in ei.value.msg
    assert "IgnoreUnknown" in ei.value.details


def test_check_known_accepts_known_keys_and_ignore_unknown() -> None:
    args.check_known({"IP": "10.0.0.1", "IgnoreUnknown": "0"}, frozenset({"IP"}))  # IgnoreUnknown is always known
    args.check_known({"FOO": "x", "IgnoreUnknown": "true"}, frozenset({"IP"}))


@pytest.mark.parametrize("cid", ["abc", "0", "a1_b.c-d", "f" * 64, "A", "f" * args.CONTAINER_ID_MAX])
def test_valid_container_ids(cid: str) -> None:
    assert args.validate_container_id(cid) == cid


@pytest.mark.parametrize("cid", ["", "-abc", "_abc", ".abc", "../etc", "a/b", "a b", "a:b", "abc\n", "\nabc", "a\0b", "é"])
def test_invalid_container_ids_are_error_4(cid: str) -> None:
    with pytest.raises(InvalidEnvironment) as ei:
        args.validate_container_id(cid)
    assert ei.value.code == 4


@pytest.mark.parametrize("name", ["eth0", "net1", "a" * 15, "x.y", "é" * 7, "..."])
def test_valid_ifnames(name: str) -> None:
    assert args.validate_ifname(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("a" * 16, "longer than 15 bytes"),
        ("é" * 8, "longer than 15 bytes"),  # 16 bytes in UTF-8, 8 characters
        (".", "'.' and '..'"),
        ("..", "'.' and '..'"),
        ("a/b", "'/'"),
        ("a:b", "':'"),
        ("a b", "' '"),
        ("a\tb", "'\\t'"),
        ("eth0\n", "'\\n'"),
        ("a\0b", "'\\x00'"),
    ],
)
def test_invalid_ifnames_are_error_4_with_reason(name: str, why: str) -> None:
    with pytest.raises(InvalidEnvironment) as ei:
        args.validate_ifname(name)
    assert ei.value.code == 4
    assert why in ei.value.msg


def test_ifname_error_names_the_source() -> None:
    with pytest.raises(InvalidEnvironment, match="interface name from annotation"):
        args.validate_ifname("a/b", what="interface name from annotation")


def test_container_id_too_long_for_a_file_name_is_error_4_saying_why() -> None:
    with pytest.raises(InvalidEnvironment) as ei:
        args.validate_container_id("f" * (args.CONTAINER_ID_MAX + 1))
    assert ei.value.code == 4 and "longer than 128" in ei.value.details
    assert len(ei.value.msg) < 80  # the message does not repeat a huge ID


def test_network_name_too_long_for_a_state_file_is_error_7() -> None:
    assert args.validate_network_name("n" * args.NETWORK_NAME_MAX)
    with pytest.raises(InvalidConfig) as ei:
        args.validate_network_name("n" * (args.NETWORK_NAME_MAX + 1))
    assert ei.value.code == 7 and "at most 100" in ei.value.details
    # the longest names still fit one file name: <network>:<containerID>:<ifname>.json
    assert args.NETWORK_NAME_MAX + args.CONTAINER_ID_MAX + args.IFNAME_MAX + len("::.json") <= 255


@pytest.mark.parametrize("name", ["mynet", "net-1", "a.b_c", "0"])
def test_valid_network_names(name: str) -> None:
    assert args.validate_network_name(name) == name


@pytest.mark.parametrize("name", ["../etc", "..", ".", "a/b", "/abs", ".hidden", "-x", "a b", "net\n", "", None, 5])
def test_invalid_network_names_are_error_7(name: object) -> None:
    with pytest.raises(InvalidConfig) as ei:
        args.validate_network_name(name, field="delegates[0].name")
    assert ei.value.code == 7
    assert "delegates[0].name" in ei.value.msg


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../x", "a\0b"])
def test_safe_path_component_refuses_traversal(value: str) -> None:
    with pytest.raises(InvalidConfig):
        args.safe_path_component(value, what="dataDir entry")


def test_safe_path_component_allows_plain_names() -> None:
    assert args.safe_path_component("10.0.0.5", what="ip") == "10.0.0.5"
