"""portmap with real traffic: a host port reaches a server in the pod through DNAT.

Isolation: the plugin and the reference binary run inside a throw-away "host" namespace
(``ip netns exec``), so every iptables/nft rule they create lives and dies with that namespace
and the machine's own ruleset is never touched. The pod is connected to it by a veth
(10.152.0.1/24 host side, 10.152.0.2/24 pod side; fd00:152::/64 for IPv6).

Intentional differences from the reference 1.1.1 (asserted in the differential test):
- CHECK of an IPv4-only pod passes (the reference fails looking for IPv6 rules, plugins#819);
- DEL without ``portMappings`` still removes the rules (the reference needs them resent).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni import netns, skel
from plugins import portmap
from tests.support import execlog
from tests.support.nsfix import REF_CNI, Scene, need_reference, sh

SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if sys.argv[2] == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
while True:
    c, a = s.accept()
    c.sendall(b"pod:" + sys.argv[1].encode())
    c.close()
"""

CLIENT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(s.recv(64).decode())
except OSError as e:
    print("ERR", e)
"""


def topo(scene: Scene) -> tuple[str, str]:
    host, pod = scene.netns("pmh"), scene.netns("pmp")
    sh("ip", "link", "add", "vh", "type", "veth", "peer", "name", "eth0", "netns", pod, ns=host)
    sh("ip", "addr", "add", "10.152.0.1/24", "dev", "vh", ns=host)
    sh("ip", "addr", "add", "fd00:152::1/64", "dev", "vh", "nodad", ns=host)
    sh("ip", "link", "set", "vh", "up", ns=host)
    sh("ip", "addr", "add", "10.152.0.2/24", "dev", "eth0", ns=pod)
    sh("ip", "addr", "add", "fd00:152::2/64", "dev", "eth0", "nodad", ns=pod)
    sh("ip", "link", "set", "eth0", "up", ns=pod)
    sh("ip", "route", "add", "default", "via", "10.152.0.1", ns=pod)
    sh("ip", "-6", "route", "add", "default", "via", "fd00:152::1", ns=pod)
    return host, pod


def prev(pod: str, v6: bool = False) -> dict[str, Any]:
    ips = [{"address": "10.152.0.2/24", "gateway": "10.152.0.1", "interface": 0}]
    if v6:
        ips.append({"address": "fd00:152::2/64", "gateway": "fd00:152::1", "interface": 0})
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": f"/run/netns/{pod}"}], "ips": ips}


def conf(pod: str, tmp_path: Path, mappings: list[dict[str, Any]] | None, v6: bool = False, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "dataDir": str(tmp_path / "portmap"),
                         "prevResult": prev(pod, v6)}
    if mappings is not None:
        c["runtimeConfig"] = {"portMappings": mappings}
    c.update(extra)
    return c


TCP8080 = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


INPROC = "in-process"


def plugin(argv: list[str], cmd: str, host: str, pod: str, config: dict[str, Any], cid: str = "c1") -> subprocess.CompletedProcess[str]:
    """Run a plugin with the "host" namespace as its host: by exec (``ip netns exec``), or
    in-process through the same skel dispatcher with this thread inside the namespace (the
    iptables/nft children inherit the thread's namespace) — saves an interpreter start per call."""
    env = dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=f"/run/netns/{pod}", CNI_IFNAME="eth0", CNI_PATH=REF_CNI)
    if argv == [INPROC]:
        out = io.BytesIO()
        with netns.entered(f"/run/netns/{host}"):
            rc = skel.dispatch(portmap.PLUGIN.run, env, io.BytesIO(json.dumps(config).encode()), out, io.StringIO())
        return subprocess.CompletedProcess(argv, rc, out.getvalue().decode(), "")
    return subprocess.run(["ip", "netns", "exec", host, *argv], input=json.dumps(config), env=env,
                          capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def ours() -> list[str]:
    return [INPROC]


@pytest.fixture
def ours_bin(multinic_bin: str) -> list[str]:
    """The installed executable, as a runtime execs it (standalone drop-in face)."""
    return [multinic_bin, "plugin", "portmap"]


def ok(p: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def serve(procs: list[subprocess.Popen[str]], pod: str, port: int, family: int = 4) -> None:
    p = subprocess.Popen(["ip", "netns", "exec", pod, sys.executable, "-c", SERVER, str(port), str(family)],
                         stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"


def fetch(host: str, addr: str, port: int) -> str:
    return sh(sys.executable, "-c", CLIENT, addr, str(port), ns=host).strip()


def nat_state(host: str) -> str:
    v4 = [line for line in sh("iptables-save", "-t", "nat", ns=host).splitlines() if not line.startswith("#")]
    v6 = [line for line in sh("ip6tables-save", "-t", "nat", ns=host).splitlines() if not line.startswith("#")]
    return "\n".join(v4 + v6) + "\n" + sh("nft", "list", "ruleset", ns=host)


@pytest.mark.parametrize("backend,exe", [("iptables", "bin"), ("nftables", "inproc")])
def test_host_port_reaches_the_pod_and_del_stops_it(scene: Scene, tmp_path: Path, request: pytest.FixtureRequest, servers: Any,
                                                    backend: str, exe: str) -> None:
    ours = request.getfixturevalue("ours_bin" if exe == "bin" else "ours")
    host, pod = topo(scene)
    serve(servers, pod, 80)
    assert fetch(host, "10.152.0.1", 8080).startswith("ERR")
    c = conf(pod, tmp_path, TCP8080, backend=backend)
    out = json.loads(ok(plugin(ours, "ADD", host, pod, c)).stdout)
    assert out["ips"][0]["address"] == "10.152.0.2/24"  # prevResult passed on
    assert fetch(host, "10.152.0.1", 8080) == "pod:80"
    assert fetch(host, "127.0.0.1", 8080) == "pod:80"  # localhost host port: route_localnet + masquerade
    assert sh("sysctl", "-n", "net.ipv4.conf.vh.route_localnet", ns=host).strip() == "1"
    ok(plugin(ours, "CHECK", host, pod, c))
    state = tmp_path / "portmap" / "pmnet:c1:eth0.json"
    assert (state.stat().st_mode & 0o777) == 0o600
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None, backend=backend)))  # mappings not resent
    assert fetch(host, "10.152.0.1", 8080).startswith("ERR")
    assert "CNI-DN-" not in nat_state(host) and "pmnet c1" not in nat_state(host)
    assert not state.exists()
    ok(plugin(ours, "DEL", host, pod, c))  # idempotent
    p = plugin(ours, "CHECK", host, pod, c)
    assert p.returncode == 1 and json.loads(p.stdout)["code"] == 106


