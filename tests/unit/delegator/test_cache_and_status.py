"""The attachment cache (crash safety, damage tolerance, modes) and network-status shape."""

from __future__ import annotations

import ipaddress
import os
import stat
from typing import Any

import pytest

from cni.delegator import cache
from cni.delegator.plan import Attachment
from cni.k8s.network_status import default_gateways, entries_for
from cni.spec.config import conflist_from
from cni.spec.errors import InvalidConfig
from cni.spec.result import DNS, Interface, IPConfig, Result, Route


def att(i: int, ifname: str, primary: bool = False) -> Attachment:
    cl = conflist_from({"cniVersion": "1.0.0", "name": f"n{i}", "type": "macvlan"})
    return Attachment(i, ifname, f"default/n{i}", cl, primary=primary)


def test_cache_round_trip_and_modes(tmp_path: object) -> None:
    d = os.path.join(str(tmp_path), "cache")
    rec = cache.Record("cid1", "/run/netns/x", "default", "pod", "uid", [cache.Entry(att(0, "eth0", True)), cache.Entry(att(1, "net1"))])
    cache.save(d, rec)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(d, "cid1")).st_mode) == 0o600
    got = cache.load(d, "cid1")
    assert got is not None and not got.damaged
    assert [e.attachment.ifname for e in got.entries] == ["eth0", "net1"] and got.pod_uid == "uid"
    assert not [f for f in os.listdir(d) if f not in ("cid1", cache.HISTORY)]  # no temp files left


def test_truncated_cache_still_yields_complete_records(tmp_path: object) -> None:
    d = str(tmp_path)
    cache.save(d, cache.Record("cid2", "", "ns", "p", "u", [cache.Entry(att(i, f"net{i}")) for i in range(3)]))
    p = os.path.join(d, "cid2")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) - 40])  # cut into the last line
    got = cache.load(d, "cid2")
    assert got is not None and got.damaged
    # The header carries the whole plan: the attachment whose own line was cut is still known.
    assert [e.attachment.ifname for e in got.entries] == ["net0", "net1", "net2"]


def test_cache_with_damaged_header_keeps_the_attachment_lines(tmp_path: object) -> None:
    d = str(tmp_path)
    cache.save(d, cache.Record("cid3", "", "ns", "p", "u", [cache.Entry(att(i, f"net{i}")) for i in range(2)]))
    p = os.path.join(d, "cid3")
    lines = open(p, "rb").read().split(b"\n")
    open(p, "wb").write(b"{garbage\n" + b"\n".join(lines[1:]))
    got = cache.load(d, "cid3")
    assert got is not None and got.damaged
    assert [e.attachment.ifname for e in got.entries] == ["net0", "net1"]


def test_cache_entry_with_an_unknown_state_is_damage_not_a_made_attachment(tmp_path: object) -> None:
    """An edited or corrupt state is not trusted: the entry counts as not made and the record as damaged,
    so DEL also consults the pod and config for what may exist."""
    d = str(tmp_path)
    rec = cache.Record("cid4", "", "ns", "p", "u", [cache.Entry(att(0, "eth0", True)), cache.Entry(att(1, "net1"))])
    rec.entries[0].state = "added"
    rec.entries[1].state = "added"
    cache.save(d, rec)
    p = os.path.join(d, "cid4")
    text = open(p).read()
    open(p, "w").write(text.replace('"state":"added"', '"state":"half-done"', 1))
    got = cache.load(d, "cid4")
    assert got is not None and got.damaged
    assert [e.state for e in got.entries] == ["planned", "added"]


def test_cache_refuses_path_traversal(tmp_path: object) -> None:
    with pytest.raises(InvalidConfig):
        cache.path_for(str(tmp_path), "../etc")


def test_network_status_shape_matches_nad_client() -> None:
    res = Result(
        cni_version="1.0.0",
        interfaces=(Interface("net1", mac="86:1d:96:ff:55:0d", sandbox="/run/netns/x", mtu=1400),),
        ips=(IPConfig(ipaddress.ip_interface("192.168.1.205/24"), ipaddress.ip_address("192.168.1.1"), 0),),
        routes=(Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("192.168.1.1")),),
    )
    (e,) = entries_for("default/macvlan-conf", "net1", res, default=False)
    assert e == {"name": "default/macvlan-conf", "interface": "net1", "ips": ["192.168.1.205"],
                 "mac": "86:1d:96:ff:55:0d", "mtu": 1400, "dns": {}}
    (p,) = entries_for("cbr0", "eth0", res.with_(dns=DNS(nameservers=("10.0.0.10",))), default=True)
    assert p["default"] is True and p["dns"] == {"nameservers": ["10.0.0.10"]}
    assert default_gateways(res) == ["192.168.1.1"]


def test_status_entry_for_result_without_sandbox_interface() -> None:
    (e,) = entries_for("ns/ipam-only", "net2", Result(), default=False)
    assert e == {"name": "ns/ipam-only", "interface": "net2", "dns": {}}


def test_the_plan_write_leaves_a_history_line_that_a_completed_del_drops(tmp_path: Any) -> None:
    import time

    d = str(tmp_path / "cache")
    before = time.time()
    for cid in ("cid9", "cid8"):
        cache.save(d, cache.Record(cid, "/run/netns/x", "ns1", "pod9", "uid", [cache.Entry(att(0, "eth0", True))]))
    cache.save(d, cache.Record("cid9", "/run/netns/x", "ns1", "pod9", "uid", [cache.Entry(att(0, "eth0", True))]),
               durable=False)  # a result update: no new line
    hist = cache.history(d)
    assert sorted(hist) == ["cid8", "cid9"] and hist["cid9"][1] == "ns1/pod9"
    assert before - 1 <= hist["cid9"][0] <= time.time()
    assert stat.S_IMODE(os.stat(os.path.join(d, cache.HISTORY)).st_mode) == 0o600
    with open(os.path.join(d, cache.HISTORY), "rb") as f:
        assert f.read().count(b"\n") == 2
    # A record lost any other way (deleted by hand, a damaged disk) leaves its line for `multinic leaks`...
    os.unlink(cache.path_for(d, "cid8"))
    # ...a completed DEL (cache.remove) leaves nothing on the node that names the sandbox.
    cache.remove(d, "cid9")
    assert list(cache.history(d)) == ["cid8"]
    assert cache.list_ids(d) == []


def test_history_appends_and_forgets_from_threads_lose_no_line(tmp_path: Any) -> None:
    import threading

    d = str(tmp_path / "cache")
    os.makedirs(d)

    def work(t: int) -> None:
        for i in range(40):
            cache.save(d, cache.Record(f"c{t}-{i}", "", "ns", "p", "", [cache.Entry(att(0, "eth0", True))]))
            if i % 2:
                cache.remove(d, f"c{t}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(cache.history(d)) == sorted(f"c{t}-{i}" for t in range(6) for i in range(0, 40, 2))


def test_the_history_is_bounded(tmp_path: Any, monkeypatch: Any) -> None:
    d = str(tmp_path / "cache")
    monkeypatch.setattr(cache, "HISTORY_MAX", 4096)
    for i in range(400):
        cache.save(d, cache.Record(f"cid{i:04d}", "", "ns", "p", "", [cache.Entry(att(0, "eth0", True))]))
    assert os.path.getsize(os.path.join(d, cache.HISTORY)) <= 4096 + 64
    hist = cache.history(d)
    assert "cid0399" in hist and "cid0000" not in hist and len(hist) > 40
