"""The seed document's examples, end to end: real namespaces, a pod source, the meta-plugin.

Each scenario runs against the API server double and the local manifest source, with the
reference plugins and with the native ones (see conftest.py).
"""

from __future__ import annotations

import ipaddress
import re

from tests.support.nsfix import sh

GW = "172.16.0.1"


def _ip(addr: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(addr)


def test_single_nad_used_by_many_pods_gives_each_its_own_address(world) -> None:
    world.add_nad("gke-network-1", world.macvlan("gke-network-1", "172.16.0.0/24", whereabouts=True,
                                                 range_start="172.16.0.10"))
    pods = {}
    for i in range(3):
        name = f"pod-{i}"
        world.add_pod(name, "default/gke-network-1")
        ns = world.scene.netns("p")
        call = world.cni("ADD", f"cid{i}", ns, ("default", name))
        assert call.ok, call.doc
        assert {"eth0", "net1"} <= world.links(ns)
        pods[name] = (ns, world.addrs(ns, "net1")[0])
    addrs = [a for _, a in pods.values()]
    assert len(set(addrs)) == 3 and all(_ip(a) in ipaddress.ip_network("172.16.0.0/24") for a in addrs)
    # The pods share the NAD's L2 segment: they reach each other over net1.
    (ns0, _), (_, a1) = pods["pod-0"], pods["pod-1"]
    sh("ping", "-c1", "-W2", "-I", "net1", str(_ip(a1).ip), ns=ns0)
    for i, name in enumerate(pods):
        assert world.cni("DEL", f"cid{i}", pods[name][0], ("default", name)).ok
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_many_nads_one_pod_status_events_and_logs(world) -> None:
    second = world.scene.bridge_uplink()
    world.add_nad("gke-network-1", world.macvlan("gke-network-1", "172.16.0.0/24", whereabouts=True))
    world.add_nad("gke-network-2", world.macvlan("gke-network-2", "172.17.0.0/24", master=second))
    uid = world.add_pod("samplepod", "default/gke-network-1,default/gke-network-2")
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-many", ns, ("default", "samplepod"))
    assert call.ok, call.doc
    # The runtime gets the primary's result: eth0 only.
    assert [i["name"] for i in call.doc["interfaces"] if i.get("sandbox")] == ["eth0"]
    assert call.doc["cniVersion"] == "1.0.0"
    assert {"eth0", "net1", "net2"} <= world.links(ns)

    status = world.network_status("samplepod")
    assert status is not None and [s["interface"] for s in status] == ["eth0", "net1", "net2"]
    eth0, net1, net2 = status
    assert eth0["name"] == "cbr0" and eth0["default"] is True and eth0["dns"] == {}
    assert eth0["ips"] == [world.addrs(ns, "eth0")[0].split("/")[0]]
    assert eth0["gateway"] == ["10.244.7.1"]
    for entry, nad, ifname in ((net1, "default/gke-network-1", "net1"), (net2, "default/gke-network-2", "net2")):
        assert entry["name"] == nad
        assert "default" not in entry  # only the primary carries it
        assert entry["dns"] == {}
        assert entry["ips"] == [world.addrs(ns, ifname)[0].split("/")[0]]  # bare, no prefix length
        mac = sh("cat", f"/sys/class/net/{ifname}/address", ns=ns).strip()
        assert entry["mac"] == mac
        assert "/" not in entry["ips"][0]

    events = world.events("samplepod")
    added = [e for e in events if e["reason"] == "AddedInterface"]
    assert [e["type"] for e in added] == ["Normal"] * 3
    assert added[1]["message"] == f"Add net1 [{world.addrs(ns, 'net1')[0]}] from default/gke-network-1"
    assert added[2]["message"] == f"Add net2 [{world.addrs(ns, 'net2')[0]}] from default/gke-network-2"
    assert added[0]["message"].startswith("Add eth0 [10.244.7.") and added[0]["message"].endswith("from cbr0")
    assert all(e["involvedObject"]["uid"] == uid for e in added)

    lines = world.log_lines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    adds = [ln for ln in lines if "] Add: " in ln]
    assert len(adds) == 3
    assert re.match(rf"^{stamp} \[verbose\] Add: default:samplepod:{uid}:cbr0\(cbr0\):eth0 \{{", adds[0])
    assert re.match(rf"^{stamp} \[verbose\] Add: default:samplepod:{uid}:default/gke-network-1\(gke-network-1\):net1 "
                    r"\{\"cniVersion\":\"1.0.0\",", adds[1])

    assert world.cni("DEL", "cid-many", ns, ("default", "samplepod")).ok
    dels = [ln for ln in world.log_lines() if "] Del: " in ln]
    assert [d.split(" ")[3].rsplit(":", 1)[1] for d in dels] == ["net2", "net1", "eth0"]  # reverse order
    assert re.match(rf"^{stamp} \[verbose\] Del: default:samplepod:{uid}:gke-network-2:net2 \{{", dels[0])
    assert world.links(ns) == {"lo"}
    assert world.leftovers() == {"cache": [], "ipam": []}
    # DEL unsets network-status, as Multus does.
    assert world.network_status("samplepod") is None


def test_two_nads_on_one_master(world) -> None:
    world.add_nad("net-a", world.macvlan("net-a", "172.16.0.0/24"))
    world.add_nad("net-b", world.macvlan("net-b", "172.18.0.0/24"))
    world.add_pod("p2", "net-a,net-b")
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-2m", ns, ("default", "p2"))
    assert call.ok, call.doc
    a, b = world.addrs(ns, "net1")[0], world.addrs(ns, "net2")[0]
    assert _ip(a) in ipaddress.ip_network("172.16.0.0/24") and _ip(b) in ipaddress.ip_network("172.18.0.0/24")
    for ifname in ("net1", "net2"):
        link = sh("ip", "-d", "link", "show", ifname, ns=ns)
        assert "macvlan mode bridge" in link
    assert world.cni("DEL", "cid-2m", ns, ("default", "p2")).ok
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_same_nad_twice_gives_two_interfaces_and_two_addresses(world) -> None:
    world.add_nad("gke-network-1", world.macvlan("gke-network-1", "172.16.0.0/24", whereabouts=True))
    world.add_pod("twice", "default/gke-network-1,default/gke-network-1")
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-twice", ns, ("default", "twice"))
    assert call.ok, call.doc
    a, b = world.addrs(ns, "net1")[0], world.addrs(ns, "net2")[0]
    assert a != b
    status = world.network_status("twice")
    assert [s["name"] for s in status] == ["cbr0", "default/gke-network-1", "default/gke-network-1"]
    assert world.cni("DEL", "cid-twice", ns, ("default", "twice")).ok
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_routes_and_sbr_as_in_the_seed(world) -> None:
    # whereabouts/static routes: 172.16.1.0/24 via the gateway on net1, in the main table.
    world.add_nad("routed", world.macvlan("routed", "172.16.0.0/24", whereabouts=True, gateway=GW,
                                          routes=[{"dst": "172.16.1.0/24"}]))
    # sbr: a default route via the gateway in table 100, the pod's default stays on eth0.
    world.add_nad("sbr-net", world.macvlan("sbr-net", "172.20.0.0/24", gateway="172.20.0.1", sbr=True),)
    world.add_pod("routes", "routed")
    world.add_pod("sbrpod", "sbr-net")
    ns1, ns2 = world.scene.netns("p"), world.scene.netns("p")
    assert world.cni("ADD", "cid-r", ns1, ("default", "routes")).ok
    main = sh("ip", "route", "show", ns=ns1)
    assert re.search(rf"^172\.16\.1\.0/24 via {GW} dev net1", main, re.M), main
    assert re.search(r"^default via 10\.244\.7\.1 dev eth0", main, re.M), main
    call = world.cni("ADD", "cid-s", ns2, ("default", "sbrpod"))
    assert call.ok, call.doc
    t100 = sh("ip", "route", "list", "table", "100", ns=ns2)
    assert re.search(r"^default via 172\.20\.0\.1 dev net1", t100, re.M), t100
    addr = world.addrs(ns2, "net1")[0].split("/")[0]
    assert f"from {addr} lookup 100" in sh("ip", "rule", "show", ns=ns2)
    assert re.search(r"^default via 10\.244\.7\.1 dev eth0", sh("ip", "route", "show", ns=ns2), re.M)
    for cid, ns, pod in (("cid-r", ns1, "routes"), ("cid-s", ns2, "sbrpod")):
        assert world.cni("DEL", cid, ns, ("default", pod)).ok
    assert f"from {addr} lookup 100" not in sh("ip", "rule", "show", ns=ns2)
    assert world.leftovers() == {"cache": [], "ipam": []}


def test_annotation_ips_and_mac_reach_plugins_through_cni_args_too(world) -> None:
    """Multus also passes an annotation's ``ips``/``mac`` as CNI_ARGS ``IP=``/``MAC=``: static IPAM and tuning
    read them there when the NAD declares no capability (NADs written for Multus rely on it)."""
    conf = {"cniVersion": "1.0.0", "name": "static-net", "plugins": [
        {"type": "macvlan", "master": world.uplink, "mode": "bridge", "ipam": {"type": "static"}},
        {"type": "tuning"}]}  # no "capabilities": only CNI_ARGS can carry the request
    world.add_nad("static-net", conf)
    world.add_pod("fixed", [{"name": "static-net", "ips": ["172.19.0.7/24", "172.19.1.7/24"],
                             "mac": "0a:58:ac:13:00:07"}])
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-fixed", ns, ("default", "fixed"))
    assert call.ok, call.doc
    assert sorted(world.addrs(ns, "net1")) == ["172.19.0.7/24", "172.19.1.7/24"]
    assert "link/ether 0a:58:ac:13:00:07 " in sh("ip", "link", "show", "net1", ns=ns)
    assert world.cni("CHECK", "cid-fixed", ns, ("default", "fixed")).ok
    # the cluster network gets neither: its CNI_ARGS are the runtime's
    assert world.addrs(ns, "eth0")[0] not in ("172.19.0.7/24", "172.19.1.7/24")
    assert world.cni("DEL", "cid-fixed", ns, ("default", "fixed")).ok
    assert world.leftovers() == {"cache": [], "ipam": []}
