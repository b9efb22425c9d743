"""The hostile tenant: a pod author and a NAD author who are not root try to make the node do things through the
pod's network annotation and the NADs of their namespace (issue 20; cni/delegator/tenancy.py has the rules).

Every attack is refused with the right code, a Warning event on the pod naming the config key that would allow it,
and nothing written or changed on the host — compared with a snapshot taken before the call: our iptables/nft lines,
the links on the cluster bridge and in the pod's netns, the files under the node's state and the canary directory
outside it where a path attack would land, the host's sysctls a NAD could flip. Through three doors: in-process
(``skel.dispatch``, all attacks), the real binary as a runtime execs it (thin) and the daemon through the shim
(thick), the last two on a representative set. Hot-plug (dynamicNetworks): tests/netns/delegator/test_dynamic_tenancy.py.

The test suites widen allowedPaths to /tmp through MULTINIC_EXTRA_ALLOWED_PATHS (tests/conftest.py); here it is
removed, so what is tested is the shipped defaults plus the keys each case sets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni.delegator import tenancy
from tests.reliability.harness import Call, Daemon, Node, Pod, cmd_out, ip_out

CANARY_ROOT = Path("/tmp")  # outside every allowed root of these tests: the node's state is under tmp_path


@pytest.fixture(autouse=True)
def real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MULTINIC_EXTRA_ALLOWED_PATHS", raising=False)


@pytest.fixture
def canary() -> Iterator[Path]:
    """A directory outside the allowed paths where a path attack would create something; must stay absent."""
    d = CANARY_ROOT / f"multinic-tenancy-canary-{secrets.token_hex(3)}"
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def host_uplinks() -> list[str]:
    return sorted(tenancy.uplinks_from_proc(Path("/proc/net/route").read_text(),
                                            Path("/proc/net/ipv6_route").read_text()))


# ---- the snapshot -----------------------------------------------------------------------------------------------------


def snapshot(node: Node, pod: Pod, canary: Path) -> dict[str, Any]:
    names = node.our_names([pod])
    rules = [f"{t[0]}: {line.strip()}" for t in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"])
             for line in cmd_out(*t).splitlines() if any(n in line for n in names)]
    files = sorted(str(Path(d) / f) for d, _, fs in os.walk(node.tmp) for f in fs
                   if "log" not in Path(d).parts[-1:] and not f.endswith(".stderr"))
    files = [f for f in files if not f.startswith(str(node.tmp / "apiserver"))]
    bridge_links = sorted(line.split(": ")[1] for line in ip_out("-o", "link", "show", "master",
                                                                 node.cluster_bridge).splitlines() if ": " in line)
    sysctls = {}
    for dev in (node.cluster_bridge, *host_uplinks()):
        for key in ("route_localnet", "forwarding"):
            p = Path(f"/proc/sys/net/ipv4/conf/{dev}/{key}")
            if p.exists():
                sysctls[f"{dev}/{key}"] = p.read_text().strip()
    words = ip_out("-o", "addr", "show", "dev", node.cluster_bridge).split()  # addresses only: not DAD's flags
    addrs = sorted(words[i + 1] for i, w in enumerate(words[:-1]) if w in ("inet", "inet6"))
    return {"rules": rules, "files": files, "bridge_links": bridge_links, "sysctls": sysctls,
            "bridge_addrs": addrs, "canary": canary.exists(), "netns": node.netns_leaks(pod)}


def warning_events(node: Node, pod: Pod) -> list[str]:
    return [e["message"] for e in node.api.objects("events", namespace=pod.ns)
            if e["involvedObject"]["name"] == pod.name and e["type"] == "Warning"]


# ---- the attacks --------------------------------------------------------------------------------------------------


@dataclass
class Attack:
    """One hostile request: a NAD (None: the standard net-hl) and/or an annotation, the code and words expected."""

    name: str
    code: int
    words: tuple[str, ...]
    nad: dict[str, Any] | None = None
    annotation: list[dict[str, Any]] | None = None
    conf: dict[str, Any] = field(default_factory=dict)  # multinic config keys for this case


def _macvlan(node: Node, **ipam: Any) -> dict[str, Any]:
    return {"type": "macvlan", "master": node.uplink, "mode": "bridge",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": node.hl_subnet}]], "dataDir": str(node.hl_dir),
                     **ipam}}


def _nad(node: Node, *plugins: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": f"evil-{node.scene.tag}", "plugins": list(plugins)}


def _pm(port: Any, proto: str = "tcp", host_ip: str = "") -> dict[str, Any]:
    m = {"hostPort": port, "containerPort": 80, "protocol": proto}
    if host_ip:
        m["hostIP"] = host_ip
    return m


PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}}


def port_attacks(node: Node) -> list[Attack]:
    pm_nad = _nad(node, _macvlan(node), dict(PORTMAP, dataDir=str(node.portmap_dir)))
    window = {"hostPortPolicy": [{"ports": "30000-32767", "protocols": ["tcp"]}]}
    out = [Attack(f"annotation-{p}-{proto}", 102, (f"host port {p}/{proto}", "hostPortPolicy"), pm_nad,
                  [{"name": "evil", "portMappings": [_pm(p, proto)]}])
           for p, proto in ((22, "tcp"), (6443, "tcp"), (10250, "tcp"), (53, "udp"), (30080, "sctp"))]
    out += [
        Attack("annotation-range-edge-above", 102, ("32768/tcp", "multinicPolicy.default.hostPortPolicy"), pm_nad,
               [{"name": "evil", "portMappings": [_pm(32768)]}], window),
        Attack("annotation-range-udp-in-tcp-window", 102, ("30001/udp",), pm_nad,
               [{"name": "evil", "portMappings": [_pm(30001, "udp")]}], window),
        Attack("annotation-range-host-ip-loopback", 102, ("30002/tcp on 127.0.0.1",), pm_nad,
               [{"name": "evil", "portMappings": [_pm(30002, host_ip="127.0.0.1")]}], window),
        Attack("annotation-one-bad-among-good", 102, ("22/tcp",), pm_nad,
               [{"name": "evil", "portMappings": [_pm(30003), _pm(22)]}], window),
        Attack("annotation-port-as-string", 7, ("hostPort",), pm_nad, [{"name": "evil", "portMappings": [_pm("22")]}]),
        Attack("annotation-port-range-string", 7, ("hostPort",), pm_nad,
               [{"name": "evil", "portMappings": [_pm("1-65535")]}]),
        Attack("annotation-go-spelling", 102, ("22/tcp",), pm_nad,
               [{"name": "evil", "portMappings": [{"HostPort": 22, "containerPort": 22}]}]),
        Attack("nad-embedded-runtime-config", 102, ("6443/tcp", "runtimeConfig"),
               _nad(node, _macvlan(node), {"type": "portmap", "dataDir": str(node.portmap_dir),
                                           "runtimeConfig": {"portMappings": [_pm(6443)]}})),
    ]
    return out


def path_attacks(node: Node, canary: Path) -> list[Attack]:
    """Every path key of every native plugin and IPAM, four ways each."""
    link = node.tmp / "state" / "link"
    out: list[Attack] = []
    for ptype, keys in tenancy.PATH_KEYS.items():
        for pk in keys:
            forms = (("absolute", str(canary / "x"), 102), ("relative", f"rel-{node.scene.tag}/x", 7),
                     ("symlink", str(link / "x"), 102), ("dotdot", f"{node.tmp}/state/../../../../..{canary}/x", 102))
            for form, value, code in forms:
                section: dict[str, Any] = {}
                inner = section
                for part in pk.key[:-1]:
                    inner = inner.setdefault(part, {})
                inner[pk.key[-1]] = value
                if ptype == "host-local":
                    nad = _nad(node, _macvlan(node, **section))
                elif ptype == "whereabouts":
                    ipam = {"type": "whereabouts", "range": node.wb_subnet, "datastore": "file",
                            "data_dir": str(node.wb_dir), "log_file": str(node.wb_log)}
                    ipam.update(section)
                    nad = _nad(node, {"type": "macvlan", "master": node.uplink, "ipam": ipam})
                elif ptype in ("tuning", "sbr", "portmap"):
                    extra = {"capabilities": {"portMappings": True}} if ptype == "portmap" else {}
                    nad = _nad(node, _macvlan(node), {"type": ptype, **extra, **section})
                else:
                    continue
                out.append(Attack(f"path-{ptype}-{pk.name}-{form}", code, (pk.key[-1],), nad,
                                  conf={"allowedPaths": [str(node.tmp)]}))
    return out


def interface_attacks(node: Node) -> list[Attack]:
    uplinks = host_uplinks()
    out = [
        Attack("bridge-cluster-bridge", 102, (node.cluster_bridge, "cluster network", "allowedBridges"),
               _nad(node, {"type": "bridge", "bridge": node.cluster_bridge,
                           "ipam": {"type": "host-local", "ranges": [[{"subnet": node.hl_subnet}]],
                                    "dataDir": str(node.hl_dir)}})),
        Attack("bridge-is-gateway", 102, ("isGateway", "hostNetworkChanges"),
               _nad(node, {"type": "bridge", "bridge": f"brx{node.scene.tag}", "isGateway": True})),
        Attack("bridge-ip-masq", 102, ("ipMasq", "hostNetworkChanges"),
               _nad(node, {"type": "bridge", "bridge": f"brx{node.scene.tag}", "ipMasq": True})),
        Attack("bridge-hairpin", 102, ("hairpinMode", "hostNetworkChanges"),
               _nad(node, {"type": "bridge", "bridge": f"brx{node.scene.tag}", "hairpinMode": True})),
        # The cluster network's config name: host-local would keep this NAD's reservations in the cluster's store.
        Attack("nad-named-like-the-cluster-network", 102, (f"cbr-{node.scene.tag}", "IPAM store"),
               dict(_nad(node, _macvlan(node)), name=f"cbr-{node.scene.tag}")),
        Attack("portmap-conditions", 102, ("conditionsV4", "portmapRules"),
               _nad(node, _macvlan(node), dict(PORTMAP, dataDir=str(node.portmap_dir), conditionsV4=["-s", "0/0"]))),
    ]
    for up in uplinks:
        out.append(Attack(f"master-uplink-{up}", 102, (up, "uplink", "allowedMasters"),
                          _nad(node, dict(_macvlan(node), master=up))))
    if uplinks:
        out.append(Attack("master-unset-is-the-uplink", 102, ("unset", "allowedMasters"),
                          _nad(node, {k: v for k, v in _macvlan(node).items() if k != "master"})))
        out.append(Attack("allowed-masters-list", 102, ("not in allowedMasters",),
                          _nad(node, _macvlan(node)), conf={"allowedMasters": ["ens*"]}))
    return out


def all_attacks(node: Node, canary: Path) -> list[Attack]:
    return port_attacks(node) + path_attacks(node, canary) + interface_attacks(node)


# A representative set for the slower doors (one of each rule and each path form).
THIN_THICK = ("annotation-22-tcp", "annotation-53-udp", "annotation-range-host-ip-loopback",
              "nad-embedded-runtime-config", "path-host-local-dataDir-absolute", "path-host-local-dataDir-symlink",
              "path-whereabouts-log_file-dotdot", "path-whereabouts-kubernetes.kubeconfig-absolute",
              "path-tuning-dataDir-relative", "bridge-cluster-bridge", "bridge-ip-masq", "master-unset-is-the-uplink")


# ---- running them -----------------------------------------------------------------------------------------------


def prepare(node: Node, canary: Path) -> None:
    (node.tmp / "state").mkdir(exist_ok=True)
    link = node.tmp / "state" / "link"
    if not link.is_symlink():
        link.symlink_to(canary)  # the tenant's symlink (as if planted): resolves outside the allowed root


def pod_for(node: Node, a: Attack, door: str) -> Pod:
    """The attack's NAD (under a name of its own: the API keeps every one) and a pod asking for it."""
    name = f"{door}-{a.name}".lower().replace("_", "-").replace(".", "-")[:60]
    node.add_nad(name, a.nad if a.nad is not None else node.nad_hl())
    networks = json.dumps([dict(item, name=name) for item in a.annotation]) if a.annotation else name
    return node.new_pod(name, networks=networks)


