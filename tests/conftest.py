"""Shared fixtures: real namespaces (tests/support/nsfix.py) and the API server double."""

from __future__ import annotations

import os
import sys

import pytest

from tests.support.nsfix import scene  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def multinic_bin() -> str:
    """The installed console script (the venv's), executed as a runtime would."""
    cand = os.path.join(os.path.dirname(sys.executable), "multinic")
    if not os.access(cand, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    return cand
