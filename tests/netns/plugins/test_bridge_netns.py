"""bridge on the host kernel: result shapes, every host-kernel key, ipMasq backends, traffic,
failure paths, DEL/CHECK.

Real namespaces from the ``scene`` fixture; every test uses its own bridge ``mnbr<tag>`` (deleted in
cleanup) and a tmp dataDir. IPAM is the reference ``host-local``/``static`` exec'd from /usr/lib/cni
(``invoke._force_exec``) so these tests do not depend on the native IPAM being finished.
VLAN keys need bridge vlan_filtering, which this host kernel lacks: they are tested in UML
(tests/kernel/guest/test_bridge_vlan_guest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni import invoke
from cni.spec.errors import CNIError
from cni.spec.request import Request
from cni.spec.result import Result, to_wire
from plugins import _masq, bridge
from tests.support import execlog
from tests.support.nsfix import REF_CNI, Scene, links_in, need_reference, sh

VERSIONS = ("0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


@pytest.fixture(autouse=True)
def _reference_ipam(monkeypatch: pytest.MonkeyPatch) -> None:
    need_reference("static", "host-local")
    monkeypatch.setattr(invoke, "_force_exec", {"static", "host-local"})


@pytest.fixture
def br(scene: Scene) -> str:
    """A bridge name unique to the test; removed with the scene (the plugin never deletes it)."""
    name = f"mnbr{scene.tag}"
    scene.host_links.append(name)
    return name


@pytest.fixture
def masq_cleanup() -> Iterator[list[tuple[str, str, str]]]:
    """(network, ifname, cid) whose masquerade rules must not survive the test, even a failed one."""
    made: list[tuple[str, str, str]] = []
    yield made
    for net, ifname, cid in made:
        try:
            _masq.teardown(net, ifname, cid)
        except CNIError:
            pass


def hl(tmp_path: Path, subnet: str = "10.77.0.0/24", **extra: Any) -> dict[str, Any]:
    return {"type": "host-local", "subnet": subnet, "dataDir": str(tmp_path / "ipam"), **extra}


def conf(brname: str, version: str = "1.0.0", name: str = "brnet", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "type": "bridge", "bridge": brname, **extra}


def run(command: str, ns: str, config: dict[str, Any], ifname: str = "net1", cid: str = "c1",
        prev: Result | None = None, path: tuple[str, ...] = (REF_CNI,)) -> Result | None:
    if prev is not None:
        config = {**config, "prevResult": to_wire(prev, config["cniVersion"])}
    req = Request(command=command, container_id=cid, netns=f"/run/netns/{ns}" if ns else "", ifname=ifname,
                  path=path, config=config)
    return bridge.PLUGIN.run(req)


def add(ns: str, config: dict[str, Any], **kw: Any) -> Result:
    res = run("ADD", ns, config, **kw)
    assert res is not None
    return res


def link_json(name: str, ns: str | None = None) -> dict[str, Any]:
    out = sh("ip", "-d", "-j", "link", "show", "dev", name, ns=ns)
    return json.loads(out)[0]  # type: ignore[no-any-return]


def addrs(name: str, ns: str | None = None) -> list[str]:
    out = json.loads(sh("ip", "-j", "addr", "show", "dev", name, ns=ns))
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a.get("scope") == "global")


def ports_of(brname: str) -> list[str]:
    if not os.path.exists(f"/sys/class/net/{brname}"):
        return []
    return sorted(os.listdir(f"/sys/class/net/{brname}/brif"))


def reserved(tmp_path: Path, net: str = "brnet") -> list[str]:
    d = tmp_path / "ipam" / net
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit() or ":" in p.name) if d.exists() else []


def sysctl(key: str, ns: str | None = None) -> str:
    return sh("cat", "/proc/sys/" + key.replace(".", "/"), ns=ns).strip()


# ---- result shape --------------------------------------------------------------------------

# The reference host-local (1.1.1) stops at CNI 1.0.0; for 1.1.0 this exec'd shim runs it with the
# config's version lowered to 1.0.0 and labels its answer 1.1.0 (the two result shapes are equal).
HL_110 = r"""#!{python}
import json, os, subprocess, sys
c = json.load(sys.stdin)
c["cniVersion"] = "1.0.0"
p = subprocess.run(["{ref}/host-local"], input=json.dumps(c).encode(), capture_output=True)
out = p.stdout
if p.returncode == 0 and out.strip():
    d = json.loads(out); d["cniVersion"] = "1.1.0"; out = json.dumps(d).encode()