def attack(node: Node, a: Attack, canary: Path, door: str, daemon: Daemon | None = None) -> None:
    prepare(node, canary)
    pod = pod_for(node, a, door)
    conf = node.conf(**a.conf)
    before = snapshot(node, pod, canary)
    if door == "inproc":
        c: Call = node.inproc("ADD", pod, conf)
    elif door == "thin":
        c = node.exec("ADD", pod, conf, extra_env={"MULTINIC_EXTRA_ALLOWED_PATHS": ""})
    else:
        assert daemon is not None
        c = node.shim(daemon, "ADD", pod, conf)
    assert not c.ok and c.code == a.code, (a.name, c.doc)
    msg = c.doc["msg"] + " " + str(c.doc.get("details", ""))
    for w in a.words:
        assert w in msg, (a.name, w, c.doc)
    assert pod.name in c.doc["msg"], "the message names the pod"
    events = warning_events(node, pod)
    assert any(all(w in e for w in a.words) for e in events), (a.name, events)
    after = snapshot(node, pod, canary)
    assert after == before, (a.name, {k: (before[k], after[k]) for k in before if before[k] != after[k]})
    assert not canary.exists()
    # The runtime's DEL after the refused ADD (no cache: the plan is rebuilt from the pod and its NADs as they are
    # now) succeeds, and does not run what the policy refuses either: host-local's DEL would make its lock there.
    d = node.inproc("DEL", pod, conf)
    assert d.ok, (a.name, d.doc)
    assert not canary.exists(), f"{a.name}: the DEL after the refused ADD wrote outside"
    assert node.leaks([pod]) == []
    node.drop_pod(pod)


