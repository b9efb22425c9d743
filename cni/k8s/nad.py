"""NetworkAttachmentDefinition resolution and policy. PURE: operates on fetched objects.

Multi-net spec §3.4 as Multus implements it:
- ``spec.config`` holds the CNI JSON, a conf (has ``type``) or a conflist (has ``plugins``);
  a missing ``name`` is filled with the NAD's name;
- an empty ``spec.config`` means: the first file in ``confDir`` (sorted; ``.conf``,
  ``.conflist``, ``.json``) whose ``name`` equals the NAD's name;
- otherwise the attachment fails.
Policy (§7.4: a disallowed NAD fails the pod): namespace isolation, the NAD's node selector
against this node's labels, and the allowlist of plugin types.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..spec.config import ConfList, conflist_from
from ..spec.errors import CNIError, InvalidConfig, NotFound, PolicyDenied
from .annotations import NODE_SELECTOR, RESOURCE_NAME, parse_node_selector

GROUP = "k8s.cni.cncf.io"
VERSION = "v1"
PLURAL = "network-attachment-definitions"

# The seed's list of allowed plugin types (plus the cluster network's own types at run time).
DEFAULT_ALLOWED_TYPES = frozenset(
    {"ipvlan", "macvlan", "bridge", "portmap", "sbr", "tuning", "host-local", "static", "whereabouts"}
)


@dataclass(frozen=True)
class Network:
    """A resolved network: where it came from and its config list."""

    key: str  # "<namespace>/<name>" (or the conf name for the cluster network from confDir)
    conflist: ConfList
    node_selector: dict[str, str]
    resource_name: str = ""


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def config_from_nad(nad: dict[str, Any], conf_dir_configs: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The CNI config document a NAD stands for (name injected), or NotFound with the reason."""
    from cni.spec import gojson

    meta = _meta(nad)
    name = str(meta.get("name", ""))
    ns = str(meta.get("namespace", ""))
    spec = nad.get("spec") if isinstance(nad.get("spec"), dict) else {}
    raw = spec.get("config") if spec else None
    if raw:
        if not isinstance(raw, str):
            raise InvalidConfig(f"NetworkAttachmentDefinition {ns}/{name}: spec.config must be a JSON string")
        try:
            doc = gojson.loads(raw)  # Go's last-key-wins order, as Multus reads it
        except (ValueError, RecursionError) as exc:
            raise InvalidConfig(f"NetworkAttachmentDefinition {ns}/{name}: spec.config is not valid JSON", str(exc)) from None
        if not isinstance(doc, dict):
            raise InvalidConfig(f"NetworkAttachmentDefinition {ns}/{name}: spec.config must be a JSON object")
        if not doc.get("name"):
            doc = {**doc, "name": name}
        return doc
    for conf in conf_dir_configs:
        if conf.get("name") == name:
            return conf
    raise NotFound(
        f"NetworkAttachmentDefinition {ns}/{name} has no spec.config and no file in confDir has name {name!r}",
        "put the CNI JSON in spec.config, or a .conf/.conflist with that name in confDir",
    )


def resolve(nad: dict[str, Any], conf_dir_configs: Iterable[dict[str, Any]] = ()) -> Network:
    """Turn a NAD object into a ``Network`` (conf or conflist validated, errors name the NAD)."""
    meta = _meta(nad)
    key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    doc = config_from_nad(nad, conf_dir_configs)
    if "plugins" not in doc and "type" not in doc:
        raise InvalidConfig(f"NetworkAttachmentDefinition {key}: config has neither 'type' nor 'plugins'")
    try:
        cl = conflist_from(doc)
    except CNIError as exc:
        raise exc.prefixed(f"NetworkAttachmentDefinition {key}: ") from None
    ann = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    sel = parse_node_selector(str(ann.get(NODE_SELECTOR, ""))) if ann and ann.get(NODE_SELECTOR) else {}
    return Network(key=key, conflist=cl, node_selector=sel, resource_name=str((ann or {}).get(RESOURCE_NAME, "")))


def plugin_types(cl: ConfList) -> list[str]:
    """Every plugin type a config list would run, IPAM types included."""
    out: list[str] = []
    for p in cl.plugins:
        out.append(str(p.get("type", "")))
        ipam = p.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type"):
            out.append(str(ipam["type"]))
    return out


def check_namespace_isolation(pod_ns: str, target_ns: str, global_namespaces: Iterable[str]) -> None:
    """Multus namespaceIsolation: a pod may use NADs of its own namespace or of a global one."""
    if target_ns == pod_ns or target_ns in set(global_namespaces):
        return
    raise PolicyDenied(
        "namespace isolation enabled, annotation violates permission, "
        f"pod is in namespace {pod_ns} but refers to target namespace {target_ns}"
    )


def check_node_selector(net: Network, node_name: str, node_labels: dict[str, str]) -> None:
    """A NAD restricted to labelled nodes cannot be attached on a node without the labels."""
    missing = {k: v for k, v in net.node_selector.items() if node_labels.get(k) != v}
    if missing:
        want = ",".join(f"{k}={v}" for k, v in missing.items())
        raise PolicyDenied(
            f"network {net.key} is restricted to nodes labelled {want}; node {node_name or '<unknown>'} is not",
            f"label the node (kubectl label nodes {node_name or 'NODE'} {want}) or schedule the pod elsewhere",
        )


def check_allowed_types(net: Network, allowed: frozenset[str]) -> None:
    refused = [t for t in plugin_types(net.conflist) if t not in allowed]
    if refused:
        raise PolicyDenied(
            f"network {net.key} uses plugin type(s) {', '.join(sorted(set(refused)))} that this node does not allow",
            f"allowed types: {', '.join(sorted(allowed))} (multinic config 'allowedPluginTypes')",
        )


def not_found(ns: str, name: str) -> NotFound:
    return NotFound(
        f"cannot find a network-attachment-definition ({name}) in namespace ({ns})",
        "create the NetworkAttachmentDefinition or fix the pod's k8s.v1.cni.cncf.io/networks annotation",
    )
