"""Example guest test: ipvlan l2 slaves of a dummy master, each in its own netns.

Runs only in UML (see conftest.py; the host reports it skipped) — copy this
shape for new guest tests: state the features in ``uml_guest``, build
everything inside namespaces from the ``netns``/``make_netns`` fixtures so
teardown is just deleting them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

IpFn = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.uml_guest("dummy", "ipvlan")
def test_ipvlan_l2_slaves_in_netns_talk(ip: IpFn, make_netns: Callable[[], str]) -> None:
    node, pod_a, pod_b = make_netns(), make_netns(), make_netns()
    # The "node uplink": a dummy in its own namespace, so nothing leaks into
    # the guest's root namespace shared with other tests.
    ip("-n", node, "link", "add", "d0", "type", "dummy")
    ip("-n", node, "link", "set", "d0", "up")
    for pod, name, addr in ((pod_a, "iva", "10.77.0.2/24"), (pod_b, "ivb", "10.77.0.3/24")):
        ip("-n", node, "link", "add", "link", "d0", "name", name, "type", "ipvlan", "mode", "l2")
        ip("-n", node, "link", "set", name, "netns", pod)
        ip("-n", pod, "addr", "add", addr, "dev", name)
        ip("-n", pod, "link", "set", name, "up")

    detail = json.loads(ip("-n", pod_a, "-d", "-j", "link", "show", "iva").stdout)[0]
    assert detail["linkinfo"]["info_kind"] == "ipvlan"
    assert detail["linkinfo"]["info_data"]["mode"] == "l2"
    # ipvlan switches between slaves of one master locally, so the pods reach
    # each other although the dummy master drops everything it transmits.
    ping = subprocess.run(
        ["ip", "netns", "exec", pod_a, "ping", "-c1", "-W2", "10.77.0.3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr


@pytest.mark.uml_guest("8021q")
def test_vlan_on_dummy(ip: IpFn, netns: str) -> None:
    ip("-n", netns, "link", "add", "d0", "type", "dummy")
    ip("-n", netns, "link", "add", "link", "d0", "name", "d0.100", "type", "vlan", "id", "100")
    detail = json.loads(ip("-n", netns, "-d", "-j", "link", "show", "d0.100").stdout)[0]
    assert detail["linkinfo"]["info_data"]["id"] == 100
