"""A runtime DEL that does not go through the daemon still waits for the daemon's hot-plug of the same sandbox
(issue 15: "a DEL from the runtime during a hot-plug waits for it and then removes everything"), because the
per-sandbox lock is a file lock (cni.delegator.sandbox_lock), not the daemon's memory.

Real processes and namespaces: the daemon hot-plugs a network whose chain ends in a slow exec'd plugin
(``mnslow``, in this test's own bin dir); while it sleeps, the runtime's DEL comes as a thin ``multinic`` exec, or
through the shim that gives up on the daemon and runs the DEL itself. Without a shared lock that DEL removes the
cache record first and the hot-plug writes it back (with a live interface and an IPAM reservation) when it ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.daemon.test_thick_mode import SHIM
from tests.netns.delegator.conftest import MULTINIC, World
from tests.netns.delegator.test_dynamic_networks import REAL_PY, Node, wait_for
from tests.support.nsfix import REF_CNI

pytestmark = [pytest.mark.root, pytest.mark.parametrize("plugins", ["native"], indirect=True),
              pytest.mark.parametrize("world", ["local"], indirect=True)]  # the lock does not depend on the source

SLOW = 3.0
# A chained plugin whose ADD takes SLOW seconds; it notes "start <time>" and "end <time>" in its config's ``marks``.
SLOW_PLUGIN = f"""#!{REAL_PY} -IS
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND")
def mark(what):
    with open(conf["marks"], "a") as f:
        f.write(f"{{what}} {{time.time()}}\\n")
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": conf.get("cniVersion", "1.0.0"), "supportedVersions": ["0.4.0", "1.0.0"]}}))
elif cmd == "ADD":
    mark("start")
    time.sleep({SLOW})
    mark("end")
    print(json.dumps(conf["prevResult"]))
"""


class Slow:
    """The node, with a NAD ``slow`` (macvlan + host-local, then ``mnslow``) the daemon can hot-plug."""

    def __init__(self, world: World, tmp: Path, *daemon_env: tuple[str, str]) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        plugin = self.bin / "mnslow"
        plugin.write_text(SLOW_PLUGIN)
        plugin.chmod(0o755)
        self.marks = tmp / "mnslow.marks"
        world.add_nad("blue", world.macvlan("blue", "10.61.1.0/24"))
        slow = world.macvlan("slow", "10.61.4.0/24")
        world.add_nad("slow", {"cniVersion": "1.0.0", "name": "slow", "plugins": [
            {k: v for k, v in slow.items() if k != "cniVersion"}, {"type": "mnslow", "marks": str(self.marks)}]})
        world.extra_conf["allowedPluginTypes"] = ["macvlan", "host-local", "mnslow"]
        self.cni_path = f"{self.bin}:{REF_CNI}"  # the runtime's CNI_PATH: the hot-plug execs mnslow from it
        self.node = Node(world, tmp, *daemon_env)
        self.world = world

    def running_pod(self, name: str) -> tuple[str, str]:
        """A pod with ``blue``, then its annotation edited to add ``slow``: returns once mnslow's ADD is sleeping."""
        w = self.world
        w.add_pod(name, "blue")
        ns = w.scene.netns("lk")
        cid = f"cid-{name}"
        r = w.cni("ADD", cid, ns, ("default", name), self.node.conf, extra_env={"CNI_PATH": self.cni_path})
        assert r.ok, r.doc
        assert (w.cni_dir / ".locks" / cid).exists()  # a live sandbox keeps its lock file
        self.node.set_networks(name, "blue,slow")
        wait_for("the daemon's hot-plug to reach mnslow", lambda: self.marks.exists(), timeout=10)
        return ns, cid

    def slow_end(self) -> float:
        marks = dict(line.split() for line in self.marks.read_text().splitlines())
        assert set(marks) == {"start", "end"}, marks  # one hot-plug ADD of mnslow, finished
        return float(marks["end"])

    def everything_gone(self, ns: str) -> None:
        w = self.world
        assert w.links(ns) == {"lo"}, "an interface of the sandbox is left"
        assert w.leftovers() == {"cache": [], "ipam": []}  # cache record, lock file, IPAM reservations
        time.sleep(1.5)  # a few daemon passes: nothing may come back for a sandbox that is gone
        assert w.leftovers() == {"cache": [], "ipam": []}
        assert w.links(ns) == {"lo"}


@pytest.fixture
def slow(world: World, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Slow]:
    if not os.path.exists("/usr/bin/curl"):
        pytest.skip("needs curl to talk HTTP over the unix socket")
    s = Slow(world, tmp_path, *getattr(request, "param", ()))  # the daemon's environment
    try:
        yield s
    finally:
        s.node.stop()


def test_thin_del_during_a_daemon_hotplug_waits_for_it_then_removes_everything(slow: Slow) -> None:
    ns, cid = slow.running_pod("tl1")
    sent = time.time()
    r = slow.world.cni("DEL", cid, ns, ("default", "tl1"), slow.node.conf, binary=True,
                       extra_env={"CNI_PATH": slow.cni_path})
    returned = time.time()
    assert r.ok, (r.doc, r.stderr)
    end = slow.slow_end()
    assert sent < end, "the DEL was sent after the hot-plug ended: this run did not race them"
    assert returned > end, "the thin DEL returned while the hot-plug was still running"
    slow.everything_gone(ns)


