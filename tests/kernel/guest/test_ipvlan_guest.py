"""ipvlan plugin in a real kernel that has ipvlan: runs only inside the UML guest.

On the host these are skipped by guest/conftest.py ("needs ipvlan ... run via tests/kernel
(UML)"); tests/kernel/test_in_uml.py boots one guest and runs them there. Masters are
dummy links in the guest's root namespace with unique names, removed in teardown; pods are
namespaces from ``make_netns``. IPAM is the reference ``static`` exec'd from /usr/lib/cni
(native IPAM is its own issue), and the differential test runs /usr/lib/cni/ipvlan.

Intentional differences from the reference (normalised in the differential test):
- ndisc_notify=1 in addition to arp_notify (so IPv6 neighbours learn the interface).
- route protocol RTPROT_STATIC (pyroute2's default) where the reference leaves it unset.
- IPAM DNS kept in the result (the reference keeps only the config's dns).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cni import invoke
from cni.spec.errors import CNIError
from cni.spec.request import Request
from cni.spec.result import Result, to_wire
from plugins import ipvlan

REF_CNI = "/usr/lib/cni"
IpFn = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(autouse=True)
def _reference_ipam(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.access(os.path.join(REF_CNI, "static"), os.X_OK):
        pytest.skip("needs the reference static IPAM in /usr/lib/cni (containernetworking-plugins)")
    monkeypatch.setattr(invoke, "_force_exec", {"static", "host-local"})


@pytest.fixture
def make_master(ip: IpFn) -> Iterator[Callable[..., str]]:
    """Dummy uplinks in the guest root namespace (ipvlan masters), deleted afterwards."""
    made: list[str] = []

    def make(mtu: int = 1500) -> str:
        name = f"dm{uuid.uuid4().hex[:8]}"
        ip("link", "add", name, "mtu", str(mtu), "type", "dummy")
        ip("link", "set", name, "up")
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def conf(master: str = "", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": version, "name": "ivnet", "type": "ipvlan"}
    if master:
        c["master"] = master
    c.update(extra)
    return c


def static(*addrs: str, gw: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "static", "addresses": [{"address": a, **({"gateway": gw} if gw else {})} for a in addrs], **extra}


def run(command: str, ns: str, config: dict[str, Any], ifname: str = "net1") -> Result | None:
    req = Request(command=command, container_id="c1", netns=f"/run/netns/{ns}" if ns else "", ifname=ifname,
                  path=(REF_CNI,), config=config)
    return ipvlan.PLUGIN.run(req)


def link_json(ip: IpFn, ns: str, name: str = "net1") -> dict[str, Any]:
    return json.loads(ip("-n", ns, "-d", "-j", "link", "show", name).stdout)[0]  # type: ignore[no-any-return]


def links(ns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
def test_add_creates_ipvlan_in_mode_with_addresses_and_del_removes_it(
    ip: IpFn, make_netns: Callable[[], str], make_master: Callable[..., str], mode: str
) -> None:
    master, ns = make_master(), make_netns()
    c = conf(master, mode=mode, mtu=1400, ipam=static("10.70.0.2/24", gw="10.70.0.1", routes=[{"dst": "10.71.0.0/16"}]),
             dns={"search": ["pod.local"]})
    res = run("ADD", ns, c)
    assert res is not None
    link = link_json(ip, ns)
    assert link["linkinfo"]["info_kind"] == "ipvlan"
    assert link["linkinfo"]["info_data"]["mode"] == mode
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    master_mac = json.loads(ip("-j", "link", "show", master).stdout)[0]["address"]
    assert link["address"] == master_mac  # ipvlan shares its master's MAC
    wire = to_wire(res, "1.0.0")
    assert wire == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "mac": master_mac, "sandbox": f"/run/netns/{ns}"}],
        "ips": [{"interface": 0, "address": "10.70.0.2/24", "gateway": "10.70.0.1"}],
        "routes": [{"dst": "10.71.0.0/16"}],
        "dns": {"search": ["pod.local"]},
    }
    assert "10.71.0.0/16 via 10.70.0.1 dev net1" in ip("-n", ns, "route").stdout

    checked = {**c, "prevResult": wire}
    run("CHECK", ns, checked)
    ip("-n", ns, "link", "set", "net1", "mtu", "1300")
    with pytest.raises(CNIError) as ei:
        run("CHECK", ns, checked)
    assert ei.value.code == 106

    run("DEL", ns, checked)
    assert links(ns) == {"lo"}
    run("DEL", ns, checked)  # idempotent


def test_chained_master_and_prev_result_ips_without_ipam(ip: IpFn, make_netns: Callable[[], str]) -> None:
    # Chained: the previous plugin's single interface is the master (here in the pod netns,
    # hence linkInContainer), and its IPs move to the ipvlan interface.
    ns = make_netns()
    ip("-n", ns, "link", "add", "up0", "type", "dummy")
    ip("-n", ns, "link", "set", "up0", "up")
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "up0", "sandbox": f"/run/netns/{ns}"}],
            "ips": [{"address": "10.72.0.5/24", "gateway": "10.72.0.1", "interface": 0}],
            "routes": [{"dst": "10.73.0.0/16"}]}
    res = run("ADD", ns, conf(linkInContainer=True, prevResult=prev))
    assert res is not None
    assert [i.name for i in res.interfaces] == ["net1"]
    assert [str(i.address) for i in res.ips] == ["10.72.0.5/24"] and res.ips[0].interface == 0
    link = link_json(ip, ns)
    assert link["linkinfo"]["info_kind"] == "ipvlan" and link["link"] == "up0"
    assert "10.72.0.5/24" in ip("-n", ns, "addr", "show", "net1").stdout
    assert "10.73.0.0/16 via 10.72.0.1 dev net1" in ip("-n", ns, "route").stdout


def test_existing_ifname_bad_master_mtu_and_ipam_failure_leave_nothing(
    ip: IpFn, make_netns: Callable[[], str], make_master: Callable[..., str]
) -> None:
    master, ns = make_master(mtu=1400), make_netns()
    with pytest.raises(CNIError) as ei:
        run("ADD", ns, conf("nosuchmaster0", ipam=static("10.74.0.2/24")))
    assert ei.value.code == 103
    with pytest.raises(CNIError) as ei:
        run("ADD", ns, conf(master, mtu=1500, ipam=static("10.74.0.2/24")))
    assert ei.value.code == 7
    with pytest.raises(CNIError):
        run("ADD", ns, conf(master, ipam=static("not-an-address")))
    assert links(ns) == {"lo"}
    ip("-n", ns, "link", "add", "net1", "type", "dummy")
    with pytest.raises(CNIError) as ei:
        run("ADD", ns, conf(master, ipam=static("10.74.0.2/24")))
    assert ei.value.code == 100
    assert link_json(ip, ns)["linkinfo"]["info_kind"] == "dummy"


def test_two_l2_pods_on_one_master_reach_each_other(ip: IpFn, make_netns: Callable[[], str], make_master: Callable[..., str]) -> None:
    master, a, b = make_master(), make_netns(), make_netns()
    run("ADD", a, conf(master, ipam=static("10.75.0.2/24")))
    run("ADD", b, conf(master, ipam=static("10.75.0.3/24")))
    ping = subprocess.run(["ip", "netns", "exec", a, "ping", "-c1", "-W2", "10.75.0.3"], capture_output=True, text=True, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def _exec(argv: list[str], command: str, ns: str, config: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": f"/run/netns/{ns}",
           "CNI_IFNAME": "net1", "CNI_PATH": REF_CNI, "MULTINIC_EXEC_TYPES": "static,host-local"}
    p = subprocess.run(argv, input=json.dumps(config).encode(), capture_output=True, env=env, check=False, timeout=60)
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None)


def _state(ip: IpFn, ns: str) -> dict[str, Any]:
    link = link_json(ip, ns)
    addrs = json.loads(ip("-n", ns, "-j", "addr", "show", "net1").stdout)[0]["addr_info"]
    routes = []
    for fam in ("-4", "-6"):
        for r in json.loads(ip("-n", ns, "-j", fam, "route", "show", "table", "all").stdout):
            if r.get("dev") != "net1" or str(r.get("dst", "")).startswith(("fe80", "ff00")):
                continue
            if r.get("protocol") == "static":
                r.pop("protocol")
            routes.append(json.dumps(r, sort_keys=True))
    return {
        "kind": link["linkinfo"]["info_kind"], "mode": link["linkinfo"]["info_data"]["mode"], "mtu": link["mtu"],
        "flags": sorted(link["flags"]),
        "addresses": sorted((a["local"], a["prefixlen"]) for a in addrs if a["scope"] == "global"),
        "routes": sorted(routes),
    }


@pytest.mark.parametrize("mode", ["l2"])  # l3 adds ~8 s of guest time and showed no difference
def test_same_kernel_state_and_result_as_the_reference_ipvlan(
    ip: IpFn, make_netns: Callable[[], str], make_master: Callable[..., str], mode: str
) -> None:
    ours_bin = os.path.join(os.path.dirname(sys.executable), "multinic")
    ref_bin = os.path.join(REF_CNI, "ipvlan")
    if not os.access(ref_bin, os.X_OK) or not os.access(ours_bin, os.X_OK):
        pytest.skip("needs /usr/lib/cni/ipvlan and the multinic console script")
    ns_ref, ns_ours = make_netns(), make_netns()
    m_ref, m_ours = make_master(), make_master()
    base = {"cniVersion": "1.0.0", "name": "ivnet", "type": "ipvlan", "mode": mode, "mtu": 1400,
            "ipam": static("10.76.0.2/24", gw="10.76.0.1", routes=[{"dst": "0.0.0.0/0"}])}
    rc_r, res_r = _exec([ref_bin], "ADD", ns_ref, {**base, "master": m_ref})
    rc_o, res_o = _exec([ours_bin, "plugin", "ipvlan"], "ADD", ns_ours, {**base, "master": m_ours})
    assert rc_r == 0, res_r
    assert rc_o == 0, res_o
    assert res_r is not None and res_o is not None
    for r in (res_r, res_o):
        r["interfaces"][0]["mac"] = r["interfaces"][0]["sandbox"] = "-"
    assert res_o == res_r
    assert _state(ip, ns_ours) == _state(ip, ns_ref)
    for argv, ns, m in (([ref_bin], ns_ref, m_ref), ([ours_bin, "plugin", "ipvlan"], ns_ours, m_ours)):
        assert _exec(argv, "DEL", ns, {**base, "master": m})[0] == 0
        assert links(ns) == {"lo"}
