"""cni/netlink/rtnl.py on the real kernel: IPRoute's answers from pyroute2's message layer, one plain socket.

Every test works in a namespace of its own (``scene``), entered by the socket only; nothing on
the host is touched. What is checked is what callers rely on: answers in request order, errors
as pyroute2's ``NetlinkError`` with the kernel's errno, a failed request that leaves the socket
usable, dump filters, and that pyroute2's package body is never run (yet still works when a
caller asks for ``IPRoute``).
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cni import netns
from cni.netlink import rtnl
from tests.support.nsfix import Scene, sh

pytestmark = pytest.mark.root


@pytest.fixture
def sock(scene: Scene) -> Iterator[rtnl.Rtnl]:
    name = scene.netns("rt")
    with netns.entered(scene.path(name)):
        s = rtnl.Rtnl()
    try:
        yield s
    finally:
        s.close()


def _dummy(sock: rtnl.Rtnl, name: str) -> int:
    """A veth whose peer is ``<name>p`` (this kernel has no dummy driver); the index of ``name``."""
    sock.link("add", ifname=name, kind="veth", peer=f"{name}p")
    (idx,) = sock.link_lookup(ifname=name)
    return idx


def test_links_by_name_and_index_in_request_order(sock: rtnl.Rtnl) -> None:
    a, b = _dummy(sock, "d0"), _dummy(sock, "d1")
    assert sock.link_lookup(ifname="nope0") == []
    msgs = sock.get_links(b, a, 1)  # three requests on the wire before the first answer is read
    assert [m.get_attr("IFLA_IFNAME") for m in msgs] == ["d1", "d0", "lo"]
    assert {m.get_attr("IFLA_IFNAME") for m in sock.get_links()} == {"lo", "d0", "d0p", "d1", "d1p"}
    (m,) = sock.link("get", ifname="d0")
    assert m["index"] == a and m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "veth"


def test_kernel_errors_are_netlink_errors_and_the_socket_stays_usable(sock: rtnl.Rtnl) -> None:
    NetlinkError = rtnl.netlink_error()
    _dummy(sock, "d0")
    with pytest.raises(NetlinkError) as ei:
        sock.link("add", ifname="d0", kind="veth", peer="d9")
    assert ei.value.code == errno.EEXIST
    with pytest.raises(NetlinkError) as ei:
        sock.link("del", ifname="gone0")
    assert ei.value.code == errno.ENODEV
    # The failed requests' answers were consumed: the next one gets its own answer.
    idx = _dummy(sock, "d1")
    assert sock.get_links(idx)[0].get_attr("IFLA_IFNAME") == "d1"


def test_addresses_routes_and_rules_round_trip(sock: rtnl.Rtnl, scene: Scene) -> None:
    idx = _dummy(sock, "d0")
    other = _dummy(sock, "d1")
    sock.link("set", index=idx, state="up")
    sock.addr("add", index=idx, address="10.99.0.2", prefixlen=24, broadcast="10.99.0.255")
    sock.addr("add", index=other, address="10.98.0.2", prefixlen=24)
    got = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in sock.get_addr(index=idx, family=socket.AF_INET)]
    assert got == [("10.99.0.2", 24)]  # the other link's address is filtered out
    sock.route("add", dst="10.50.0.0/16", gateway="10.99.0.1", oif=idx, table=123, proto=3)
    routes = sock.get_routes(family=socket.AF_INET, table=123)
    assert [(r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_GATEWAY"), r["proto"]) for r in routes] == [
        ("10.50.0.0", 16, "10.99.0.1", 3)]
    assert all(r.get_attr("RTA_TABLE") == 254 for r in sock.get_routes(family=socket.AF_INET, table=254))
    sock.rule("add", family=socket.AF_INET, src="10.99.0.2", src_len=32, table=123, priority=1234)
    rules = [r for r in sock.get_rules(family=socket.AF_INET) if r.get_attr("FRA_PRIORITY") == 1234]
    assert [(r.get_attr("FRA_SRC"), r.get_attr("FRA_TABLE")) for r in rules] == [("10.99.0.2", 123)]
    # What the kernel says through iproute2 agrees (not our own decoding reading our own encoding).
    ns = scene.namespaces[-1]
    shown = json.loads(sh("ip", "-d", "-j", "route", "show", "table", "123", ns=ns))
    assert shown[0]["dst"] == "10.50.0.0/16" and shown[0]["gateway"] == "10.99.0.1" and shown[0]["protocol"] == "boot"
    sock.rule("del", family=socket.AF_INET, src="10.99.0.2", src_len=32, table=123, priority=1234)
    sock.route("del", dst="10.50.0.0/16", oif=idx, table=123)
    assert sock.get_routes(family=socket.AF_INET, table=123) == []
    sock.link("del", ifname="d0")
    assert sock.link_lookup(ifname="d0") == []


def test_pyroute2_package_body_never_runs_yet_iproute_still_works() -> None:
    code = (
        "import sys\n"
        "from cni.netlink.rtnl import Rtnl\n"
        "s = Rtnl(); s.link_lookup(ifname='lo'); s.close()\n"
        "assert 'asyncio' not in sys.modules and 'pyroute2.iproute' not in sys.modules, 'package body ran'\n"
        "from pyroute2 import IPRoute\n"  # a caller that wants the whole library gets it
        "with IPRoute() as ipr:\n"
        "    assert ipr.link_lookup(ifname='lo') == [1]\n"
        "import pyroute2; assert pyroute2.__version__ and 'asyncio' in sys.modules\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-3000:]


def test_name_and_index_lookups_answer_in_the_sockets_namespace(sock: rtnl.Rtnl) -> None:
    # link_lookup(ifname=) and link_name use ioctls on the socket: they must see the socket's namespace (a pod's
    # here), not the calling thread's (the host), and agree with the kernel's own link messages.
    idx = _dummy(sock, "d0")
    (msg,) = sock.link("get", ifname="d0")
    assert sock.link_lookup(ifname="d0") == [msg["index"]] == [idx]
    assert sock.link_name(idx) == "d0" and sock.link_name(1) == "lo"
    host = rtnl.Rtnl()  # this thread is in the host namespace
    try:
        NetlinkError = rtnl.netlink_error()
        try:
            in_host = [m["index"] for m in host.link("get", ifname="d0")]
        except NetlinkError:
            in_host = []
        assert host.link_lookup(ifname="d0") == in_host  # whatever the host has, not the pod's d0
        assert host.link_name(1) == "lo" and host.link_name(idx) == (
            host.get_links(idx)[0].get_attr("IFLA_IFNAME") if host.link_lookup(index=idx) else None)
    finally:
        host.close()
    assert sock.link_lookup(ifname="nope0") == [] and sock.link_name(999999) is None
    # Names the ioctl cannot carry go to the kernel by netlink, which refuses them: no truncated-name match.
    sock.link("add", ifname="abcdefghijklmno", kind="veth", peer="abcp")
    assert sock.link_lookup(ifname="abcdefghijklmno") != []
    assert sock.link_lookup(ifname="abcdefghijklmnop") == []
    assert sock.link_lookup(ifname="") == []
