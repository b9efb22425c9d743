"""host-local as executables on one dataDir: ours (`multinic plugin host-local`) and the reference.

No namespaces needed: IPAM never touches the netns. Proves the on-disk layout is shared both
ways (round-robin cursor, reservations, release by (containerID, ifname), duplicate detection),
that both take the same flock (mixed concurrent ADDs never duplicate), GC, and that bad input
leaves no file behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REF = "/usr/lib/cni/host-local"
OURS = [os.path.join(os.path.dirname(sys.executable), "multinic"), "plugin", "host-local"]


def need_reference() -> None:
    if not os.access(REF, os.X_OK):
        pytest.skip(f"needs the reference {REF} (apt-get install containernetworking-plugins)")


def conf(data: Path, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    i = {"type": "host-local", "dataDir": str(data), "ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "fd30::/64"}]]}
    i.update(ipam)
    return {"cniVersion": version, "name": "swnet", "type": "bridge", "ipam": i}


def env(cmd: str, cid: str, ifname: str = "eth0", args: str = "") -> dict[str, str]:
    e = dict(os.environ)
    e.update(CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS="/run/netns/unused", CNI_IFNAME=ifname, CNI_PATH="/usr/lib/cni", CNI_ARGS=args)
    return e


def run(argv: list[str], cmd: str, config: dict[str, Any], cid: str, ifname: str = "eth0", args: str = "") -> tuple[int, Any]:
    p = subprocess.run(argv, input=json.dumps(config).encode(), capture_output=True, env=env(cmd, cid, ifname, args), timeout=60, check=False)
    out = p.stdout.decode().strip()
    return p.returncode, (json.loads(out) if out else None)


def add(argv: list[str], config: dict[str, Any], cid: str, ifname: str = "eth0") -> list[str]:
    rc, out = run(argv, "ADD", config, cid, ifname)
    assert rc == 0, out
    return [ip["address"].split("/")[0] for ip in out["ips"]]


def files(d: Path) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d)) if n != "lock"}


@pytest.mark.parametrize("first,second", [("reference", "ours"), ("ours", "reference")], ids=["ref-then-ours", "ours-then-ref"])
def test_switching_binaries_keeps_reservations_cursor_and_releases(tmp_path: Path, first: str, second: str) -> None:
    need_reference()
    a, b = ([REF], OURS) if first == "reference" else (OURS, [REF])
    c = conf(tmp_path)
    d = tmp_path / "swnet"
    got = [add(a, c, f"old{i}") for i in range(4)]
    assert got == [[f"10.30.0.{i + 2}", f"fd30::{i + 2:x}"] for i in range(4)]
    # The second binary continues after the first one's last reserved address in both range sets.
    assert add(b, c, "new0") == ["10.30.0.6", "fd30::6"]
    # It sees the first one's reservations: a repeated ADD of an existing attachment is refused.
    rc, out = run(b, "ADD", c, "old1")
    assert rc != 0 and ("already allocated" in out["msg"] or "duplicate allocation" in out["msg"]), out
    # CHECK and DEL across binaries, by (containerID, ifname) only.
    assert run(b, "CHECK", c, "old2")[0] == 0
    assert run(b, "DEL", c, "old0")[0] == 0
    assert "10.30.0.2" not in files(d) and "fd30::2" not in files(d)
    assert run(b, "DEL", c, "old3", ifname="eth9")[0] == 0  # another interface: nothing released
    assert files(d)["10.30.0.5"] == b"old3\r\neth0"
    # Back to the first binary: it honours the cursor the second one moved, and sees its reservations.
    assert add(a, c, "back0") == ["10.30.0.7", "fd30::7"]
    assert run(a, "CHECK", c, "new0")[0] == 0
    assert run(a, "DEL", c, "new0")[0] == 0
    after = files(d)
    assert "10.30.0.6" not in after
    assert after["last_reserved_ip.0"] == b"10.30.0.7" and after["last_reserved_ip.1"] == b"fd30::7"
    ips = [k for k in after if not k.startswith("last_")]
    assert sorted(ips) == sorted(["10.30.0.3", "10.30.0.4", "10.30.0.5", "10.30.0.7", "fd30::3", "fd30::4", "fd30::5", "fd30::7"])


def test_fifty_parallel_adds_from_both_binaries_never_duplicate(tmp_path: Path) -> None:
    need_reference()
    c = conf(tmp_path, ranges=[[{"subnet": "10.31.0.0/26"}]])  # 61 usable: contention, no exhaustion
    data = json.dumps(c).encode()
    procs = []
    for i in range(50):
        argv = OURS if i % 2 == 0 else [REF]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env("ADD", f"par{i}"))
        assert p.stdin is not None
        p.stdin.write(data)
        p.stdin.close()
        procs.append(p)
    addrs = []
    for p in procs:
        assert p.stdout is not None
        out = p.stdout.read()
        assert p.wait(timeout=120) == 0, out
        addrs.append(json.loads(out)["ips"][0]["address"])
    assert len(addrs) == 50 and len(set(addrs)) == 50
    on_disk = [n for n in os.listdir(tmp_path / "swnet") if n.startswith("10.")]
    assert sorted(on_disk) == sorted(a.split("/")[0] for a in addrs)
    for i in range(50):
        assert (tmp_path / "swnet" / addrs[i].split("/")[0]).read_bytes() == f"par{i}\r\neth0".encode()


def test_gc_by_exec_releases_unlisted_attachments_including_reference_ones(tmp_path: Path) -> None:
    need_reference()
    c = conf(tmp_path)
    add([REF], c, "live")
    add([REF], c, "dead")
    add(OURS, c, "dead2")
    g = dict(conf(tmp_path, version="1.1.0"), **{"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]})
    rc, out = run(OURS, "GC", g, "", ifname="")
    assert rc == 0 and out is None
    left = [n for n in files(tmp_path / "swnet") if not n.startswith("last_")]
    assert sorted(left) == ["10.30.0.2", "fd30::2"]


@pytest.mark.parametrize(
    "ipam,args,code",
    [
        ({"ranges": [[{"subnet": "10.30.0.0/24", "rangeStart": "10.99.0.1"}]]}, "", 7),
        ({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "10.30.0.0/25"}]]}, "", 7),
        ({}, "IP=10.77.0.1", 7),
        ({}, "BOGUS=1", 4),
    ],
)
def test_bad_input_by_exec_is_the_right_code_and_leaves_no_file(tmp_path: Path, ipam: dict[str, Any], args: str, code: int) -> None:
    data = tmp_path / "data"
    rc, out = run(OURS, "ADD", conf(data, **ipam), "bad1", args=args)
    assert rc == 1 and out["code"] == code, out
    assert not data.exists()


def test_exhaustion_by_exec_names_the_range(tmp_path: Path) -> None:
    c = conf(tmp_path, ranges=[[{"subnet": "10.32.0.0/30"}]])
    add(OURS, c, "only")
    rc, out = run(OURS, "ADD", c, "more")
    assert rc == 1 and out["code"] == 101 and "10.32.0.1-10.32.0.2" in out["msg"]
    assert [n for n in os.listdir(tmp_path / "swnet") if n.startswith("10.")] == ["10.32.0.2"]


@pytest.mark.parametrize("addr", ["2001:db8:0:0:1:0:0:1", "2001:db8:0:1:0:0:0:1", "2001:db8::ffff:0:1"])
def test_ipv6_file_names_are_the_same_text_in_both_binaries(tmp_path: Path, addr: str) -> None:
    need_reference()
    c = conf(tmp_path, ranges=[[{"subnet": "2001:db8::/32"}]])
    rc, _ = run(OURS, "ADD", c, "ours", args=f"IP={addr}")
    assert rc == 0
    rc, out = run([REF], "ADD", c, "theirs", args=f"IP={addr}")
    assert rc != 0 and "not available" in out["msg"], out  # the reference found our file under its own name
    assert run([REF], "DEL", c, "ours")[0] == 0
    assert [n for n in os.listdir(tmp_path / "swnet") if n.startswith("2001")] == []