sys.stdout.buffer.write(out); sys.stderr.buffer.write(p.stderr); sys.exit(p.returncode)
"""


def ipam_for(version: str, tmp_path: Path, **extra: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    ipam = hl(tmp_path, **extra)
    if version != "1.1.0":
        return ipam, (REF_CNI,)
    shim = tmp_path / "host-local-110"
    shim.write_text(HL_110.format(python=sys.executable, ref=REF_CNI))
    shim.chmod(0o755)
    return {**ipam, "type": "host-local-110"}, (str(tmp_path), REF_CNI)


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_shape_for_every_version(scene: Scene, br: str, tmp_path: Path, version: str) -> None:
    ns = scene.netns("br")
    ipam, path = ipam_for(version, tmp_path)
    res = add(ns, conf(br, version, isDefaultGateway=True, ipam=ipam), path=path)
    wire = to_wire(res, version)
    assert wire["cniVersion"] == version
    if version == "0.2.0":
        assert wire["ip4"] == {"ip": "10.77.0.2/24", "gateway": "10.77.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}]}
    else:
        names = [i["name"] for i in wire["interfaces"]]
        assert names[0] == br and names[1].startswith("veth") and len(names[1]) == 12 and names[2] == "net1"
        assert "sandbox" not in wire["interfaces"][1] and wire["interfaces"][2]["sandbox"] == f"/run/netns/{ns}"
        ip = wire["ips"][0]
        assert ip["interface"] == 2 and ip["address"] == "10.77.0.2/24" and ip["gateway"] == "10.77.0.1"
        assert ("version" in ip) == (version in ("0.3.0", "0.3.1", "0.4.0"))
        assert wire["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}]
        assert wire["interfaces"][2]["mac"] == link_json("net1", ns)["address"]
        assert wire["interfaces"][1]["mac"] == link_json(names[1])["address"]
        assert wire["interfaces"][0]["mac"] == link_json(br)["address"]
        # SPEC-1.1 interfaces[].mtu; older shapes have no such field.
        assert [i.get("mtu") for i in wire["interfaces"]] == ([1500] * 3 if version == "1.1.0" else [None] * 3)
    run("DEL", ns, conf(br, version, isDefaultGateway=True, ipam=ipam), path=path)
    assert reserved(tmp_path) == [] and ports_of(br) == []


def test_gateway_mode_configures_bridge_pod_and_forwarding(scene: Scene, br: str, tmp_path: Path) -> None:
    ns = scene.netns("br")
    res = add(ns, conf(br, isDefaultGateway=True, mtu=1400, ipam=hl(tmp_path, routes=[{"dst": "10.99.0.0/16"}])))
    host_veth = res.interfaces[1].name
    assert addrs(br) == ["10.77.0.1/24"] and addrs("net1", ns) == ["10.77.0.2/24"]
    assert ports_of(br) == [host_veth]
    assert link_json(br)["mtu"] == 1400 and link_json(host_veth)["mtu"] == 1400 and link_json("net1", ns)["mtu"] == 1400
    routes = sh("ip", "route", "show", ns=ns)
    assert "default via 10.77.0.1 dev net1" in routes and "10.99.0.0/16 via 10.77.0.1 dev net1" in routes
    assert sysctl("net.ipv4.ip_forward") == "1"
    assert sysctl("net.ipv4.conf.net1.arp_notify", ns) == "1" and sysctl("net.ipv6.conf.net1.accept_dad", ns) == "0"
    # The bridge MAC is pinned (addr_assign_type 3 = set by user) so it does not follow its ports.
    assert Path(f"/sys/class/net/{br}/addr_assign_type").read_text().strip() == "3"
    # A second pod reuses the bridge and its gateway address.
    ns2 = scene.netns("br")
    res2 = add(ns2, conf(br, isDefaultGateway=True, mtu=1400, ipam=hl(tmp_path, routes=[{"dst": "10.99.0.0/16"}])), cid="c2")
    assert str(res2.ips[0].address) == "10.77.0.3/24" and addrs(br) == ["10.77.0.1/24"]


def test_bridge_with_another_ipv4_address_needs_force_address(scene: Scene, br: str, tmp_path: Path) -> None:
    sh("ip", "link", "add", br, "type", "bridge")
    sh("ip", "addr", "add", "10.55.0.1/24", "dev", br)
    ns = scene.netns("br")
    with pytest.raises(CNIError, match="already has an IP address different from 10.77.0.1/24"):
        add(ns, conf(br, isGateway=True, ipam=hl(tmp_path)))
    assert ports_of(br) == [] and links_in(ns) == {"lo"} and reserved(tmp_path) == []
    add(ns, conf(br, isGateway=True, forceAddress=True, ipam=hl(tmp_path)))
    assert addrs(br) == ["10.77.0.1/24"]


def test_port_flags_promisc_isolation_dad_and_mac(scene: Scene, br: str, tmp_path: Path) -> None:
    ns = scene.netns("br")
    mac = "0a:58:0a:4d:00:42"
    res = add(ns, conf(br, hairpinMode=True, portIsolation=True, enabledad=True, runtimeConfig={"mac": mac},
                       ipam=hl(tmp_path)))
    slave = link_json(res.interfaces[1].name)["linkinfo"]["info_slave_data"]
    assert slave["hairpin"] is True and slave["isolated"] is True
    assert link_json("net1", ns)["address"] == mac == res.interfaces[2].mac
    assert sysctl("net.ipv6.conf.net1.accept_dad", ns) == "1" and sysctl("net.ipv6.conf.net1.enhanced_dad", ns) == "1"
    ns2 = scene.netns("br")
    res2 = add(ns2, conf(br, promiscMode=True), cid="c2")  # L2 only
    assert "PROMISC" in link_json(br)["flags"]
    slave2 = link_json(res2.interfaces[1].name)["linkinfo"]["info_slave_data"]
    assert slave2["hairpin"] is False and slave2["isolated"] is False
    assert res2.ips == () and "UP" in link_json("net1", ns2)["flags"]


def test_disable_container_interface_leaves_pod_end_down(scene: Scene, br: str) -> None:
    ns = scene.netns("br")
    res = add(ns, conf(br, disableContainerInterface=True))
    assert "UP" not in link_json("net1", ns)["flags"] and len(res.interfaces) == 3
    run("DEL", ns, conf(br, disableContainerInterface=True))
    assert links_in(ns) == {"lo"}


def test_macspoofchk_rules_follow_add_and_del(scene: Scene, br: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft (apt-get install nftables)")
    ns = scene.netns("br")
    cid = f"spoof{scene.tag}"
    c = conf(br, macspoofchk=True, ipam=hl(tmp_path))
    res = add(ns, c, cid=cid)
    table = sh("nft", "list", "table", "bridge", "nat")
    assert f"chain cni-br-iface-{cid}-net1-mac" in table
    assert f'iifname "{res.interfaces[1].name}" jump cni-br-iface-{cid}-net1' in table
    assert f"ether saddr {res.interfaces[2].mac} return" in table
    execs = execlog.install(monkeypatch, tmp_path / "bin", tools=("nft",))
    run("DEL", ns, c, cid=cid)
    assert execs.calls() == ["nft", "nft"]  # one listing of the table (rules and chains), one transaction
    assert f"cni-br-iface-{cid}" not in sh("nft", "list", "table", "bridge", "nat")
    execs.clear()
    run("DEL", ns, c, cid=cid)  # gone: listed, nothing to do
    assert execs.calls() == ["nft"]


# ---- ipMasq ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_ip_masq_rules_exist_after_add_and_are_gone_after_del(
    scene: Scene, br: str, tmp_path: Path, backend: str, masq_cleanup: list[tuple[str, str, str]]
) -> None:
    tool = "iptables" if backend == "iptables" else "nft"
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")
    ns = scene.netns("br")
    cid = f"masq{scene.tag}"
    masq_cleanup.append(("brnet", "net1", cid))
    c = conf(br, isGateway=True, ipMasq=True, ipMasqBackend=backend, ipam=hl(tmp_path))
    add(ns, c, cid=cid)
    chain = _masq.chain_name("brnet", cid)
    comment = _masq.nft_comment("brnet", "net1", cid)
    if backend == "iptables":
        nat = sh("iptables-save", "-t", "nat")
        assert f"-A POSTROUTING -s 10.77.0.2/32 -m comment --comment \"name: \\\"brnet\\\" id: \\\"{cid}\\\"\" -j {chain}" in nat
        assert f"-A {chain} ! -d 224.0.0.0/4" in nat and f"-A {chain} -d 10.77.0.0/24" in nat
    else:
        table = sh("nft", "list", "table", "inet", "cni_plugins_masquerade")
        assert f'ip saddr 10.77.0.2 ip daddr != 10.77.0.0/24 masquerade comment "{comment}"' in table
    run("DEL", ns, c, cid=cid)
    assert chain not in sh("iptables-save", "-t", "nat")
    if shutil.which("nft"):
        assert comment.split(",")[0] not in sh("nft", "list", "ruleset")


def test_ip_masq_usual_add_and_del_with_prev_result_read_no_table(
    scene: Scene, br: str, tmp_path: Path, masq_cleanup: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new attachment's ADD and a DEL given prevResult are one iptables-restore each (no iptables-save,
    nothing for the family without addresses); nft is still listed on DEL for rules of the other backend."""
    if shutil.which("iptables-restore") is None:
        pytest.skip("needs iptables-restore")
    ns = scene.netns("br")
    cid = f"fast{scene.tag}"
    masq_cleanup.append(("brnet", "net1", cid))
    c = conf(br, isGateway=True, ipMasq=True, ipMasqBackend="iptables", ipam=hl(tmp_path))
    execs = execlog.install(monkeypatch, tmp_path / "bin", tools=("iptables-save", "ip6tables-save", "iptables-restore",
                                                                  "ip6tables-restore", "nft"))
    res = add(ns, c, cid=cid)
    assert execs.calls() == ["iptables-restore"]
    chain = _masq.chain_name("brnet", cid)
    assert f"-A POSTROUTING -s 10.77.0.2/32 -m comment --comment \"name: \\\"brnet\\\" id: \\\"{cid}\\\"\" -j {chain}" in sh("iptables-save", "-t", "nat")
    execs.clear()
    run("DEL", ns, c, cid=cid, prev=res)
    assert execs.calls() == ["iptables-restore"] + (["nft"] if shutil.which("nft") else [])
    assert chain not in sh("iptables-save", "-t", "nat")
    execs.clear()
    run("DEL", ns, c, cid=cid, prev=res)  # already gone: the batch applies nothing, the table is read, DEL succeeds
    assert execs.calls()[:3] == ["iptables-restore", "iptables-save", "nft"][: 3 if shutil.which("nft") else 2]


