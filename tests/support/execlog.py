"""Count the tools a plugin execs: a PATH directory of wrappers that log their name, then exec the real one.

A behaviour test (which programs ran, in what order) without timing anything: the wrappers add
one ``sh`` per call but the plugin under test still talks to the real iptables/nft/conntrack.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TOOLS = ("iptables-save", "ip6tables-save", "iptables-restore", "ip6tables-restore", "nft", "conntrack", "ip")


class ExecLog:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.file = directory / "calls.log"

    def calls(self) -> list[str]:
        """The tools run since the last ``clear``, by name, in order."""
        return self.file.read_text().split() if self.file.exists() else []

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)


def install(monkeypatch: pytest.MonkeyPatch, directory: Path, tools: tuple[str, ...] = TOOLS) -> ExecLog:
    """Put logging wrappers of ``tools`` first on PATH (for this test only)."""
    directory.mkdir(parents=True, exist_ok=True)
    log = ExecLog(directory)
    for tool in tools:
        real = shutil.which(tool)
        if real is None:
            continue
        wrapper = directory / tool
        wrapper.write_text(f'#!/bin/sh\necho {tool} >> "{log.file}"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return log
