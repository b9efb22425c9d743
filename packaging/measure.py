"""Start-up and thin-ADD measurements behind the onedir/onefile choice (README "## Packaging").

Run as root from the repository: ``.venv/bin/python -c 'from packaging import measure; measure.report()'``.
Candidates are measured interleaved, side by side in one run (the machines are noisy: compare
ratios, never absolute times across runs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

VERSION_IN = b'{"cniVersion":"1.0.0"}'


def _env(**kw: str) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **kw}


def version_p50(cmds: dict[str, Sequence[str]], n: int = 30) -> dict[str, float]:
    """Median wall time (ms) of a CNI VERSION exec per candidate, interleaved."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(n):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            r = subprocess.run(list(cmd), input=VERSION_IN, env=_env(CNI_COMMAND="VERSION"), capture_output=True,
                               timeout=60)
            times[name].append((time.perf_counter() - t0) * 1000)
            if r.returncode != 0:
                raise RuntimeError(f"{name}: VERSION failed: {r.stdout!r} {r.stderr!r}")
    return {k: statistics.median(v) for k, v in times.items()}


def macvlan_add_p50(cmds: dict[str, Sequence[str]], n: int = 30) -> dict[str, float]:
    """Median ms of a thin macvlan + host-local ADD (DEL between runs, not timed). Needs root."""
    tag = uuid.uuid4().hex[:6]
    master, peer, ns = f"mnm{tag}", f"mnp{tag}", f"mnbench-{tag}"
    work = Path(tempfile.mkdtemp(prefix="multinic-measure-"))
    times: dict[str, list[float]] = {k: [] for k in cmds}
    try:
        subprocess.run(["ip", "link", "add", master, "type", "veth", "peer", "name", peer], check=True)
        subprocess.run(["ip", "link", "set", master, "up"], check=True)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "macvlan", "master": master,
                           "ipam": {"type": "host-local", "subnet": "10.251.0.0/24",
                                    "dataDir": str(work / "ipam")}}).encode()
        for i in range(n):
            for name, cmd in cmds.items():
                env = _env(CNI_CONTAINERID=f"bench-{i}", CNI_NETNS=f"/run/netns/{ns}", CNI_IFNAME="net1",
                           CNI_PATH="/usr/lib/cni")
                t0 = time.perf_counter()
                r = subprocess.run(list(cmd), input=conf, env={**env, "CNI_COMMAND": "ADD"}, capture_output=True,
                                   timeout=60)
                times[name].append((time.perf_counter() - t0) * 1000)
                subprocess.run(list(cmd), input=conf, env={**env, "CNI_COMMAND": "DEL"}, capture_output=True,
                               timeout=60)
                if r.returncode != 0:
                    raise RuntimeError(f"{name}: ADD failed: {r.stdout!r} {r.stderr!r}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", master], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}


def leftovers_after_kill(exe: str, argv: Sequence[str] = ("daemon", "--socket")) -> list[str]:
    """Start ``exe`` (a long-running face), SIGKILL it, and list what it left in a private TMPDIR."""
    tmp = Path(tempfile.mkdtemp(prefix="multinic-killtest-"))
    try:
        sock = tmp / "run" / "d.sock"
        p = subprocess.Popen([exe, *argv, str(sock)], env=_env(TMPDIR=str(tmp)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not sock.exists():
            time.sleep(0.05)
        children = _children(p.pid)  # a onefile bootloader runs the program in a child process
        os.kill(p.pid, signal.SIGKILL)  # what a runtime time-out or the OOM killer does
        p.wait(10)
        for pid in children:  # the orphaned child would go on running: stop it by its pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
        return sorted(x.name for x in tmp.iterdir() if x.name != "run")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def report(n: int = 30) -> None:
    from . import pyi_build

    onedir = pyi_build.cached_build(False)
    onefile = pyi_build.cached_build(True)
    assert onedir and onefile
    import sys

    venv = os.path.join(os.path.dirname(sys.executable), "multinic")
    real_python = os.path.realpath(sys.executable)
    shim_py = str(Path(__file__).resolve().parent.parent / "cni" / "daemon" / "shim.py")
    links = Path(tempfile.mkdtemp(prefix="multinic-links-"))
    try:
        for name, target in (("macvlan-onedir", onedir), ("macvlan-onefile", onefile), ("macvlan-venv", venv)):
            (links / name.split("-")[1]).mkdir(exist_ok=True)
            (links / name.split("-")[1] / "macvlan").symlink_to(target)
        v = version_p50({"onedir": [str(onedir)], "onefile": [str(onefile)], "venv script": [venv],
                         "onedir multinic-shim": [str(onedir.parent / "multinic-shim")],
                         "python -I -S shim.py": [real_python, "-I", "-S", shim_py]}, n)
        a = macvlan_add_p50({k: [str(links / k / "macvlan")] for k in ("onedir", "onefile", "venv")}, n)
    finally:
        shutil.rmtree(links, ignore_errors=True)
    print("VERSION exec p50 (ms):", {k: round(x, 1) for k, x in v.items()})
    print("macvlan+host-local ADD p50 (ms):", {k: round(x, 1) for k, x in a.items()})
    print("left in TMPDIR after SIGKILL: onefile", leftovers_after_kill(str(onefile)),
          "onedir", leftovers_after_kill(str(onedir)))
