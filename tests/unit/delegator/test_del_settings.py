"""DEL's pydantic-free reading of the multinic config (cni/delegator/settings.py) and of a sub-interface
plugin's config (``_iface.ipam_type_for_delete``): same values as the full parse, None/error 7 where the full
parse would refuse the keys DEL reads, and no care for keys DEL does not read."""

from __future__ import annotations

from typing import Any

import pytest

from cni.delegator import config as cfgmod
from cni.delegator import settings
from cni.delegator.context import Context
from cni.spec.errors import InvalidConfig
from cni.spec.request import Request
from plugins import _iface

BASE = {"cniVersion": "1.0.0", "name": "m", "type": "multinic"}


@pytest.mark.parametrize("conf", [
    {},
    {"cniDir": "/c", "binDir": "/b", "kubeconfig": "/k", "manifestDir": "/m", "nodeName": "n", "apiTimeoutSeconds": 7},
    {"CNIDIR": "/c", "bindir": "/b", "apitimeoutseconds": 0.5},  # Go folds key case
    {"cniDir": "/first", "CniDir": "/last"},  # the last key for a field wins
    {"cniDir": None, "binDir": None},  # null = absent
    {"cniDir": ""},  # explicit empty, kept as the model keeps it
])
def test_same_values_as_the_full_parse(conf: dict[str, Any]) -> None:
    full = cfgmod.parse({**BASE, **conf})
    got = settings.for_delete({**BASE, **conf})
    assert got is not None
    for attr in ("cni_dir", "bin_dir", "kubeconfig", "manifest_dir", "node_name", "api_timeout"):
        assert getattr(got, attr) == getattr(full, attr), attr


@pytest.mark.parametrize("conf", [
    {"cniDir": "relative/dir"}, {"binDir": 3}, {"kubeconfig": "k"}, {"manifestDir": ["/m"]}, {"nodeName": 1},
    {"apiTimeoutSeconds": 0}, {"apiTimeoutSeconds": 61}, {"apiTimeoutSeconds": True}, {"apiTimeoutSeconds": "5"},
])
def test_a_bad_key_del_reads_sends_del_to_the_full_parse(conf: dict[str, Any]) -> None:
    assert settings.for_delete({**BASE, **conf}) is None
    with pytest.raises(InvalidConfig):  # which then says what is wrong, as before
        cfgmod.parse({**BASE, **conf})


def test_keys_del_does_not_read_are_not_checked() -> None:
    bad = {**BASE, "cniDir": "/c", "logLevel": "loud", "hostPortPolicy": "nonsense", "delegates": 3}
    with pytest.raises(InvalidConfig):
        cfgmod.parse(bad)
    got = settings.for_delete(bad)
    assert got is not None and got.cni_dir == "/c"


def test_context_parses_the_full_config_only_when_asked() -> None:
    good = Context(Request("DEL", config={**BASE, "cniDir": "/c"}), settings.Settings(cni_dir="/c"), None)
    assert good.base("eth0").path[0] == settings.DEFAULT_BIN_DIR  # served by Settings
    assert good.cfg.cni_dir == "/c" and isinstance(good.settings, cfgmod.MultinicConfig)
    bad = Context(Request("DEL", config={**BASE, "delegates": 3}), settings.Settings(), None)
    with pytest.raises(InvalidConfig):  # a path that needs the full config still gets error 7
        bad.cfg  # noqa: B018


@pytest.mark.parametrize(("conf", "want"), [
    ({}, ""), ({"ipam": None}, ""), ({"ipam": {}}, ""), ({"ipam": {"type": "host-local", "ranges": "junk"}}, "host-local"),
    ({"IPAM": {"TYPE": "static"}}, "static"), ({"mtu": "not a number", "ipam": {"type": "dhcp"}}, "dhcp"),
])
def test_ipam_type_for_delete(conf: dict[str, Any], want: str) -> None:
    assert _iface.ipam_type_for_delete(conf) == want


@pytest.mark.parametrize("conf", [{"ipam": "host-local"}, {"ipam": {"type": 3}}])
def test_ipam_type_for_delete_refuses_what_names_no_ipam(conf: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig):
        _iface.ipam_type_for_delete(conf)