def test_add_into_missing_netns_is_error_8_and_creates_nothing(scene: Scene, br: str, tmp_path: Path) -> None:
    with pytest.raises(CNIError) as exc:
        add(f"mnnope-{scene.tag}", conf(br, ipam=hl(tmp_path)))
    assert exc.value.code == 8 and not os.path.exists(f"/sys/class/net/{br}") and reserved(tmp_path) == []


def test_del_with_netns_gone_releases_ipam_and_masquerade(
    scene: Scene, br: str, tmp_path: Path, masq_cleanup: list[tuple[str, str, str]]
) -> None:
    ns = scene.netns("br")
    cid = f"gone{scene.tag}"
    masq_cleanup.append(("brnet", "net1", cid))
    c = conf(br, isGateway=True, ipMasq=True, ipMasqBackend="iptables", ipam=hl(tmp_path))
    add(ns, c, cid=cid)
    assert reserved(tmp_path) == ["10.77.0.2"]
    sh("ip", "netns", "del", ns)
    run("DEL", ns, c, cid=cid)
    assert reserved(tmp_path) == []
    # The kernel destroys an unmounted netns asynchronously (cleanup_net runs from a workqueue): the
    # veth end inside it, and with it the host end and the bridge port, goes a moment later whatever
    # the DEL does. Asserting at once raced that teardown (seen once in a serial CI run).
    deadline = time.monotonic() + 10
    while ports_of(br) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ports_of(br) == []
    assert _masq.chain_name("brnet", cid) not in sh("iptables-save", "-t", "nat")
    run("DEL", ns, c, cid=cid)  # idempotent
    run("DEL", "", c, cid=cid)  # CNI_NETNS empty