def test_ipv6_host_port_reaches_the_pod(scene: Scene, tmp_path: Path, ours: list[str], servers: Any) -> None:
    host, pod = topo(scene)
    serve(servers, pod, 80, family=6)
    c = conf(pod, tmp_path, TCP8080, v6=True)
    ok(plugin(ours, "ADD", host, pod, c))
    assert fetch(host, "fd00:152::1", 8080) == "pod:80"
    assert fetch(host, "10.152.0.1", 8080) == "pod:80"  # the v6 server socket also takes v4
    ok(plugin(ours, "CHECK", host, pod, c))
    ok(plugin(ours, "DEL", host, pod, c))
    assert "CNI-DN-" not in sh("ip6tables-save", "-t", "nat", ns=host)


def test_host_ip_limits_the_mapping(scene: Scene, tmp_path: Path, ours: list[str], servers: Any) -> None:
    host, pod = topo(scene)
    sh("ip", "addr", "add", "10.152.1.1/32", "dev", "lo", ns=host)
    serve(servers, pod, 80)
    ok(plugin(ours, "ADD", host, pod, conf(pod, tmp_path, [{**TCP8080[0], "hostIP": "10.152.1.1"}], backend="nftables")))
    assert fetch(host, "10.152.1.1", 8080) == "pod:80"
    assert fetch(host, "10.152.0.1", 8080).startswith("ERR")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_del_removes_only_this_containers_rules(scene: Scene, tmp_path: Path, ours: list[str], servers: Any, backend: str) -> None:
    host, pod = topo(scene)
    pod2 = scene.netns("pmq")
    sh("ip", "link", "add", "vh2", "type", "veth", "peer", "name", "eth0", "netns", pod2, ns=host)
    sh("ip", "addr", "add", "10.152.2.1/24", "dev", "vh2", ns=host)
    sh("ip", "link", "set", "vh2", "up", ns=host)
    sh("ip", "addr", "add", "10.152.2.2/24", "dev", "eth0", ns=pod2)
    sh("ip", "link", "set", "eth0", "up", ns=pod2)
    sh("ip", "route", "add", "default", "via", "10.152.2.1", ns=pod2)
    serve(servers, pod, 80)
    serve(servers, pod2, 81)
    c1 = conf(pod, tmp_path, TCP8080, backend=backend)
    c2 = conf(pod2, tmp_path, [{"hostPort": 8081, "containerPort": 81, "protocol": "tcp"}], backend=backend)
    c2["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": f"/run/netns/{pod2}"}],
                        "ips": [{"address": "10.152.2.2/24", "interface": 0}]}
    ok(plugin(ours, "ADD", host, pod, c1, cid="c1"))
    ok(plugin(ours, "ADD", host, pod2, c2, cid="c2"))
    assert fetch(host, "10.152.0.1", 8080) == "pod:80" and fetch(host, "10.152.0.1", 8081) == "pod:81"
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None, backend=backend), cid="c1"))
    assert fetch(host, "10.152.0.1", 8080).startswith("ERR")
    assert fetch(host, "10.152.0.1", 8081) == "pod:81"
    ok(plugin(ours, "CHECK", host, pod2, c2, cid="c2"))


