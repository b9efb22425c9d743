"""Network configurations and configuration lists, as the runtime hands them over. PURE.

SPEC "Network configuration format": a conflist has ``cniVersion``, ``name``, ``plugins``;
each plugin config gets ``name``, ``cniVersion``, ``runtimeConfig`` (only for the
capabilities it declares) and, when chained, ``prevResult`` injected by the runtime
(libcni ``buildOneConfig``). Unknown keys are preserved: plugins may define their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import gojson, versions
from .args import validate_network_name
from .errors import DecodeFailure, InvalidConfig
from .result import DNS_SCHEMA, Result, to_wire

_S, _N = gojson.SCALAR, gojson.NILABLE
# The keys every Go plugin decodes through types.NetConf plus its own RuntimeConfig/Args
# structs (CONVENTIONS.md capabilities; ``args.cni`` of bridge/macvlan/host-local/static).
# Keys only one plugin knows are matched by that plugin's model.
RANGE_SCHEMA: gojson.Schema = {"rangeStart": _S, "rangeEnd": _S, "subnet": _S, "gateway": _S}
RUNTIME_CONFIG_SCHEMA: gojson.Schema = {
    "portMappings": gojson.ListOf({"hostPort": _S, "containerPort": _S, "protocol": _S, "hostIP": _S}),
    "bandwidth": {"ingressRate": _S, "ingressBurst": _S, "egressRate": _S, "egressBurst": _S},
    "ips": _N,
    "mac": _S,
    "ipRanges": gojson.ListOf(gojson.ListOf(RANGE_SCHEMA)),
    "dns": {"servers": _N, "searches": _N, "options": _N},
    "infinibandGUID": _S,
    "deviceID": _S,
    "aliases": _N,
    "cgroupPath": _S,
}
NETCONF_SCHEMA: gojson.Schema = {
    "cniVersion": _S,
    "name": _S,
    "type": _S,
    "capabilities": _N,  # a Go map: its keys are compared exactly
    "ipam": {"type": _S},  # types.IPAM; the rest is decoded by the IPAM plugin's own struct
    "dns": DNS_SCHEMA,
    "prevResult": _N,  # a map in types.NetConf; cni.spec.result folds its keys when parsing it
    "runtimeConfig": RUNTIME_CONFIG_SCHEMA,
    "args": {"cni": {"ips": _N, "mac": _S}},
}


def plugin_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """A single plugin config with its NetConf keys spelled as the Go struct tags (gojson).

    Idempotent; keys no Go struct names are kept as they are.
    """
    out: dict[str, Any] = gojson.canonical(conf, NETCONF_SCHEMA)
    return out


def decode(raw: bytes | str, what: str = "network configuration") -> dict[str, Any]:
    """Decode JSON from stdin or a file; error 6 when it is not a JSON object.

    A key repeated verbatim takes its last value AND its last position (gojson.loads), so that
    Go's last-key-wins holds across differently-cased spellings of one field too.
    """
    try:
        doc = gojson.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DecodeFailure(f"cannot decode {what}: it is not valid JSON", str(exc)) from None
    if not isinstance(doc, dict):
        raise DecodeFailure(f"cannot decode {what}: expected a JSON object, got {type(doc).__name__}")
    return doc


def cni_version_of(conf: dict[str, Any]) -> str:
    """The config's cniVersion; a missing one means 0.1.0 (libcni's ConfigDecoder)."""
    v = conf.get("cniVersion", "")
    if v in ("", None):
        return "0.1.0"
    if not isinstance(v, str):
        raise InvalidConfig("network config field 'cniVersion' must be a string", f"got {v!r}")
    return v


def require_str(conf: dict[str, Any], key: str, where: str = "") -> str:
    val = conf.get(key)
    path = f"{where}{key}"
    if val is None or val == "":
        raise InvalidConfig(f"network config field {path!r} is missing")
    if not isinstance(val, str):
        raise InvalidConfig(f"network config field {path!r} must be a string", f"got {type(val).__name__}")
    return val


def check_plugin_conf(conf: dict[str, Any], where: str = "") -> None:
    """Validate what every single plugin config needs: a version, a name and a type."""
    versions.require_supported(cni_version_of(conf))
    validate_network_name(require_str(conf, "name", where), field=f"{where}name")
    require_str(conf, "type", where)
    caps = conf.get("capabilities")
    if caps is not None and not isinstance(caps, dict):
        raise InvalidConfig(f"network config field '{where}capabilities' must be an object")
    rc = conf.get("runtimeConfig")
    if rc is not None and not isinstance(rc, dict):
        raise InvalidConfig(f"network config field '{where}runtimeConfig' must be an object")


@dataclass(frozen=True)
class ConfList:
    """A configuration list (a single conf is promoted to a list of one, as runtimes do)."""

    cni_version: str
    name: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    disable_gc: bool = False
    raw: dict[str, Any] | None = None


def conflist_from(doc: dict[str, Any]) -> ConfList:
    """Parse a conflist, or promote a single conf (one with ``type``) to a list of one."""
    if "plugins" not in doc:
        # libcni reads a single conf through types.NetConf (Go key folding) but a conflist
        # through a map (exact keys: "plugins", "name", ...).
        doc = plugin_conf(doc)
    if "plugins" not in doc and "type" in doc:
        check_plugin_conf(doc)
        return ConfList(cni_version_of(doc), str(doc["name"]), (doc,), raw=doc)
    version = cni_version_of(doc)
    cv = doc.get("cniVersions")
    if isinstance(cv, list) and cv:
        # SPEC-1.1: pick the highest version we support from cniVersions.
        ours = [v for v in cv if isinstance(v, str) and v in versions.ALL]
        if ours:
            version = max(ours, key=versions.key)
    versions.require_supported(version)
    name = validate_network_name(require_str(doc, "name"))
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise InvalidConfig("network config list field 'plugins' must be a non-empty list")
    for i, p in enumerate(plugins):
        if not isinstance(p, dict):
            raise InvalidConfig(f"network config list field 'plugins[{i}]' must be an object")
        require_str(p, "type", f"plugins[{i}].")
    dc = doc.get("disableCheck", False)
    dg = doc.get("disableGC", False)
    return ConfList(
        version, name, tuple(plugins),
        disable_check=dc is True or dc == "true",
        disable_gc=dg is True or dg == "true",
        raw=doc,
    )


def build_plugin_conf(
    plugin: dict[str, Any],
    *,
    name: str,
    cni_version: str,
    prev_result: Result | None = None,
    runtime_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """libcni buildOneConfig: inject name/version/prevResult and the declared capabilities' args."""
    conf = dict(plugin)
    conf["name"] = name
    conf["cniVersion"] = cni_version
    if prev_result is not None:
        conf["prevResult"] = to_wire(prev_result, cni_version)
    caps = conf.pop("capabilities", None)
    if runtime_config and isinstance(caps, dict):
        rc = {k: v for k, v in runtime_config.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
    return conf
