"""Pod network selection annotations (``k8s.v1.cni.cncf.io/networks``). PURE.

Implements the Network Plumbing WG multi-net spec §4.1 as Multus reads it:
- comma form ``[namespace/]name[@ifname]``, items trimmed; namespace and name are DNS-1123
  labels; more than one ``/`` or ``@`` is an error; a missing namespace is the pod's;
- JSON form (the value contains ``[``, ``{`` or ``"``): a list of selection objects with
  ``name``, ``namespace``, ``interface``, ``ips``, ``mac``, ``default-route``,
  ``portMappings``, ``bandwidth``, ``cni-args``, ``infiniband-guid``, ``deviceID``,
  ``ipam-claim-reference``.
An invalid annotation is an error naming the item and the reason: it is never dropped
silently (Multus #414-style empty successes are how pods end up without their networks).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ..spec.args import ifname_problem
from ..spec.errors import InvalidConfig

NETWORKS = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
DEFAULT_NETWORK = "v1.multus-cni.io/default-network"
NODE_SELECTOR = "k8s.v1.cni.cncf.io/nodeSelector"
RESOURCE_NAME = "k8s.v1.cni.cncf.io/resourceName"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
MAX_ANNOTATION = 256 * 1024  # the apiserver caps all annotations at 256 KiB together


class AnnotationError(InvalidConfig):
    """The pod's network annotation cannot be used; the message says which item and why."""


@dataclass(frozen=True)
class Selection:
    """One requested attachment, as the annotation asked for it."""

    name: str
    namespace: str
    interface: str = ""
    ips: tuple[str, ...] = ()
    mac: str = ""
    default_route: tuple[str, ...] = ()
    port_mappings: tuple[dict[str, Any], ...] = ()
    bandwidth: dict[str, Any] | None = None
    cni_args: dict[str, Any] | None = None
    infiniband_guid: str = ""
    device_id: str = ""
    ipam_claim_reference: str = ""  # multi-net spec v1.3: the IPAMClaim (pod's namespace) holding the addresses
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def runtime_config(self) -> dict[str, Any]:
        """The capability arguments this selection asks for (only declared ones reach a plugin)."""
        rc: dict[str, Any] = {}
        if self.ips:
            rc["ips"] = list(self.ips)
        if self.mac:
            rc["mac"] = self.mac
        if self.port_mappings:
            rc["portMappings"] = [dict(p) for p in self.port_mappings]
        if self.bandwidth:
            rc["bandwidth"] = dict(self.bandwidth)
        if self.infiniband_guid:
            rc["infinibandGUID"] = self.infiniband_guid
        if self.device_id:
            rc["deviceID"] = self.device_id
        return rc


def _check_label(value: str, what: str, item: str) -> None:
    if not _DNS1123_LABEL.match(value) or len(value) > 63:
        raise AnnotationError(
            f"invalid {what} {value!r} in network annotation item {item!r}",
            "must be a DNS-1123 label: lower case alphanumeric characters or '-', starting and ending "
            "with an alphanumeric character, at most 63 characters",
        )


def _check_ifname(value: str, item: str) -> None:
    problem = ifname_problem(value)
    if problem:
        raise AnnotationError(f"invalid interface name {value!r} in network annotation item {item!r}: {problem}")


def parse_item(item: str, pod_namespace: str) -> Selection:
    """One comma-form item: ``[namespace/]name[@ifname]``."""
    text = item.strip()
    if not text:
        raise AnnotationError("empty item in network annotation", "remove the extra ',' between network names")
    if text.count("/") > 1 or text.count("@") > 1:
        raise AnnotationError(
            f"invalid network annotation item {text!r}",
            "expected [namespace/]name[@interface] with at most one '/' and one '@'",
        )
    ns, _, rest = text.rpartition("/")
    name, _, iface = rest.partition("@")
    namespace = ns or pod_namespace
    if ns:
        _check_label(ns, "namespace", text)
    _check_label(name, "network name", text)
    if "@" in rest:
        _check_ifname(iface, text)
    return Selection(name=name, namespace=namespace, interface=iface)


def _str_list(obj: dict[str, Any], key: str, item: str) -> tuple[str, ...]:
    val = obj.get(key)
    if val is None:
        return ()
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise AnnotationError(f"field {key!r} of network annotation item {item!r} must be a list of strings")
    return tuple(val)


