"""Tests in this directory run only inside a User-Mode Linux guest.

Every test here is implicitly marked ``uml_guest``; on the host it is skipped
with a reason naming the features it needs (from ``@pytest.mark.uml_guest(...)``,
default ipvlan).  ``tests/kernel/test_in_uml.py`` boots one guest and runs this
whole directory there, as guest root with its own network stack and the
modules of ``conformance.uml.DEFAULT_MODULES`` loaded.

Rules for guest tests: create every link inside a netns of your own (``netns``
fixture) or delete it in teardown — the guest is shared by all tests of the
run; write files only under ``tmp_path`` (the guest's /tmp is a tmpfs).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from conformance.uml import IN_GUEST_ENV

_DEFAULT_FEATURES = ("ipvlan",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    in_guest = os.environ.get(IN_GUEST_ENV) == "1"
    for item in items:
        if not str(item.path).startswith(here + os.sep):
            continue
        item.add_marker(pytest.mark.uml)  # the project-wide marker for UML tests
        marker = item.get_closest_marker("uml_guest")
        if marker is None:
            item.add_marker(pytest.mark.uml_guest(*_DEFAULT_FEATURES))
            features = _DEFAULT_FEATURES
        else:
            features = tuple(marker.args) or _DEFAULT_FEATURES
        if not in_guest:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(features)}: run via tests/kernel (UML)"))


IpFn = Callable[..., subprocess.CompletedProcess[str]]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; fail the test with ip's stderr if it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"ip {' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


@pytest.fixture
def ip() -> IpFn:
    """``ip(*args)`` runner (a fixture because test modules here are not a package)."""
    return _ip


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh named network namespace, deleted (with its links) afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Factory for several namespaces; all are deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        _ip("netns", "add", name)
        made.append(name)
        return name

    yield make
    for name in reversed(made):
        subprocess.run(["ip", "netns", "del", name], check=False)
