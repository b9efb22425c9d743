"""``delete_only`` of bridge, tuning, portmap and sbr: DEL reads its keys without pydantic — pure, no root.

For every valid config (the parse tests' shapes, plus Go's key rules: case folding, last key wins,
``null``), what DEL acts on must be what the full ``parse`` gives; a malformed DEL key must give the
full parser's error 7; a bad key DEL does not use must not stop DEL from reading its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cni.spec.config import plugin_conf
from cni.spec.errors import InvalidConfig
from cni.spec.gojson import loads
from cni.spec.request import Request
from plugins import _delconf, bridge, portmap, sbr, tuning

PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/x"}],
        "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}]}


def req(plugin: str, conf: dict[str, Any] | str, command: str = "DEL") -> Request:
    """A request whose config is ``conf`` over the base keys (a string is raw JSON: repeated keys),
    with its NetConf keys canonical as ``Plugin.run`` hands it to ``parse`` and ``delete_only``."""
    body = loads(conf) if isinstance(conf, str) else conf
    config = plugin_conf({"cniVersion": "1.0.0", "name": "net", "type": plugin, **body})
    return Request(command=command, container_id="c1", netns="/x", ifname="net1", config=config)


BRIDGE_VALID: list[dict[str, Any] | str] = [
    {},
    {"bridge": "br-x", "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
     "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}},
    {"ipMasq": True, "ipMasqBackend": "nftables", "macspoofchk": True, "ipam": {"type": "static"}},
    {"vlan": 100, "mtu": 1400, "hairpinMode": True, "dns": {"nameservers": ["10.0.0.10"]}},
    {"vlanTrunk": [{"id": 5}, {"minID": 10, "maxID": 12}], "preserveDefaultVlan": False},
    {"IPMASQ": True, "MacSpoofChk": True, "IPAM": {"Type": "host-local"}},
    '{"ipMasq": true, "ipmasq": false}',  # the last key for a field wins
    '{"ipMasq": true, "ipMasq": null}',  # null has no effect on a Go bool
    '{"ipam": {"type": "host-local"}, "ipam": null}',  # null resets a map
    {"ipam": {}},
]
TUNING_VALID: list[dict[str, Any] | str] = [
    {},
    {"sysctl": {"net.core.somaxconn": "512"}, "dataDir": "/tmp/tuning-x"},
    {"mac": "02:00:00:00:00:01", "mtu": 1400, "promisc": True, "args": {"cni": {"mtu": 1300}}},
    {"DATADIR": "/var/tuning"},
    '{"dataDir": "/a", "DataDir": "/b"}',
    '{"dataDir": "/a", "dataDir": null}',
]
PORTMAP_VALID: list[dict[str, Any] | str] = [
    {},
    {"snat": False, "masqAll": True, "dataDir": "/tmp/pm"},
    {"markMasqBit": 5, "conditionsV4": ["-s", "1.2.3.4"], "conditionsV6": ["!", "-s", "::1"]},
    {"externalSetMarkChain": "KUBE-MARK-MASQ", "backend": "iptables"},
    {"backend": "nftables", "conditionsV4": ["ip saddr 1.2.3.4"]},
    {"runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}},
    {"SNAT": False, "MarkMasqBit": 0, "Backend": "iptables"},
    '{"markMasqBit": 3, "markMasqBit": null, "externalSetMarkChain": "X"}',  # null resets a pointer
    '{"snat": false, "snat": null}',
    {"externalSetMarkChain": ""},
]
SBR_VALID: list[dict[str, Any] | str] = [
    {},
    {"table": 500, "dataDir": "/tmp/sbr"},
    {"gateways": ["10.1.2.1"], "prevResult": PREV},
    {"TABLE": 100, "DataDir": "/var/sbr"},
    '{"table": 100, "table": null}',
    {"table": 0xFFFFFFFF},
]


@pytest.mark.parametrize("conf", BRIDGE_VALID, ids=str)
def test_bridge_delete_reading_matches_parse(conf: dict[str, Any] | str) -> None:
    r = req("bridge", conf)
    assert bridge.read_for_delete(r) == bridge.del_conf(bridge.parse(r))


@pytest.mark.parametrize("conf", TUNING_VALID, ids=str)
def test_tuning_delete_reading_matches_parse(conf: dict[str, Any] | str) -> None:
    r = req("tuning", conf)
    assert tuning.read_for_delete(r).data_dir == tuning.parse(r).data_dir


@pytest.mark.parametrize("conf", PORTMAP_VALID, ids=str)
def test_portmap_delete_reading_matches_parse(conf: dict[str, Any] | str) -> None:
    r = req("portmap", conf)
    assert portmap.read_for_delete(r) == portmap.del_conf(portmap.parse(r))


@pytest.mark.parametrize("conf", SBR_VALID, ids=str)
def test_sbr_delete_reading_matches_parse(conf: dict[str, Any] | str) -> None:
    r = req("sbr", conf)
    assert sbr.read_for_delete(r) == sbr.del_conf(sbr.parse(r))


def test_the_readings_are_not_trivially_equal() -> None:
    # The comparisons above must be able to fail: a non-default config reads differently from the default.
    assert bridge.read_for_delete(req("bridge", BRIDGE_VALID[2])) != bridge.read_for_delete(req("bridge", {}))
    assert portmap.read_for_delete(req("portmap", PORTMAP_VALID[1])) != portmap.read_for_delete(req("portmap", {}))
    assert sbr.read_for_delete(req("sbr", SBR_VALID[1])) != sbr.read_for_delete(req("sbr", {}))
    assert tuning.read_for_delete(req("tuning", {"dataDir": "/a"})).data_dir == "/a" != tuning.read_for_delete(req("tuning", {})).data_dir


MALFORMED = [
    ("bridge", {"ipMasq": "yes"}),
    ("bridge", {"macspoofchk": 1}),
    ("bridge", {"ipam": "host-local"}),
    ("bridge", {"ipam": {"type": 7}}),
    ("tuning", {"dataDir": "relative/dir"}),
    ("tuning", {"dataDir": ""}),
    ("tuning", {"dataDir": 5}),
    ("portmap", {"backend": "ebtables"}),
    ("portmap", {"markMasqBit": 32}),
    ("portmap", {"markMasqBit": True}),
    ("portmap", {"markMasqBit": 1, "externalSetMarkChain": "X"}),
    ("portmap", {"externalSetMarkChain": "bad chain!"}),
    ("portmap", {"conditionsV4": ["-s 1.2.3.4\n-j ACCEPT"]}),
    ("portmap", {"backend": "nftables", "conditionsV4": ["ip saddr 1.2.3.4; drop"]}),
    ("portmap", {"snat": "false"}),
    ("portmap", {"dataDir": "x"}),
    ("sbr", {"table": 254}),
    ("sbr", {"table": 0}),
    ("sbr", {"table": "100"}),
    ("sbr", {"dataDir": "rel"}),
]


@pytest.mark.parametrize("plugin,conf", MALFORMED, ids=str)
def test_malformed_del_key_gives_the_full_parsers_error(plugin: str, conf: dict[str, Any]) -> None:
    mod = {"bridge": bridge, "tuning": tuning, "portmap": portmap, "sbr": sbr}[plugin]
    r = req(plugin, conf)
    with pytest.raises(InvalidConfig) as full:
        mod.parse(r)
    assert mod.PLUGIN.delete_only is not None
    with pytest.raises(InvalidConfig) as thin:  # parse fails before DEL touches anything
        mod.PLUGIN.run(r)
    assert (thin.value.code, thin.value.msg, thin.value.details) == (full.value.code, full.value.msg, full.value.details)


@pytest.mark.parametrize("plugin,conf", [
    ("bridge", {"mtu": "x", "vlan": 5, "vlanTrunk": [{"id": 6}], "bridge": "not a name!"}),
    ("tuning", {"mtu": -1, "sysctl": {"a": 1}}),
    ("portmap", {"runtimeConfig": {"portMappings": [{"hostPort": 0}]}}),
    ("sbr", {"gateways": ["not-an-ip"]}),
])
def test_del_reads_its_keys_even_when_others_are_bad(plugin: str, conf: dict[str, Any]) -> None:
    mod = {"bridge": bridge, "tuning": tuning, "portmap": portmap, "sbr": sbr}[plugin]
    r = req(plugin, conf)
    with pytest.raises(InvalidConfig):
        mod.parse(r.with_(command="ADD"))
    assert mod.read_for_delete(r) == mod.read_for_delete(req(plugin, {}))  # the bad keys are not DEL's: defaults


def test_delconf_readers_refuse_what_go_refuses() -> None:
    not_bools: tuple[Any, ...] = ("1", 1, None)
    for bad in not_bools:
        with pytest.raises(_delconf.Malformed):
            _delconf.get_bool({"k": bad}, "k", False)
    not_ints: tuple[Any, ...] = (True, 1.0, "1", 40)
    for bad in not_ints:
        with pytest.raises(_delconf.Malformed):
            _delconf.get_int({"k": bad}, "k", None, 0, 31)
    with pytest.raises(_delconf.Malformed):
        _delconf.get_strs({"k": ["a", 1]}, "k")
    assert _delconf.get_strs({"k": None}, "k") == ()


def test_reading_for_delete_does_not_import_pydantic() -> None:
    code = (
        "import sys, json\n"
        "from cni.spec.request import Request\n"
        "from plugins import bridge, portmap, sbr, tuning\n"
        f"r = Request(command='DEL', container_id='c', netns='/x', ifname='net1', config={{'name': 'n', 'prevResult': {PREV!r}}})\n"
        "for m in (bridge, portmap, sbr, tuning): m.read_for_delete(r)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core'))))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(p.stdout) == []