@pytest.mark.parametrize("port", [0, 70000])
def test_invalid_port_is_error_7_and_nothing_is_applied(scene: Scene, tmp_path: Path, ours: list[str], port: int) -> None:
    host, pod = topo(scene)
    before = nat_state(host)
    p = plugin(ours, "ADD", host, pod, conf(pod, tmp_path, [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]))
    assert p.returncode == 1 and json.loads(p.stdout)["code"] == 7
    assert nat_state(host) == before
    assert not (tmp_path / "portmap" / "pmnet:c1:eth0.json").exists()


def test_missing_prev_result_is_error_7(scene: Scene, tmp_path: Path, ours: list[str]) -> None:
    host, pod = topo(scene)
    before = nat_state(host)
    c = conf(pod, tmp_path, TCP8080)
    del c["prevResult"]
    p = plugin(ours, "ADD", host, pod, c)
    assert p.returncode == 1 and json.loads(p.stdout)["code"] == 7 and "prevResult" in json.loads(p.stdout)["msg"]
    assert nat_state(host) == before


def test_differential_iptables_state_matches_the_reference(scene: Scene, tmp_path: Path, ours_bin: list[str]) -> None:
    ours = ours_bin
    need_reference("portmap")
    ref_host, ref_pod = topo(scene)
    other = Scene(tag=scene.tag[::-1])
    try:
        our_host, our_pod = topo(other)
        maps = TCP8080 + [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
                          {"hostPort": 9443, "containerPort": 443, "protocol": "tcp", "hostIP": "10.152.0.1"}]
        ok(plugin([f"{REF_CNI}/portmap"], "ADD", ref_host, ref_pod, conf(ref_pod, tmp_path / "r", maps)))
        ok(plugin(ours, "ADD", our_host, our_pod, conf(our_pod, tmp_path, maps)))
        strip = lambda s: [x for x in s.splitlines() if not x.startswith("#")]  # noqa: E731
        assert strip(sh("iptables-save", "-t", "nat", ns=our_host)) == strip(sh("iptables-save", "-t", "nat", ns=ref_host))
        # plugins#819: the reference's CHECK fails on an IPv4-only pod; ours passes.
        assert plugin([f"{REF_CNI}/portmap"], "CHECK", ref_host, ref_pod, conf(ref_pod, tmp_path / "r", maps)).returncode == 1
        ok(plugin(ours, "CHECK", our_host, our_pod, conf(our_pod, tmp_path, maps)))
        # DEL without portMappings: the reference leaves its chain, ours removes it.
        ok(plugin([f"{REF_CNI}/portmap"], "DEL", ref_host, ref_pod, conf(ref_pod, tmp_path / "r", None)))
        ok(plugin(ours, "DEL", our_host, our_pod, conf(our_pod, tmp_path, None)))
        assert "CNI-DN-" in sh("iptables-save", "-t", "nat", ns=ref_host)
        assert "CNI-DN-" not in sh("iptables-save", "-t", "nat", ns=our_host)
    finally:
        other.cleanup()


