"""Run ``tests/kernel/guest`` inside one User-Mode Linux boot and check the result.

The guest run is a session fixture: one boot for the whole directory (~2 s
boot + guest pytest start-up); the host tests below only inspect its JUnit
result.  Without UML the ``uml`` fixture skips them with the reason.

Select fewer guest tests with ``MULTINIC_UML_GUEST_ARGS`` (extra pytest
arguments for the guest run, e.g. ``-k ipvlan``).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from conformance.uml import GuestPytestResult, UMLRunner

GUEST_DIR = Path(__file__).resolve().parent / "guest"

# Booting UML marks these `uml`; pytest-timeout is disabled for them because
# the session fixture's guest run has its own, longer timeout
# (MULTINIC_UML_TIMEOUT) and kills the guest itself.
pytestmark = [pytest.mark.uml, pytest.mark.timeout(0)]


@pytest.fixture(scope="session")
def guest_run(uml: UMLRunner) -> GuestPytestResult:
    extra = shlex.split(os.environ.get("MULTINIC_UML_GUEST_ARGS", ""))
    return uml.pytest(str(GUEST_DIR), "-q", "-rfEs", *extra)


def test_guest_tests_ran(guest_run: GuestPytestResult) -> None:
    # Exit 5 = nothing collected; 2/3/4 = collection error/internal/usage error:
    # no JUnit cases at all means the run itself broke, so show its output.
    assert guest_run.cases, guest_run.summary()
    assert guest_run.with_outcome("passed"), "no guest test passed:\n" + guest_run.summary()


def test_every_guest_test_passed(guest_run: GuestPytestResult) -> None:
    bad = guest_run.with_outcome("failed", "error")
    assert not bad, guest_run.summary()
    # Skips inside the guest are allowed (a test may need something UML lacks)
    # but the exit code must agree with the cases.
    assert guest_run.exit_code == 0, guest_run.summary()
