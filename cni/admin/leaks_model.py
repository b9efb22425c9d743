"""What a ``multinic leaks`` scan works with, shared by its finders (``leaks``, ``leaks_stores``).

``Leak``: one finding and the fix that removes it through the plugin's own path; ``Known``: what the cache and the
conf say exists; ``plugin_request``: the request every fix sends a plugin (DEL for the exact owner a record names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..spec.request import Request

from . import common as c


@dataclass
class Leak:
    kind: str  # sandbox | host-local | whereabouts | portmap | masquerade | host-link
    network: str
    owner: str  # containerID[/ifname], or the link's name
    what: str
    fix: Callable[[], None] | None = field(default=None, repr=False)
    manual: str = ""  # how to remove it when --fix cannot
    removed: bool = False
    error: str = ""

    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.network, self.owner, self.what)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "network": self.network, "owner": self.owner, "what": self.what,
                "fixable": self.fix is not None, "removed": self.removed, "error": self.error, "manual": self.manual}


@dataclass
class Known:
    """What the cache and the conf say exists: owners, and the plugin confs of every known network."""

    owners: set[tuple[str, str]] = field(default_factory=set)  # (containerID, ifname) of every cached attachment
    containers: set[str] = field(default_factory=set)
    host_ifaces: set[str] = field(default_factory=set)  # host-side interfaces named by cached results
    # network name -> (conflist cniVersion, plugin conf) for each plugin type we cross-check
    host_local: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)  # (net, dataDir)
    whereabouts: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    portmap: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    bridges: dict[str, str] = field(default_factory=dict)  # bridge name -> network
    masq: set[str] = field(default_factory=set)  # networks whose bridge plugin sets ipMasq

def plugin_request(command: str, cid: str, ifname: str, node: c.NodeConf, conf: dict[str, Any], name: str, version: str,
                   args: dict[str, str] | None = None) -> Request:
    """The request a fix sends a plugin for the owner ``cid``/``ifname`` of network ``name`` (one plugin conf)."""
    from ..spec.config import build_plugin_conf
    from ..spec.request import Request

    return Request(command, cid, "", ifname, {"IgnoreUnknown": "1", **(args or {})}, c.cni_path(node),
                   build_plugin_conf(conf, name=name, cni_version=version))

