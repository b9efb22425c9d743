"""Fuzzing ``cni.skel.dispatch`` with the real handlers: the meta-plugin (entry.handle, pods and NADs from a
manifest directory, annotations in both forms) and every native plugin (``Plugin.run``, as ``multinic plugin TYPE``).

Inputs: configs and conflists derived from a valid one by random mutations (keys dropped, replaced by arbitrary
JSON, nasty values, unknown keys), raw stdin (truncated, not JSON, NaN, huge numbers), CNI_ARGS and the CNI_*
environment (bad commands, container IDs, ifnames, netns paths). Most calls use a netns path that does not exist;
some a real scratch netns, so that valid inputs really ADD (and are then DELed).

Every call must produce exactly one JSON document on stdout (a result, or an error whose code is a CNI code we define
and never 999), no traceback on stdout, and leave nothing behind: scratch dataDirs/cniDirs hold no reservation,
state or cache file, the scratch netns only lo, the host no rule naming our container IDs.

Safety (we run as root): every path-valued key is mapped into the scratch dir, bridge/master names to our own links,
sysctl keys to a fixed set (plus refused traversals), host ports into 40000-40099, CNI_PATH/binDir to an empty dir
(no external plugin can run), the whereabouts datastore never reaches a real etcd or API.

Findings are collected (first input per distinct wrong behaviour) rather than shrunk one at a time; the test fails
listing them all. ``make test`` runs a bounded, derandomised slice; ``make soak`` ≥ 100 000 cases.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import figure
from tests.reliability.harness import ip_out
from tests.support.nsfix import Scene, need_root

VALID_CODES = {1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 100, 101, 102, 103, 104, 105, 106}
STATE_KEYS = {"dataDir", "data_dir", "cniDir", "confDir", "binDir"}  # where plugins keep state: inside state/
PATH_KEYS = STATE_KEYS | {"logFile", "log_file", "kubeconfig", "configuration_path", "readinessindicatorfile",
                          "manifestDir", "etcd_cert_file", "etcd_key_file", "etcd_ca_cert_file"}
DEFAULT_BRIDGE = "cni0"  # the bridge plugin's default name
NATIVE_TYPES = ["macvlan", "ipvlan", "bridge", "sbr", "tuning", "portmap", "host-local", "static", "whereabouts"]
COMMANDS = ["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "STATUS", "GC", "VERSION"]
VERSIONS = ["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0", "0.2.0", "0.1.0"]
NASTY = ["", " ", ".", "..", "../../../etc", "/", "a/b", "\u202e", "é", "\x7f", "\n", "{", "null", "0", "-1",
         "1e309", "x" * 300, -1, 0, 2**31, 2**63, -(2**63), 2**64, 1.5, 1e300, True, False, None, [], {}, [None],
         {"": None}]


# ---- the scratch world ----------------------------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    scene: Scene
    tag: str
    netns: str = ""
    bridge: str = ""
    uplink: str = ""
    cases: int = 0
    findings: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.root / "state"

    def state_paths(self) -> list[str]:
        s = str(self.state)
        return [f"{s}/a", f"{s}/b", f"{s}/a/../b", f"{s}/deep/er", "relative/dir", "", f"{s}/a/./c", "../cwd/x",
                str(self.root / "garbage.conf"), str(self.root / "missing" / "dir")]

    def safe_paths(self) -> list[str]:
        return ["", "relative.log", str(self.root / "garbage.conf"), str(self.root / "missing" / "file"),
                str(self.root / "manifests"), str(self.root / "log" / "x.log"), str(self.root / "log" / ".." / "y.log"),
                str(self.root / "log")]

    def finding(self, key: str, detail: str) -> None:
        if key not in self.findings:
            self.findings[key] = detail


def _sanitize(w: World, v: Any, key: str = "") -> Any:
    """Make a mutated config safe to run as root (see the module docstring)."""
    def pick(options: list[Any], seed: Any) -> Any:
        h = int(hashlib.sha1(repr(seed).encode()).hexdigest()[:8], 16)
        return options[h % len(options)]

    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k in STATE_KEYS and isinstance(x, str):
                out[k] = pick(w.state_paths(), x)
            elif k in PATH_KEYS and isinstance(x, str):
                out[k] = pick(w.safe_paths(), x)
            elif k in ("bridge", "master") and isinstance(x, str):
                out[k] = pick([w.bridge, w.uplink, f"mnfz{w.tag}x", "", "a/b", "x" * 20, "lo"], x)
            elif k == "sysctl" and isinstance(x, dict):
                out[k] = pick([{"net.ipv4.conf.IFNAME.arp_ignore": "1"}, {"net/ipv4/conf/IFNAME/arp_ignore": "2"},
                               {"../../../proc/sys/kernel/hostname": "x"}, {"kernel.hostname": "x"},
                               {"net.ipv4.conf.IFNAME.arp_ignore": 1}, {"net..ipv4": "1"}, {}], repr(x))
            elif k in ("hostPort",) and isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 65535:
                out[k] = 40000 + x % 100
            elif k in ("conditionsV4", "conditionsV6") and isinstance(x, list):
                out[k] = pick([["-s", "10.255.0.0/16"], ["-j", "DROP"], ["; rm -rf /"], []], repr(x))
            elif k == "externalSetMarkChain" and isinstance(x, str):
                out[k] = pick(["KUBE-MARK-MASQ", "a b", "x" * 40, ""], x)
            elif k in ("endpoints", "etcd_host"):
                out[k] = pick(["ftp://127.0.0.1:1", 5, ["ftp://x"], ""], repr(x))
            elif k == "clusterNetwork" and isinstance(x, str) and x.startswith("/"):
                out[k] = pick(w.safe_paths(), x)
            elif k == "type" and isinstance(x, str) and "/" in x:
                out[k] = x.replace("/", "_")  # types with '/' are refused anyway; keep them out of exec paths
            else:
                out[k] = _sanitize(w, x, k)
        if "readinessindicatorfile" in out:
            out["readinessTimeoutSeconds"] = 0.05
        if isinstance(out.get("apiTimeoutSeconds"), (int, float)) and not isinstance(out.get("apiTimeoutSeconds"), bool):
            out["apiTimeoutSeconds"] = min(max(out["apiTimeoutSeconds"], 0.01), 0.2) \
                if out["apiTimeoutSeconds"] > 0 else out["apiTimeoutSeconds"]
        return out
    if isinstance(v, list):
        return [_sanitize(w, x, key) for x in v[:50]]
    return v


# ---- strategies -----------------------------------------------------------------------------------------------------

# deep copies: a mutation must never change the shared NASTY objects (hypothesis replays need pure strategies)
nasty = st.sampled_from(NASTY).map(copy.deepcopy)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20), nasty)
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                          max_leaves=12)


def _dicts_in(x: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(x, dict):
        out.append(x)
        for y in x.values():
            _dicts_in(y, out)
    elif isinstance(x, list):
        for y in x:
            _dicts_in(y, out)


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], extra_keys: list[str]) -> dict[str, Any]:
    conf = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 4))):
        # pick a dict inside the config (top level, ipam, a plugin of a list, ...)
        holders: list[dict[str, Any]] = []
        _dicts_in(conf, holders)
        h = draw(st.sampled_from(holders))
        op = draw(st.sampled_from(["drop", "replace", "nasty", "add", "version", "type"]))
        keys = sorted(h)
        if op == "drop" and keys:
            h.pop(draw(st.sampled_from(keys)))
        elif op in ("replace", "nasty") and keys:
            k = draw(st.sampled_from(keys))
            h[k] = draw(json_value if op == "replace" else nasty)
        elif op == "add":
            h[draw(st.sampled_from(extra_keys) | st.text(max_size=10))] = draw(json_value)
        elif op == "version":
            h["cniVersion"] = draw(st.sampled_from([*VERSIONS, "1.2.0", "0.0.1", "1.0", "v1.0.0", "", 1, None]))
        elif op == "type":
            h["type"] = draw(st.sampled_from([*NATIVE_TYPES, "multinic", "loopback-missing", "", 7, None, ".."]))
    return conf


def cid_strategy(tag: str) -> st.SearchStrategy[str]:
    ok = st.text(alphabet="abcdef0123456789-_.", min_size=1, max_size=12).map(lambda s: f"{tag}{s}")
    bad = st.sampled_from(["", "../../etc/passwd", "a/b", ".", "..", "x" * 300, "x" * 129, "a b", "é", "a\nb", "-x"])
    return st.one_of(ok, ok, ok, bad)


IFNAMES = ["eth0", "net1", "net9", "", ".", "..", "a/b", "x" * 16, "lo", "a b", "é", "eth0:1", "net1\n"]


@st.composite
def environ(draw: st.DrawFn, w: World, cmd: str | None = None) -> dict[str, str]:
    env: dict[str, str] = {}
    c = cmd or draw(st.sampled_from([*COMMANDS, "", "add", "BOGUS"]))
    if c or draw(st.booleans()):
        env["CNI_COMMAND"] = c
    missing = f"/run/netns/mnfz-absent-{w.tag}"
    netns = draw(st.sampled_from([missing] * 6 + [f"/run/netns/{w.netns}"] * 3 +
                                 ["", "relative", str(w.root), "/dev/null", missing + "/x"]))
    env["CNI_CONTAINERID"] = draw(cid_strategy(w.tag))
    env["CNI_NETNS"] = netns
    env["CNI_IFNAME"] = draw(st.sampled_from(IFNAMES))
    env["CNI_PATH"] = draw(st.sampled_from([str(w.root / "bin"), "", f"{w.root}/bin:{w.root}/missing", ":::"]))
    args = draw(st.one_of(
        st.just("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=fz-b;K8S_POD_INFRA_CONTAINER_ID=x"),
        st.builds(lambda ip, mac: f"IgnoreUnknown=1;IP={ip};MAC={mac}",
                  st.sampled_from(["10.99.0.5/24", "10.99.0.5", "::1/128", "x", "", "10.99.0.5/24,10.99.1.5/24"]),
                  st.sampled_from(["02:00:00:00:00:01", "zz", ""])),
        st.text(alphabet="=;abcKIPGnoreUk018_ -/.", max_size=40).filter(lambda s: "K8S_POD_NAME" not in s),
        st.just(""),
    ))
    if args or draw(st.booleans()):
        env["CNI_ARGS"] = args
    for k in draw(st.lists(st.sampled_from(["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]), max_size=1)):
        env.pop(k, None)
    return env


@st.composite
def stdin_of(draw: st.DrawFn, conf: dict[str, Any]) -> bytes:
    data = json.dumps(conf).encode()
    kind = draw(st.sampled_from(["json"] * 12 + ["truncated", "garbage", "nan", "bignum", "array", "empty", "bom"]))
    if kind == "truncated":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    if kind == "nan":
        return data.replace(b'"cniVersion"', b'"nan": NaN, "cniVersion"', 1)
    if kind == "bignum":
        return data.replace(b'"cniVersion"', b'"big": 1' + b"0" * 400 + b', "cniVersion"', 1)
    if kind == "array":
        return b"[" + data + b"]"
    if kind == "empty":
        return b""
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    return data


# ---- base configs -----------------------------------------------------------------------------------------------------


def prev_result(w: World) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": f"/run/netns/{w.netns}"}],
            "ips": [{"address": "10.99.0.5/24", "gateway": "10.99.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]}


def base_conf(w: World, ptype: str) -> dict[str, Any]:
    s = str(w.state)
    hl = {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}]], "dataDir": f"{s}/a",
          "routes": [{"dst": "0.0.0.0/0"}]}
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": f"fz-{w.tag}", "type": ptype}
    if ptype == "macvlan":
        c.update(master=w.uplink, mode="bridge", ipam=hl)
    elif ptype == "ipvlan":
        c.update(master=w.uplink, mode="l2", ipam={"type": "static", "addresses": [{"address": "10.99.0.9/24"}]})
    elif ptype == "bridge":
        c.update(bridge=w.bridge, isGateway=True, ipMasq=True, ipam=hl)
    elif ptype == "sbr":
        c.update(dataDir=f"{s}/b", prevResult=prev_result(w))
    elif ptype == "tuning":
        c.update(dataDir=f"{s}/b", sysctl={"net.ipv4.conf.IFNAME.arp_ignore": "1"}, mtu=1400, prevResult=prev_result(w))
    elif ptype == "portmap":
        c.update(dataDir=f"{s}/b", capabilities={"portMappings": True}, prevResult=prev_result(w),
                 runtimeConfig={"portMappings": [{"hostPort": 40001, "containerPort": 80, "protocol": "tcp"}]})
    elif ptype == "host-local":
        c.update(type="macvlan", ipam=hl)
    elif ptype == "static":
        c.update(type="macvlan", ipam={"type": "static", "addresses": [{"address": "10.99.0.7/24", "gateway": "10.99.0.1"}],
                                       "routes": [{"dst": "10.98.0.0/16"}], "dns": {"nameservers": ["10.0.0.10"]}})
    elif ptype == "whereabouts":
        c.update(type="macvlan", ipam={"type": "whereabouts", "range": "10.99.1.0/28", "datastore": "file",
                                       "data_dir": f"{s}/b", "exclude": ["10.99.1.0/30"],
                                       "log_file": str(w.root / "log" / "wb.log")})
    return c


EXTRA_KEYS = ["mtu", "mac", "mode", "ipam", "dns", "args", "runtimeConfig", "capabilities", "prevResult", "vlan",
              "vlanTrunk", "promiscMode", "hairpinMode", "ipMasqBackend", "linkInContainer", "table", "gateways",
              "addresses", "ranges", "range", "ipRanges", "exclude", "routes", "gateway", "network_name",
              "enable_overlapping_ranges", "backend", "snat", "markMasqBit", "allmulti", "txQLen", "sysctl",
              "cni.dev/valid-attachments", "cni.dev/attachments", "disableCheck", "disableGC", "plugins"]


def meta_base(w: World) -> dict[str, Any]:
    s = str(w.state)
    primary = {"cniVersion": "1.0.0", "name": f"fzp-{w.tag}", "plugins": [
        {"type": "bridge", "bridge": w.bridge, "isGateway": True,
         "ipam": {"type": "host-local", "subnet": "10.97.0.0/24", "dataDir": f"{s}/a"}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "dataDir": f"{s}/b"}]}
    return {"cniVersion": "1.0.0", "name": "multinic-cni-network", "type": "multinic", "delegates": [primary],
            "cniDir": f"{s}/cache", "binDir": str(w.root / "bin"), "confDir": str(w.root / "net.d"),
            "manifestDir": str(w.root / "manifests"), "logFile": str(w.root / "log" / "multus.log"),
            "logLevel": "debug", "nodeName": "fz-node", "apiTimeoutSeconds": 0.1,
            "runtimeConfig": {"portMappings": [{"hostPort": 40002, "containerPort": 80, "protocol": "tcp"}]}}


META_KEYS = ["kubeconfig", "clusterNetwork", "defaultNetworks", "delegates", "confDir", "cniDir", "binDir",
             "logFile", "logLevel", "logToStderr", "logOptions", "readinessindicatorfile", "namespaceIsolation",
             "globalNamespaces", "systemNamespaces", "multusNamespace", "retryDeleteOnError", "allowedPluginTypes",
             "manifestDir", "nodeName", "apiTimeoutSeconds", "runtimeConfig", "cni.dev/valid-attachments"]

NAD_NAMES = ["nad-mv", "nad-br", "nad-bad", "nad-empty", "nad-sel", "missing", "other/nad-x", "Bad_Name", "a" * 70,
             "nad-mv@net5", "nad-mv@eth0", "nad-mv@" + "x" * 16, "/nad-mv", "nad-mv@", "a/b/c", "nad-mv@a@b", " "]


@st.composite
def annotation(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        items = draw(st.lists(st.sampled_from(NAD_NAMES) | st.text(alphabet="abn-/@ ,", max_size=12), max_size=4))
        return ",".join(items)
    keys = st.sampled_from(["name", "namespace", "interface", "ips", "mac", "default-route", "portMappings",
                            "bandwidth", "cni-args", "infiniband-guid", "deviceID", "ipam-claim-reference"])
    obj = st.dictionaries(keys, json_value | st.sampled_from(["nad-mv", "nad-br", "default", "other", "net7",
                                                             ["10.96.0.9/24"], ["10.96.0.1"], "02:00:00:00:00:09"]),
                          max_size=5)
    good = st.just({"name": "nad-mv", "interface": "net3"})
    value = draw(st.lists(st.one_of(obj, good), max_size=3) | json_value)
    text = json.dumps(value)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


# ---- running one case -----------------------------------------------------------------------------------------------


def _signature(msg: str) -> str:
    return re.sub(r"[0-9a-f]{6,}|\d+", "#", msg)[:90]


def state_left(w: World) -> list[str]:
    out = []
    for dirpath, _dirs, files in [*os.walk(w.state), *os.walk(w.root / "cwd")]:
        for fn in files:
            path = os.path.join(dirpath, fn)
            if fn in ("lock",) or fn.endswith(".lock") or fn.startswith("last_reserved_ip."):
                continue
            if fn.endswith(".json") and "ippools" in dirpath:
                try:
                    if not (json.loads(Path(path).read_text()).get("spec") or {}).get("allocations"):
                        continue
                except (OSError, ValueError):
                    pass
            out.append(path)
    return out


def netns_left(w: World) -> list[str]:
    out = []
    for line in ip_out("-o", "link", "show", ns=w.netns).splitlines():
        name = line.split(": ")[1].split("@")[0] if ": " in line else line
        if name != "lo":
            out.append(f"link {name}")
    for line in ip_out("-o", "link", "show", "master", w.bridge).splitlines():
        out.append(f"host link on {w.bridge}: {line.split(': ')[1] if ': ' in line else line}")
    return out


def scrub(w: World) -> None:
    for line in ip_out("-o", "link", "show", ns=w.netns).splitlines():
        name = line.split(": ")[1].split("@")[0] if ": " in line else ""
        if name and name != "lo":
            subprocess.run(["ip", "-n", w.netns, "link", "del", name], capture_output=True, check=False)
    for line in ip_out("-o", "link", "show", "master", w.bridge).splitlines():
        if ": " in line:
            subprocess.run(["ip", "link", "del", line.split(": ")[1].split("@")[0]], capture_output=True, check=False)
    import shutil

    shutil.rmtree(w.state, ignore_errors=True)
    w.state.mkdir()
    shutil.rmtree(w.root / "cwd", ignore_errors=True)
    (w.root / "cwd").mkdir()


def dispatch(handler: Callable[[Any], Any], env: dict[str, str], data: bytes) -> tuple[int, bytes, str]:
    from cni import skel

    out, err = io.BytesIO(), io.StringIO()
    rc = skel.dispatch(handler, env, io.BytesIO(data), out, err)
    return rc, out.getvalue(), err.getvalue()


def one_case(w: World, target: str, handler: Callable[[Any], Any], env: dict[str, str], data: bytes) -> None:
    w.cases += 1
    cmd = env.get("CNI_COMMAND", "")
    where = f"{target} {cmd or '-'}"
    repro = f"env={json.dumps(env)} stdin={data[:1500]!r}"
    try:
        rc, out, err = dispatch(handler, env, data)
    except BaseException as exc:  # noqa: BLE001 - anything escaping dispatch is a finding
        w.finding(f"{where}: escaped dispatch: {type(exc).__name__}", f"{exc!r}\n{repro}")
        scrub(w)
        return
    if rc == 0 and cmd in ("DEL", "CHECK", "STATUS", "GC"):
        if out:  # SPEC: these print nothing on success
            w.finding(f"{where}: output on success", f"stdout={out[:500]!r}\n{repro}")
        left = state_left(w)
        if left:
            w.finding(f"{where}: state left behind after a successful {cmd}", f"{left[:5]}\n{repro}")
            scrub(w)
        return
    lines = out.split(b"\n")
    if out.count(b"\n") != 1 or lines[1] != b"":
        w.finding(f"{where}: not exactly one JSON line on stdout (rc={rc})", f"stdout={out[:500]!r}\n{repro}")
        return
    if b"Traceback" in out:
        w.finding(f"{where}: traceback on stdout", f"{out[:500]!r}\n{repro}")
    try:
        doc = json.loads(out)
    except ValueError:
        w.finding(f"{where}: stdout is not JSON", f"{out[:500]!r}\n{repro}")
        return
    if rc not in (0, 1):
        w.finding(f"{where}: exit status {rc}", repro)
    if rc == 1:
        code = doc.get("code")
        if code == 999:
            w.finding(f"{where}: 999 {_signature(str(doc.get('msg')))}", f"{doc}\nstderr={err[-1500:]}\n{repro}")
        elif code not in VALID_CODES:
            w.finding(f"{where}: code {code!r}", f"{doc}\n{repro}")
        if not isinstance(doc.get("msg"), str) or not doc.get("msg"):
            w.finding(f"{where}: error without msg", f"{doc}\n{repro}")
    elif cmd == "ADD":
        if "cniVersion" not in doc:
            w.finding(f"{where}: ADD success without a result", f"{doc}\n{repro}")
        # a real ADD happened: the runtime's DEL must undo it completely
        denv = dict(env, CNI_COMMAND="DEL")
        drc, dout, derr = dispatch(handler, denv, data)
        if drc != 0:
            w.finding(f"{target} DEL after a successful ADD failed: {_signature(dout.decode(errors='replace'))}",
                      f"{dout[:800]!r}\n{repro}")
    left = state_left(w)
    if left:
        w.finding(f"{where}: state left behind ({'ok' if rc == 0 else 'failed'} call): "
                  f"{_signature(os.path.relpath(left[0], w.state))}", f"{left[:5]}\nresult={doc}\n{repro}")
    if env.get("CNI_NETNS", "").endswith(w.netns):  # without the real netns nothing kernel-side can be made
        nl = netns_left(w)
        if nl:
            w.finding(f"{where}: kernel state left behind: {_signature(nl[0])}", f"{nl}\nresult={doc}\n{repro}")
    if left or (env.get("CNI_NETNS", "").endswith(w.netns) and netns_left(w)):
        scrub(w)


# ---- fixtures and tests ---------------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Any:
    need_root()
    from cni import invoke, log

    saved = set(invoke._force_exec)
    cwd = os.getcwd()
    invoke._force_exec.clear()
    scene = Scene()
    w = World(tmp_path, scene, scene.tag)
    # A mutated bridge config without a bridge name (or with "") uses the default, cni0, on the host; bridge DEL never
    # removes a bridge (nor does the reference's), so the run removes it if it was not there before.
    default_bridge_before = DEFAULT_BRIDGE in ip_out("-o", "link", "show")
    try:
        for d in ("state", "bin", "manifests", "net.d", "log", "cwd"):
            (tmp_path / d).mkdir()
        os.chdir(tmp_path / "cwd")  # relative dataDirs land here, not in the checkout
        (tmp_path / "garbage.conf").write_text("{not json")
        w.netns = scene.netns("fz")
        w.bridge = scene.bridge_uplink()
        w.uplink = scene.bridge_uplink()
        _manifests(w)
        yield w
    finally:
        os.chdir(cwd)
        invoke._force_exec.update(saved)
        log.configure(path="", level="panic", to_stderr=False)
        scene.cleanup()
        for line in ip_out("-o", "link", "show").splitlines():
            if f"mnfz{w.tag}" in line:
                subprocess.run(["ip", "link", "del", line.split(": ")[1].split("@")[0]], capture_output=True,
                               check=False)
        if not default_bridge_before:
            subprocess.run(["ip", "link", "del", DEFAULT_BRIDGE], capture_output=True, check=False)


def _manifests(w: World) -> None:
    s = str(w.state)
    mv = {"cniVersion": "1.0.0", "type": "macvlan", "master": w.uplink, "mode": "bridge",
          "ipam": {"type": "host-local", "subnet": "10.96.0.0/24", "dataDir": f"{s}/a"}}
    br = {"cniVersion": "1.0.0", "type": "bridge", "bridge": w.bridge,
          "ipam": {"type": "whereabouts", "range": "10.95.0.0/28", "data_dir": f"{s}/b", "datastore": "file"}}

    def nad(name: str, ns: str = "default", config: str | None = None, anns: dict[str, str] | None = None) -> None:
        obj: dict[str, Any] = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                               "metadata": {"name": name, "namespace": ns, "annotations": anns or {}}, "spec": {}}
        if config is not None:
            obj["spec"]["config"] = config
        (w.root / "manifests" / f"nad-{ns}-{name}.json").write_text(json.dumps(obj))

    nad("nad-mv", config=json.dumps(mv))
    nad("nad-br", config=json.dumps(br))
    nad("nad-bad", config='{"cniVersion": "1.0.0", "type": 5')
    nad("nad-empty")
    nad("nad-sel", config=json.dumps(mv), anns={"k8s.v1.cni.cncf.io/nodeSelector": "zone=moon"})
    nad("nad-x", ns="other", config=json.dumps(mv))
    (w.root / "net.d" / "00-nad-empty.conf").write_text(json.dumps(dict(mv, name="nad-empty")))
    (w.root / "manifests" / "node.json").write_text(json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "fz-node", "labels": {"zone": "earth"}}}))
    write_pod(w, "fz-b", "nad-mv")


def write_pod(w: World, name: str, networks: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": "default", "uid": "0f0f0f0f-0000-4000-8000-000000000001",
        "annotations": {"k8s.v1.cni.cncf.io/networks": networks}}, "spec": {"nodeName": "fz-node"}}
    (w.root / "manifests" / f"pod-{name}.json").write_text(json.dumps(pod))


def plugin_handler(ptype: str) -> Callable[[Any], Any]:
    from cni import invoke

    def handler(req: Any) -> Any:  # what `multinic plugin TYPE` does
        plugin = invoke.native(ptype)
        assert plugin is not None
        return plugin.run(req)

    return handler


def _settings(fast: int, slow: bool) -> settings:
    n = int(os.environ.get("MULTINIC_FUZZ_CASES", "0")) or None
    return settings(max_examples=n or (fast if not slow else 11_200), deadline=None, database=None,
                    derandomize=not slow, suppress_health_check=list(HealthCheck), print_blob=False)


def fuzz_plugin(w: World, ptype: str, examples: int, slow: bool) -> None:
    handler = plugin_handler(ptype)
    base = base_conf(w, ptype)

    @_settings(examples, slow)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        conf = _sanitize(w, data.draw(mutated(base, EXTRA_KEYS)))
        env = data.draw(environ(w))
        one_case(w, ptype, handler, env, data.draw(stdin_of(conf)))

    run()


def fuzz_meta(w: World, examples: int, slow: bool) -> None:
    from cni.delegator import entry

    base = meta_base(w)

    @_settings(examples, slow)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        conf = _sanitize(w, data.draw(mutated(base, META_KEYS + EXTRA_KEYS)))
        write_pod(w, "fz-b", data.draw(annotation()))
        env = data.draw(environ(w))
        one_case(w, "meta", entry.handle, env, data.draw(stdin_of(conf)))

    run()


# Findings reported to their owners and not fixed yet: still printed, but they do not fail the run. Remove an entry
# when its fix lands (the test then guards against a regression).
KNOWN_FINDINGS: list[re.Pattern[str]] = [
    # Empty: the four findings of the first fuzz runs are fixed and now guarded by this suite (a container ID too
    # long for a file name, untranslated cache-write OSErrors, portmap with a dataDir that is a file, an interface
    # type as ipam.type recursing).
]


def _report(w: World, suite: str) -> None:
    leftovers = [line.strip() for tool in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"])
                 for line in subprocess.run(tool, capture_output=True, text=True, check=False).stdout.splitlines()
                 if w.tag in line]
    if leftovers:
        w.finding("host firewall rules naming our container IDs left after the run", "\n".join(leftovers[:20]))
    known = {k: v for k, v in w.findings.items() if any(p.search(k) for p in KNOWN_FINDINGS)}
    new = {k: v for k, v in w.findings.items() if k not in known}
    figure(suite, cases=w.cases, findings=len(new), known_findings=len(known))
    for k, v in sorted(known.items()):
        print(f"known finding: {k}\n  {v[:1500]}")
    if w.findings:  # kept for the report even when pytest's output is gone
        (w.root / "findings.txt").write_text("\n\n".join(f"* {k}\n  {v}" for k, v in sorted(w.findings.items())))
    if new:
        pytest.fail(f"{len(new)} finding(s) in {w.cases} cases:\n\n" +
                    "\n\n".join(f"* {k}\n  {v}" for k, v in sorted(new.items())))


@pytest.mark.parametrize("ptype", NATIVE_TYPES)
def test_fuzz_native_plugin(world: World, ptype: str) -> None:
    fuzz_plugin(world, ptype, 50, slow=False)
    _report(world, "fuzz-fast")


@pytest.mark.timeout(900)  # slower when the machine is shared
def test_fuzz_meta_plugin(world: World) -> None:
    fuzz_meta(world, 150, slow=False)
    _report(world, "fuzz-fast")


@pytest.mark.slow
@pytest.mark.timeout(10800)
@pytest.mark.parametrize("ptype", NATIVE_TYPES)
def test_soak_fuzz_native_plugin(world: World, ptype: str) -> None:
    fuzz_plugin(world, ptype, 0, slow=True)
    _report(world, "fuzz-soak")


@pytest.mark.slow
@pytest.mark.timeout(10800)
def test_soak_fuzz_meta_plugin(world: World) -> None:
    fuzz_meta(world, 0, slow=True)
    _report(world, "fuzz-soak")
