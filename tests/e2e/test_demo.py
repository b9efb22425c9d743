"""``multinic demo`` (what ``make demo`` runs): it shows the seed's examples working and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.nsfix import need_reference, need_root

MULTINIC = os.path.join(os.path.dirname(sys.executable), "multinic")


@pytest.mark.parametrize("mode", ["native", "reference"])
def test_demo_shows_the_seed_examples_and_cleans_up(mode: str) -> None:
    need_root()
    if not os.access(MULTINIC, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    env = dict(os.environ)
    env.pop("MULTINIC_EXEC_TYPES", None)
    env.pop("MULTINIC_EXTRA_ALLOWED_PATHS", None)  # the demo runs under the shipped tenancy defaults
    if mode == "reference":
        need_reference("macvlan", "bridge", "sbr", "host-local")
        env["MULTINIC_EXEC_TYPES"] = "macvlan,bridge,sbr,host-local,whereabouts"
    proc = subprocess.run([MULTINIC, "demo"], capture_output=True, text=True, env=env, timeout=240, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    m = re.search(r"multinic demo \(tag ([0-9a-f]+), state under (\S+)\)", out)
    assert m, out[:500]
    tag, tmp = m.groups()
    if mode == "reference":
        assert "macvlan      reference binary /usr/lib/cni/macvlan" in out
        assert "whereabouts  not available: host-local is used instead" in out

    # Every example of the seed, with the seed's routing results.
    for pod in ("pod-a", "pod-b", "samplepod", "pod-two", "pod-twice", "pod-sbr"):
        assert f"=== {pod}  (" in out
    sections = dict(re.findall(r"=== (\S+)  \(.*?\n(.*?)(?=\n=== )", out, re.S))
    assert re.search(r"^172\.16\.1\.0/24 via 172\.16\.0\.1 dev net1", sections["pod-a"], re.M)
    assert re.search(r"^default via 10\.244\.0\.1 dev eth0", sections["pod-a"], re.M)
    sbr = sections["pod-sbr"].split("# ip route list table 100")[1]
    assert re.search(r"^default via 172\.16\.0\.1 dev net1", sbr, re.M)
    assert "inet 172.16.0." in sections["pod-two"] and " net2" in sections["pod-two"]
    assert sections["pod-twice"].count("inet 192.168.50.") == 2
    assert '"name": "default/gke-network-1"' in sections["samplepod"]
    assert '"name": "default/gke-network-3"' in sections["samplepod"]
    assert '"default": true' in sections["samplepod"] and '"dns": {}' in sections["samplepod"]
    # Policy, pings, logs, DEL.
    assert "ADD pod-denied: error 102" in out and "event Warning ErrorAddingNetwork" in out
    assert out.count(": ok\n") >= 5 + 6  # five pings, six DELs
    assert "FAILED" not in out
    assert re.search(r"\[verbose\] Add: default:pod-a:[0-9a-f-]+:default/gke-network-1\(gke-network-1\):net1 \{", out)
    assert "attachment cache entries left: 0" in out

    # Nothing left behind: namespaces, temp dir (links lived only in the demo's namespaces).
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"mnd{tag}-" not in netns
    assert not os.path.exists(tmp)


def test_demo_interrupted_midway_still_cleans_up() -> None:
    import signal
    import time

    need_root()
    if not os.access(MULTINIC, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    proc = subprocess.Popen([MULTINIC, "demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    head = ""
    deadline = time.monotonic() + 60
    while "=== pod-b" not in head and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        head += line
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = head + rest
    assert proc.returncode == 130, out
    tag, tmp = re.search(r"tag ([0-9a-f]+), state under (\S+)\)", out).groups()
    assert "interrupted: cleaning up" in out and "DEL pod-a: ok" in out
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"mnd{tag}-" not in netns
    assert not os.path.exists(tmp)
