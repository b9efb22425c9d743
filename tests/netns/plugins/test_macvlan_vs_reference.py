"""Differential: the same macvlan config through our binary and the reference /usr/lib/cni/macvlan.

Twin namespaces, one master each (two veth uplinks with the same MTU: passthru allows only one
macvlan per master), both plugins exec'd the way a runtime does, both using the reference
IPAM (MULTINIC_EXEC_TYPES) so only the interface plugin differs. Compared: link kind, mode,
MTU, flags; global addresses; routes of every table (IPv6 link-local left out: it derives from
the random MAC); arp_notify; the result modulo MAC and sandbox path.

Intentional differences (asserted or normalised below, each for a reason):
- ndisc_notify: we set it to 1 (so IPv6 neighbours learn the new MAC, as arp_notify does for
  IPv4); the reference 1.1.1 only sets arp_notify, and only when there is IPAM.
- arp_notify on L2-only interfaces: we set it too (the reference skips it without IPAM).
- txqueuelen: the reference creates the link with IFLA_TXQLEN=0 (a zero-valued Go struct
  field); we keep the kernel's default (the master's). macvlan has no qdisc so it is moot
  until someone attaches one, where 0 would be a trap.
- route protocol: our routes carry RTPROT_STATIC (pyroute2's default), the reference's none.
- DNS: IPAM's DNS is kept in our result; the reference drops it (test below).
- Errors: our codes are specific (103 master not found, 7 MTU, 100 ifname exists) where the
  reference returns 999/generic text; both fail, which is what is compared.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.nsfix import REF_CNI, Scene, links_in, need_reference, sh

REF = os.path.join(REF_CNI, "macvlan")


@pytest.fixture(autouse=True)
def _need_reference() -> None:
    need_reference("macvlan", "static", "host-local")


def exec_plugin(argv: list[str], command: str, ns: str, config: dict[str, Any], cni_args: str = "") -> tuple[int, dict[str, Any] | None]:
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": f"/run/netns/{ns}",
           "CNI_IFNAME": "net1", "CNI_PATH": REF_CNI, "CNI_ARGS": cni_args, "MULTINIC_EXEC_TYPES": "static,host-local"}
    p = subprocess.run(argv, input=json.dumps(config).encode(), capture_output=True, env=env, check=False, timeout=30)
    doc = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, doc


def kernel_state(ns: str) -> dict[str, Any]:
    link = json.loads(sh("ip", "-d", "-j", "link", "show", "net1", ns=ns))[0]
    info = link["linkinfo"]
    addrs = json.loads(sh("ip", "-j", "addr", "show", "net1", ns=ns))[0]["addr_info"]
    routes = []
    for fam in ("-4", "-6"):
        for r in json.loads(sh("ip", "-j", fam, "route", "show", "table", "all", ns=ns)):
            if r.get("dev") != "net1" or str(r.get("dst", "")).startswith(("fe80", "ff00")):
                continue
            r.pop("protocol", None) if r.get("protocol") in ("static", None) else None  # see module docstring
            routes.append(r)
    return {
        "kind": info["info_kind"],
        "mode": info["info_data"]["mode"],
        "mtu": link["mtu"],
        "flags": sorted(link["flags"]),
        "operstate": link["operstate"],
        "addresses": sorted((a["local"], a["prefixlen"], a.get("broadcast", "")) for a in addrs if a["scope"] == "global"),
        "tentative": sorted(a["local"] for a in addrs if a["scope"] == "global" and a.get("tentative")),
        "routes": sorted(json.dumps(r, sort_keys=True) for r in routes),
        "arp_notify": sh("sysctl", "-n", "net.ipv4.conf.net1.arp_notify", ns=ns).strip(),
    }


def normalised(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    out = json.loads(json.dumps(doc))
    for iface in out.get("interfaces", []):
        iface["mac"] = "<mac>"
        iface["sandbox"] = "<netns>"
    return out


STATIC_V4 = {"type": "static", "addresses": [{"address": "10.60.0.2/24", "gateway": "10.60.0.1"}],
             "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.61.0.0/16", "gw": "10.60.0.9"}]}
STATIC_DUAL = {"type": "static", "addresses": [{"address": "10.62.0.2/24", "gateway": "10.62.0.1"},
                                                {"address": "fd00:62::2/64", "gateway": "fd00:62::1"}],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}

CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    # name: (cniVersion, extra config, CNI_ARGS)
    "bridge-static-dns": ("1.0.0", {"mode": "bridge", "mtu": 1400, "ipam": STATIC_V4, "dns": {"nameservers": ["10.60.0.53"], "search": ["x.local"]}}, ""),
    "private-dual-stack": ("0.4.0", {"mode": "private", "ipam": STATIC_DUAL}, ""),
    "vepa-l2-only": ("1.0.0", {"mode": "vepa", "ipam": {}}, ""),
    "passthru-static": ("0.3.1", {"mode": "passthru", "ipam": STATIC_V4}, ""),
    "default-mode-cni-args-mac": ("1.0.0", {"ipam": STATIC_V4}, "IgnoreUnknown=1;MAC=02:12:34:56:78:9a"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_config_same_kernel_state_and_result(scene: Scene, multinic_bin: str, case: str, tmp_path: Path) -> None:
    version, extra, cni_args = CASES[case]
    ns_ref, ns_ours = scene.netns("r"), scene.netns("o")
    m_ref, m_ours = scene.veth_uplink(), scene.veth_uplink()
    base = {"cniVersion": version, "name": "diffnet", "type": "macvlan", **extra}

    rc_ref, res_ref = exec_plugin([REF], "ADD", ns_ref, {**base, "master": m_ref}, cni_args)
    rc_ours, res_ours = exec_plugin([multinic_bin, "plugin", "macvlan"], "ADD", ns_ours, {**base, "master": m_ours}, cni_args)
    assert rc_ref == 0, res_ref
    assert rc_ours == 0, res_ours
    assert normalised(res_ours) == normalised(res_ref)

    st_ref, st_ours = kernel_state(ns_ref), kernel_state(ns_ours)
    if extra["ipam"] == {}:
        assert st_ref["arp_notify"] == "0" and st_ours["arp_notify"] == "1"  # intentional, see docstring
        st_ref["arp_notify"] = st_ours["arp_notify"]
    assert st_ours == st_ref
    assert sh("sysctl", "-n", "net.ipv6.conf.net1.ndisc_notify", ns=ns_ours).strip() == "1"
    if cni_args:
        assert res_ours is not None and res_ours["interfaces"][0]["mac"] == res_ref["interfaces"][0]["mac"] == "02:12:34:56:78:9a"  # type: ignore[index]

    for argv, ns, master, res in ((([REF]), ns_ref, m_ref, res_ref), ([multinic_bin, "plugin", "macvlan"], ns_ours, m_ours, res_ours)):
        conf = {**base, "master": master, "prevResult": res}
        if version != "0.3.1":
            assert exec_plugin(argv, "CHECK", ns, conf, cni_args)[0] == 0
        assert exec_plugin(argv, "DEL", ns, conf, cni_args)[0] == 0
        assert links_in(ns) == {"lo"}


def test_host_local_leases_match(scene: Scene, multinic_bin: str, tmp_path: Path) -> None:
    ns_ref, ns_ours = scene.netns("r"), scene.netns("o")
    m_ref, m_ours = scene.veth_uplink(), scene.veth_uplink()
    results = []
    for argv, ns, master, data in (([REF], ns_ref, m_ref, "ref"), ([multinic_bin, "plugin", "macvlan"], ns_ours, m_ours, "ours")):
        conf = {"cniVersion": "1.0.0", "name": "diffnet", "type": "macvlan", "master": master,
                "ipam": {"type": "host-local", "subnet": "10.63.0.0/24", "dataDir": str(tmp_path / data)}}
        rc, res = exec_plugin(argv, "ADD", ns, conf)
        assert rc == 0, res
        results.append(normalised(res))
        assert sorted(os.listdir(tmp_path / data / "diffnet")) == ["10.63.0.2", "last_reserved_ip.0", "lock"]
        assert exec_plugin(argv, "DEL", ns, conf)[0] == 0
        assert sorted(os.listdir(tmp_path / data / "diffnet")) == ["last_reserved_ip.0", "lock"]
    assert results[0] == results[1]


def test_ipam_dns_is_kept_by_us_and_dropped_by_the_reference(scene: Scene, multinic_bin: str) -> None:
    ns_ref, ns_ours = scene.netns("r"), scene.netns("o")
    m_ref, m_ours = scene.veth_uplink(), scene.veth_uplink()
    ipam = {**STATIC_V4, "dns": {"nameservers": ["10.60.0.53"]}}
    base = {"cniVersion": "1.0.0", "name": "diffnet", "type": "macvlan", "ipam": ipam}
    _, ref = exec_plugin([REF], "ADD", ns_ref, {**base, "master": m_ref})
    _, ours = exec_plugin([multinic_bin, "plugin", "macvlan"], "ADD", ns_ours, {**base, "master": m_ours})
    assert ref is not None and ours is not None
    assert ref["dns"] == {}
    assert ours["dns"] == {"nameservers": ["10.60.0.53"]}


@pytest.mark.parametrize("problem", ["bad-master", "mtu-above-master", "ifname-exists"])
def test_both_refuse_the_same_bad_input(scene: Scene, multinic_bin: str, problem: str) -> None:
    ns_ref, ns_ours = scene.netns("r"), scene.netns("o")
    m_ref, m_ours = scene.veth_uplink(mtu=1400), scene.veth_uplink(mtu=1400)
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "diffnet", "type": "macvlan", "ipam": STATIC_V4}
    if problem == "mtu-above-master":
        base["mtu"] = 1500
    if problem == "ifname-exists":
        for ns in (ns_ref, ns_ours):
            sh("ip", "link", "add", "net1", "type", "veth", "peer", "name", "x1", ns=ns)
    expected = {"bad-master": 103, "mtu-above-master": 7, "ifname-exists": 100}[problem]
    for argv, ns, master in (([REF], ns_ref, m_ref), ([multinic_bin, "plugin", "macvlan"], ns_ours, m_ours)):
        conf = {**base, "master": "nosuchmaster0" if problem == "bad-master" else master}
        before = links_in(ns)
        rc, doc = exec_plugin(argv, "ADD", ns, conf)
        assert rc != 0 and doc is not None and doc["code"]
        if argv[0] != REF:
            assert doc["code"] == expected, doc
        assert links_in(ns) == before
