"""Go encoding/json decoding, differentially: we accept exactly the configs the reference binaries
(/usr/lib/cni, 1.1.1) accept, and they leave the same kernel state.

Each base config is mutated the ways Go's decoder is lenient or strict about — key case (every
struct key upper-cased, or mixed), unknown keys everywhere, explicit nulls, a field spelled twice
in two cases (the last wins) or verbatim twice, values of the wrong JSON type (``1.0``/``1e3``/
``"1400"`` into an int, ``1``/``"true"`` into a bool, a number into a string) — and the raw JSON
text goes to the reference binary and through our own stdin path (``cni.skel.dispatch``, so our
JSON parse is under test too) in twin namespaces. Verdicts must agree; where both accept, the
decode-relevant state (link kind/mode/MTU/promisc, addresses, routes, sysctls, DNAT rules, IPAM
results) must agree. Refusals of ours are error 7 naming the field. Map keys (``sysctl``,
``capabilities``) are data, not fields: they are never mutated.
The exact shapes containerd 1.6 sends (tests/golden/cri) go through portmap the same way.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cni import invoke, skel
from tests.support.nsfix import REF_CNI, Scene, need_reference, sh

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "cri"
MAPS = frozenset({"sysctl", "capabilities"})  # Go maps: keys compared exactly

# ---- raw JSON with repeated keys ------------------------------------------------------------


class Pairs(list[tuple[str, Any]]):
    """An object whose keys may repeat (a dict cannot): encoded in this order."""


class Raw(str):
    """A number literal written as is (``1e3``: Python would print 1000.0)."""


def encode(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(x)}" for k, x in v) + "}"
    if isinstance(v, dict):
        return encode(Pairs(v.items()))
    if isinstance(v, list):
        return "[" + ",".join(encode(x) for x in v) + "]"
    return json.dumps(v)


def _walk_keys(v: Any, fn: Callable[[str], str], parent: str = "") -> Any:
    if isinstance(v, dict):
        if parent in MAPS:
            return dict(v)
        return {fn(k): _walk_keys(x, fn, k) for k, x in v.items()}
    if isinstance(v, list):
        return [_walk_keys(x, fn, parent) for x in v]
    return v


def _mixed(k: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(k))


def _with_unknown(v: Any, parent: str = "") -> Any:
    if isinstance(v, dict):
        if parent in MAPS:
            return dict(v)
        return {**{k: _with_unknown(x, k) for k, x in v.items()}, "zzFuture": {"x": [1, None]}, "zzNull": None}
    if isinstance(v, list):
        return [_with_unknown(x, parent) for x in v]
    return v


def _set(conf: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(conf))
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out  # type: ignore[no-any-return]


def _twice(conf: dict[str, Any], key: str, first: Any, *, verbatim: bool = False) -> Pairs:
    """``key`` spelled twice: ``first`` under another spelling, then the base value (which must win)."""
    other = key if verbatim else key.upper()
    return Pairs([(other, first), *conf.items()])


def mutations(conf: dict[str, Any], plugin: Plugin) -> Iterator[tuple[str, Any]]:
    yield "base", conf
    yield "upper-keys", _walk_keys(conf, str.upper)
    yield "mixed-keys", _walk_keys(conf, _mixed)
    yield "unknown-keys", _with_unknown(conf)
    for k in plugin.nullable:
        yield f"null-{k}", {**conf, k: None}
    k, other = plugin.dup
    yield f"dup-fold-{k}", _twice(conf, k, other)
    yield f"dup-verbatim-{k}", _twice(conf, k, other, verbatim=True)
    yield f"dup-fold-last-{k}", Pairs([*conf.items(), (k.upper(), other)])  # the other value wins now
    for path, bad in plugin.wrong:
        yield f"wrong-{'.'.join(path)}={encode(bad)}", _set(conf, path, bad)


# ---- the plugins --------------------------------------------------------------------------


class Plugin:
    def __init__(self, ptype: str, *, nullable: tuple[str, ...], dup: tuple[str, Any],
                 wrong: list[tuple[tuple[str, ...], Any]]) -> None:
        self.type, self.nullable, self.dup, self.wrong = ptype, nullable, dup, wrong


def _ipam(subnet: str, data_dir: str) -> dict[str, Any]:
    return {"type": "host-local", "dataDir": data_dir, "routes": [{"dst": "10.200.0.0/16"}],
            "ranges": [[{"subnet": subnet, "rangeStart": subnet.replace(".0/24", ".10"), "gateway": subnet.replace(".0/24", ".1")}]]}


PLUGINS = {
    "macvlan": Plugin("macvlan", nullable=("mode", "mtu", "ipam"), dup=("mtu", 1300),
                      wrong=[(("mtu",), 1400.0), (("mtu",), Raw("1e3")), (("mtu",), "1400"), (("mode",), 1), (("master",), 5),
                             (("ipam", "ranges"), "10.0.0.0/24")]),
    "ipvlan": Plugin("ipvlan", nullable=("mode", "mtu"), dup=("mode", "l3"),
                     wrong=[(("mtu",), 1400.5), (("mode",), True)]),
    "bridge": Plugin("bridge", nullable=("isGateway", "mtu", "hairpinMode"), dup=("mtu", 1300),
                     wrong=[(("isGateway",), 1), (("isGateway",), "true"), (("hairpinMode",), 0), (("mtu",), "1400"),
                            (("mtu",), 1400.0)]),
    "tuning": Plugin("tuning", nullable=("mtu", "promisc", "sysctl"), dup=("mtu", 1250),
                     wrong=[(("mtu",), "1300"), (("promisc",), "true"), (("promisc",), 1),
                            (("sysctl",), {"net.ipv4.conf.net1.arp_notify": 1})]),
    "portmap": Plugin("portmap", nullable=("snat", "markMasqBit"), dup=("snat", False),
                      wrong=[(("snat",), 1), (("markMasqBit",), 13.0), (("runtimeConfig", "portMappings"), [
                          {"hostPort": "8080", "containerPort": 80, "protocol": "tcp"}])]),
    "host-local": Plugin("host-local", nullable=("ipam",), dup=("ipam", {"type": "host-local", "subnet": "10.96.0.0/24"}),
                         wrong=[(("ipam", "dataDir"), 5), (("ipam", "routes"), [{"dst": 5}])]),
    "static": Plugin("static", nullable=("ipam",), dup=("ipam", {"type": "static", "addresses": [{"address": "10.97.0.7/24"}]}),
                     wrong=[(("ipam", "addresses"), [{"address": 5}])]),
}


class Side:
    """One twin: the reference binary or ours, each with its own namespace and data dirs."""

    def __init__(self, who: str, scene: Scene, tmp: Path, ptype: str, case: int) -> None:
        self.who, self.scene, self.type = who, scene, ptype
        self.ns = scene.netns("gr" if who == "ref" else "go")
        self.cid = f"{who}{scene.tag}c{case}"
        self.dir = tmp / f"{who}{case}"
        self.dir.mkdir()
        self.port = 0

    def call(self, command: str, raw: str, ifname: str = "net1") -> tuple[int, dict[str, Any]]:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": self.cid, "CNI_NETNS": f"/run/netns/{self.ns}",
               "CNI_IFNAME": ifname, "CNI_PATH": REF_CNI}
        if self.who == "ref":
            p = subprocess.run([f"{REF_CNI}/{self.type}"], input=raw.encode(), env={**os.environ, **env},
                               capture_output=True, check=False, timeout=30)
            rc, out = p.returncode, p.stdout
        else:
            plugin = invoke.native(self.type)
            assert plugin is not None
            buf = io.BytesIO()
            rc = skel.dispatch(plugin.run, env, io.BytesIO(raw.encode()), buf, io.StringIO())
            out = buf.getvalue()
        return rc, (json.loads(out) if out.strip() else {})


def _pod_state(ns: str) -> dict[str, Any]:
    links = {}
    for d in json.loads(sh("ip", "-d", "-j", "addr", "show", ns=ns)):
        if d["ifname"] == "lo":
            continue
        info = d.get("linkinfo", {})
        links[d["ifname"]] = {
            "kind": info.get("info_kind"), "mode": info.get("info_data", {}).get("mode"), "mtu": d["mtu"],
            "promisc": "PROMISC" in d["flags"] or d.get("promiscuity", 0) > 0,
            "addrs": sorted(f"{a['local']}/{a['prefixlen']}" for a in d["addr_info"] if a["scope"] != "link"),
        }
    routes = sorted(f"{r.get('dst')} via {r.get('gateway', '-')} dev {r.get('dev')}"
                    for r in json.loads(sh("ip", "-j", "route", "show", "table", "main", ns=ns)))
    arp = sh("cat", "/proc/sys/net/ipv4/conf/net1/arp_notify", ns=ns, check=False).strip()
    if not any(link["addrs"] for link in links.values()):
        # Not decoding: the reference sets arp_notify only when IPAM configured addresses, ours on
        # every new link (plugins/_iface.py) — an L2-only attachment differs there regardless.
        arp = "n/a"
    return {"links": links, "routes": routes, "arp_notify": arp}


def _dnat(cid: str, port: int) -> list[str]:
    """Our and the reference's DNAT rules for ``port`` (the chain is named from network + container ID)."""
    nat = sh("iptables-save", "-t", "nat")
    return sorted(re.sub(r"CNI-DN-[0-9a-f]+", "CHAIN", line).replace(f"--dport {port} ", "--dport PORT ")
                  for line in nat.splitlines() if f"--dport {port} " in line and "DNAT" in line)


