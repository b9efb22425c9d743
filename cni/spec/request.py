"""A CNI request: the ``CNI_*`` environment plus the network configuration. PURE.

SPEC "Parameters" and pkg/skel's per-command table decide which variables each command
needs. Validation happens here, once, so that plugins receive values that are safe to use
as interface names and path components.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import args as cniargs
from .commands import COMMANDS, command_from_env  # noqa: F401  (re-exported)
from .errors import InvalidEnvironment

# Which variables each command requires (pkg/skel): CNI_NETNS is optional on DEL because
# a runtime may call DEL after the namespace is gone (SPEC "DEL").
_REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": (),
    "GC": (),
    "VERSION": (),
}


@dataclass(frozen=True)
class Request:
    """One CNI operation. ``config`` is the single plugin configuration this request is for."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    cni_args: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def cni_version(self) -> str:
        v = self.config.get("cniVersion")
        return v if isinstance(v, str) and v else "0.1.0"

    @property
    def network_name(self) -> str:
        v = self.config.get("name")
        return v if isinstance(v, str) else ""

    @property
    def plugin_type(self) -> str:
        v = self.config.get("type")
        return v if isinstance(v, str) else ""

    def runtime_config(self) -> dict[str, Any]:
        rc = self.config.get("runtimeConfig")
        return rc if isinstance(rc, dict) else {}

    def with_config(self, config: dict[str, Any]) -> Request:
        return replace(self, config=config)

    def with_(self, **changes: Any) -> Request:
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The ``CNI_*`` variables libcni sets when it execs a plugin for this request."""
        return {
            "CNI_COMMAND": self.command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in self.cni_args.items()),
            "CNI_PATH": ":".join(self.path),
        }


def from_env(environ: Mapping[str, str], config: dict[str, Any]) -> Request:
    """Validate the environment for its command and build the request (error 4 on bad env)."""
    cmd = command_from_env(environ)
    missing = [k for k in _REQUIRED[cmd] if not environ.get(k)]
    if missing:
        raise InvalidEnvironment(f"required environment variable(s) {', '.join(missing)} not set for {cmd}")
    cid = environ.get("CNI_CONTAINERID", "")
    if cid or cmd in ("ADD", "CHECK", "DEL"):
        cniargs.validate_container_id(cid)
    ifname = environ.get("CNI_IFNAME", "")
    if ifname or cmd in ("ADD", "CHECK", "DEL"):
        cniargs.validate_ifname(ifname)
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    return Request(
        command=cmd,
        container_id=cid,
        netns=environ.get("CNI_NETNS", ""),
        ifname=ifname,
        cni_args=cniargs.parse_cni_args(environ.get("CNI_ARGS", "")),
        path=path,
        config=config,
    )