# ---- failure paths ---------------------------------------------------------------------------


def test_promisc_with_hairpin_is_error_7_and_touches_nothing(scene: Scene, br: str) -> None:
    ns = scene.netns("br")
    with pytest.raises(CNIError) as exc:
        add(ns, conf(br, promiscMode=True, hairpinMode=True))
    assert exc.value.code == 7 and not os.path.exists(f"/sys/class/net/{br}") and links_in(ns) == {"lo"}


def test_vlan_5000_is_error_7(scene: Scene, br: str) -> None:
    ns = scene.netns("br")
    with pytest.raises(CNIError) as exc:
        add(ns, conf(br, vlan=5000))
    assert exc.value.code == 7 and "vlan" in exc.value.msg and links_in(ns) == {"lo"}


def test_existing_ifname_is_refused_and_nothing_is_left(scene: Scene, br: str, tmp_path: Path) -> None:
    ns = scene.netns("br")
    sh("ip", "link", "add", "net1", "type", "veth", "peer", "name", "other", ns=ns)
    with pytest.raises(CNIError) as exc:
        add(ns, conf(br, ipam=hl(tmp_path)))
    assert exc.value.code == 100 and "net1" in exc.value.msg and "already exists" in exc.value.msg
    assert not os.path.exists(f"/sys/class/net/{br}")  # checked before the node is touched
    assert links_in(ns) == {"lo", "net1", "other"} and reserved(tmp_path) == []


