"""``multinic plugin whereabouts`` as a drop-in binary: CNI protocol on stdin/stdout, error codes, log file format."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest


def call(binary: str, cmd: str, conf: dict[str, Any], *, cid: str = "c1", pod: str = "p1",
         env_extra: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None]:
    env = dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS="/var/run/netns/none",
               CNI_IFNAME="net1", CNI_PATH="/usr/lib/cni", MULTINIC_WHEREABOUTS_FLATFILE="",
               CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID=u1",
               **(env_extra or {}))
    p = subprocess.run([binary, "plugin", "whereabouts"], input=json.dumps(conf).encode(), env=env,
                       capture_output=True, timeout=60, check=False)
    out = p.stdout.decode().strip()
    return p.returncode, (json.loads(out) if out else None)


@pytest.fixture
def conf(tmp_path: Path) -> dict[str, Any]:
    return {"cniVersion": "0.4.0", "name": "wb", "type": "macvlan", "master": "eth0",
            "ipam": {"type": "whereabouts", "range": "172.16.0.0/24", "gateway": "172.16.0.254",
                     "routes": [{"dst": "172.16.1.0/24"}], "dns": {"nameservers": ["10.0.0.10"]},
                     "data_dir": str(tmp_path / "store"), "log_file": str(tmp_path / "whereabouts.log"),
                     "log_level": "debug"}}


def test_add_check_del_over_the_cni_protocol(multinic_bin: str, conf: dict[str, Any], tmp_path: Path) -> None:
    rc, res = call(multinic_bin, "ADD", conf)
    assert rc == 0, res
    assert res == {"cniVersion": "0.4.0",
                   "ips": [{"version": "4", "address": "172.16.0.1/24", "gateway": "172.16.0.254"}],
                   "routes": [{"dst": "172.16.1.0/24"}], "dns": {"nameservers": ["10.0.0.10"]}}
    rc, out = call(multinic_bin, "CHECK", {**conf, "prevResult": res})
    assert rc == 0 and out is None
    assert call(multinic_bin, "DEL", conf) == (0, None)
    assert call(multinic_bin, "DEL", conf) == (0, None)
    rc, err = call(multinic_bin, "CHECK", {**conf, "prevResult": res})
    assert rc == 1 and err is not None and err["code"] == 3

    lines = (tmp_path / "whereabouts.log").read_text().splitlines()
    assert lines, "nothing logged"
    pat = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[(debug|verbose|error|panic)\] ")
    assert all(pat.match(line) for line in lines), lines[:3]
    assert any("IPManagement -- mode: 0 / containerID: c1 / podRef: default/p1" in line for line in lines)


def test_bad_config_is_error_7_naming_the_field_and_leaves_nothing(multinic_bin: str, conf: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    conf["ipam"]["range_start"] = "172.16.9.1"
    rc, err = call(multinic_bin, "ADD", conf)
    assert rc == 1 and err is not None and err["code"] == 7
    assert "ipam.range_start" in err["msg"]
    assert not (tmp_path / "store").exists()


def test_exhaustion_is_a_clear_error(multinic_bin: str, conf: dict[str, Any]) -> None:
    conf["ipam"]["range"] = "172.16.0.0/30"
    del conf["ipam"]["gateway"]  # .254 is not in a /30: that alone would be error 7
    assert call(multinic_bin, "ADD", conf, cid="a", pod="a")[0] == 0
    assert call(multinic_bin, "ADD", conf, cid="b", pod="b")[0] == 0
    rc, err = call(multinic_bin, "ADD", conf, cid="c", pod="c")
    assert rc == 1 and err is not None and err["code"] == 101
    assert err["msg"].startswith("Could not allocate IP in range: ") and "172.16.0.0/30" in err["msg"]


def test_etcd_password_never_reaches_the_log(multinic_bin: str, conf: dict[str, Any], tmp_path: Path) -> None:
    conf["ipam"].update({"datastore": "etcd", "etcd_host": "127.0.0.1:1", "etcd_username": "root",
                         "etcd_password": "hunter2-secret"})
    rc, err = call(multinic_bin, "ADD", conf)
    assert rc == 1 and err is not None and err["code"] == 11
    assert "hunter2" not in json.dumps(err)
    assert "hunter2" not in (tmp_path / "whereabouts.log").read_text()
