"""Fixture module for test_uml_runner.py: one pass, one failure, one skip in the guest.

Deliberately not named test_*.py, so normal collection never picks it up.
"""

from __future__ import annotations

import os

import pytest


def test_passes_in_guest() -> None:
    assert os.environ.get("MULTINIC_IN_UML") == "1"


def test_fails_in_guest() -> None:
    assert os.environ.get("MULTINIC_IN_UML") != "1", "deliberate failure 1234"


def test_skips_in_guest() -> None:
    pytest.skip("deliberate skip")