@pytest.mark.parametrize("case", ["exhausted", "missing-plugin"])
def test_ipam_failure_leaves_no_veth(scene: Scene, br: str, tmp_path: Path, case: str,
                                     masq_cleanup: list[tuple[str, str, str]]) -> None:
    ns_ok, ns = scene.netns("br"), scene.netns("br")
    if case == "exhausted":
        ipam = hl(tmp_path, subnet="10.78.0.0/30")  # one usable address: .2 (.1 is the gateway)
        add(ns_ok, conf(br, ipam=ipam), cid="first")
    else:
        ipam = {"type": "no-such-ipam"}
        sh("ip", "link", "add", br, "type", "bridge")
    before = ports_of(br)
    cid = f"fail{scene.tag}"
    masq_cleanup.append(("brnet", "net1", cid))
    with pytest.raises(CNIError) as exc:
        add(ns, conf(br, isGateway=True, ipMasq=True, macspoofchk=shutil.which("nft") is not None, ipam=ipam), cid=cid)
    # The error is the IPAM's own (the reference host-local reports exhaustion as 999).
    assert ("no IP addresses available" if case == "exhausted" else "no-such-ipam") in str(exc.value)
    assert ports_of(br) == before and links_in(ns) == {"lo"}
    assert _masq.chain_name("brnet", cid) not in sh("iptables-save", "-t", "nat")
    if shutil.which("nft"):
        assert f"cni-br-iface-{cid}" not in sh("nft", "list", "ruleset")
    host_veths = {n for n in links_in(None) if n.startswith("veth")}
    assert not any(link_json(n).get("master") == br for n in host_veths if n not in before)


def test_failure_after_ipam_releases_address_and_veth(scene: Scene, br: str, tmp_path: Path) -> None:
    """A bridge port of another kind in the way of forceAddress-less gateway → ADD fails after IPAM ran."""
    sh("ip", "link", "add", br, "type", "bridge")
    sh("ip", "addr", "add", "10.66.0.1/24", "dev", br)
    ns = scene.netns("br")
    with pytest.raises(CNIError):
        add(ns, conf(br, isGateway=True, ipam=hl(tmp_path)))
    assert reserved(tmp_path) == [] and ports_of(br) == [] and links_in(ns) == {"lo"}


def test_existing_non_bridge_name_is_refused(scene: Scene, tmp_path: Path) -> None:
    up = scene.veth_uplink()
    ns = scene.netns("br")
    with pytest.raises(CNIError, match="not a bridge"):
        add(ns, conf(up, ipam=hl(tmp_path)))
    assert links_in(ns) == {"lo"} and reserved(tmp_path) == []


# ---- CHECK -----------------------------------------------------------------------------------


def test_check_passes_then_tolerates_sbr_then_fails_on_drift(scene: Scene, br: str, tmp_path: Path) -> None:
    ns = scene.netns("br")
    c = conf(br, "1.0.0", isDefaultGateway=True, mtu=1450, ipam=hl(tmp_path))
    res = add(ns, c)
    run("CHECK", ns, c, prev=res)
    # What sbr does: the interface's routes move from main to table 100.
    sh("ip", "route", "del", "default", ns=ns)
    sh("ip", "route", "add", "default", "via", "10.77.0.1", "dev", "net1", "table", "100", ns=ns)
    run("CHECK", ns, c, prev=res)
    sh("ip", "link", "set", "net1", "mtu", "1400", ns=ns)
    with pytest.raises(CNIError, match="MTU"):
        run("CHECK", ns, c, prev=res)
    sh("ip", "link", "set", "net1", "mtu", "1450", ns=ns)
    sh("ip", "addr", "flush", "dev", "net1", "scope", "global", ns=ns)
    with pytest.raises(CNIError) as exc:
        run("CHECK", ns, c, prev=res)
    assert exc.value.code == 106 and "10.77.0.2/24" in exc.value.msg
    sh("ip", "link", "set", res.interfaces[1].name, "nomaster")
    with pytest.raises(CNIError, match="enslaved"):
        run("CHECK", ns, c, prev=res)


