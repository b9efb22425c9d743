"""Shared fixtures: real namespaces (tests/support/nsfix.py) and the API server double."""

from __future__ import annotations

import os
import sys

import pytest

from tests.support.nsfix import scene  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Test NADs keep their state (dataDir, data_dir, log_file) under the test's tmp dir, which the default allowedPaths
# (cni.delegator.tenancy) refuses. Widen them for every suite, also in the binaries and daemons it starts; the
# hostile-tenant suite (tests/reliability/test_rel_tenancy.py) removes this to test the real defaults.
os.environ.setdefault("MULTINIC_EXTRA_ALLOWED_PATHS", "/tmp")


@pytest.fixture
def multinic_bin() -> str:
    """The installed console script (the venv's), executed as a runtime would."""
    cand = os.path.join(os.path.dirname(sys.executable), "multinic")
    if not os.access(cand, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    return cand
