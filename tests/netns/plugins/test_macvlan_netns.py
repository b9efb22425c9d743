"""macvlan on the host kernel: result shapes, failure paths, DEL/CHECK, multicast between pods.

Real namespaces from the ``scene`` fixture; the master is a veth uplink the test creates.
IPAM is the reference ``static``/``host-local`` exec'd from /usr/lib/cni (forced with
``invoke._force_exec``) so these tests do not depend on the native IPAM being finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cni import invoke
from cni.spec.errors import CNIError
from cni.spec.request import Request
from cni.spec.result import Result, to_wire
from plugins import macvlan
from tests.support.nsfix import REF_CNI, Scene, host_snapshot, links_in, need_reference, sh

VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


@pytest.fixture(autouse=True)
def _reference_ipam(monkeypatch: pytest.MonkeyPatch) -> None:
    need_reference("static", "host-local")
    monkeypatch.setattr(invoke, "_force_exec", {"static", "host-local"})


def conf(master: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": version, "name": "mvnet", "type": "macvlan", "master": master}
    c.update(extra)
    return c


def static(*addrs: str, gw: str | None = None, **extra: Any) -> dict[str, Any]:
    a = [{"address": x, **({"gateway": gw} if gw else {})} for x in addrs]
    return {"type": "static", "addresses": a, **extra}


def run(command: str, ns: str, config: dict[str, Any], ifname: str = "net1", cid: str = "c1",
        cni_args: dict[str, str] | None = None) -> Result | None:
    req = Request(command=command, container_id=cid, netns=f"/run/netns/{ns}" if ns else "", ifname=ifname,
                  cni_args=cni_args or {}, path=(REF_CNI,), config=config)
    return macvlan.PLUGIN.run(req)


def add(ns: str, config: dict[str, Any], **kw: Any) -> Result:
    res = run("ADD", ns, config, **kw)
    assert res is not None
    return res


def link_json(ns: str, name: str) -> dict[str, Any]:
    return json.loads(sh("ip", "-d", "-j", "link", "show", name, ns=ns))[0]  # type: ignore[no-any-return]


def with_prev(config: dict[str, Any], res: Result) -> dict[str, Any]:
    return {**config, "prevResult": to_wire(res, config["cniVersion"])}


# ---- result shape, every version --------------------------------------------------------------


# The reference static (1.1.1) stops at CNI 1.0.0; for 1.1.0 an exec'd stand-in IPAM answers
# with the same addresses (it echoes the static-style "addresses"/"routes" of its config).
FAKE_IPAM = r"""#!{python}
import json, sys
c = json.load(sys.stdin)
i = c["ipam"]
if __import__("os").environ["CNI_COMMAND"] == "ADD":
    print(json.dumps({{"cniVersion": c["cniVersion"], "ips": [{{"address": a["address"], "gateway": a["gateway"]}} for a in i["addresses"]], "routes": i.get("routes", [])}}))
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_result_shape_for_every_version(scene: Scene, version: str, tmp_path: Path) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    ipam = static("10.20.0.5/24", gw="10.20.0.1", routes=[{"dst": "10.30.0.0/16"}])
    path = [REF_CNI]
    if version == "1.1.0":
        fake = tmp_path / "fake-static"
        fake.write_text(FAKE_IPAM.format(python=sys.executable))
        fake.chmod(0o755)
        ipam["type"] = "fake-static"
        path.insert(0, str(tmp_path))
    c = conf(master, version, ipam=ipam, dns={"nameservers": ["10.20.0.53"]})
    req = Request(command="ADD", container_id="c1", netns=f"/run/netns/{ns}", ifname="net1", path=tuple(path), config=c)
    res = macvlan.PLUGIN.run(req)
    assert res is not None
    wire = to_wire(res, version)
    mac = link_json(ns, "net1")["address"]
    iface = {"name": "net1", "mac": mac, "sandbox": f"/run/netns/{ns}"}
    if version == "1.1.0":
        iface["mtu"] = 1500  # SPEC-1.1 interfaces[].mtu
    ip: dict[str, Any] = {"interface": 0, "address": "10.20.0.5/24", "gateway": "10.20.0.1"}
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        ip["version"] = "4"
    assert wire == {
        "cniVersion": version,
        "interfaces": [iface],
        "ips": [ip],
        "routes": [{"dst": "10.30.0.0/16"}],
        "dns": {"nameservers": ["10.20.0.53"]},
    }
    assert "10.30.0.0/16 via 10.20.0.1 dev net1" in sh("ip", "route", ns=ns)


