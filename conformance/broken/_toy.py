"""A small, *correct* CNI plugin (stdlib + iproute2 only) that the broken samples break one rule at a time.

Roles: ``interface`` (a macvlan on ``master`` with a built-in host-local-style allocator
reading ``ipam.ranges``/``dataDir``), ``ipam`` (that allocator alone) and ``chained`` (checks the
prevResult interface exists and passes prevResult on). Each broken sample calls
``main(role, flaw)``; ``flaw=None`` is the control that must pass every check.
Standalone on purpose: the harness drives it black-box like any third-party plugin.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
RICH = ("0.3.0", "0.3.1", "0.4.0")


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def run(*argv: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = list(argv) if netns is None else ["nsenter", f"--net={netns}", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise CNIError(999, f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def link_exists(name: str, netns: str) -> bool:
    return run("ip", "link", "show", name, netns=netns, check=False).returncode == 0


# ---- allocator -----------------------------------------------------------------------------


class Store:
    def __init__(self, conf: dict[str, Any]) -> None:
        ipam = conf.get("ipam") or {}
        try:
            rng = ipam["ranges"][0][0]
            self.net = ipaddress.ip_network(rng["subnet"], strict=False)
            self.start = ipaddress.ip_address(rng.get("rangeStart") or self.net.network_address + 2)
            self.end = ipaddress.ip_address(rng.get("rangeEnd") or self.net.broadcast_address - 1)
            self.gw = ipaddress.ip_address(rng.get("gateway") or self.net.network_address + 1)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CNIError(7, f"invalid ipam ranges: {exc}") from None
        self.routes = ipam.get("routes") or []
        self.dir = os.path.join(ipam.get("dataDir") or "/var/lib/cni/toy", conf.get("name", "net"))

    def __enter__(self) -> Store:
        os.makedirs(self.dir, exist_ok=True)
        self.lock = open(os.path.join(self.dir, "lock"), "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.close()

    def owners(self) -> dict[str, tuple[str, str]]:
        out = {}
        for fn in os.listdir(self.dir):
            if fn == "lock":
                continue
            with open(os.path.join(self.dir, fn)) as f:
                cid, _, ifname = f.read().partition("\n")
            out[fn] = (cid, ifname)
        return out

    def allocate(self, cid: str, ifname: str, flaw: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        owners = self.owners()
        if (cid, ifname) in owners.values():
            raise CNIError(7, f"{cid}/{ifname} already has an address")
        ip = self.start
        while ip <= self.end:  # type: ignore[operator]  # one family per range
            if str(ip) not in owners or flaw == "ipam-not-unique":
                break
            ip += 1
        else:
            if flaw != "ipam-overcommit":
                raise CNIError(100, f"no free address in {self.start}-{self.end}")
            ip = self.net.broadcast_address - 1
        with open(os.path.join(self.dir, str(ip)), "w") as f:
            f.write(f"{cid}\n{ifname}")
        return ip

    def release(self, cid: str, ifname: str) -> None:
        for fn, owner in self.owners().items():
            if owner == (cid, ifname):
                os.unlink(os.path.join(self.dir, fn))

    def has(self, cid: str, ifname: str) -> bool:
        return (cid, ifname) in self.owners().values()

    def gc(self, valid: set[tuple[str, str]]) -> None:
        for fn, owner in self.owners().items():
            if owner not in valid:
                os.unlink(os.path.join(self.dir, fn))


def ip_result(version: str, store: Store, ip: Any, iface: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"address": f"{ip}/{store.net.prefixlen}", "gateway": str(store.gw)}
    if iface is not None:
        entry["interface"] = iface
    if version in RICH:
        entry["version"] = str(ip.version)
    routes = [{"dst": r["dst"], "gw": r.get("gw", str(store.gw))} for r in store.routes]
    return {"cniVersion": version, "ips": [entry], "routes": routes, "dns": {}}


# ---- roles ---------------------------------------------------------------------------------


def ipam_role(cmd: str, conf: dict[str, Any], env: dict[str, str], flaw: str | None) -> dict[str, Any] | None:
    version = conf["cniVersion"]
    cid, ifname, netns = env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", ""), env.get("CNI_NETNS", "")
    if cmd == "ADD":
        with Store(conf) as st:
            ip = st.allocate(cid, ifname, flaw)
        return ip_result(version, st, ip, None)
    if cmd == "DEL":
        if flaw == "del-netns-gone-leaks" and netns and not os.path.exists(netns):
            return None
        if flaw != "ipam-never-releases":
            with Store(conf) as st:
                st.release(cid, ifname)
        return None
    if cmd == "CHECK":
        with Store(conf) as st:
            if not st.has(cid, ifname):
                raise CNIError(999, f"no address reserved for {cid}/{ifname}")
        return None
    if cmd == "GC":
        if flaw == "gc-noop":
            return None
        key = "cni.dev/attachments" if flaw == "gc-old-key-only" else None
        raw = conf.get(key) if key else conf.get("cni.dev/valid-attachments", conf.get("cni.dev/attachments"))
        valid = {(a.get("containerID", ""), a.get("ifname", "")) for a in raw or []}
        with Store(conf) as st:
            st.gc(valid)
        return None
    return None  # STATUS


def interface_role(cmd: str, conf: dict[str, Any], env: dict[str, str], flaw: str | None) -> dict[str, Any] | None:
    version = conf["cniVersion"]
    cid, ifname, netns = env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", ""), env.get("CNI_NETNS", "")
    master = conf.get("master")
    if not isinstance(master, str) or not master:
        raise CNIError(7, "'master' is required")
    if cmd == "ADD":
        if link_exists(ifname, netns):
            if flaw != "add-twice-ok":
                raise CNIError(7, f"interface {ifname} already exists in {netns}")
            run("ip", "link", "del", ifname, netns=netns)
        tmp = "toy" + secrets.token_hex(4)
        run("ip", "link", "add", "link", master, "name", tmp, "type", "macvlan", "mode", "bridge")
        try:
            run("ip", "link", "set", tmp, "netns", netns)
        except CNIError:
            run("ip", "link", "del", tmp, check=False)
            raise
        try:
            run("ip", "link", "set", tmp, "name", ifname, netns=netns)
            with Store(conf) as st:
                ip = st.allocate(cid, ifname, flaw)
            res = ip_result(version, st, ip, 0)
            run("ip", "addr", "add", res["ips"][0]["address"], "dev", ifname, netns=netns)
            if flaw != "iface-down":
                run("ip", "link", "set", ifname, "up", netns=netns)
            for r in res["routes"]:
                run("ip", "route", "add", r["dst"], "via", r["gw"], "dev", ifname, netns=netns)
        except CNIError:
            if flaw != "no-undo":
                run("ip", "link", "del", tmp, netns=netns, check=False)
                run("ip", "link", "del", ifname, netns=netns, check=False)
                with Store(conf) as st:
                    st.release(cid, ifname)
            raise
        mac = json.loads(run("ip", "-j", "link", "show", ifname, netns=netns).stdout)[0]["address"]
        if flaw == "changes-host":
            run("ip", "route", "add", "10.99.0.0/24", "dev", master, check=False)
        if flaw == "leaks-once" and not link_exists("leakonce0", "/proc/self/ns/net"):
            # in the caller's namespace, on the first successful ADD only: later ADDs find the name taken
            run("ip", "link", "add", "leakonce0", "type", "veth", "peer", "name", "leakonce1")
        res["interfaces"] = [{"name": ifname, "mac": mac, "sandbox": netns}]
        return res
    if cmd == "DEL":
        if flaw == "del-needs-prevresult" and vkey(version) >= (0, 4, 0) and "prevResult" not in conf:
            raise CNIError(7, "DEL needs prevResult")
        if flaw == "del-needs-netns" and not netns:
            raise CNIError(4, "CNI_NETNS is required")
        if flaw == "changes-host":
            run("ip", "route", "del", "10.99.0.0/24", "dev", master, check=False)
        ipam_role("DEL", conf, env, flaw)
        if not netns or not os.path.exists(netns):
            return None
        if not link_exists(ifname, netns):
            if flaw == "del-errors-when-absent":
                raise CNIError(3, f"{ifname} not found")
            return None
        if flaw != "del-keeps-link":
            run("ip", "link", "del", ifname, netns=netns)
        return None
    if cmd == "CHECK":
        if flaw == "check-always-fails":
            raise CNIError(999, "CHECK always fails")
        if flaw == "check-always-passes":
            return None
        ipam_role("CHECK", conf, env, flaw)
        prev = conf.get("prevResult") or {}
        show = run("ip", "-j", "addr", "show", ifname, netns=netns, check=False)
        if show.returncode != 0:
            raise CNIError(999, f"{ifname} missing")
        link = json.loads(show.stdout)[0]
        have = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
        for ip in prev.get("ips") or []:
            if ip["address"] not in have:
                raise CNIError(999, f"{ip['address']} missing on {ifname}")
        return None
    return ipam_role(cmd, conf, env, flaw)  # GC, STATUS


def chained_role(cmd: str, conf: dict[str, Any], env: dict[str, str], flaw: str | None) -> dict[str, Any] | None:
    version = conf["cniVersion"]
    netns = env.get("CNI_NETNS", "")
    prev = conf.get("prevResult")
    if cmd in ("ADD", "CHECK"):
        if not isinstance(prev, dict):
            raise CNIError(7, "a chained plugin needs prevResult")
        if flaw == "rejects-old-prevresult" and prev.get("cniVersion") != version:
            raise CNIError(1, f"prevResult version {prev.get('cniVersion')} != {version}")
        for itf in prev.get("interfaces") or []:
            if itf.get("sandbox") and not link_exists(itf["name"], netns):
                raise CNIError(999, f"interface {itf['name']} not found in {netns}")
        if cmd == "CHECK":
            return None
        out: dict[str, Any] = json.loads(json.dumps(prev))
        out["cniVersion"] = version
        for ip in out.get("ips") or []:
            if version in RICH:
                ip["version"] = str(ipaddress.ip_interface(ip["address"]).version)
            else:
                ip.pop("version", None)
        if flaw == "drops-prevresult":
            out = {"cniVersion": version, "interfaces": out.get("interfaces", []), "dns": {}}
        return out
    return None  # DEL, GC, STATUS: nothing to undo


ROLES = {"interface": interface_role, "ipam": ipam_role, "chained": chained_role}


# ---- skel ----------------------------------------------------------------------------------


def _emit(doc: dict[str, Any], flaw: str | None) -> None:
    text = json.dumps(doc)
    sys.stdout.write(text + "\n")
    if flaw == "two-docs" and "code" not in doc:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(role: str, flaw: str | None = None) -> int:
    env = dict(os.environ)
    version = "1.1.0"
    try:
        cmd = env.get("CNI_COMMAND", "")
        if cmd == "VERSION":
            doc: dict[str, Any] = {"cniVersion": "1.1.0"}
            if flaw != "bad-version":
                doc["supportedVersions"] = ["0.3.1"] if flaw == "old-versions-only" else SUPPORTED
            _emit(doc, None)
            return 0
        if cmd not in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
            raise CNIError(4, f"unknown CNI_COMMAND {cmd!r}")
        try:
            conf = json.loads(sys.stdin.read())
        except ValueError as exc:
            raise CNIError(999 if flaw == "wrong-code-json" else 6, f"cannot decode config: {exc}") from None
        version = conf.get("cniVersion", "") if isinstance(conf, dict) else ""
        if flaw != "accepts-any-version" and version not in SUPPORTED:
            raise CNIError(1, f"unsupported cniVersion {version!r}")
        if flaw == "accepts-any-version" and version not in SUPPORTED:
            conf["cniVersion"] = version = "1.1.0"
        if cmd == "CHECK" and vkey(version) < (0, 4, 0) and flaw != "check-any-version":
            raise CNIError(1, "CHECK needs cniVersion 0.4.0 or later")
        if cmd in ("GC", "STATUS") and vkey(version) < (1, 1, 0):
            raise CNIError(1, f"{cmd} needs cniVersion 1.1.0")
        if cmd in ("ADD", "DEL", "CHECK"):
            need = ["CNI_CONTAINERID", "CNI_IFNAME"] + (["CNI_NETNS"] if cmd != "DEL" else [])
            missing = [k for k in need if not env.get(k)]
            if missing:
                raise CNIError(7 if flaw == "wrong-code-env" else 4, f"missing {missing}")
            args = dict(kv.split("=", 1) for kv in env.get("CNI_ARGS", "").split(";") if "=" in kv)
            known = {"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"}
            ignore = args.get("IgnoreUnknown", "").lower() in ("1", "true") and flaw != "rejects-unknown-args"
            unknown = sorted(set(args) - known)
            if unknown and not ignore:
                raise CNIError(7, f"unknown CNI_ARGS {unknown}")
        if "mtu" in conf and not isinstance(conf["mtu"], int):
            raise CNIError(999 if flaw == "invalid-config-999" else 7, "mtu must be an integer")
        if flaw == "rejects-unknown-keys" and (conf.get("args") or conf.get("runtimeConfig")):
            raise CNIError(2, "unknown keys in args/runtimeConfig")
        if cmd == "STATUS" and flaw == "status-fails":
            raise CNIError(999, "not implemented")
        if cmd == "ADD" and flaw == "slow-add":
            time.sleep(1.0)
        result = ROLES[role](cmd, conf, env, flaw)
        if result is not None:
            _emit(result, flaw)
        return 0
    except CNIError as exc:
        _emit({"cniVersion": version or "1.1.0", "code": exc.code, "msg": exc.msg, "details": exc.details}, flaw)
        return 0 if flaw == "error-exit-zero" else 1
