"""kubelet's pod sandbox calls through containerd 1.6's CRI reach multinic, in thin and thick mode.

Each test runs twice (``node`` is parametrised thin/thick) and ends with the leak check of
conftest.Node.leaks: netns, host veths, host-local/whereabouts/portmap state, attachment cache,
network-status, iptables/nft, host rules.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import subprocess
import sys

import grpc
import pytest

from .conftest import Node, in_netns, ipv4, sh
from .runtime import Port

pytestmark = pytest.mark.root


def _nads(node: Node) -> None:
    s = node.scratch
    node.nad("mv", {"cniVersion": "1.0.0", "type": "macvlan", "master": node.master, "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": "10.94.1.0/24", "dataDir": str(s / "ipam-mv")}})
    node.nad("mv-sbr", {"cniVersion": "1.0.0", "name": "mv-sbr", "plugins": [
        {"type": "macvlan", "master": node.master, "mode": "bridge",
         "ipam": {"type": "host-local", "subnet": "10.94.2.0/24", "gateway": "10.94.2.254",
                  "dataDir": str(s / "ipam-mvsbr")}},
        {"type": "sbr"},
        # A portmap in a NAD's chain must not receive the sandbox's CRI port mappings (cluster network only).
        {"type": "portmap", "capabilities": {"portMappings": True}, "dataDir": str(s / "portmap")}]})


def test_pod_with_cluster_network_and_two_nads_gets_three_interfaces_routes_sbr_and_status(node: Node) -> None:
    _nads(node)
    a = node.run("cri-a", "mv,mv-sbr")
    b = node.run("cri-b", "mv")
    na, nb = node.cri.netns(a), node.cri.netns(b)
    eth0 = ipv4(na, "eth0")[0]
    assert eth0 in ipaddress.ip_network(f"10.93.{node.subnet_octet}.0/24")
    assert ipv4(na, "net1")[0] in ipaddress.ip_network("10.94.1.0/24")
    net2 = ipv4(na, "net2")[0]
    assert net2 in ipaddress.ip_network("10.94.2.0/24")
    # The CRI reports the cluster network's address: what kubelet puts in the pod's status.podIP.
    status, _ = node.cri.status(a)
    assert status.network.ip == str(eth0.ip)
    assert "default via" in in_netns(na, "ip", "route", "show")
    # sbr: net2's source address is routed from its own table.
    rules = in_netns(na, "ip", "rule", "show")
    assert f"from {net2.ip} lookup 100" in rules, rules
    assert "default via 10.94.2.254 dev net2" in in_netns(na, "ip", "route", "show", "table", "100")
    entries = node.status_of("cri-a")
    assert [e.get("interface") for e in entries] == ["eth0", "net1", "net2"]
    assert entries[0]["default"] is True and entries[0]["name"] == "cluster"
    assert {e["name"] for e in entries[1:]} == {"default/mv", "default/mv-sbr"}
    # Two pods talk over net1 (macvlan bridge mode on one master).
    b_net1 = ipv4(nb, "net1")[0]
    out = in_netns(na, "ping", "-c", "2", "-W", "2", "-I", "net1", str(b_net1.ip))
    assert " 0% packet loss" in out, out


def _free_port(kind: int) -> int:
    for _ in range(50):
        port = random.randint(20000, 45000)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free host port")


LISTENER = """
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
if kind == socket.SOCK_STREAM:
    s.listen(1)
print("ready", flush=True)
s.settimeout(20)
if kind == socket.SOCK_STREAM:
    c, _ = s.accept()
    c.sendall(b"pod" + sys.argv[3].encode())
    c.close()
else:
    data, peer = s.recvfrom(100)
    s.sendto(b"pod" + sys.argv[3].encode(), peer)