def _normal_result(res: dict[str, Any]) -> dict[str, Any]:
    text = re.sub(r'"([0-9a-f]{2}:){5}[0-9a-f]{2}"', '"MAC"', json.dumps(res))
    text = re.sub(r"/run/netns/mng[or]-[0-9a-f]+-\d+", "NETNS", text)
    text = re.sub(r'"(gd[or][0-9a-f]+|veth[0-9a-f]{8})"', '"HOSTLINK"', text)
    return json.loads(text)  # type: ignore[no-any-return]


# ---- per-plugin scenes ---------------------------------------------------------------------


def _base(ptype: str, side: Side, uplink: str) -> dict[str, Any]:
    head: dict[str, Any] = {"cniVersion": "1.0.0", "name": "godecode", "type": ptype}
    if ptype == "macvlan":
        return {**head, "master": uplink, "mode": "bridge", "mtu": 1400, "ipam": _ipam("10.91.0.0/24", str(side.dir))}
    if ptype == "ipvlan":
        return {**head, "master": uplink, "mode": "l2", "mtu": 1400}
    if ptype == "bridge":
        br = f"gd{side.who[0]}{side.scene.tag}"
        side.scene.host_links.append(br)
        return {**head, "bridge": br, "isGateway": True, "mtu": 1400, "hairpinMode": True,
                "ipam": _ipam("10.92.0.0/24", str(side.dir))}
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": f"/run/netns/{side.ns}"}],
            "ips": [{"address": "10.93.0.5/24", "interface": 0}]}
    if ptype == "tuning":
        return {**head, "mtu": 1300, "promisc": True, "sysctl": {"net.ipv4.conf.net1.arp_notify": "1"},
                "dataDir": str(side.dir), "prevResult": prev}
    if ptype == "portmap":
        return {**head, "snat": True, "markMasqBit": 13, "prevResult": prev,
                "runtimeConfig": {"portMappings": [{"hostPort": side.port, "containerPort": 80, "protocol": "tcp"}]}}
    if ptype == "host-local":
        return {**head, "ipam": _ipam("10.94.0.0/24", str(side.dir))}
    return {**head, "ipam": {"type": "static", "addresses": [{"address": "10.95.0.5/24", "gateway": "10.95.0.1"}],
                             "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.95.0.53"]}}}


