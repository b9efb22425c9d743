"""Result conversion between every pair of CNI versions, pinned by golden files.

The golden files (tests/golden/results/<source>/<from>_to_<to>.json) are produced by
tests/golden/regen.py; this test regenerates them in memory and fails on any difference.
A handful of conversions are also asserted here literally, checked by hand against the
spec and libcni's convert functions, so a wrong regen cannot silently bless itself.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from cni.spec import versions
from cni.spec.errors import IncompatibleVersion
from cni.spec.result import convert, from_wire, to_wire

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "golden")


def _regen():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("multinic_golden_regen", os.path.join(GOLDEN, "regen.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _source(name: str) -> dict:  # type: ignore[type-arg]
    with open(os.path.join(GOLDEN, "sources", f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def test_golden_files_match_the_converter() -> None:
    regen = _regen()
    generated = regen.generate()
    assert regen.differences(generated) == [], "run: .venv/bin/python tests/golden/regen.py and review the diff"


def test_golden_covers_all_49_pairs_for_every_source() -> None:
    regen = _regen()
    generated = regen.generate()
    sources = {p.split(os.sep)[0] for p in generated}
    assert {"rich", "ipam-v4", "v6-only", "no-ip"} <= sources
    for s in sources:
        pairs = [p for p in generated if p.startswith(s + os.sep)]
        assert len(pairs) == 49


def test_regen_check_mode_detects_a_tampered_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    regen = _regen()
    generated = regen.generate()
    monkeypatch.setattr(regen, "RESULTS", str(tmp_path))
    for rel, text in generated.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    assert regen.differences(generated) == []
    victim = tmp_path / "rich" / "1.1.0_to_0.4.0.json"
    victim.write_text(victim.read_text().replace('"4"', '"6"', 1))
    (tmp_path / "rich" / "stale.json").write_text("{}")
    assert regen.differences(generated) == [os.path.join("rich", "1.1.0_to_0.4.0.json"), os.path.join("rich", "stale.json")]
    assert regen.main(["--check"]) == 1


# ---- hand-checked conversions -------------------------------------------------------------


def test_rich_to_1_0_drops_the_1_1_only_interface_and_route_fields() -> None:
    out = convert(_source("rich"), "1.0.0")
    assert out["cniVersion"] == "1.0.0"
    assert out["interfaces"][0] == {"name": "net1", "mac": "0a:58:0a:4d:00:05", "sandbox": "/var/run/netns/pod-a"}
    assert out["interfaces"][2] == {"name": "eth0", "mac": "0a:58:c0:a8:03:04", "sandbox": "/var/run/netns/pod-a"}
    assert out["routes"] == [
        {"dst": "0.0.0.0/0", "gw": "10.77.0.1"},
        {"dst": "172.16.0.0/12"},
        {"dst": "::/0", "gw": "fd00:77::1"},
        {"dst": "fd00:99::/48", "gw": "fd00:77::2"},
    ]
    # 1.0.0 has no ips[].version; interface indexes survive.
    assert out["ips"][2] == {"interface": 0, "address": "fd00:77::5/64", "gateway": "fd00:77::1"}


def test_rich_identity_at_1_1_keeps_every_field_including_zero_scope() -> None:
    src = _source("rich")
    out = convert(src, "1.1.0")
    assert out == src
    assert list(out) == ["cniVersion", "interfaces", "ips", "routes", "dns"]
    assert list(out["interfaces"][0]) == ["name", "mac", "mtu", "sandbox", "socketPath", "pciID"]
    assert out["routes"][0]["scope"] == 0 and out["routes"][0]["table"] == 101


@pytest.mark.parametrize("to", ["0.3.0", "0.3.1", "0.4.0"])
def test_rich_to_0_3_and_0_4_add_ip_version_by_family(to: str) -> None:
    out = convert(_source("rich"), to)
    assert [ip["version"] for ip in out["ips"]] == ["4", "4", "6", "4", "6"]
    assert list(out["ips"][0]) == ["version", "interface", "address", "gateway"]
    assert all(set(i) <= {"name", "mac", "sandbox"} for i in out["interfaces"])


@pytest.mark.parametrize("to", ["0.1.0", "0.2.0"])
def test_rich_to_legacy_keeps_first_v4_and_first_v6_with_their_routes(to: str) -> None:
    out = convert(_source("rich"), to)
    assert out == {
        "cniVersion": to,
        "ip4": {
            "ip": "10.77.0.5/24",
            "gateway": "10.77.0.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}, {"dst": "172.16.0.0/12"}],
        },
        "ip6": {
            "ip": "fd00:77::5/64",
            "gateway": "fd00:77::1",
            "routes": [{"dst": "::/0", "gw": "fd00:77::1"}, {"dst": "fd00:99::/48", "gw": "fd00:77::2"}],
        },
        "dns": _source("rich")["dns"],
    }


def test_legacy_up_to_0_4_has_versions_and_no_interfaces() -> None:
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/24", "routes": [{"dst": "10.9.0.0/16", "gw": "10.1.2.1"}]},
              "ip6": {"ip": "fd00::3/64", "gateway": "fd00::1"}, "dns": {}}
    out = convert(legacy, "0.4.0")
    assert out == {
        "cniVersion": "0.4.0",
        "ips": [
            {"version": "4", "address": "10.1.2.3/24"},
            {"version": "6", "address": "fd00::3/64", "gateway": "fd00::1"},
        ],
        "routes": [{"dst": "10.9.0.0/16", "gw": "10.1.2.1"}],
        "dns": {},
    }


def test_v6_only_to_legacy_has_only_ip6() -> None:
    out = convert(_source("v6-only"), "0.2.0")
    assert out == {"cniVersion": "0.2.0", "ip6": {"ip": "2001:db8::2/64", "routes": [{"dst": "2001:db8:1::/48", "gw": "2001:db8::1"}]}, "dns": {}}


@pytest.mark.parametrize("to", ["0.1.0", "0.2.0"])
def test_result_without_ip_cannot_go_to_legacy(to: str) -> None:
    with pytest.raises(IncompatibleVersion) as ei:
        convert(_source("no-ip"), to)
    assert ei.value.code == 1


@pytest.mark.parametrize("to", [v for v in versions.ALL if v not in ("0.1.0", "0.2.0")])
def test_empty_dns_is_emitted_as_empty_object_like_go(to: str) -> None:
    assert convert(_source("no-ip"), to)["dns"] == {}


def test_address_keeps_host_bits_and_network_routes_are_normalised() -> None:
    res = from_wire({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.7/8"}], "routes": [{"dst": "10.1.2.3/16"}]})
    out = to_wire(res, "1.0.0")
    assert out["ips"][0]["address"] == "10.0.0.7/8"
    assert out["routes"][0]["dst"] == "10.1.0.0/16"


def test_to_wire_refuses_unknown_version() -> None:
    with pytest.raises(IncompatibleVersion):
        to_wire(from_wire(_source("ipam-v4")), "0.5.0")