def test_l2_only_when_ipam_is_empty(scene: Scene) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    res = add(ns, conf(master, ipam={}))
    assert res.ips == () and [i.name for i in res.interfaces] == ["net1"]
    link = link_json(ns, "net1")
    assert "UP" in link["flags"] and link["linkinfo"]["info_kind"] == "macvlan"
    assert "inet " not in sh("ip", "-4", "addr", "show", "net1", ns=ns)


def test_mode_mtu_mac_bcqueuelen_and_notify_sysctls_reach_the_kernel(scene: Scene) -> None:
    master, ns = scene.veth_uplink(mtu=9000), scene.netns()
    res = add(ns, conf(master, mode="vepa", mtu=8000, bcqueuelen=2000, ipam=static("10.21.0.2/24"),
                       runtimeConfig={"mac": "0A:58:0A:15:00:02"}))
    link = link_json(ns, "net1")
    assert link["linkinfo"]["info_data"]["mode"] == "vepa"
    assert link["linkinfo"]["info_data"]["bcqueuelen"] == 2000
    assert link["mtu"] == 8000
    assert link["address"] == "0a:58:0a:15:00:02" == res.interfaces[0].mac
    for key in ("net.ipv4.conf.net1.arp_notify", "net.ipv6.conf.net1.ndisc_notify"):
        assert sh("sysctl", "-n", key, ns=ns).strip() == "1"


def test_cni_args_mac_is_used_when_nothing_outranks_it(scene: Scene) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    res = add(ns, conf(master, ipam={}), cni_args={"MAC": "02:aa:bb:cc:dd:ee"})
    assert res.interfaces[0].mac == "02:aa:bb:cc:dd:ee"


def test_link_in_container_uses_a_master_inside_the_pod(scene: Scene) -> None:
    ns = scene.netns()
    master = scene.veth_uplink(ns=ns)
    before = links_in(None)
    add(ns, conf(master, linkInContainer=True, ipam=static("10.22.0.2/24")))
    assert link_json(ns, "net1")["linkinfo"]["info_kind"] == "macvlan"
    assert links_in(None) == before


def test_default_master_is_the_default_route_interface(scene: Scene) -> None:
    # Only meaningful when the host has a default route; the pod side does not matter.
    if not sh("ip", "route", "show", "default").strip():
        pytest.skip("the host has no default route to take the master from")
    ns = scene.netns()
    add(ns, {"cniVersion": "1.0.0", "name": "mvnet", "type": "macvlan", "ipam": {}})
    dev = sh("ip", "route", "show", "default").split(" dev ")[1].split()[0]
    host_index = json.loads(sh("ip", "-j", "link", "show", dev))[0]["ifindex"]
    assert link_json(ns, "net1")["link_index"] == host_index


# ---- failure paths: right code, nothing left behind ---------------------------------------------


def _assert_clean(ns: str, host_before: dict[str, str]) -> None:
    assert links_in(ns) == {"lo"}
    assert host_snapshot() == host_before


def test_bad_master_is_not_found_and_leaves_nothing(scene: Scene) -> None:
    ns = scene.netns()
    before = host_snapshot()
    with pytest.raises(CNIError) as ei:
        add(ns, conf("nosuchmaster0", ipam=static("10.23.0.2/24")))
    assert ei.value.code == 103 and "nosuchmaster0" in ei.value.msg
    _assert_clean(ns, before)


def test_mtu_above_the_masters_is_error_7_and_leaves_nothing(scene: Scene) -> None:
    master, ns = scene.veth_uplink(mtu=1400), scene.netns()
    before = host_snapshot()
    with pytest.raises(CNIError) as ei:
        add(ns, conf(master, mtu=1500, ipam={}))
    assert ei.value.code == 7 and "1400" in ei.value.msg
    _assert_clean(ns, before)


def test_existing_ifname_is_interface_exists_and_the_old_link_survives(scene: Scene) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    sh("ip", "link", "add", "net1", "type", "veth", "peer", "name", "other1", ns=ns)
    with pytest.raises(CNIError) as ei:
        add(ns, conf(master, ipam=static("10.24.0.2/24")))
    assert ei.value.code == 100 and "net1" in ei.value.msg and "already exists" in ei.value.msg
    assert link_json(ns, "net1")["linkinfo"]["info_kind"] == "veth"