def test_udp_conntrack_entries_are_flushed(scene: Scene, tmp_path: Path, ours: list[str]) -> None:
    host, pod = topo(scene)
    if subprocess.run(["which", "conntrack"], capture_output=True).returncode != 0:
        pytest.skip("needs the conntrack CLI (apt-get install conntrack)")
    # Conntrack only tracks in a namespace once a NAT hook is registered: another pod's mapping.
    ok(plugin(ours, "ADD", host, pod, conf(pod, tmp_path, TCP8080), cid="c0"))
    # A UDP flow to the host port that existed before the mapping (it would keep bypassing DNAT).
    sh(sys.executable, "-c", "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('10.152.0.1', 5353))", ns=host)
    assert "dport=5353" in sh("conntrack", "-L", "-p", "udp", check=False, ns=host)
    ok(plugin(ours, "ADD", host, pod, conf(pod, tmp_path, [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}])))
    assert "dport=5353" not in sh("conntrack", "-L", "-p", "udp", check=False, ns=host)


def _localnet(host: str) -> str:
    return sh("sysctl", "-n", "net.ipv4.conf.vh.route_localnet", ns=host).strip()


def test_del_resets_route_localnet_after_the_last_attachment_behind_the_interface(scene: Scene, tmp_path: Path, ours: list[str]) -> None:
    """ADD turns route_localnet on for the host interface towards the pod; it stays on while any
    attachment behind that interface exists and is put back to its old value by the last DEL
    (found by the conformance harness: leak-add-del left route_localnet=1 behind)."""
    host, pod = topo(scene)
    assert _localnet(host) == "0"
    c1 = conf(pod, tmp_path, TCP8080)
    c2 = conf(pod, tmp_path, [{"hostPort": 8081, "containerPort": 81, "protocol": "tcp"}])
    ok(plugin(ours, "ADD", host, pod, c1, cid="c1"))
    ok(plugin(ours, "ADD", host, pod, c2, cid="c2"))  # finds it already on: inherits "was 0"
    assert _localnet(host) == "1"
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None), cid="c1"))
    assert _localnet(host) == "1"  # c2 still relies on it
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None), cid="c2"))
    assert _localnet(host) == "0"
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None), cid="c2"))  # idempotent, still 0
    assert _localnet(host) == "0"


def test_del_keeps_route_localnet_the_admin_had_turned_on(scene: Scene, tmp_path: Path, ours: list[str]) -> None:
    host, pod = topo(scene)
    sh("sysctl", "-qw", "net.ipv4.conf.vh.route_localnet=1", ns=host)
    ok(plugin(ours, "ADD", host, pod, conf(pod, tmp_path, TCP8080)))
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None)))
    assert _localnet(host) == "1"


# ---- exec count: the usual ADD/DEL read nothing back from iptables ------------------------------


def _jumps(host: str, cid: str) -> list[str]:
    chain = portmap.R.dn_chain("pmnet", cid)
    return [line for line in sh("iptables-save", "-t", "nat", ns=host).splitlines() if line.endswith(f"-j {chain}")]


