"""The one prevResult parser every chained and interface plugin uses."""

from __future__ import annotations

import pytest

from cni.plugin import prev_result
from cni.spec.errors import InvalidConfig
from cni.spec.request import Request


def req(prev: object, version: str = "1.0.0") -> Request:
    return Request("ADD", config={"cniVersion": version, "name": "n", "type": "sbr", "prevResult": prev})


def test_older_version_prev_result_is_read_in_its_own_shape() -> None:
    res = prev_result(req({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1"}}))
    assert res is not None and str(res.ips[0].address) == "10.1.0.5/24" and str(res.ips[0].gateway) == "10.1.0.1"


def test_prev_result_without_version_takes_the_configs() -> None:
    res = prev_result(req({"ips": [{"address": "10.1.0.5/24"}]}, "0.4.0"))
    assert res is not None and res.cni_version == "0.4.0"


@pytest.mark.parametrize("prev", [None, {}])
def test_missing_prev_result_is_none_or_error_7_when_required(prev: object) -> None:
    assert prev_result(req(prev)) is None
    with pytest.raises(InvalidConfig, match="must be called as a chained plugin"):
        prev_result(req(prev), required=True, plugin="sbr")


def test_malformed_prev_result_is_error_7() -> None:
    with pytest.raises(InvalidConfig):
        prev_result(req({"cniVersion": "1.0.0", "ips": [{"address": "nope"}]}))
