"""IPAM benchmarks for host-local: the pure allocator at scale, and ADD by exec against the reference.

``run()`` returns one dict per measurement: ``name``, ``value`` (the headline number), ``unit``,
``n`` (samples) and case-specific keys (``p50``/``p90``, ``ratio``, ``notes``). Times are medians
of repeated runs; compare ratios measured in one run, never absolute numbers across runs
(cni/ARCHITECTURE.md, "Start-up costs": these machines are noisy).

Cases:
- ``allocator.v4_16_60k_taken``: a /16 whose first 60 000 addresses are taken in one run and no
  round-robin cursor, the worst case for a probing allocator (the reference would try 60 000
  files); each sample allocates one address and gives it back.
- ``allocator.v6_64_1m_taken``: the same with a /64 and 1 000 000 taken.
- ``allocator.*_round_robin``: steady state, consecutive allocations after the cursor.
- ``host_local.add_exec``: ADD of one IPv4 address by exec, ours (`multinic plugin host-local`)
  vs /usr/lib/cni/host-local, interleaved, each followed by an untimed DEL; ``ratio`` = ours/reference.
"""

from __future__ import annotations

import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ipam.host_local import allocator as A
from ipam.host_local.allocator import MemoryStore, Owner

REF = "/usr/lib/cni/host-local"


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def _timed(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _cold(subnet: str, taken: int, reps: int) -> dict[str, Any]:
    net = ipaddress.ip_network(subnet)
    rs = (A.make_range(net),)
    st = MemoryStore()
    first = int(net.network_address) + 2  # .1 is the gateway
    t0 = time.perf_counter()
    st.fill_ints(net.version, range(first, first + taken), Owner("bulk", "eth0"))
    setup = time.perf_counter() - t0
    me = Owner("bench", "eth0")
    expect = first + taken

    def one() -> None:
        st.last.clear()  # no cursor: the search starts at rangeStart and must cross the whole run
        got = A.allocate(rs, 0, st, me)
        assert int(got.address.ip) == expect, got
        st.release(me)

    samples = _timed(one, reps)
    p50 = statistics.median(samples) * 1e6
    return {
        "name": f"allocator.v{net.version}_{net.prefixlen}_{taken // 1000}k_taken",
        "value": round(p50, 1),
        "unit": "us/alloc",
        "n": reps,
        "p50": round(p50, 1),
        "p90": round(_pct(samples, 0.9) * 1e6, 1),
        "notes": f"{taken} taken in one run after the gateway, no cursor; setup {setup:.2f}s",
    }


def _round_robin(subnet: str, taken: int, reps: int) -> dict[str, Any]:
    net = ipaddress.ip_network(subnet)
    rs = (A.make_range(net),)
    st = MemoryStore()
    first = int(net.network_address) + 2
    st.fill_ints(net.version, range(first, first + taken), Owner("bulk", "eth0"))
    counter = iter(range(10**9))

    def one() -> None:
        A.allocate(rs, 0, st, Owner(f"rr{next(counter)}", "eth0"))

    samples = _timed(one, reps)
    p50 = statistics.median(samples) * 1e6
    return {
        "name": f"allocator.v{net.version}_{net.prefixlen}_round_robin",
        "value": round(p50, 1),
        "unit": "us/alloc",
        "n": reps,
        "p50": round(p50, 1),
        "p90": round(_pct(samples, 0.9) * 1e6, 1),
        "notes": f"consecutive allocations with {taken} already taken",
    }


def _exec_add(argv: list[str], conf: bytes, cid: str) -> float:
    env = dict(os.environ, CNI_CONTAINERID=cid, CNI_NETNS="/run/netns/unused", CNI_IFNAME="eth0", CNI_PATH="/usr/lib/cni")
    t = time.perf_counter()
    p = subprocess.run(argv, input=conf, capture_output=True, env=dict(env, CNI_COMMAND="ADD"), check=False)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} ADD failed: {p.stdout!r} {p.stderr!r}")
    subprocess.run(argv, input=conf, capture_output=True, env=dict(env, CNI_COMMAND="DEL"), check=False)
    return dt


def _add_exec(reps: int) -> list[dict[str, Any]]:
    ours = [os.path.join(os.path.dirname(sys.executable), "multinic"), "plugin", "host-local"]
    if not os.access(REF, os.X_OK) or not os.access(ours[0], os.X_OK):
        return [{"name": "host_local.add_exec", "value": None, "unit": "ms", "n": 0, "notes": f"skipped: needs {REF} and {ours[0]}"}]
    with tempfile.TemporaryDirectory(prefix="mn-ipam-bench-") as tmp:
        conf = json.dumps({
            "cniVersion": "1.0.0", "name": "benchnet", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": tmp, "ranges": [[{"subnet": "10.88.0.0/16"}]]},
        }).encode()
        # Warm the page cache for both binaries before timing.
        _exec_add(ours, conf, "warm0")
        _exec_add([REF], conf, "warm1")
        mine, ref = [], []
        for i in range(reps):
            mine.append(_exec_add(ours, conf, f"o{i}"))
            ref.append(_exec_add([REF], conf, f"r{i}"))
    m50, r50 = statistics.median(mine) * 1e3, statistics.median(ref) * 1e3
    return [
        {"name": "host_local.add_exec.ours", "value": round(m50, 2), "unit": "ms", "n": reps, "p50": round(m50, 2), "p90": round(_pct(mine, 0.9) * 1e3, 2)},
        {"name": "host_local.add_exec.reference", "value": round(r50, 2), "unit": "ms", "n": reps, "p50": round(r50, 2), "p90": round(_pct(ref, 0.9) * 1e3, 2)},
        {"name": "host_local.add_exec.ratio", "value": round(m50 / r50, 2), "unit": "x", "n": reps, "ratio": round(m50 / r50, 2),
         "notes": "ours p50 / reference p50, interleaved, each ADD followed by an untimed DEL"},
    ]


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    """All host-local IPAM measurements (``quick`` shrinks repetitions, for smoke tests)."""
    reps = 20 if quick else 200
    out = [
        _cold("10.40.0.0/16", 60_000, reps),
        _round_robin("10.40.0.0/16", 60_000, reps),
        _cold("fd40::/64", 1_000_000, reps),
        _round_robin("fd40::/64", 1_000_000, reps),
    ]
    out += _add_exec(5 if quick else 30)
    return out


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
