"""Snapshot of one network namespace's state, printed as JSON (run *inside* the namespace).

Rules: standalone script (stdlib only, no package imports) so the harness can run it with
``ip netns exec NS python probe.py`` in any namespace, on the host kernel or in UML.
Every item is ``[text, iface]``: a normalised, order-free line and the interface it belongs
to (or ""), so the harness can diff snapshots and exempt interfaces a profile allows.
Volatile fields (counters, operstate, DAD flags, rule handles, route expiry) are dropped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

Item = list[str]


def _ipj(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def links() -> list[Item]:
    out: list[Item] = []
    for ln in _ipj("-d", "link", "show"):
        kind = (ln.get("linkinfo") or {}).get("info_kind", "")
        up = "UP" in ln.get("flags", [])
        text = (
            f"link {ln['ifname']} kind={kind} master={ln.get('master', '')} mtu={ln.get('mtu')} "
            f"mac={ln.get('address', '')} up={up}"
        )
        out.append([text, ln["ifname"]])
    return out


def addrs() -> list[Item]:
    out: list[Item] = []
    for ln in _ipj("addr", "show"):
        for a in ln.get("addr_info", []):
            out.append([f"addr {ln['ifname']} {a['local']}/{a['prefixlen']}", ln["ifname"]])
    return out


def routes() -> list[Item]:
    out: list[Item] = []
    for fam in ("-4", "-6"):
        for r in _ipj(fam, "route", "show", "table", "all"):
            if r.get("type") == "cache":
                continue
            dev = r.get("dev", "")
            text = (
                f"route{fam} {r.get('type', 'unicast')} {r.get('dst')} via={r.get('gateway', '')} dev={dev} "
                f"table={r.get('table', 'main')} proto={r.get('protocol', '')} scope={r.get('scope', '')} "
                f"src={r.get('prefsrc', '')} metric={r.get('metric', '')}"
            )
            out.append([text, dev])
    return out


def rules() -> list[Item]:
    out: list[Item] = []
    for fam in ("-4", "-6"):
        for r in _ipj(fam, "rule", "show"):
            keys = sorted(k for k in r if k not in ("flags",))
            text = f"rule{fam} " + " ".join(f"{k}={r[k]}" for k in keys)
            out.append([text, r.get("iif", r.get("oif", ""))])
    return out


def sysctls() -> list[Item]:
    out: list[Item] = []
    roots = [("/proc/sys/net/ipv4/conf", True), ("/proc/sys/net/ipv6/conf", True), ("/proc/sys/net/ipv4", False)]
    for root, per_iface in roots:
        if not os.path.isdir(root):
            continue
        dirs = [(os.path.join(root, d), d) for d in sorted(os.listdir(root))] if per_iface else [(root, "")]
        for d, iface in dirs:
            if not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                path = os.path.join(d, name)
                if not os.path.isfile(path):
                    continue
                try:
                    with open(path) as f:
                        val = " ".join(f.read().split())
                except OSError:
                    continue  # write-only or EIO (stable_secret unset)
                out.append([f"sysctl {path[len('/proc/sys/'):]}={val}", iface if iface not in ("all", "default") else ""])
    return out


_COUNTERS = re.compile(r"\[\d+:\d+\]")
_HANDLE = re.compile(r"\s*# handle \d+")


def _lines(argv: list[str], strip: re.Pattern[str]) -> list[str]:
    if shutil.which(argv[0]) is None:
        return []
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return [strip.sub("", ln).rstrip() for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("#")]


def firewall() -> dict[str, list[Item]]:
    return {
        "iptables": [[f"iptables {ln}", ""] for ln in _lines(["iptables-save"], _COUNTERS)],
        "ip6tables": [[f"ip6tables {ln}", ""] for ln in _lines(["ip6tables-save"], _COUNTERS)],
        "nft": [[f"nft {ln.strip()}", ""] for ln in _lines(["nft", "-a", "list", "ruleset"], _HANDLE)],
    }


def snapshot() -> dict[str, list[Item]]:
    snap = {"links": links(), "addrs": addrs(), "routes": routes(), "rules": rules(), "sysctls": sysctls()}
    snap.update(firewall())
    return snap


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout)
    sys.exit(0)
