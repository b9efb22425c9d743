"""An external chain in a real netns: ``multinic`` exec'ing the reference macvlan + host-local.

The Debian reference binaries run as externals (MULTINIC_EXEC_TYPES), exactly as libcni would
exec them: ADD gives the pod an interface with an address, DEL removes the interface and the
host-local reservation, and nothing is left behind on the host, in the netns or on disk.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.nsfix import REF_CNI, Scene, links_in, need_reference, sh


def _meta(master: str, tmp: Path, extra_plugins: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "meta",
        "type": "multinic",
        "cniDir": str(tmp / "cache"),  # never the real /var/lib/cni/multus
        "delegates": [
            {
                "cniVersion": "1.0.0",
                "name": "mvnet",
                "plugins": [
                    {
                        "type": "macvlan",
                        "master": master,
                        "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": str(tmp / "ipam")},
                    },
                    *(extra_plugins or []),
                ],
            }
        ],
    }


def _run(binary: str, cmd: str, ns_path: str, conf: dict[str, Any], cid: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": ns_path,
        "CNI_IFNAME": "net1",
        "CNI_PATH": REF_CNI,
        "MULTINIC_EXEC_TYPES": "macvlan,host-local",
    }
    return subprocess.run([binary], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60, check=False)


def _host_state_of(master: str) -> dict[str, list[str]]:
    """Host state our chain could leak through its master: child links and routes on it.

    Other engineers' tests run in parallel on this host, so a whole-host snapshot is not
    stable; everything a macvlan chain could leave on the host hangs off its master.
    """
    links = [ln.split(": ")[1] for ln in sh("ip", "-o", "link", "show").splitlines() if f"@{master}:" in ln]
    routes = [ln for ln in sh("ip", "-4", "route", "show", "table", "all").splitlines() if f"dev {master}" in ln]
    return {"links": sorted(links), "routes": sorted(routes)}


def _reservations(tmp: Path) -> list[str]:
    d = tmp / "ipam" / "mvnet"
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.name not in ("lock",) and not p.name.startswith("last_reserved_ip"))


def test_add_then_del_through_reference_binaries(scene: Scene, multinic_bin: str, tmp_path: Path) -> None:
    need_reference("macvlan", "host-local")
    ns = scene.netns("ec")
    master = scene.veth_uplink()
    before = _host_state_of(master)
    cid = f"ext-{scene.tag}"
    conf = _meta(master, tmp_path)

    p = _run(multinic_bin, "ADD", scene.path(ns), conf, cid)
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"][0]["name"] == "net1" and result["interfaces"][0]["sandbox"] == scene.path(ns)
    addr = ipaddress.ip_interface(result["ips"][0]["address"])
    assert addr in ipaddress.ip_network("10.77.0.0/24") and result["ips"][0]["gateway"] == "10.77.0.1"

    # The kernel agrees: a macvlan on our master, with the address, inside the netns.
    detail = sh("ip", "-d", "-n", ns, "link", "show", "net1")
    assert "macvlan" in detail and "mode bridge" in detail
    assert f"inet {addr.with_prefixlen}" in sh("ip", "-n", ns, "-o", "addr", "show", "dev", "net1")
    assert "net1" not in links_in(None), "the interface must live in the pod netns, not on the host"
    assert _reservations(tmp_path) == [str(addr.ip)]
    assert (tmp_path / "ipam" / "mvnet" / str(addr.ip)).read_text().startswith(cid)

    del_conf = {**conf, "prevResult": result}
    p = _run(multinic_bin, "DEL", scene.path(ns), del_conf, cid)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == b""
    assert links_in(ns) == {"lo"}
    assert _reservations(tmp_path) == []
    assert not list((tmp_path / "cache").rglob(f"*{cid}*")), "the attachment cache entry is removed by DEL"

    # DEL is idempotent: a second one (runtime retry) succeeds and changes nothing.
    p = _run(multinic_bin, "DEL", scene.path(ns), conf, cid)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _host_state_of(master) == before


def test_failing_chain_rolls_back_the_reference_plugins(scene: Scene, multinic_bin: str, tmp_path: Path) -> None:
    need_reference("macvlan", "host-local")
    ns = scene.netns("ef")
    master = scene.veth_uplink()
    before = _host_state_of(master)
    cid = f"rb-{scene.tag}"
    # A second chained plugin that the runtime cannot find: ADD fails after macvlan succeeded.
    conf = _meta(master, tmp_path, extra_plugins=[{"type": "no-such-chained-plugin"}])

    p = _run(multinic_bin, "ADD", scene.path(ns), conf, cid)
    assert p.returncode != 0
    doc = json.loads(p.stdout)
    assert doc["code"] == 103 and "no-such-chained-plugin" in doc["msg"]
    assert links_in(ns) == {"lo"}, "macvlan must be rolled back"
    assert _reservations(tmp_path) == [], "the host-local reservation must be released"
    assert _host_state_of(master) == before


def test_reference_error_keeps_its_code(scene: Scene, multinic_bin: str, tmp_path: Path) -> None:
    need_reference("macvlan", "host-local")
    ns = scene.netns("ee")
    conf = _meta("no-such-master0", tmp_path)
    p = _run(multinic_bin, "ADD", scene.path(ns), conf, f"er-{scene.tag}")
    assert p.returncode != 0
    doc = json.loads(p.stdout)
    # The reference macvlan 1.1.1 answers {"code": 999, "msg": "Link not found"}: its code and
    # message must reach the runtime unchanged (we only add the attachment as context).
    assert doc["code"] == 999 and "Link not found" in doc["msg"], doc
    assert links_in(ns) == {"lo"} and _reservations(tmp_path) == []


@pytest.fixture(autouse=True)
def _no_leftover_namespaces() -> Any:
    """The scene fixture removes its namespaces; make sure the plugins created none of their own."""
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    yield
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert not {n for n in after - before if n.startswith(("mnec-", "mnef-", "mnee-"))}, "a test namespace was left behind"
