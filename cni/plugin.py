"""The shape every native plugin exposes, and the one function that runs it.

Every module under ``plugins/`` and ``ipam/`` ends with ``PLUGIN = Plugin(...)``: a ``parse``
that turns a request's config into the plugin's typed config (pure, no kernel look-ups)
and one function per CNI command. ``cni.skel`` (standalone exec) and ``cni.invoke``
(in-process delegation) both go through ``Plugin.run``, so a plugin behaves the same either
way. A plugin whose DEL needs a small part of the config may also give ``delete_only``: DEL
then reads that part itself and ``parse`` is not run (SPEC: DEL tolerates a missing or partial
config; a thin DEL must not pay for validating, and importing pydantic for, all of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .spec import versions
from .spec.errors import IncompatibleVersion, InvalidConfig
from .spec.request import Request
from .spec.result import Result

C = TypeVar("C")


def _succeed(req: Request, conf: Any) -> None:
    """STATUS/GC of a plugin that keeps no state: it is trivially ready, and there is nothing to collect."""


@dataclass(frozen=True)
class Plugin(Generic[C]):
    type: str
    parse: Callable[[Request], C]
    add: Callable[[Request, C], Result]
    delete: Callable[[Request, C], None]
    check: Callable[[Request, C], None]
    status: Callable[[Request, C], None] = _succeed
    gc: Callable[[Request, C], None] = _succeed
    supported_versions: tuple[str, ...] = versions.ALL
    # Capabilities the plugin declares (runtimeConfig keys it understands).
    capabilities: frozenset[str] = frozenset()
    # DEL without ``parse`` (see the module doc); None: DEL is ``delete(req, parse(req))``.
    delete_only: Callable[[Request], None] | None = None

    def run(self, req: Request) -> Result | None:
        """Parse the config and run ``req.command``. Errors are raised as CNIError."""
        from .spec.config import plugin_conf

        # Go plugins decode their config with encoding/json: NetConf keys fold case (gojson).
        req = req.with_config(plugin_conf(req.config))
        version = req.cni_version
        versions.require_supported(version, self.supported_versions)
        floor = versions.COMMAND_FLOOR[req.command]
        if not versions.at_least(version, floor):
            raise IncompatibleVersion(
                f"{req.command} needs cniVersion {floor} or later, config has {version}",
            )
        # SPEC: every plugin config has a name and a type; the reference's LoadConf refuses
        # a config without them (code 7) before anything touches a namespace.
        from .spec.args import validate_network_name
        from .spec.config import require_str

        validate_network_name(require_str(req.config, "name"))
        require_str(req.config, "type")
        if req.command == "DEL" and self.delete_only is not None:
            self.delete_only(req)
            return None
        conf = self.parse(req)
        if req.command == "ADD":
            return self.add(req, conf)
        if req.command == "DEL":
            self.delete(req, conf)
        elif req.command == "CHECK":
            self.check(req, conf)
        elif req.command == "STATUS":
            self.status(req, conf)
        elif req.command == "GC":
            self.gc(req, conf)
        else:  # pragma: no cover - VERSION is answered by skel
            raise InvalidConfig(f"unsupported command {req.command}")
        return None


def valid_attachments(config: dict[str, Any]) -> list[tuple[str, str]] | None:
    """GC's list of attachments to keep, under either key name (SPEC-1.1 tag vs. later text).

    None when neither key is present (then a plugin must not collect anything).
    """
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        raw = config.get(key)
        if raw is None:
            continue
        if not isinstance(raw, list):
            raise InvalidConfig(f"network config field {key!r} must be a list")
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) or not isinstance(item.get("ifname"), str):
                raise InvalidConfig(f"network config field '{key}[{i}]' must be {{containerID, ifname}}")
            out.append((item["containerID"], item["ifname"]))
        return out
    return None


def prev_result(req: Request, *, required: bool = False, plugin: str = "") -> Result | None:
    """The parsed ``prevResult`` of a chained config (one implementation for every plugin).

    A missing or empty ``prevResult`` is None, or error 7 when ``required``. The document is
    read in its own ``cniVersion`` when it carries one — a runtime may hand an older-version
    prevResult to a newer plugin and the shapes differ (0.2.0 has ``ip4``) — else in the
    config's version, as libcni injects it. Malformed → error 7.
    """
    from .spec.result import from_wire

    raw = req.config.get("prevResult")
    if raw is None or raw == {}:
        if required:
            name = plugin or req.plugin_type or "this plugin"
            raise InvalidConfig(
                f"{name} must be called as a chained plugin: the config has no prevResult",
                f"put {name} after an interface plugin (macvlan, bridge, ...) in a conflist",
            )
        return None
    if isinstance(raw, dict) and raw.get("cniVersion") not in versions.ALL:
        raw = {**raw, "cniVersion": req.cni_version}
    return from_wire(raw, err_cls=InvalidConfig)