def test_shim_fallback_del_during_a_daemon_hotplug_waits_for_it_then_removes_everything(slow: Slow) -> None:
    """The daemon does not answer the DEL in time (it waits for the sandbox): the shim runs the DEL itself, which
    waits for the hot-plug too; the daemon's own DEL of the same sandbox follows, and finds nothing left."""
    w, node = slow.world, slow.node
    assert node.daemon is not None
    ns, cid = slow.running_pod("tl2")
    fallback = w.tmp / "fallback.ran"
    thin = slow.bin / "multinic-thin"  # the shim's thin multinic, noting that the fallback ran
    thin.write_text(f"#!/bin/sh\necho ran >> {fallback}\nexec {MULTINIC} \"$@\"\n")
    thin.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "DEL", "CNI_CONTAINERID": cid,
           "CNI_NETNS": w.scene.path(ns), "CNI_IFNAME": "eth0", "CNI_PATH": slow.cni_path,
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=tl2;K8S_POD_UID={w.uids[('default', 'tl2')]}",
           "MULTINIC_SOCKET": node.daemon.sock, "MULTINIC_SHIM_TIMEOUT": "0.5", "MULTINIC_THIN": str(thin)}
    sent = time.time()
    r = subprocess.run([REAL_PY, "-I", "-S", SHIM], input=json.dumps(node.conf).encode(), capture_output=True,
                       env=env, check=False, timeout=60)
    returned = time.time()
    assert r.returncode == 0, r.stdout + r.stderr
    assert fallback.exists(), "the shim did not fall back to its own DEL"
    end = slow.slow_end()
    assert sent < end, "the DEL was sent after the hot-plug ended: this run did not race them"
    assert returned > end, "the shim's own DEL returned while the hot-plug was still running"
    wait_for("the daemon's DEL of the sandbox to finish too", lambda: 'multinic_cni_request_duration_seconds_count'
             '{command="DEL"} 1' in node.daemon.get("/metrics")[1], timeout=30)  # type: ignore[union-attr]
    slow.everything_gone(ns)


def test_a_del_that_cannot_get_the_sandbox_in_time_fails_with_code_11_naming_the_holder(slow: Slow) -> None:
    """A holder that outlasts the wait (the hot-plug sleeping in mnslow stands for a wedged one): the runtime's DEL
    gets "try again later" with who holds the sandbox, instead of hanging until the runtime kills it; the retry,
    once the holder is done, removes everything."""
    ns, cid = slow.running_pod("tl3")
    daemon = slow.node.daemon
    assert daemon is not None
    env = {"CNI_PATH": slow.cni_path, "MULTINIC_LOCK_TIMEOUT": "0.5"}
    r = slow.world.cni("DEL", cid, ns, ("default", "tl3"), slow.node.conf, binary=True, extra_env=env)
    assert not slow.marks.read_text().count("end"), "the hot-plug ended before the DEL gave up: no race this run"
    assert r.rc != 0 and r.doc["code"] == 11, (r.doc, r.stderr)
    msg = r.doc["msg"]
    assert cid in msg and str(slow.world.cni_dir / ".locks" / cid) in msg, msg
    assert f"pid {daemon.proc.pid}" in msg and "hot-plug" in msg and "multinic daemon" in msg, msg
    assert (slow.world.cni_dir / cid).exists(), "the DEL that gave up touched the sandbox"
    wait_for("the hot-plug to go on to its end", lambda: "end" in slow.marks.read_text(), timeout=10)
    r = slow.world.cni("DEL", cid, ns, ("default", "tl3"), slow.node.conf, binary=True,
                       extra_env={"CNI_PATH": slow.cni_path})  # the default wait: the hot-plug is finishing
    assert r.ok, (r.doc, r.stderr)
    slow.everything_gone(ns)


@pytest.mark.parametrize("slow", [(("MULTINIC_LOCK_TIMEOUT", "0.5"),)], indirect=True)
def test_a_gc_the_daemon_cannot_start_in_time_fails_with_code_11_naming_the_hotplugged_sandbox(slow: Slow) -> None:
    """GC and hot-plugs exclude each other in the daemon; a GC does not wait longer for one than a command waits for
    a sandbox."""
    ns, cid = slow.running_pod("tl4")
    daemon = slow.node.daemon
    assert daemon is not None
    conf = {**slow.node.conf, "cniVersion": "1.1.0",
            "cni.dev/valid-attachments": [{"containerID": cid, "ifname": "eth0"}]}
    body = json.dumps({"env": {"CNI_COMMAND": "GC", "CNI_PATH": slow.cni_path}, "stdin": json.dumps(conf)})
    gc = ["curl", "-s", "--unix-socket", daemon.sock, "-X", "POST", "--data-binary", "@-", "http://x/cni"]
    out = subprocess.run(gc, input=body, capture_output=True, text=True, check=True, timeout=60).stdout
    assert "end" not in slow.marks.read_text(), "the hot-plug ended before the GC gave up: no race this run"
    doc = json.loads(out)
    assert doc["code"] == 11 and cid in doc["msg"] and "hot-plug" in doc["msg"] and "default/tl4" in doc["msg"], doc
    wait_for("the hot-plug to go on to its end", lambda: "end" in slow.marks.read_text(), timeout=10)
    wait_for("the GC to run once the hot-plug is done", lambda: subprocess.run(
        gc, input=body, capture_output=True, text=True, check=True, timeout=60).stdout.strip() == "", timeout=10)
    assert (slow.world.cni_dir / cid).exists()  # a valid attachment: GC kept it
