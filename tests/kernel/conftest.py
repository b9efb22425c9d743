"""Fixtures for tests that need kernel features the host lacks (ipvlan, VLAN, dummy).

Rules:

* Host-side tests get the session fixture ``uml`` (a :class:`UMLRunner`); it
  skips with the reason from :func:`conformance.uml.uml_available` when
  User-Mode Linux is not installed, and inside a UML guest (no nesting).
* Tests that must run *inside* the guest live in ``tests/kernel/guest/``; on
  the host they are skipped (see ``guest/conftest.py``) and
  ``tests/kernel/test_in_uml.py`` runs them all in one boot.
* Guest runs write only into their scratch dir (``$MULTINIC_UML_SCRATCH``);
  pytest runs in the guest use ``-p no:cacheprovider`` so they do not write
  ``.pytest_cache`` into the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.uml import IN_GUEST_ENV, UMLRunner, uml_available

#: Checkout root: the guest sees the host's file system, so the same path works there.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Seconds a whole guest pytest run may take (boot included); CI can raise it.
GUEST_PYTEST_TIMEOUT = float(os.environ.get("MULTINIC_UML_TIMEOUT", "600"))


def in_uml_guest() -> bool:
    """True when this process runs inside a guest started by conformance.uml."""
    return os.environ.get(IN_GUEST_ENV) == "1"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here (not in pyproject.toml) so the kernel suite is self-contained.
    config.addinivalue_line(
        "markers",
        "uml_guest(*features): test runs only inside a User-Mode Linux guest "
        "(tests/kernel/guest); features name what it needs, e.g. 'ipvlan', '8021q'",
    )


@pytest.fixture(scope="session")
def uml() -> UMLRunner:
    """Runner for User-Mode Linux guests; skips when UML cannot be used here."""
    if in_uml_guest():
        pytest.skip("already inside a UML guest (nested UML is not supported)")
    reason = uml_available()
    if reason is not None:
        pytest.skip(reason)
    return UMLRunner(cwd=REPO_ROOT, pytest_timeout=GUEST_PYTEST_TIMEOUT)
