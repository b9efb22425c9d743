"""The multinet lab's recording delegate plugin: logs every call it receives and answers as configured.

Rules:
- Standalone script (stdlib + iproute2 only), exec'd by the meta-plugin under test like any delegate;
  it knows nothing about the harness but the directory ``MNC_RECORDER_DIR`` (set by its wrapper in
  the lab's bin dir): ``calls.jsonl`` there gets one line per call (``t0``/``t1`` wall-clock times,
  pid, command, the ``CNI_*`` environment, the config it read, its exit code), ``behaviour.json``
  there says per network ``name`` what to do: ``{"fail": {"ADD": 11}, "sleep": 0.2}``.
- ADD does real work in the pod namespace, so what a meta-plugin does with the result can be seen
  in the kernel: a veth ``CNI_IFNAME`` (its peer beside it) (the MAC from ``runtimeConfig.mac`` when given), up,
  with an address (``runtimeConfig.ips`` when given, else the next one of the network's /16), and
  a default route via the network's gateway when the config says ``"conformance.defaultRoute": true``.
  The result lists a host-side interface first (no ``sandbox``), so a meta-plugin that takes
  ``interfaces[0]`` for its status instead of the sandbox interface is seen doing so.
- A plugin given a ``prevResult`` (not first in its list) passes it on and makes nothing.
- DEL removes the interface when it is there and succeeds when it is not; CHECK, STATUS, GC succeed.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import zlib
from typing import Any

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
HOST_SIDE = "mncrec-host"  # the result's host-side interface (never created: only the sandbox one is real)


def _dir() -> str:
    return os.environ.get("MNC_RECORDER_DIR") or os.path.dirname(os.path.abspath(__file__))


def _ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["nsenter", f"--net={netns}", "ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RecorderError(999, f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


class RecorderError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _next_index() -> int:
    path = os.path.join(_dir(), "next")
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read().strip() or "0") + 1
        f.seek(0)
        f.truncate()
        f.write(str(n))
    return n


def network_prefix(name: str) -> str:
    """The /16 of network ``name`` (10.128-191.x.x): every network its own, the same for every call."""
    return f"10.{128 + zlib.crc32(name.encode()) % 64}"


def add(conf: dict[str, Any], env: dict[str, str], version: str) -> dict[str, Any]:
    netns, ifname = env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", "")
    rc = conf.get("runtimeConfig") or {}
    prefix = network_prefix(str(conf.get("name", "")))
    gw = f"{prefix}.0.1"
    if rc.get("ips"):
        addrs = [a if "/" in a else f"{a}/16" for a in rc["ips"]]
    else:
        n = _next_index()
        addrs = [f"{prefix}.{n // 250}.{n % 250 + 2}/16"]
    if _ip(netns, "link", "show", ifname, check=False).returncode == 0:
        raise RecorderError(999, f"interface {ifname} already exists in {netns}")
    peer = f"{ifname[:11]}peer"
    _ip(netns, "link", "add", ifname, "type", "veth", "peer", "name", peer)
    try:
        _ip(netns, "link", "set", peer, "up")
        if rc.get("mac"):
            _ip(netns, "link", "set", ifname, "address", str(rc["mac"]))
        _ip(netns, "link", "set", ifname, "up")
        for a in addrs:
            _ip(netns, "addr", "add", a, "dev", ifname)
        routes = []
        if conf.get("conformance.defaultRoute"):
            _ip(netns, "route", "add", "default", "via", gw, "dev", ifname)
            routes.append({"dst": "0.0.0.0/0", "gw": gw})
    except RecorderError:
        _ip(netns, "link", "del", ifname, check=False)
        raise
    mac = json.loads(_ip(netns, "-j", "link", "show", ifname).stdout)[0]["address"]
    ips: list[dict[str, Any]] = []
    for a in addrs:
        ip: dict[str, Any] = {"address": a, "gateway": gw, "interface": 1}
        if version in ("0.3.0", "0.3.1", "0.4.0"):
            ip["version"] = "4"
        ips.append(ip)
    return {
        "cniVersion": version,
        "interfaces": [{"name": HOST_SIDE, "mac": "02:00:00:00:00:01"}, {"name": ifname, "mac": mac, "sandbox": netns}],
        "ips": ips,
        "routes": routes,
        "dns": {"nameservers": [f"{prefix}.0.53"], "search": [f"{conf.get('name', 'net')}.conformance.example"]},
    }


def delete(env: dict[str, str]) -> None:
    netns, ifname = env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", "")
    if netns and os.path.exists(netns):
        _ip(netns, "link", "del", ifname, check=False)


def _record(entry: dict[str, Any]) -> None:
    with open(os.path.join(_dir(), "calls.jsonl"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(entry) + "\n")


def _behaviour(name: str) -> dict[str, Any]:
    try:
        with open(os.path.join(_dir(), "behaviour.json")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    got = doc.get(name) or {}
    return got if isinstance(got, dict) else {}


def main() -> int:
    t0 = time.time()
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
    cmd = env.get("CNI_COMMAND", "")
    raw = sys.stdin.buffer.read()
    try:
        conf: Any = json.loads(raw or b"{}")
    except ValueError:
        conf = {"undecodable": raw.decode("utf-8", "replace")}
    version = str(conf.get("cniVersion", "1.0.0")) if isinstance(conf, dict) else "1.0.0"
    out: dict[str, Any] | None = None
    code = 0
    try:
        if not isinstance(conf, dict) or "undecodable" in conf:
            raise RecorderError(6, "config is not a JSON object")
        how = _behaviour(str(conf.get("name", "")))
        time.sleep(float(how.get("sleep", 0)))
        fail = (how.get("fail") or {}).get(cmd)
        if fail:
            raise RecorderError(int(fail), f"recorder: {cmd} of {conf.get('name')} fails as configured")
        if cmd == "VERSION":
            out = {"cniVersion": version, "supportedVersions": SUPPORTED}
        elif cmd == "ADD" and isinstance(conf.get("prevResult"), dict):
            out = {**conf["prevResult"], "cniVersion": version}  # a later plugin of a list: pass it on
        elif cmd == "ADD":
            out = add(conf, env, version)
        elif cmd == "DEL":
            delete(env)
    except RecorderError as exc:
        code = 1
        out = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
    _record({"t0": t0, "t1": time.time(), "pid": os.getpid(), "command": cmd, "env": env, "conf": conf, "exit": code,
             "result": out if code == 0 else None})
    if out is not None:
        sys.stdout.write(json.dumps(out))
    return code


if __name__ == "__main__":
    sys.exit(main())