def test_check_without_prev_result_is_error_7(scene: Scene, br: str, tmp_path: Path) -> None:
    ns = scene.netns("br")
    c = conf(br, ipam=hl(tmp_path))
    add(ns, c)
    with pytest.raises(CNIError) as exc:
        run("CHECK", ns, c)
    assert exc.value.code == 7


# ---- traffic ---------------------------------------------------------------------------------


def _ping(ns: str, dst: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", dst], capture_output=True, text=True, check=False)


def test_two_pods_ping_each_other_and_the_gateway(scene: Scene, br: str, tmp_path: Path) -> None:
    a, b = scene.netns("br"), scene.netns("br")
    c = conf(br, isGateway=True, ipam=hl(tmp_path))
    add(a, c, cid="a")
    add(b, c, cid="b")
    for ns, dst in ((a, "10.77.0.3"), (b, "10.77.0.2"), (a, "10.77.0.1")):
        p = _ping(ns, dst)
        assert p.returncode == 0, p.stdout + p.stderr


RECEIVER = r"""
import socket, struct, sys
grp, local = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((grp, 5007))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(grp), socket.inet_aton(local)))
print("joined", flush=True)
s.settimeout(5)
print(s.recvfrom(100)[0].decode(), flush=True)
"""

SENDER = r"""
import socket, sys, time
grp, local = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(30):
    s.sendto(b"hello-multicast", (grp, 5007))
    time.sleep(0.1)
"""


def test_multicast_between_two_pods_on_one_bridge(scene: Scene, br: str, tmp_path: Path) -> None:
    a, b = scene.netns("br"), scene.netns("br")
    c = conf(br, ipam=hl(tmp_path))
    add(a, c, cid="a")
    add(b, c, cid="b")
    grp = "239.7.7.7"
    recv = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", RECEIVER, grp, "10.77.0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        assert recv.stdout.readline().strip() == "joined"
        send = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", SENDER, grp, "10.77.0.2"])
        out, err = recv.communicate(timeout=10)
        send.kill()
        send.wait()
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    assert out.strip() == "hello-multicast", err


# ---- standalone executable -------------------------------------------------------------------


def test_standalone_binary_add_check_del(scene: Scene, br: str, tmp_path: Path, multinic_bin: str) -> None:
    ns = scene.netns("br")
    c = conf(br, "1.0.0", isGateway=True, ipam=hl(tmp_path))
    env = {**os.environ, "CNI_CONTAINERID": "bin1", "CNI_NETNS": f"/run/netns/{ns}", "CNI_IFNAME": "eth0",
           "CNI_PATH": REF_CNI, "MULTINIC_EXEC_TYPES": "host-local,static"}

    def call(cmd: str, doc: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([multinic_bin, "plugin", "bridge"], input=json.dumps(doc).encode(),
                              env={**env, "CNI_COMMAND": cmd}, capture_output=True, check=False, timeout=30)

    p = call("ADD", c)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout)
    assert res["ips"][0]["interface"] == 2 and res["interfaces"][2]["name"] == "eth0"
    p = call("CHECK", {**c, "prevResult": res})
    assert p.returncode == 0, p.stdout + p.stderr
    p = call("DEL", c)
    assert p.returncode == 0 and p.stdout == b"", p.stdout + p.stderr
    assert links_in(ns) == {"lo"} and reserved(tmp_path) == []


def test_nft_masquerade_gc_drops_only_attachments_not_listed(scene: Scene, masq_cleanup: list[tuple[str, str, str]]) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft (apt-get install nftables)")
    import ipaddress

    net = f"gcnet{scene.tag}"
    keep, drop = ("keep" + scene.tag, "net1"), ("drop" + scene.tag, "net1")
    masq_cleanup += [(net, "net1", keep[0]), (net, "net1", drop[0])]
    _masq.setup("nftables", [ipaddress.ip_interface("10.79.0.2/24")], net, "net1", keep[0])
    _masq.setup("nftables", [ipaddress.ip_interface("10.79.0.3/24")], net, "net1", drop[0])
    _masq.gc(net, [keep])
    table = sh("nft", "list", "table", "inet", "cni_plugins_masquerade")
    assert _masq.nft_comment(net, "net1", keep[0]) in table
    assert _masq.nft_instance_hash(net, "net1", drop[0]) not in table
