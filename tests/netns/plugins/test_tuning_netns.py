"""tuning in real namespaces: values applied, DEL restores everything (sysctls too), bad keys and
the allowlist refuse before anything changes, CHECK, and a differential run of the reference.

Intentional difference from the reference (asserted): the reference leaves sysctls changed after
DEL (plugins#493); ours restores them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cni.spec.errors import CNIError
from cni.spec.request import Request
from plugins import tuning
from tests.support.nsfix import REF_CNI, Scene, need_reference, sh


def pod_with_net1(scene: Scene) -> str:
    pod = scene.netns("tun")
    sh("ip", "link", "add", "net1", "type", "veth", "peer", "name", "peer1", ns=pod)
    sh("ip", "link", "set", "net1", "up", ns=pod)
    return pod


def conf(pod: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "tunnet", "type": "tuning", "dataDir": str(tmp_path / "tuning"),
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": f"/run/netns/{pod}"}],
                       "ips": [{"address": "10.151.0.5/24", "interface": 0}]},
    }
    c.update(extra)
    return c


FULL = {"mac": "02:11:22:33:44:55", "mtu": 1400, "promisc": True, "allmulti": True, "txQLen": 500,
        "sysctl": {"net.ipv4.conf.IFNAME.rp_filter": "2", "net/ipv6/conf/IFNAME/accept_ra": "0", "net.ipv4.ip_forward": "1"}}


def run(cmd: str, pod: str, config: dict[str, Any]) -> Any:
    return tuning.PLUGIN.run(Request(command=cmd, container_id="c1", netns=f"/run/netns/{pod}", ifname="net1",
                                     path=(REF_CNI,), config=config))


def observe(pod: str) -> dict[str, Any]:
    link = json.loads(sh("ip", "-j", "-d", "link", "show", "net1", ns=pod))[0]
    sysctls = {k: sh("cat", f"/proc/sys/{k}", ns=pod).strip() for k in
               ("net/ipv4/conf/net1/rp_filter", "net/ipv6/conf/net1/accept_ra", "net/ipv4/ip_forward")}
    return {"mac": link["address"], "mtu": link["mtu"], "txqlen": link["txqlen"], "promisc": link["promiscuity"] > 0,
            "allmulti": "ALLMULTI" in link["flags"], **sysctls}


@pytest.fixture(autouse=True)
def _no_allowlist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never read the machine's /etc/cni/tuning/allowlist.conf in tests.
    monkeypatch.setenv(tuning.ALLOWLIST_ENV, str(tmp_path / "absent-allowlist.conf"))


def test_add_applies_everything_and_del_restores_everything(scene: Scene, tmp_path: Path) -> None:
    pod = pod_with_net1(scene)
    before = observe(pod)
    res = run("ADD", pod, conf(pod, tmp_path, **FULL))
    assert res.interfaces[0].mac == "02:11:22:33:44:55"
    after = observe(pod)
    assert after == {"mac": "02:11:22:33:44:55", "mtu": 1400, "txqlen": 500, "promisc": True, "allmulti": True,
                     "net/ipv4/conf/net1/rp_filter": "2", "net/ipv6/conf/net1/accept_ra": "0", "net/ipv4/ip_forward": "1"}
    backup = tmp_path / "tuning" / "c1:net1.json"
    assert (backup.stat().st_mode & 0o777) == 0o600
    run("CHECK", pod, conf(pod, tmp_path, **FULL))
    run("DEL", pod, conf(pod, tmp_path, **FULL))
    assert observe(pod) == before
    assert not backup.exists()
    run("DEL", pod, conf(pod, tmp_path, **FULL))  # idempotent


def test_repeated_add_keeps_the_true_originals(scene: Scene, tmp_path: Path) -> None:
    pod = pod_with_net1(scene)
    before = observe(pod)
    run("ADD", pod, conf(pod, tmp_path, **FULL))
    run("ADD", pod, conf(pod, tmp_path, **{**FULL, "mtu": 1300}))
    run("DEL", pod, conf(pod, tmp_path))
    assert observe(pod) == before


@pytest.mark.parametrize("key", ["net/../kernel/hostname", "../../kernel/hostname", "net.ipv4.conf.IFNAME.no_such_thing",
                                 "net/ipv4/conf/IFNAME/../../../../kernel/hostname", "kernel.hostname"])
def test_bad_sysctl_key_is_error_7_and_nothing_is_applied(scene: Scene, tmp_path: Path, key: str) -> None:
    pod = pod_with_net1(scene)
    before = observe(pod)
    hostname = sh("cat", "/proc/sys/kernel/hostname", ns=pod)
    with pytest.raises(CNIError) as ei:
        run("ADD", pod, conf(pod, tmp_path, **{**FULL, "sysctl": {**FULL["sysctl"], key: "x"}}))
    assert ei.value.code == 7
    assert observe(pod) == before
    assert sh("cat", "/proc/sys/kernel/hostname", ns=pod) == hostname
    assert not (tmp_path / "tuning" / "c1:net1.json").exists()


def test_allowlist_refusal_is_policy_error_and_nothing_is_applied(scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pod = pod_with_net1(scene)
    allow = tmp_path / "allowlist.conf"
    allow.write_text("^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n^net\\.ipv6\\.conf\\.IFNAME\\.[a-z_]*$\n")
    monkeypatch.setenv(tuning.ALLOWLIST_ENV, str(allow))
    before = observe(pod)
    with pytest.raises(CNIError) as ei:
        run("ADD", pod, conf(pod, tmp_path, mtu=1400, sysctl={"net.ipv4.conf.IFNAME.rp_filter": "2", "net.ipv4.ip_forward": "1"}))
    assert ei.value.code == 102 and "net.ipv4.ip_forward" in ei.value.msg
    assert observe(pod) == before
    run("ADD", pod, conf(pod, tmp_path, sysctl={"net.ipv4.conf.IFNAME.rp_filter": "2"}))  # allowed one passes
    assert observe(pod)["net/ipv4/conf/net1/rp_filter"] == "2"


def test_failure_midway_undoes_earlier_changes(scene: Scene, tmp_path: Path) -> None:
    pod = pod_with_net1(scene)
    before = observe(pod)
    # The kernel refuses an MTU above the veth maximum after sysctls and the MAC were applied.
    with pytest.raises(CNIError):
        run("ADD", pod, conf(pod, tmp_path, **{**FULL, "mtu": 70000}))
    assert observe(pod) == before
    assert not (tmp_path / "tuning" / "c1:net1.json").exists()


def test_missing_prev_result_is_error_7(scene: Scene, tmp_path: Path) -> None:
    pod = pod_with_net1(scene)
    c = conf(pod, tmp_path, **FULL)
    del c["prevResult"]
    with pytest.raises(CNIError) as ei:
        run("ADD", pod, c)
    assert ei.value.code == 7


def test_missing_netns_is_error_8_on_add_and_check_and_del_still_succeeds(scene: Scene, tmp_path: Path) -> None:
    # Code 8 is libcni's ErrInvalidNetNS, what every other plugin returns (tuning used to say 103).
    pod = pod_with_net1(scene)
    run("ADD", pod, conf(pod, tmp_path, **FULL))
    backup = tmp_path / "tuning" / "c1:net1.json"
    assert backup.exists()
    sh("ip", "netns", "del", pod)
    for cmd in ("ADD", "CHECK"):
        with pytest.raises(CNIError) as ei:
            run(cmd, pod, conf(pod, tmp_path, **FULL))
        assert ei.value.code == 8, (cmd, ei.value)
        assert f"/run/netns/{pod}" in ei.value.msg
    assert backup.exists()  # the failed ADD neither rewrote nor dropped the first ADD's originals
    run("DEL", pod, conf(pod, tmp_path, **FULL))  # the values went with the namespace: DEL only drops the state
    assert not backup.exists()
    run("DEL", pod, conf(pod, tmp_path, **FULL))


def test_check_detects_drift_including_ifname_sysctls(scene: Scene, tmp_path: Path) -> None:
    pod = pod_with_net1(scene)
    run("ADD", pod, conf(pod, tmp_path, **FULL))
    sh("sysctl", "-qw", "net.ipv4.conf.net1.rp_filter=0", ns=pod)
    with pytest.raises(CNIError) as ei:
        run("CHECK", pod, conf(pod, tmp_path, **FULL))
    assert ei.value.code == 106 and "rp_filter" in ei.value.msg
    sh("sysctl", "-qw", "net.ipv4.conf.net1.rp_filter=2", ns=pod)
    sh("ip", "link", "set", "net1", "mtu", "1500", ns=pod)
    with pytest.raises(CNIError) as ei:
        run("CHECK", pod, conf(pod, tmp_path, **FULL))
    assert "mtu" in ei.value.msg


def test_differential_against_the_reference(scene: Scene, tmp_path: Path) -> None:
    need_reference("tuning")
    ours, ref = pod_with_net1(scene), pod_with_net1(scene)
    before, before_ours = observe(ref), observe(ours)
    # txQLen is not in reference 1.1.1; compare the keys both know.
    common = {k: v for k, v in FULL.items() if k != "txQLen"}
    cfg = conf(ref, tmp_path, **common)
    cfg["dataDir"] = str(tmp_path / "ref-tuning")
    env = dict(os.environ, CNI_CONTAINERID="c1", CNI_NETNS=f"/run/netns/{ref}", CNI_IFNAME="net1", CNI_PATH=REF_CNI)
    p = subprocess.run([f"{REF_CNI}/tuning"], input=json.dumps(cfg).encode(), env={**env, "CNI_COMMAND": "ADD"}, capture_output=True, check=False)
    assert p.returncode == 0, p.stdout
    ref_result = json.loads(p.stdout)
    res = run("ADD", ours, conf(ours, tmp_path, **common))
    o, r = observe(ours), observe(ref)
    assert {k: v for k, v in o.items() if k != "txqlen"} == {k: v for k, v in r.items() if k != "txqlen"}
    assert ref_result["interfaces"][0]["mac"] == res.interfaces[0].mac
    p = subprocess.run([f"{REF_CNI}/tuning"], input=json.dumps(cfg).encode(), env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, check=False)
    assert p.returncode == 0
    run("DEL", ours, conf(ours, tmp_path, **common))
    o, r = observe(ours), observe(ref)
    link_keys = ("mac", "mtu", "txqlen", "promisc", "allmulti")
    assert {k: r[k] for k in link_keys} == {k: before[k] for k in link_keys}
    assert {k: o[k] for k in link_keys} == {k: before_ours[k] for k in link_keys}
    # plugins#493: the reference leaves the sysctls as ADD set them; we restore them.
    assert r["net/ipv4/conf/net1/rp_filter"] == "2"
    assert o["net/ipv4/conf/net1/rp_filter"] == before["net/ipv4/conf/net1/rp_filter"]
    assert o["net/ipv4/ip_forward"] == before["net/ipv4/ip_forward"]
