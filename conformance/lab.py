"""The harness's private world: a "host" namespace, pod namespaces, an uplink, temp dirs.

Rules:
- Everything created is recorded *before* it is created and removed in ``close()``, which
  runs from ``finally`` (also on KeyboardInterrupt): deleting a namespace takes every link,
  address, route, rule and firewall rule in it along. Temp files live under one directory.
- Names carry a random per-run tag (``mnc<tag>…``) so parallel runs and leftovers of a killed
  run never collide; ``sweep()`` removes leftovers of dead runs by that prefix.
- The plugin's caller ("host") namespace is ours too: the plugin is exec'd inside it, so the
  leak and caller-namespace checks see only what the plugin did, not unrelated host noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.py")
PREFIX = "mnc"

Snapshot = dict[str, list[list[str]]]


class LabError(RuntimeError):
    """The harness could not build its namespaces/links (not a plugin failure)."""


def sh(*argv: str, ns: str | None = None, check: bool = True) -> str:
    cmd = list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Lab:
    """Namespaces and links for one harness run (use as a context manager)."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.netns: list[str] = []
        self._dropped: list[str] = []  # deleted early; a plugin may still recreate the path (see close)
        self.tmp = tempfile.mkdtemp(prefix=f"{PREFIX}-conformance-")
        self._pods = 0
        self._templates = 0
        self.uplink = f"{PREFIX}{self.tag}up"
        self.bridge = f"{PREFIX}{self.tag}br"
        try:
            self.host = self._ns("h")
            peer = f"{PREFIX}{self.tag}pe"
            sh("ip", "link", "add", self.uplink, "type", "veth", "peer", "name", peer, ns=self.host)
            for dev in (self.uplink, peer, "lo"):
                sh("ip", "link", "set", dev, "up", ns=self.host)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ns(self, suffix: str) -> str:
        name = f"{PREFIX}{self.tag}{suffix}"
        self.netns.append(name)  # recorded first: close() removes it even if 'add' half-worked
        sh("ip", "netns", "add", name)
        # No IPv6 DAD on links made later: the fe80 local route appears only after DAD completes,
        # which would surface as a spurious difference between two snapshots.
        for scope in ("default", "all"):
            sh("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0", ns=name, check=False)
        return name

    def path(self, ns: str) -> str:
        return f"/run/netns/{ns}"

    def pod(self) -> str:
        """A fresh, empty pod namespace; returns its name."""
        self._pods += 1
        return self._ns(f"p{self._pods}")

    def drop(self, ns: str) -> None:
        """Delete a namespace now (the 'container is gone' case, or end of a check)."""
        if ns in self.netns:
            _del_netns(ns)
            self.netns.remove(ns)
            self._dropped.append(ns)

    def dir(self, name: str) -> str:
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        return d

    def pod_veth(self, pod: str, ifname: str, cidr: str, gw: str) -> tuple[str, str]:
        """Give ``pod`` a configured interface (as an earlier plugin would). Returns (host end, mac)."""
        host_end = f"{pod}v"[-15:]
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ifname, "netns", self.path(pod), ns=self.host)
        sh("ip", "link", "set", host_end, "up", ns=self.host)
        sh("ip", "addr", "add", f"{gw}/{cidr.split('/')[1]}", "dev", host_end, ns=self.host)
        sh("ip", "link", "set", ifname, "up", ns=pod)
        sh("ip", "addr", "add", cidr, "dev", ifname, ns=pod)
        sh("ip", "route", "add", "default", "via", gw, "dev", ifname, ns=pod)
        mac = json.loads(sh("ip", "-j", "link", "show", ifname, ns=pod))[0]["address"]
        return host_end, mac

    def probe(self, ns: str) -> Snapshot:
        out = sh(sys.executable, PROBE, ns=ns)
        return json.loads(out)  # type: ignore[no-any-return]

    def snapshot(self, pods: list[str], state_dirs: list[str]) -> dict[str, Snapshot]:
        """Host + pods (in parallel) + files under the state dirs."""
        names = [self.host, *[p for p in pods if p in self.netns]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            snaps = dict(zip(["host", *names[1:]], pool.map(self.probe, names), strict=False))
        snaps["files"] = {"files": files_state(state_dirs)}
        return snaps

    def template(self) -> Snapshot:
        """A namespace made now, as every pod's is made, probed and deleted: what a plugin changed in
        the defaults new namespaces inherit (``net.*.conf.default`` of the initial namespace, say)
        shows here even when no pod of the run still exists."""
        self._templates += 1
        ns = self._ns(f"t{self._templates}")
        try:
            return self.probe(ns)
        finally:
            self.drop(ns)

    def whole(self, state_dirs: list[str]) -> dict[str, Snapshot]:
        """Everything a plugin could leave behind across a run: the caller's namespace, a fresh pod
        namespace (the template), the files under the state dirs."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            host, template = pool.map(lambda f: f(), (lambda: self.probe(self.host), self.template))
        return {"host": host, "template": template, "files": {"files": files_state(state_dirs)}}

    def close(self) -> None:
        for ns in reversed(self.netns):
            _del_netns(ns)
        self.netns.clear()
        # A DEL after the netns was dropped can create a plain file at its old path (reference
        # sbr 1.1.1 does, in del-deleted-netns): nothing may stay under /run/netns.
        for ns in self._dropped:
            if os.path.lexists(f"/run/netns/{ns}"):
                _del_netns(ns)
        self._dropped.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _del_netns(ns: str) -> None:
    """``ip netns del``, then make sure no file stays under /run/netns: a plugin that opened the
    path while it was being unmounted can leave a plain file behind (seen with sbr 1.1.1)."""
    sh("ip", "netns", "del", ns, check=False)
    path = f"/run/netns/{ns}"
    if os.path.lexists(path):
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)
        try:
            os.unlink(path)
        except OSError:
            pass


def files_state(dirs: list[str]) -> list[list[str]]:
    """Paths under ``dirs`` (with a content hash in the iface slot: presence is what is diffed)."""
    out: list[list[str]] = []
    for root in dirs:
        if not os.path.isdir(root):
            continue
        for dirpath, _dirnames, filenames in os.walk(root):
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                try:
                    with open(p, "rb") as f:
                        digest = hashlib.sha1(f.read()).hexdigest()[:12]
                except OSError:
                    digest = "?"
                out.append([f"file {p}", digest])
    return out


def diff(before: dict[str, Snapshot], after: dict[str, Snapshot], *, exempt: set[str] = frozenset(),  # type: ignore[assignment]
         exempt_categories: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """What appeared/disappeared per namespace and category, minus exempt interfaces/categories.

    A namespace missing on one side (deleted pod) is not compared.
    """
    out: dict[str, Any] = {}
    for where in before.keys() & after.keys():
        for cat in before[where].keys() | after[where].keys():
            if cat in exempt_categories:
                continue
            b = {t for t, i in before[where].get(cat, []) if cat == "files" or i not in exempt}
            a = {t for t, i in after[where].get(cat, []) if cat == "files" or i not in exempt}
            added, removed = sorted(a - b), sorted(b - a)
            if added or removed:
                key = "pod" if where not in ("host", "files", "template") else where
                out.setdefault(key, {})[cat] = {"added": added, "removed": removed}
    return out


def sweep() -> list[str]:
    """Delete leftover harness namespaces (``mnc<4 hex>…``) from killed runs; returns them."""
    import re

    gone = []
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if re.fullmatch(rf"{PREFIX}[0-9a-f]{{4}}(h|[pt]\d+)", name):
            sh("ip", "netns", "del", name, check=False)
            gone.append(name)
    return gone