def test_ipam_failure_leaves_no_link(scene: Scene) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    before = host_snapshot()
    with pytest.raises(CNIError) as ei:
        add(ns, conf(master, ipam=static("not-an-address")))
    assert ei.value.code != 0
    _assert_clean(ns, before)


def test_exhausted_host_local_range_fails_and_leaves_no_link_or_reservation(scene: Scene, tmp_path: Path) -> None:
    master, ns1, ns2 = scene.veth_uplink(), scene.netns(), scene.netns()
    ipam = {"type": "host-local", "subnet": "10.25.0.0/30", "dataDir": str(tmp_path)}
    add(ns1, conf(master, ipam=ipam), cid="first")
    files_before = sorted(os.listdir(tmp_path / "mvnet"))
    with pytest.raises(CNIError) as ei:
        add(ns2, conf(master, ipam=ipam), cid="second")
    assert "no IP addresses available" in str(ei.value)
    assert links_in(ns2) == {"lo"}
    assert sorted(os.listdir(tmp_path / "mvnet")) == files_before


def test_failure_after_ipam_releases_the_reservation_and_the_link(scene: Scene, tmp_path: Path) -> None:
    # A route the kernel refuses (gateway not on any connected network) fails configure after
    # IPAM ADD: the lease must be released and the link deleted.
    master, ns = scene.veth_uplink(), scene.netns()
    ipam = {"type": "host-local", "subnet": "10.26.0.0/24", "dataDir": str(tmp_path),
            "routes": [{"dst": "10.99.0.0/16", "gw": "192.0.2.1"}]}
    with pytest.raises(CNIError):
        add(ns, conf(master, ipam=ipam))
    assert links_in(ns) == {"lo"}
    leases = [f for f in os.listdir(tmp_path / "mvnet") if f[0].isdigit()]
    assert leases == []


# ---- DEL -----------------------------------------------------------------------------------------


def test_del_releases_ipam_deletes_link_and_is_idempotent(scene: Scene, tmp_path: Path) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    c = conf(master, ipam={"type": "host-local", "subnet": "10.27.0.0/24", "dataDir": str(tmp_path)})
    res = add(ns, c)
    assert (tmp_path / "mvnet" / "10.27.0.2").exists()
    for _ in range(2):
        run("DEL", ns, with_prev(c, res))
        assert links_in(ns) == {"lo"}
        assert not (tmp_path / "mvnet" / "10.27.0.2").exists()


def test_del_with_the_netns_gone_still_releases_ipam(scene: Scene, tmp_path: Path) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    c = conf(master, ipam={"type": "host-local", "subnet": "10.28.0.0/24", "dataDir": str(tmp_path)})
    add(ns, c)
    sh("ip", "netns", "del", ns)
    scene.namespaces.remove(ns)
    run("DEL", ns, c)  # path no longer exists
    run("DEL", "", c)  # CNI_NETNS empty
    assert not (tmp_path / "mvnet" / "10.28.0.2").exists()


def test_del_without_master_succeeds(scene: Scene) -> None:
    ns = scene.netns()
    run("DEL", ns, conf("nosuchmaster0", ipam={}))


# ---- CHECK ----------------------------------------------------------------------------------------


def test_check_passes_after_add_and_fails_after_perturbation(scene: Scene) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    c = conf(master, mtu=1400, ipam=static("10.29.0.2/24", gw="10.29.0.1", routes=[{"dst": "0.0.0.0/0"}]))
    res = add(ns, c)
    checked = with_prev(c, res)
    run("CHECK", ns, checked)

    # sbr moves the routes to another table: still fine (plugins#297 avoided).
    sh("ip", "route", "del", "default", ns=ns)
    sh("ip", "route", "add", "default", "via", "10.29.0.1", "dev", "net1", "table", "100", ns=ns)
    run("CHECK", ns, checked)

    sh("ip", "link", "set", "net1", "mtu", "1300", ns=ns)
    with pytest.raises(CNIError) as ei:
        run("CHECK", ns, checked)
    assert ei.value.code == 106 and "MTU" in ei.value.msg
    sh("ip", "link", "set", "net1", "mtu", "1400", ns=ns)
    run("CHECK", ns, checked)

    sh("ip", "addr", "del", "10.29.0.2/24", "dev", "net1", ns=ns)
    with pytest.raises(CNIError) as ei:
        run("CHECK", ns, checked)
    assert ei.value.code == 106 and "10.29.0.2/24" in ei.value.msg


