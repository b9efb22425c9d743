"""CNI commands and reading ``CNI_COMMAND``. PURE; imports nothing heavy (VERSION path)."""

from __future__ import annotations

from .errors import InvalidEnvironment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")


def command_from_env(environ: Mapping[str, str]) -> str:
    cmd = environ.get("CNI_COMMAND", "")
    if not cmd:
        raise InvalidEnvironment("CNI_COMMAND is not set", f"expected one of {', '.join(COMMANDS)}")
    if cmd not in COMMANDS:
        raise InvalidEnvironment(f"unknown CNI_COMMAND {cmd!r}", f"expected one of {', '.join(COMMANDS)}")
    return cmd
