"""podman (CNI backend) runs pods whose network is ``multinic`` with a local manifest source.

podman passes ``K8S_POD_NAME`` but no namespace; multinic takes such a pod to be in ``default``
(as a manifest without a namespace is), reads its ``k8s.v1.cni.cncf.io/networks`` annotation from
the manifest directory and attaches net1 (macvlan) and net2 (bridge) from NADs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import IMAGE, Podman

pytestmark = pytest.mark.root


def _ips(p: Podman, ctr: str, ifname: str) -> list[str]:
    out = p.exec(ctr, "ip", "-4", "-o", "addr", "show", "dev", ifname)
    return re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)


def _ports(*bridges: str) -> list[str]:
    """Host links enslaved to our bridges: the host ends of pods' veths. (Other test suites create
    links in the host namespace concurrently, so a before/after diff of every link would be flaky.)"""
    out: list[str] = []
    for br in bridges:
        r = subprocess.run(["ip", "-o", "link", "show", "master", br], capture_output=True, text=True)
        out += [line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines() if line.strip()]
    return out


def _rules() -> str:
    return subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout


def _allocations(d: Path) -> list[str]:
    """host-local files that name a container (reservations), ignoring its last_reserved_ip/lock files."""
    if not d.exists():
        return []
    return sorted(str(f.relative_to(d)) for f in d.rglob("*") if f.is_file()
                  and not f.name.startswith(("last_reserved_ip", "lock")))


@pytest.fixture(scope="module")
def nets(podman: Podman) -> dict[str, str]:
    t, s = podman.tag, podman.scratch
    names = {"primary": f"mnb0-{t}", "br2": f"mnb2-{t}", "br3": f"mnb3-{t}", "master": f"mnm{t}",
             "peer": f"mnp{t}"}
    subprocess.run(["ip", "link", "add", names["master"], "type", "veth", "peer", "name", names["peer"]], check=True)
    podman.links += [names["master"], names["primary"], names["br2"], names["br3"]]
    subprocess.run(["ip", "link", "set", names["master"], "up"], check=True)
    subprocess.run(["ip", "link", "set", names["peer"], "up"], check=True)
    primary = {"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": names["primary"],
               "isGateway": True, "ipam": {"type": "host-local", "subnet": "10.89.7.0/24",
                                           "dataDir": str(s / "ipam-primary")}}
    # allowedPaths: the NADs keep their IPAM state in the scratch dir (the node admin allows it; README "Security model")
    common = {"cniDir": str(s / "cache"), "binDir": str(s / "bin"), "logFile": str(s / "multus.log"),
              "logLevel": "debug", "allowedPaths": [str(s)]}
    podman.network("mnet", {"cniVersion": "1.0.0", "name": "mnet", "plugins": [
        {"type": "multinic", "delegates": [primary], "manifestDir": str(podman.manifests), **common}]})
    # A second network for `podman network connect`: no manifest source, so it attaches its cluster network only.
    extra = {"cniVersion": "1.0.0", "name": "extra", "type": "bridge", "bridge": names["br3"],
             "ipam": {"type": "host-local", "subnet": "10.79.0.0/24", "dataDir": str(s / "ipam-extra")}}
    podman.network("mnet-extra", {"cniVersion": "1.0.0", "name": "mnet-extra", "plugins": [
        {"type": "multinic", "delegates": [extra], **common}]})
    podman.nad("mv", {"cniVersion": "1.0.0", "type": "macvlan", "master": names["master"], "mode": "bridge",
                      "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": str(s / "ipam-mv")}})
    podman.nad("br2", {"cniVersion": "1.0.0", "type": "bridge", "bridge": names["br2"],
                       "ipam": {"type": "host-local", "subnet": "10.78.0.0/24", "dataDir": str(s / "ipam-br2")}})
    return names


def _start_pod(p: Podman, name: str, networks: str) -> str:
    p.pod_manifest(name, networks)
    p.run("pod", "create", "--name", name, "--network", "mnet", "--infra-image", IMAGE, "--infra-command", "/pause",
          "--sysctl", "net.ipv4.icmp_echo_ignore_broadcasts=0")
    p.run("pod", "start", name)
    return p.run("pod", "inspect", name, "--format", "{{.InfraContainerID}}").stdout.strip()


def test_pods_get_net1_and_net2_and_talk_unicast_and_multicast_then_leave_nothing(podman: Podman,
                                                                                   nets: dict[str, str]) -> None:
    rules_before = _rules()
    a = _start_pod(podman, "pod-a", "mv,br2")
    b = _start_pod(podman, "pod-b", "mv,br2")
    try:
        assert len(_ports(nets["primary"], nets["br2"])) == 4  # two pods × (eth0, net2)
        for ctr in (a, b):
            assert ipaddress.ip_address(_ips(podman, ctr, "eth0")[0]) in ipaddress.ip_network("10.89.7.0/24")
            assert ipaddress.ip_address(_ips(podman, ctr, "net1")[0]) in ipaddress.ip_network("10.77.0.0/24")
            assert ipaddress.ip_address(_ips(podman, ctr, "net2")[0]) in ipaddress.ip_network("10.78.0.0/24")
        b_net1 = _ips(podman, b, "net1")[0]
        out = podman.exec(a, "ping", "-c", "2", "-W", "2", "-I", "net1", b_net1)
        assert " 0% packet loss" in out
        # Multicast across net1 (macvlan, bridge mode): pod-b answers an echo to all-hosts on net1.
        out = podman.exec(a, "ping", "-c", "3", "-W", "2", "-I", "net1", "224.0.0.1", check=False)
        assert f"from {b_net1}" in out, out
        # network-status is written back to the manifest source, as the API would store it.
        status = json.loads((podman.manifests / ".multinic" / "status" / "default_pod-a.json").read_text())
        entries = json.loads(next(iter(status.values())))
        assert [e.get("interface") for e in entries][1:] == ["net1", "net2"]
        assert any(e["name"] == "default/mv" for e in entries)
    finally:
        podman.run("pod", "rm", "-f", "-t", "0", "pod-a", check=False)
        podman.run("pod", "rm", "-f", "-t", "0", "pod-b", check=False)
    # Nothing is left behind: host links (veth ends), IPAM reservations, cache files, rules.
    assert _ports(nets["primary"], nets["br2"]) == []
    for d in ("ipam-primary", "ipam-mv", "ipam-br2"):
        assert _allocations(podman.scratch / d) == [], d
    assert [f for f in os.listdir(podman.scratch / "cache") if not f.startswith(".")] == []
    locks = podman.scratch / "cache" / ".locks"  # a sandbox's lock file goes with its cache record
    assert not locks.is_dir() or os.listdir(locks) == []
    assert _rules() == rules_before
    assert not (podman.manifests / ".multinic" / "status" / "default_pod-a.json").exists()


def test_network_connect_and_disconnect_add_and_remove_eth1(podman: Podman, nets: dict[str, str]) -> None:
    podman.pod_manifest("ctr-c", "mv")
    podman.run("run", "-d", "--name", "ctr-c", "--network", "mnet", IMAGE, "/pause")
    try:
        assert _ips(podman, "ctr-c", "net1")
        podman.run("network", "connect", "mnet-extra", "ctr-c")
        eth1 = _ips(podman, "ctr-c", "eth1")
        assert eth1 and ipaddress.ip_address(eth1[0]) in ipaddress.ip_network("10.79.0.0/24")
        assert _allocations(podman.scratch / "ipam-extra")
        podman.run("network", "disconnect", "mnet-extra", "ctr-c")
        assert "eth1" not in podman.exec("ctr-c", "ip", "-o", "link")
        assert _ips(podman, "ctr-c", "net1"), "disconnecting eth1 must not touch the other network's attachments"
        assert _allocations(podman.scratch / "ipam-extra") == []
    finally:
        podman.run("rm", "-f", "-t", "0", "ctr-c", check=False)
    for d in ("ipam-primary", "ipam-mv", "ipam-extra"):
        assert _allocations(podman.scratch / d) == [], d


def test_a_pod_asking_for_a_missing_nad_fails_to_start_and_leaves_nothing(podman: Podman,
                                                                           nets: dict[str, str]) -> None:
    podman.pod_manifest("pod-bad", "mv,does-not-exist")
    r = podman.run("run", "--rm", "--name", "pod-bad", "--network", "mnet", IMAGE, "true", check=False)
    assert r.returncode != 0 and "does-not-exist" in (r.stderr + r.stdout)
    podman.run("rm", "-f", "-t", "0", "pod-bad", check=False)
    assert _ports(nets["primary"]) == []
    for d in ("ipam-primary", "ipam-mv"):
        assert _allocations(podman.scratch / d) == [], d


def test_the_runtime_drives_the_built_bundle_when_pyinstaller_is_available(podman: Podman) -> None:
    from packaging import pyi_build

    expected = "bundle" if pyi_build.pyinstaller_version() else "venv script"
    assert podman.flavour == expected
    if expected == "bundle":
        assert os.readlink(podman.scratch / "bin" / "multinic").startswith(".multinic/")