"""


def _listen(netns: str, proto: str, port: int, tag: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-c", LISTENER, proto, str(port), tag],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
    return p


def _ask(proto: str, host: str, port: int) -> bytes:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(5)
        try:
            s.connect((host, port))
        except OSError as exc:
            raise AssertionError(f"{proto} {host}:{port}: {exc}") from exc
        if proto == "tcp":
            return s.recv(100)
        for _ in range(5):  # UDP: the first datagram may race the listener's conntrack state
            s.send(b"hello")
            try:
                return s.recv(100)
            except TimeoutError:
                continue
    return b""


def _roundtrip(netns: str, proto: str, container_port: int, host: str, host_port: int) -> bytes:
    """Start a listener on ``container_port`` in the pod and ask the host port; what came back."""
    p = _listen(netns, proto, container_port, f"{proto}{container_port}")
    try:
        return _ask(proto, host, host_port)
    finally:
        p.kill()
        p.wait()


def test_cri_port_mappings_dnat_to_the_pod_on_the_cluster_network_only_and_go_away_on_stop(node: Node) -> None:
    _nads(node)
    hp = {k: _free_port(socket.SOCK_STREAM if k.startswith("tcp") else socket.SOCK_DGRAM)
          for k in ("tcp", "tcp-lo", "udp", "udp-lo")}
    ports = (Port(8080, hp["tcp"], "TCP"), Port(8081, hp["tcp-lo"], "TCP", "127.0.0.1"),
             Port(5353, hp["udp"], "UDP"), Port(5354, hp["udp-lo"], "UDP", "127.0.0.1"))
    sid = node.run("cri-ports", "mv-sbr", ports=ports,
                   annotations={"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "10M"})
    ns = node.cri.netns(sid)
    eth0, net1 = ipv4(ns, "eth0")[0], ipv4(ns, "net1")[0]
    gateway = str(next(ipaddress.ip_network(f"10.93.{node.subnet_octet}.0/24").hosts()))
    nat = sh("iptables-save", "-t", "nat")
    for cport in (8080, 8081, 5353, 5354):
        assert f"{eth0.ip}:{cport}" in nat, nat
    assert str(net1.ip) not in nat, "the NAD's portmap must not receive the CRI port mappings"
    # bandwidth (exec'd reference plugin) shaped the cluster network's host veth only.
    host_veth = sh("ip", "-o", "link", "show", "master", node.bridge).split(":")[1].strip().split("@")[0]
    assert "tbf" in sh("tc", "qdisc", "show", "dev", host_veth), "ingress shaping missing on the pod's host veth"
    # Without host_ip: every host address (the bridge's, and localhost); with host_ip: that address only.
    assert _roundtrip(ns, "tcp", 8080, gateway, hp["tcp"]) == b"podtcp8080"
    assert _roundtrip(ns, "tcp", 8080, "127.0.0.1", hp["tcp"]) == b"podtcp8080"
    assert _roundtrip(ns, "tcp", 8081, "127.0.0.1", hp["tcp-lo"]) == b"podtcp8081"
    with pytest.raises(AssertionError, match="refused"):
        _roundtrip(ns, "tcp", 8081, gateway, hp["tcp-lo"])
    assert _roundtrip(ns, "udp", 5353, gateway, hp["udp"]) == b"podudp5353"
    assert _roundtrip(ns, "udp", 5354, "127.0.0.1", hp["udp-lo"]) == b"podudp5354"
    node.cri.stop(sid)
    nat = sh("iptables-save", "-t", "nat")
    assert str(eth0.ip) not in nat and not any(str(p) in nat for p in hp.values())
    with pytest.raises(AssertionError, match="refused"):
        _ask("tcp", gateway, hp["tcp"])
    node.cri.remove(sid)


def test_stop_twice_then_remove_and_remove_without_stop_leave_nothing(node: Node) -> None:
    _nads(node)
    a = node.run("cri-stop2", "mv")
    node.cri.stop(a)
    node.cri.stop(a)  # kubelet repeats StopPodSandbox; the second DEL has no netns
    node.cri.remove(a)
    b = node.run("cri-rm", "mv,mv-sbr")
    node.cri.remove(b)  # containerd stops it (DEL) as part of the removal
    assert node.cri.list() == []
    with pytest.raises(grpc.RpcError):
        node.cri.status(b)


@pytest.mark.slow
def test_sandbox_task_failing_after_add_is_torn_down_by_del(node: Node) -> None:
    """runc refuses an unknown sysctl when it starts the sandbox task, after CNI ADD: containerd calls DEL."""
    _nads(node)
    node.pod("cri-broken", "mv,mv-sbr")
    cfg = node.cri.sandbox_config("cri-broken", sysctls={"net.ipv4.conf.all.no_such_knob": "1"})
    with pytest.raises(grpc.RpcError) as err:
        node.cri.run(cfg)
    assert "no_such_knob" in str(err.value.details()), err.value.details()
    log = node.log(tail=0)
    for verb in ("Add", "Del"):
        assert f"{verb}: default:cri-broken:" in log, f"no {verb} logged for the failed sandbox"
    assert node.cri.list() == []
