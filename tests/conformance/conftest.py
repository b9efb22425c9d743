"""Fixtures for the harness's own tests: root check and wrapper executables for sample plugins."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "conformance" / "broken"


@pytest.fixture
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the harness creates network namespaces")


@pytest.fixture
def sample(tmp_path: Path, need_root: None):  # type: ignore[no-untyped-def]
    """``sample("two_docs")`` → path of an executable running conformance/broken/two_docs.py with this Python."""

    def make(name: str) -> str:
        exe = tmp_path / f"toy-{name.replace('_', '-')}"
        exe.write_text(f'#!/bin/sh\nexec {sys.executable} {BROKEN / (name + ".py")} "$@"\n')
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
        return str(exe)

    return make
