"""A conflist run in-process: macvlan (+ reference static IPAM) → sbr → tuning.

Protects the contract between sbr and the interface plugins (plugins#297): after sbr moved the
interface's routes into table 100, the chain's CHECK — macvlan's included — still passes, and
DEL of the whole chain leaves the pod namespace as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cni import invoke
from cni.spec.config import conflist_from
from cni.spec.request import Request
from tests.support.nsfix import REF_CNI, Scene, need_reference, sh


@pytest.fixture(autouse=True)
def _reference_ipam(monkeypatch: pytest.MonkeyPatch) -> None:
    need_reference("static")
    monkeypatch.setattr(invoke, "_force_exec", {"static"})


def test_chain_check_passes_after_sbr_moved_routes_and_del_cleans(scene: Scene, tmp_path: Path) -> None:
    master = scene.veth_uplink()
    pod = scene.netns("sbc")
    doc = {
        "cniVersion": "1.0.0", "name": "sbrchain",
        "plugins": [
            {"type": "macvlan", "master": master, "ipam": {
                "type": "static", "addresses": [{"address": "10.153.0.5/24", "gateway": "10.153.0.1"}],
                "routes": [{"dst": "10.153.8.0/24"}]}},
            {"type": "sbr", "dataDir": str(tmp_path / "sbr")},
            {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.IFNAME.rp_filter": "2"}, "dataDir": str(tmp_path / "tun")},
        ],
    }
    conflist = conflist_from(doc)
    base = Request(command="ADD", container_id="c1", netns=f"/run/netns/{pod}", ifname="net1", path=(REF_CNI,))
    rules_before = sh("ip", "rule", "show", ns=pod)
    result = invoke.add_list(base, conflist)
    assert "from 10.153.0.5 lookup 100" in sh("ip", "rule", "show", ns=pod)
    table = sh("ip", "route", "show", "table", "100", ns=pod)
    assert "default via 10.153.0.1 dev net1" in table and "10.153.8.0/24 via 10.153.0.1 dev net1" in table
    assert "10.153.8.0/24" not in sh("ip", "route", "show", ns=pod)
    invoke.check_list(base.with_(command="CHECK"), conflist, result)
    invoke.del_list(base.with_(command="DEL"), conflist, result)
    assert sh("ip", "rule", "show", ns=pod) == rules_before
    assert "net1" not in sh("ip", "link", "show", ns=pod)
    assert sh("ip", "route", "show", "table", "100", ns=pod).strip() == ""