def test_usual_add_and_del_are_one_iptables_restore_without_iptables_save(
        scene: Scene, tmp_path: Path, ours: list[str], servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    host, pod = topo(scene)
    serve(servers, pod, 80)
    execs = execlog.install(monkeypatch, tmp_path / "bin")
    ok(plugin(ours, "ADD", host, pod, conf(pod, tmp_path, TCP8080), cid="c0"))
    assert "iptables-save" in execs.calls()  # first on the node: the shared chains are made from what the table holds
    execs.clear()
    c1 = conf(pod, tmp_path, [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}])
    ok(plugin(ours, "ADD", host, pod, c1, cid="c1"))
    assert execs.calls() == ["iptables-restore"]  # no save, no `ip route get`, no conntrack for TCP
    assert fetch(host, "10.152.0.1", 8081) == "pod:80" and fetch(host, "127.0.0.1", 8081) == "pod:80"
    assert len(_jumps(host, "c1")) == 1
    execs.clear()
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None), cid="c1"))
    assert execs.calls() == ["iptables-restore"]
    assert portmap.R.dn_chain("pmnet", "c1") not in nat_state(host) and _jumps(host, "c1") == []
    assert fetch(host, "10.152.0.1", 8081).startswith("ERR") and fetch(host, "10.152.0.1", 8080) == "pod:80"  # c0 untouched
    execs.clear()
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None), cid="c1"))  # no state left: reads the table, finds nothing
    assert "iptables-restore" not in execs.calls()
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None), cid="c0"))
    assert "CNI-DN-" not in nat_state(host)


def test_repeated_add_and_del_of_rules_already_gone_fall_back_to_reading_the_table(
        scene: Scene, tmp_path: Path, ours: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast batches assert what they assume; when the table differs they apply nothing and the
    read-compute-apply path does the job (a repeated ADD keeps one jump; a DEL finds its rules gone)."""
    host, pod = topo(scene)
    execs = execlog.install(monkeypatch, tmp_path / "bin")
    c = conf(pod, tmp_path, TCP8080)
    ok(plugin(ours, "ADD", host, pod, c))
    ok(plugin(ours, "ADD", host, pod, c))  # the chain exists: -N fails, the table is read
    assert len(_jumps(host, "c1")) == 1
    chain = portmap.R.dn_chain("pmnet", "c1")
    sh("iptables", "-t", "nat", "-D", "CNI-HOSTPORT-DNAT", "1", ns=host)  # an admin removed the (only) jump
    assert _jumps(host, "c1") == [] and chain in nat_state(host)
    execs.clear()
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None)))
    assert execs.calls() == ["iptables-restore", "iptables-save", "iptables-restore"]
    assert chain not in nat_state(host)
    assert not (tmp_path / "portmap" / "pmnet:c1:eth0.json").exists()


def test_nftables_usual_add_is_one_nft_and_a_repeated_add_replaces_its_rules(
        scene: Scene, tmp_path: Path, ours: list[str], servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No state file = no rules of this attachment (the state is written before the batch): the table is
    listed only for a repeated ADD, which replaces the old rules instead of adding a second set."""
    host, pod = topo(scene)
    serve(servers, pod, 80)
    execs = execlog.install(monkeypatch, tmp_path / "bin")
    c = conf(pod, tmp_path, TCP8080, backend="nftables")
    ok(plugin(ours, "ADD", host, pod, c))
    assert execs.calls() == ["nft"]
    assert fetch(host, "10.152.0.1", 8080) == "pod:80"
    execs.clear()
    ok(plugin(ours, "ADD", host, pod, conf(pod, tmp_path, [{"hostPort": 8080, "containerPort": 81, "protocol": "tcp"}],
                                           backend="nftables")))
    assert execs.calls() == ["nft", "nft"]  # list (the state file says rules may exist), then the batch
    table = sh("nft", "list", "table", "ip", "cni_hostport", ns=host)
    assert "dnat to 10.152.0.2:81" in table and "dnat to 10.152.0.2:80" not in table
    ok(plugin(ours, "DEL", host, pod, conf(pod, tmp_path, None, backend="nftables")))
    assert "pmnet c1" not in nat_state(host) and not (tmp_path / "portmap" / "pmnet:c1:eth0.json").exists()
