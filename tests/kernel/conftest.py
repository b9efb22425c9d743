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

import dataclasses
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from conformance.uml import DEFAULT_MODULES, IN_GUEST_ENV, UMLResult, run_in_uml, uml_available

#: Checkout root: the guest sees the host's file system, so the same path works there.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Seconds a whole guest pytest run may take (boot included); CI can raise it.
GUEST_PYTEST_TIMEOUT = float(os.environ.get("MULTINIC_UML_TIMEOUT", "600"))
_JUNIT = "junit.xml"


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


@dataclasses.dataclass(frozen=True)
class GuestCase:
    """One test case from the guest's JUnit XML."""

    nodeid: str
    outcome: str  # "passed" | "failed" | "error" | "skipped"
    message: str = ""
    details: str = ""


@dataclasses.dataclass(frozen=True)
class GuestPytestResult:
    """A pytest run inside UML: the raw :class:`UMLResult` plus parsed cases."""

    uml: UMLResult
    cases: tuple[GuestCase, ...]

    @property
    def exit_code(self) -> int:
        return self.uml.exit_code

    def with_outcome(self, *outcomes: str) -> list[GuestCase]:
        return [c for c in self.cases if c.outcome in outcomes]

    def summary(self) -> str:
        """Readable report of failed/errored cases, or of why nothing ran."""
        bad = self.with_outcome("failed", "error")
        if not bad:
            return (
                f"guest pytest exit {self.exit_code}, {len(self.cases)} case(s)\n"
                f"--- stdout ---\n{self.uml.stdout[-4000:]}\n--- stderr ---\n{self.uml.stderr[-2000:]}"
            )
        parts = [f"{len(bad)} guest test(s) failed in UML:"]
        for case in bad:
            parts.append(f"{case.outcome.upper()} {case.nodeid}: {case.message}\n{case.details}".rstrip())
        return "\n\n".join(parts)


def _parse_junit(data: bytes) -> tuple[GuestCase, ...]:
    cases: list[GuestCase] = []
    for tc in ET.fromstring(data).iter("testcase"):
        # pytest's junit classname is the dotted module path (+ class); the
        # file attribute is not always written, so rebuild a readable id.
        nodeid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        outcome, message, details = "passed", "", ""
        for tag in ("failure", "error", "skipped"):
            child = tc.find(tag)
            if child is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = child.get("message", "")
                details = (child.text or "").strip()
                break
        cases.append(GuestCase(nodeid, outcome, message, details))
    return tuple(cases)


class UMLRunner:
    """What the ``uml`` fixture returns: run commands, Python or pytest in UML."""

    def run(self, argv: Sequence[str], **kwargs: object) -> UMLResult:
        """:func:`conformance.uml.run_in_uml` with the checkout as default cwd."""
        kwargs.setdefault("cwd", str(REPO_ROOT))
        return run_in_uml(argv, **kwargs)  # type: ignore[arg-type]

    def python(self, code: str, **kwargs: object) -> UMLResult:
        """Run a Python snippet with this interpreter (same venv) in the guest."""
        return self.run([sys.executable, "-c", code], **kwargs)

    def pytest(
        self,
        *args: str,
        modules: Sequence[str] = DEFAULT_MODULES,
        timeout: float = GUEST_PYTEST_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> GuestPytestResult:
        """Run ``python -m pytest ARGS`` in the guest and parse its JUnit XML.

        The JUnit file is written into the guest's scratch dir (the only
        place it may write on the host) and collected before it is removed.
        """
        # sh expands $MULTINIC_UML_SCRATCH in the guest; the host does not know the path.
        script = 'exec "$0" -m pytest -p no:cacheprovider --junitxml="$MULTINIC_UML_SCRATCH/' + _JUNIT + '" "$@"'
        result = self.run(
            ["sh", "-c", script, sys.executable, *args],
            modules=modules,
            timeout=timeout,
            env=dict(env or {}),
            collect=[_JUNIT],
        )
        junit = result.files.get(_JUNIT)
        return GuestPytestResult(result, _parse_junit(junit) if junit else ())


@pytest.fixture(scope="session")
def uml() -> UMLRunner:
    """Runner for User-Mode Linux guests; skips when UML cannot be used here."""
    if in_uml_guest():
        pytest.skip("already inside a UML guest (nested UML is not supported)")
    reason = uml_available()
    if reason is not None:
        pytest.skip(reason)
    return UMLRunner()
