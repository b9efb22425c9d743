"""pytest fixture ``apiserver``: a fresh API server double per test (HTTPS on 127.0.0.1, ephemeral port).

Import it into a conftest with ``from tests.support.fixtures_apiserver import apiserver  # noqa: F401``.
The server is stopped (and its sockets closed) after the test, whatever the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.apiserver import ApiServerDouble


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServerDouble]:
    """A started ``ApiServerDouble`` whose kubeconfigs and service-account dirs live under ``tmp_path``."""
    server = ApiServerDouble(tmp_path / "apiserver")
    server.start()
    try:
        yield server
    finally:
        server.stop()