def test_check_fails_when_the_route_is_gone_or_the_mac_changed(scene: Scene) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    c = conf(master, ipam=static("10.31.0.2/24", gw="10.31.0.1", routes=[{"dst": "10.32.0.0/16"}]))
    checked = with_prev(c, add(ns, c))
    sh("ip", "route", "del", "10.32.0.0/16", ns=ns)
    with pytest.raises(CNIError, match="route 10.32.0.0/16"):
        run("CHECK", ns, checked)
    sh("ip", "route", "add", "10.32.0.0/16", "via", "10.31.0.1", ns=ns)
    sh("ip", "link", "set", "net1", "address", "02:00:00:00:31:02", ns=ns)
    with pytest.raises(CNIError, match="MAC"):
        run("CHECK", ns, checked)


def test_check_fails_without_prev_result_and_when_master_is_gone(scene: Scene) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    c = conf(master, ipam={})
    res = add(ns, c)
    with pytest.raises(CNIError, match="prevResult"):
        run("CHECK", ns, c)
    sh("ip", "link", "del", master)  # takes the macvlan with it
    scene.host_links.remove(master)
    with pytest.raises(CNIError) as ei:
        run("CHECK", ns, with_prev(c, res))
    assert ei.value.code == 103


# ---- standalone binary --------------------------------------------------------------------------


def test_standalone_binary_add_and_del(scene: Scene, multinic_bin: str) -> None:
    master, ns = scene.veth_uplink(), scene.netns()
    c = conf(master, "0.4.0", ipam=static("10.33.0.2/24"))
    env = {**os.environ, "CNI_CONTAINERID": "c1", "CNI_NETNS": f"/run/netns/{ns}", "CNI_IFNAME": "net1",
           "CNI_PATH": REF_CNI, "MULTINIC_EXEC_TYPES": "static,host-local"}
    out = subprocess.run([multinic_bin, "plugin", "macvlan"], input=json.dumps(c).encode(), capture_output=True,
                         env={**env, "CNI_COMMAND": "ADD"}, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["ips"] == [{"version": "4", "interface": 0, "address": "10.33.0.2/24"}]
    again = subprocess.run([multinic_bin, "plugin", "macvlan"], input=json.dumps(c).encode(), capture_output=True,
                           env={**env, "CNI_COMMAND": "ADD"}, check=False)
    assert again.returncode == 1 and json.loads(again.stdout)["code"] == 100
    out = subprocess.run([multinic_bin, "plugin", "macvlan"], input=json.dumps(c).encode(), capture_output=True,
                         env={**env, "CNI_COMMAND": "DEL"}, check=False)
    assert out.returncode == 0 and out.stdout == b""
    assert links_in(ns) == {"lo"}


# ---- multicast across the secondary network (the seed's reason for multi-NIC) -------------------

RECEIVER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("239.7.7.7", 5007))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton("239.7.7.7"), socket.inet_aton(sys.argv[1])))
s.settimeout(8)
print("ready", flush=True)
data, peer = s.recvfrom(100)
print(data.decode(), peer[0], flush=True)
"""

SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(20):
    s.sendto(b"hello-multicast", ("239.7.7.7", 5007))
    time.sleep(0.1)
"""


def test_multicast_between_two_pods_on_one_macvlan_network(scene: Scene) -> None:
    master, pod_a, pod_b = scene.veth_uplink(), scene.netns("a"), scene.netns("b")
    add(pod_a, conf(master, ipam=static("10.40.0.2/24")), cid="pa")
    add(pod_b, conf(master, ipam=static("10.40.0.3/24")), cid="pb")
    rx = subprocess.Popen(["ip", "netns", "exec", pod_b, sys.executable, "-c", RECEIVER, "10.40.0.3"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        assert rx.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        subprocess.run(["ip", "netns", "exec", pod_a, sys.executable, "-c", SENDER, "10.40.0.2"], check=True, timeout=20)
        out, err = rx.communicate(timeout=10)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    assert rx.returncode == 0, err
    assert out.split() == ["hello-multicast", "10.40.0.2"]
