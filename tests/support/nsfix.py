"""Real network namespaces and links for tests, always removed afterwards.

Every fixture records what it creates and removes it in a ``finally`` (even when the test
fails): namespaces under /run/netns, host links, files. Names carry a per-run random tag so
parallel runs and leftovers from a killed run never collide.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

REF_CNI = "/usr/lib/cni"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates real network namespaces")
    if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip") and not os.path.exists("/usr/bin/ip"):
        pytest.skip("needs iproute2 (apt-get install iproute2)")


def need_reference(*plugins: str) -> None:
    for p in plugins:
        if not os.access(os.path.join(REF_CNI, p), os.X_OK):
            pytest.skip(f"needs the reference plugin {REF_CNI}/{p} (apt-get install containernetworking-plugins)")


def sh(*args: str, check: bool = True, ns: str | None = None) -> str:
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def tag() -> str:
    return secrets.token_hex(3)


@dataclass
class Scene:
    """Namespaces and host links created for one test."""

    tag: str = field(default_factory=tag)
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)

    def netns(self, prefix: str = "t") -> str:
        """Create a namespace with lo up; returns its name (path: /run/netns/NAME)."""
        name = f"mn{prefix}-{self.tag}-{len(self.namespaces)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "link", "set", "lo", "up", ns=name)
        return name

    def path(self, name: str) -> str:
        return f"/run/netns/{name}"

    def veth_uplink(self, ns: str | None = None, mtu: int = 1500) -> str:
        """A veth pair whose one end acts as a node uplink (macvlan/bridge master) in ``ns`` or the host.

        The peer stays in the same namespace, up, so the master has carrier.
        """
        name = f"up{self.tag}{len(self.host_links)}"[:15]
        peer = f"pe{self.tag}{len(self.host_links)}"[:15]
        sh("ip", "link", "add", name, "mtu", str(mtu), "type", "veth", "peer", "name", peer, "mtu", str(mtu), ns=ns)
        if ns is None:
            self.host_links.append(name)
        sh("ip", "link", "set", name, "up", ns=ns)
        sh("ip", "link", "set", peer, "up", ns=ns)
        return name

    def bridge_uplink(self, ns: str | None = None) -> str:
        """A Linux bridge to serve as a master (macvlan on a bridge lets pods talk to each other)."""
        name = f"br{self.tag}{len(self.host_links)}"[:15]
        sh("ip", "link", "add", name, "type", "bridge", ns=ns)
        if ns is None:
            self.host_links.append(name)
        sh("ip", "link", "set", name, "up", ns=ns)
        return name

    def cleanup(self) -> None:
        for link in reversed(self.host_links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def scene() -> Iterator[Scene]:
    need_root()
    s = Scene()
    try:
        yield s
    finally:
        s.cleanup()


def links_in(ns: str | None) -> set[str]:
    out = sh("ip", "-o", "link", "show", ns=ns)
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


def host_snapshot() -> dict[str, str]:
    """Host state that a plugin must leave as it found it (links, rules, main routes)."""
    return {
        "links": "\n".join(sorted(links_in(None))),
        "rules": sh("ip", "rule", "show"),
        "routes": sh("ip", "route", "show", "table", "all"),
    }