def _selection_from_obj(obj: Any, idx: int, pod_namespace: str) -> Selection:
    where = f"#{idx}"
    if not isinstance(obj, dict):
        raise AnnotationError(f"network annotation item {where} must be an object", f"got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise AnnotationError(f"network annotation item {where} has no 'name'")
    where = f"{where} ({name})"
    ns = obj.get("namespace") or pod_namespace
    if not isinstance(ns, str):
        raise AnnotationError(f"field 'namespace' of network annotation item {where} must be a string")
    _check_label(ns, "namespace", where)
    _check_label(name, "network name", where)
    iface = obj.get("interface") or ""
    if not isinstance(iface, str):
        raise AnnotationError(f"field 'interface' of network annotation item {where} must be a string")
    if iface:
        _check_ifname(iface, where)
    ips = _str_list(obj, "ips", where)
    for ip in ips:
        try:
            if "/" in ip:
                ipaddress.ip_interface(ip)
            else:
                ipaddress.ip_address(ip)
        except ValueError:
            raise AnnotationError(f"invalid IP {ip!r} in 'ips' of network annotation item {where}") from None
    mac = obj.get("mac") or ""
    if not isinstance(mac, str) or (mac and not _MAC.match(mac)):
        raise AnnotationError(f"invalid MAC {mac!r} in network annotation item {where}")
    gws = _str_list(obj, "default-route", where)
    for gw in gws:
        try:
            ipaddress.ip_address(gw)
        except ValueError:
            raise AnnotationError(f"invalid gateway {gw!r} in 'default-route' of network annotation item {where}") from None
    pms = obj.get("portMappings") or []
    if not isinstance(pms, list) or not all(isinstance(p, dict) for p in pms):
        raise AnnotationError(f"field 'portMappings' of network annotation item {where} must be a list of objects")
    bw = obj.get("bandwidth")
    if bw is not None and not isinstance(bw, dict):
        raise AnnotationError(f"field 'bandwidth' of network annotation item {where} must be an object")
    cargs = obj.get("cni-args")
    if cargs is not None and not isinstance(cargs, dict):
        raise AnnotationError(f"field 'cni-args' of network annotation item {where} must be an object")
    guid = obj.get("infiniband-guid") or ""
    dev = obj.get("deviceID") or ""
    if not isinstance(guid, str) or not isinstance(dev, str):
        raise AnnotationError(f"fields 'infiniband-guid'/'deviceID' of network annotation item {where} must be strings")
    claim = obj.get("ipam-claim-reference") or ""
    if not isinstance(claim, str) or (claim and not _DNS1123_SUBDOMAIN.match(claim)) or len(claim) > 253:
        raise AnnotationError(f"invalid 'ipam-claim-reference' {claim!r} in network annotation item {where}",
                              "it names an IPAMClaim in the pod's namespace")
    if claim and ips:
        raise AnnotationError(f"network annotation item {where} sets both 'ips' and 'ipam-claim-reference'",
                              "the multi-net spec (v1.3) makes that invalid: the claim decides the addresses")
    known = {"name", "namespace", "interface", "ips", "mac", "default-route", "portMappings", "bandwidth",
             "cni-args", "infiniband-guid", "deviceID", "ipam-claim-reference"}
    return Selection(
        name=name, namespace=ns, interface=iface, ips=ips, mac=mac, default_route=gws,
        port_mappings=tuple(pms), bandwidth=bw, cni_args=cargs, infiniband_guid=guid, device_id=dev,
        ipam_claim_reference=claim, extra={k: v for k, v in obj.items() if k not in known},
    )


def parse_networks(value: str, pod_namespace: str) -> list[Selection]:
    """Parse the ``k8s.v1.cni.cncf.io/networks`` value (either form). Empty → no selections."""
    if len(value) > MAX_ANNOTATION:
        raise AnnotationError(f"network annotation is larger than {MAX_ANNOTATION} bytes")
    text = value.strip()
    if not text:
        return []
    if any(c in text for c in "[{\""):
        import orjson

        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise AnnotationError("network annotation is not valid JSON", str(exc)) from None
        if isinstance(doc, dict):
            doc = [doc]  # a lone object is an obvious intent; Multus rejects it, we accept it
        if not isinstance(doc, list):
            raise AnnotationError("network annotation JSON must be a list of network selection objects")
        sels = [_selection_from_obj(o, i, pod_namespace) for i, o in enumerate(doc)]
    else:
        sels = [parse_item(item, pod_namespace) for item in text.split(",")]
    defaults = [s for s in sels if s.default_route]
    if len(defaults) > 1:
        raise AnnotationError(
            "more than one network requests 'default-route'",
            f"only one attachment may (multi-net spec §4.1): {', '.join(s.key for s in defaults)}",
        )
    return sels


def parse_default_network(value: str, pod_namespace: str) -> Selection:
    """``v1.multus-cni.io/default-network``: one network (either form) replacing the cluster network."""
    sels = parse_networks(value, pod_namespace)
    if len(sels) != 1:
        raise AnnotationError(f"{DEFAULT_NETWORK} must name exactly one network, got {len(sels)}")
    return sels[0]


def parse_node_selector(value: str) -> dict[str, str]:
    """The NAD's ``k8s.v1.cni.cncf.io/nodeSelector``: ``key=value[,key=value]`` (all must match)."""
    out: dict[str, str] = {}
    for term in value.split(","):
        term = term.strip()
        if not term:
            continue
        k, sep, v = term.partition("=")
        k, v = k.strip(), v.strip()
        if not sep or not k:
            raise InvalidConfig(f"invalid {NODE_SELECTOR} term {term!r}", "expected LABEL_KEY=LABEL_VALUE")
        out[k] = v.lstrip("=")  # tolerate 'k==v'
    return out