def _pod_iface(side: Side) -> None:
    """tuning/portmap are chained: the interface prevResult names must exist in the pod."""
    peer = f"gp{side.who[0]}{side.scene.tag}"
    sh("ip", "link", "add", "net1", "netns", side.ns, "type", "veth", "peer", "name", peer)
    side.scene.host_links.append(peer)
    sh("ip", "addr", "add", "10.93.0.5/24", "dev", "net1", ns=side.ns)
    sh("ip", "link", "set", "net1", "up", ns=side.ns)


def _state(side: Side, res: dict[str, Any]) -> Any:
    if side.type == "portmap":
        return _dnat(side.cid, side.port)
    if side.type in ("host-local", "static"):
        return _normal_result(res)
    return {"pod": _pod_state(side.ns), "result": _normal_result(res)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _reference(monkeypatch: pytest.MonkeyPatch) -> None:
    need_reference(*PLUGINS)
    monkeypatch.setattr(invoke, "_force_exec", set())  # ours: our IPAM in-process, the reference: its own


def _compare(scene: Scene, tmp_path: Path, ptype: str, variant: Callable[[dict[str, Any]], Any] | None,
             case: int, name: str, uplink: str) -> None:
    sides = [Side("ref", scene, tmp_path, ptype, case), Side("ours", scene, tmp_path, ptype, case)]
    raws = []
    for s in sides:
        s.port = _free_port()
        if ptype in ("tuning", "portmap"):
            _pod_iface(s)
        base = _base(ptype, s, uplink)
        doc = dict(mutations(base, PLUGINS[ptype]))[name] if variant is None else variant(base)
        raws.append(encode(doc))
    outcome = []
    try:
        for s, raw in zip(sides, raws, strict=True):
            rc, res = s.call("ADD", raw)
            outcome.append((rc, res, _state(s, res) if rc == 0 else None))
        (ref_rc, ref_res, ref_state), (our_rc, our_res, our_state) = outcome
        assert (our_rc == 0) == (ref_rc == 0), f"{name}: reference rc={ref_rc} {ref_res}, ours rc={our_rc} {our_res}"
        if our_rc != 0:
            assert our_res.get("code") == 7, our_res
            return
        assert our_state == ref_state, f"{name}\nref:  {ref_state}\nours: {our_state}"
    finally:
        for s, raw in zip(sides, raws, strict=True):
            s.call("DEL", raw)
    if ptype == "portmap":
        assert _dnat(sides[0].cid, sides[0].port) == [] and _dnat(sides[1].cid, sides[1].port) == []


def _names(ptype: str) -> list[str]:
    dummy = {"cniVersion": "1.0.0", "name": "n", "type": ptype, "ipam": {}, "runtimeConfig": {}}
    return [n for n, _ in mutations(dummy, PLUGINS[ptype])]


CASES = [(p, n) for p in PLUGINS for n in _names(p)]


@pytest.mark.parametrize(("ptype", "name"), CASES, ids=[f"{p}:{n}" for p, n in CASES])
def test_same_verdict_and_state_as_the_reference(scene: Scene, tmp_path: Path, ptype: str, name: str) -> None:
    uplink = scene.veth_uplink() if ptype in ("macvlan", "ipvlan") else ""
    _compare(scene, tmp_path, ptype, None, 0, name, uplink)


def _golden_port_mappings(ours_port: int) -> Callable[[dict[str, Any]], Any]:
    """portmap's config with the runtimeConfig containerd 1.6 actually sent (untagged go-cni structs)."""
    sent = json.loads(json.loads((GOLDEN / "containerd-1.6-ports-bandwidth-add.json").read_text())["stdin"])
    rc = sent["runtimeConfig"]
    assert rc["portMappings"][0].keys() == {"HostPort", "ContainerPort", "Protocol", "HostIP"}

    def variant(base: dict[str, Any]) -> Any:
        port = base["runtimeConfig"]["portMappings"][0]["hostPort"]
        maps = [{**m, "HostPort": port + i} for i, m in enumerate(rc["portMappings"])]
        return {**base, "runtimeConfig": {"portMappings": maps, "bandwidth": rc["bandwidth"]}}

    return variant


def test_containerd_1_6_port_mappings_as_the_reference(scene: Scene, tmp_path: Path) -> None:
    if not (GOLDEN / "containerd-1.6-ports-bandwidth-add.json").exists():
        pytest.skip("golden containerd inputs missing (tests/golden/cri)")
    _compare(scene, tmp_path, "portmap", _golden_port_mappings(0), 1, "containerd-1.6", "")
