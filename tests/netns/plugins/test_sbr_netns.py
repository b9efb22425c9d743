"""sbr in real namespaces: source-routed traffic, DEL cleanup, no-gateway refusal, CHECK, and a
differential comparison with the reference /usr/lib/cni/sbr.

Topology (all inside namespaces the test creates): the pod has eth0 (10.150.1.2/24, main default
route via 10.150.1.1) and net1 (10.150.2.5/24); both veths end in a gateway namespace that owns
10.150.9.9 and has strict rp_filter, so a packet from net1's address is answered only if it
really arrived over net1.

Intentional differences from the reference (asserted below): our DEL also flushes the table and
puts the moved routes back into main; the reference leaves table 100 behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cni.spec.errors import CNIError
from cni.spec.request import Request
from plugins import sbr
from tests.support.nsfix import REF_CNI, Scene, need_reference, sh


def topo(scene: Scene) -> tuple[str, str]:
    pod, gw = scene.netns("sbr"), scene.netns("sgw")
    for pod_if, gw_if, net in (("eth0", "e0", "10.150.1"), ("net1", "n1", "10.150.2")):
        sh("ip", "link", "add", pod_if, "type", "veth", "peer", "name", gw_if, "netns", gw, ns=pod)
        sh("ip", "addr", "add", f"{net}.1/24", "dev", gw_if, ns=gw)
        sh("ip", "link", "set", gw_if, "up", ns=gw)
        sh("ip", "link", "set", pod_if, "up", ns=pod)
    sh("ip", "addr", "add", "10.150.1.2/24", "dev", "eth0", ns=pod)
    sh("ip", "addr", "add", "10.150.2.5/24", "dev", "net1", ns=pod)
    sh("ip", "route", "add", "default", "via", "10.150.1.1", ns=pod)
    sh("ip", "route", "add", "10.150.8.0/24", "via", "10.150.2.1", "dev", "net1", ns=pod)
    sh("ip", "addr", "add", "10.150.9.9/32", "dev", "lo", ns=gw)
    sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", ns=gw)
    sh("sysctl", "-qw", "net.ipv4.conf.e0.rp_filter=1", ns=gw)
    return pod, gw


def prev(pod: str, gw: bool = True, extra_ips: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ip: dict[str, Any] = {"address": "10.150.2.5/24", "interface": 0}
    if gw:
        ip["gateway"] = "10.150.2.1"
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": f"/run/netns/{pod}"}],
            "ips": [ip, *(extra_ips or [])], "routes": [{"dst": "10.150.8.0/24", "gw": "10.150.2.1"}]}


def conf(pod: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr", "dataDir": str(tmp_path / "sbr"),
                         "prevResult": prev(pod)}
    c.update(extra)
    return c


def run(cmd: str, pod: str, config: dict[str, Any]) -> Any:
    return sbr.PLUGIN.run(Request(command=cmd, container_id="c1", netns=f"/run/netns/{pod}", ifname="net1",
                                  path=(REF_CNI,), config=config))


def state(pod: str) -> dict[str, str]:
    # IPv4 only: IPv6 link-local routes appear asynchronously after link up.
    return {"rules": sh("ip", "rule", "show", ns=pod), "routes": sh("ip", "-4", "route", "show", "table", "all", ns=pod)}


def ping_from_net1(pod: str) -> bool:
    p = subprocess.run(["ip", "netns", "exec", pod, "ping", "-c1", "-W1", "-I", "10.150.2.5", "10.150.9.9"],
                       capture_output=True, check=False)
    return p.returncode == 0


def test_traffic_from_net1_address_leaves_via_net1_gateway_and_del_restores(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    before = state(pod)
    assert not ping_from_net1(pod)  # main's default goes out eth0; strict rp_filter drops it
    res = run("ADD", pod, conf(pod, tmp_path))
    assert [str(i.address) for i in res.ips] == ["10.150.2.5/24"]  # passed through
    assert "from 10.150.2.5 lookup 100" in sh("ip", "rule", "show", ns=pod)
    assert "32765:\tfrom 10.150.2.5 lookup 100" in sh("ip", "rule", "show", ns=pod)
    assert "via 10.150.2.1 dev net1 table 100" in sh("ip", "route", "get", "192.0.2.77", "from", "10.150.2.5", ns=pod)
    assert "dev eth0" in sh("ip", "route", "get", "192.0.2.77", ns=pod)  # unsourced traffic unchanged
    table = sh("ip", "route", "show", "table", "100", ns=pod)
    assert "default via 10.150.2.1 dev net1" in table and "10.150.8.0/24 via 10.150.2.1" in table
    assert "10.150.2.0/24 dev net1" in table
    assert "10.150.8.0/24" not in sh("ip", "route", "show", ns=pod)  # moved out of main
    assert ping_from_net1(pod)
    f = tmp_path / "sbr" / "c1:net1.json"
    assert f.exists() and (f.stat().st_mode & 0o777) == 0o600
    run("CHECK", pod, conf(pod, tmp_path))
    run("DEL", pod, conf(pod, tmp_path))
    after = state(pod)
    assert after["rules"] == before["rules"]
    assert sorted(after["routes"].splitlines()) == sorted(before["routes"].splitlines()), after["routes"]
    assert not f.exists()
    run("DEL", pod, conf(pod, tmp_path))  # idempotent


def test_del_restores_a_moved_default_route_whose_gateway_needs_the_subnet_route(scene: Scene, tmp_path: Path) -> None:
    """A default route of the interface sorts before its subnet route; DEL must re-add the
    subnet route first or the kernel refuses the default (gateway unreachable) and it is lost
    (found by the conformance harness: leak-add-del)."""
    pod, _ = topo(scene)
    sh("ip", "route", "add", "default", "via", "10.150.2.1", "dev", "net1", "metric", "200", ns=pod)
    before = state(pod)
    run("ADD", pod, conf(pod, tmp_path))
    assert "metric 200" not in sh("ip", "route", "show", ns=pod)  # moved into table 100
    run("DEL", pod, conf(pod, tmp_path))
    after = state(pod)
    assert sorted(after["routes"].splitlines()) == sorted(before["routes"].splitlines()), after["routes"]


def test_del_removes_its_rules_even_when_the_addresses_are_gone(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    run("ADD", pod, conf(pod, tmp_path))
    sh("ip", "addr", "flush", "dev", "net1", ns=pod)
    run("DEL", pod, {**conf(pod, tmp_path), "prevResult": {}})
    assert "lookup 100" not in sh("ip", "rule", "show", ns=pod)
    assert sh("ip", "route", "show", "table", "100", ns=pod).strip() == ""


def test_missing_netns_is_error_8_on_add_and_check_and_del_still_succeeds(scene: Scene, tmp_path: Path) -> None:
    # Code 8 is libcni's ErrInvalidNetNS, what every plugin returns for it (sbr used to say 103 on CHECK).
    pod, _ = topo(scene)
    run("ADD", pod, conf(pod, tmp_path))
    sh("ip", "netns", "del", pod)
    for cmd in ("ADD", "CHECK"):
        with pytest.raises(CNIError) as ei:
            run(cmd, pod, conf(pod, tmp_path))
        assert ei.value.code == 8, (cmd, ei.value)
        assert f"/run/netns/{pod}" in ei.value.msg
    run("DEL", pod, conf(pod, tmp_path))  # its rules went with the namespace: DEL only drops the state file
    assert not any(f.endswith(".json") for f in os.listdir(tmp_path / "sbr"))
    run("DEL", pod, conf(pod, tmp_path))


def test_del_without_state_file_falls_back_to_the_addresses(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    run("ADD", pod, conf(pod, tmp_path))
    (tmp_path / "sbr" / "c1:net1.json").unlink()
    run("DEL", pod, conf(pod, tmp_path))
    assert "lookup 100" not in sh("ip", "rule", "show", ns=pod)
    assert sh("ip", "route", "show", "table", "100", ns=pod).strip() == ""


def test_no_gateway_is_error_7_and_nothing_is_applied(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    before = state(pod)
    c = conf(pod, tmp_path, prevResult=prev(pod, gw=False))
    c["prevResult"]["routes"] = []
    with pytest.raises(CNIError) as ei:
        run("ADD", pod, c)
    assert ei.value.code == 7
    assert state(pod) == before
    assert not (tmp_path / "sbr" / "c1:net1.json").exists()


def test_gateways_config_is_honoured_when_ipam_gave_none(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    run("ADD", pod, conf(pod, tmp_path, prevResult=prev(pod, gw=False), gateways=["10.150.2.1"]))
    assert ping_from_net1(pod)


def test_two_addresses_get_two_tables(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    sh("ip", "addr", "add", "10.150.2.6/24", "dev", "net1", ns=pod)
    p = prev(pod, extra_ips=[{"address": "10.150.2.6/24", "gateway": "10.150.2.1", "interface": 0}])
    run("ADD", pod, conf(pod, tmp_path, prevResult=p))
    rules = sh("ip", "rule", "show", ns=pod)
    assert "from 10.150.2.5 lookup 100" in rules and "from 10.150.2.6 lookup 101" in rules
    assert "default via 10.150.2.1" in sh("ip", "route", "show", "table", "101", ns=pod)
    run("DEL", pod, conf(pod, tmp_path, prevResult=p))
    assert "lookup 10" not in sh("ip", "rule", "show", ns=pod)


def test_fixed_table_only_adds_rules(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    sh("ip", "route", "add", "default", "via", "10.150.2.1", "dev", "net1", "table", "5001", ns=pod)
    main = sh("ip", "route", "show", ns=pod)
    run("ADD", pod, conf(pod, tmp_path, table=5001, prevResult=prev(pod, gw=False)))
    assert "from 10.150.2.5 lookup 5001" in sh("ip", "rule", "show", ns=pod)
    assert sh("ip", "route", "show", ns=pod) == main
    assert ping_from_net1(pod)
    run("CHECK", pod, conf(pod, tmp_path, table=5001, prevResult=prev(pod, gw=False)))
    run("DEL", pod, conf(pod, tmp_path, table=5001))
    assert "5001" not in sh("ip", "rule", "show", ns=pod)
    assert "default via 10.150.2.1" in sh("ip", "route", "show", "table", "5001", ns=pod)  # not ours to remove


def test_check_fails_when_the_rule_or_default_route_is_gone(scene: Scene, tmp_path: Path) -> None:
    pod, _ = topo(scene)
    run("ADD", pod, conf(pod, tmp_path))
    sh("ip", "route", "del", "default", "table", "100", ns=pod)
    with pytest.raises(CNIError) as ei:
        run("CHECK", pod, conf(pod, tmp_path))
    assert ei.value.code == 106 and "default route" in ei.value.msg
    sh("ip", "rule", "del", "from", "10.150.2.5", "lookup", "100", ns=pod)
    with pytest.raises(CNIError) as ei:
        run("CHECK", pod, conf(pod, tmp_path))
    assert "no rule" in ei.value.msg


def _ref(cmd: str, pod: str, config: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID="c1", CNI_NETNS=f"/run/netns/{pod}", CNI_IFNAME="net1", CNI_PATH=REF_CNI)
    return subprocess.run([f"{REF_CNI}/sbr"], input=json.dumps(config).encode(), env=env, capture_output=True, check=False)


def test_differential_rules_and_tables_match_the_reference(scene: Scene, tmp_path: Path) -> None:
    need_reference("sbr")
    ref_pod, _ = topo(scene)
    ours_scene = Scene(tag=scene.tag[::-1])
    try:
        our_pod, _ = topo(ours_scene)
        ref = _ref("ADD", ref_pod, conf(ref_pod, tmp_path))
        assert ref.returncode == 0, ref.stdout
        run("ADD", our_pod, conf(our_pod, tmp_path))
        assert sh("ip", "rule", "show", ns=our_pod) == sh("ip", "rule", "show", ns=ref_pod)
        for table in ("100", "main"):
            assert sh("ip", "route", "show", "table", table, ns=our_pod) == sh("ip", "route", "show", "table", table, ns=ref_pod)
        # Both DELs remove the rule; only ours also empties table 100 (intentional difference).
        assert _ref("DEL", ref_pod, conf(ref_pod, tmp_path)).returncode == 0
        run("DEL", our_pod, conf(our_pod, tmp_path))
        assert sh("ip", "rule", "show", ns=our_pod) == sh("ip", "rule", "show", ns=ref_pod)
        assert sh("ip", "route", "show", "table", "100", ns=ref_pod).strip() != ""
        assert sh("ip", "route", "show", "table", "100", ns=our_pod).strip() == ""
    finally:
        ours_scene.cleanup()


def test_ipv6_address_gets_its_own_table(scene: Scene, tmp_path: Path) -> None:
    pod, gw = topo(scene)
    sh("ip", "addr", "add", "fd00:150:2::1/64", "dev", "n1", "nodad", ns=gw)
    sh("ip", "addr", "add", "fd00:150:2::5/64", "dev", "net1", "nodad", ns=pod)
    p = prev(pod, extra_ips=[{"address": "fd00:150:2::5/64", "gateway": "fd00:150:2::1", "interface": 0}])
    run("ADD", pod, conf(pod, tmp_path, prevResult=p))
    assert "from fd00:150:2::5 lookup 101" in sh("ip", "-6", "rule", "show", ns=pod)
    got = sh("ip", "-6", "route", "get", "2001:db8::9", "from", "fd00:150:2::5", ns=pod)
    assert "via fd00:150:2::1 dev net1 table 101" in got
    assert "fe80::/64 dev net1" in sh("ip", "-6", "route", "show", ns=pod)  # link-local stays in main
    run("CHECK", pod, conf(pod, tmp_path, prevResult=p))
    run("DEL", pod, conf(pod, tmp_path, prevResult=p))
    assert "lookup 10" not in sh("ip", "-6", "rule", "show", ns=pod) + sh("ip", "rule", "show", ns=pod)
    assert "fd00:150:2::/64 dev net1" in sh("ip", "-6", "route", "show", ns=pod)  # moved back