def test_every_attack_in_process(node: Node, canary: Path) -> None:
    attacks = all_attacks(node, canary)
    assert len(attacks) > 60
    for a in attacks:
        attack(node, a, canary, "inproc")


def test_representative_attacks_through_the_thin_binary(node: Node, canary: Path) -> None:
    attacks = [a for a in all_attacks(node, canary) if a.name in THIN_THICK]
    assert len(attacks) >= len(THIN_THICK) - 1  # the uplink case needs a default route
    for a in attacks:
        attack(node, a, canary, "thin")


def test_representative_attacks_through_the_daemon(node: Node, canary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = Daemon(node.tmp / "daemon")
    try:
        for a in [a for a in all_attacks(node, canary) if a.name in THIN_THICK]:
            attack(node, a, canary, "thick", d)
        assert d.alive()
    finally:
        d.stop()


# ---- what stays allowed --------------------------------------------------------------------------------------------


def test_defaults_keep_the_ordinary_cases_working(node: Node, canary: Path) -> None:
    """The standard NADs (paths under the allowed root, a master that is not the uplink), plus a host port the
    namespace's policy allows, and a NAD naming a plugin's own default path."""
    prepare(node, canary)
    window = {"hostPortPolicy": [{"ports": "30000-32767", "protocols": ["tcp"]}],
              "allowedPaths": [str(node.tmp)]}
    node.add_nad("pm", _nad(node, _macvlan(node), dict(PORTMAP, dataDir=str(node.portmap_dir))))
    pod = node.new_pod("ok", networks=json.dumps([{"name": "net-hl"}, {"name": "pm", "portMappings": [_pm(30999)]}]))
    c = node.inproc("ADD", pod, node.conf(**window))
    assert c.ok, c.doc
    rules = cmd_out("iptables-save", "-t", "nat") + cmd_out("nft", "list", "ruleset")
    assert "30999" in rules, "the allowed host port was mapped"
    assert node.inproc("DEL", pod, node.conf(**window)).ok
    assert node.leaks([pod]) == []
    assert "30999" not in cmd_out("iptables-save", "-t", "nat") + cmd_out("nft", "list", "ruleset")


def test_namespace_override_and_trusted_namespace(node: Node, canary: Path) -> None:
    prepare(node, canary)
    evil = _nad(node, dict(_macvlan(node), ipam={"type": "host-local", "ranges": [[{"subnet": node.hl_subnet}]],
                                                 "dataDir": str(canary / "hl")}))
    node.add_nad("evil", evil, ns="platform")
    pod = node.new_pod("plat", networks="evil", ns="platform")
    conf = node.conf(multinicPolicy={"platform": {"allowedPaths": [str(canary)]}})
    c = node.inproc("ADD", pod, conf)
    assert c.ok, c.doc
    assert canary.exists()  # the platform team's own choice
    assert node.inproc("DEL", pod, conf).ok
    # other namespaces stay confined
    node.add_nad("evil", evil, ns="team-b")  # same name, another namespace
    pod_b = node.new_pod("tb", networks="evil", ns="team-b")
    c = node.inproc("ADD", pod_b, conf)
    assert c.code == 102 and "multinicPolicy.team-b.allowedPaths" in c.doc["msg"] + c.doc.get("details", "")
    assert node.leaks([pod, pod_b]) == []


def test_the_webhook_gives_the_node_message(node: Node, canary: Path) -> None:
    """Same rules at admission: what the node refuses, the webhook denies with the same text."""
    from cni.k8s import webhook

    prepare(node, canary)
    for a in [a for a in all_attacks(node, canary) if a.name in THIN_THICK and "symlink" not in a.name
              and "uplink" not in a.name and "cluster-bridge" not in a.name]:
        pod = pod_for(node, a, "wh")
        c = node.inproc("ADD", pod, node.conf(**a.conf))
        assert c.code == a.code, (a.name, c.doc)
        obj = node.api.get_obj("pods", pod.name, pod.ns)
        review = {"request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "namespace": pod.ns,
                              "object": obj}}
        policy = webhook.Tenancy.from_config(node.conf(**a.conf))
        resp = webhook.review(review, lambda ns, n: node.api.get_obj("network-attachment-definitions", n, ns,
                                                                     api_version="k8s.cni.cncf.io/v1"),
                              policy)["response"]
        assert resp["allowed"] is False, (a.name, resp)
        node_text = c.doc["msg"] + (f": {c.doc['details']}" if c.doc.get("details") else "")
        assert node_text.endswith(resp["status"]["message"]), (a.name, node_text, resp["status"]["message"])
        assert node.inproc("DEL", pod, node.conf(**a.conf)).ok
        node.drop_pod(pod)


def test_no_leftover_rules_named_after_attacked_ports() -> None:
    """A belt over the snapshot: no DNAT to any pod for the node's own service ports exists after the suite."""
    for line in cmd_out("iptables-save", "-t", "nat").splitlines():
        if "CNI-DN-" in line and "-j DNAT" in line:
            assert not any(f"--dport {p} " in line for p in (22, 6443, 10250)), line
