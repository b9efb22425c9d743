"""static CHECK looks at the addresses on CNI_IFNAME inside the pod's namespace (real netns)."""

from __future__ import annotations

from typing import Any

import pytest

from cni import invoke
from cni.spec.errors import CNIError
from cni.spec.request import Request
from tests.support.nsfix import Scene, sh


def _req(scene: Scene, ns: str, cmd: str, ifname: str = "net1") -> Request:
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "st",
        "type": "macvlan",
        "ipam": {"type": "static", "addresses": [{"address": "10.44.0.5/24"}, {"address": "fd44::5/64"}]},
    }
    return Request(command=cmd, container_id="c1", netns=scene.path(ns), ifname=ifname, config=config)


def test_check_passes_when_every_address_is_on_the_link_and_fails_naming_the_missing_one(scene: Scene) -> None:
    ns = scene.netns("st")
    sh("ip", "link", "add", "net1", "type", "veth", "peer", "name", "peer1", ns=ns)
    sh("ip", "link", "set", "net1", "up", ns=ns)
    sh("ip", "addr", "add", "10.44.0.5/24", "dev", "net1", ns=ns)
    with pytest.raises(CNIError) as ei:
        invoke.ipam(_req(scene, ns, "CHECK"))
    assert ei.value.code == 103 and "fd44::5/64" in ei.value.msg

    sh("ip", "addr", "add", "fd44::5/64", "dev", "net1", "nodad", ns=ns)
    invoke.ipam(_req(scene, ns, "CHECK"))

    # Same address with another prefix length is not the configured address.
    sh("ip", "addr", "del", "10.44.0.5/24", "dev", "net1", ns=ns)
    sh("ip", "addr", "add", "10.44.0.5/16", "dev", "net1", ns=ns)
    with pytest.raises(CNIError, match="10.44.0.5/24"):
        invoke.ipam(_req(scene, ns, "CHECK"))


def test_check_of_a_missing_interface_is_not_found(scene: Scene) -> None:
    ns = scene.netns("st")
    with pytest.raises(CNIError) as ei:
        invoke.ipam(_req(scene, ns, "CHECK", ifname="nothere0"))
    assert ei.value.code == 103 and "nothere0" in ei.value.msg
