"""URL paths of the client: the core group and named groups share one shape below their root."""

from __future__ import annotations

from typing import Any

import pytest

from cni.k8s.client import core_path, group_path


@pytest.mark.parametrize(("args", "want"), [
    (("nodes",), "/api/v1/nodes"),
    (("nodes", None, "node-1"), "/api/v1/nodes/node-1"),
    (("pods", "ns1"), "/api/v1/namespaces/ns1/pods"),
    (("pods", "ns1", "web", "status"), "/api/v1/namespaces/ns1/pods/web/status"),
    (("pods", "ns1", None, "status"), "/api/v1/namespaces/ns1/pods"),  # a subresource needs a name
])
def test_core_path_shapes(args: tuple[Any, ...], want: str) -> None:
    assert core_path(*args) == want


@pytest.mark.parametrize(("args", "want"), [
    (("g.io", "v1", "things"), "/apis/g.io/v1/things"),
    (("g.io", "v1", "things", "ns1", "a"), "/apis/g.io/v1/namespaces/ns1/things/a"),
    (("g.io", "v1", "things", None, "a", "status"), "/apis/g.io/v1/things/a/status"),
])
def test_group_path_shapes(args: tuple[Any, ...], want: str) -> None:
    assert group_path(*args) == want


def test_names_and_namespaces_cannot_change_the_url() -> None:
    # A '/' or '?' in tenant-supplied names is quoted, never a path separator or a query.
    assert core_path("pods", "a/b", "c?d=1") == "/api/v1/namespaces/a%2Fb/pods/c%3Fd%3D1"
    assert group_path("g.io", "v1", "things", "../x", "y#z") == "/apis/g.io/v1/namespaces/..%2Fx/things/y%23z"
