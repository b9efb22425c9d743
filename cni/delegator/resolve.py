"""From a pod to its attachment plan: read the pod, find the cluster network, resolve every NAD.

Rules:
- ADD is strict: policy (namespace isolation, NAD node selectors, the plugin type allowlist)
  applies, and the first problem fails the pod. DEL is not: whatever was attached must be
  detached even if it is no longer allowed, and a NAD that is gone is skipped with a log line
  (``resolve_networks(..., strict=False)``).
- "Cannot tell" (the API is down or slow) is ``SourceUnavailable`` (code 11), never "not found":
  an ADD that cannot see the pod's annotation must not succeed with the cluster network only
  (Multus #414, #492).
- The pure parts (annotation parsing, NAD resolution, policy checks) live in ``cni.k8s``; this
  module only fetches what they need.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from .. import log
from ..k8s import annotations as ann
from ..k8s import nad as nadmod
from ..spec.config import ConfList, conflist_from, decode
from ..spec.errors import CNIError, InvalidConfig, NotFound, TryAgainLater
from .context import Context, PodRef, annotations_of, uid_of
from .plan import Attachment, build
from .tenancy_io import Guard


class SourceUnavailable(TryAgainLater):
    """The pod source (the API) could not be read: retry later; an event about it must wait for the API."""


class NoNetworkFound(NotFound):
    """A requested NAD does not exist (its own event reason, as in Multus)."""


# A resolved secondary network: the annotation item, the network's key (ns/name) and its conflist.
Resolved = tuple[ann.Selection, str, ConfList]


# ---- the cluster network -------------------------------------------------------------


def conf_dir_configs(conf_dir: str) -> list[dict[str, Any]]:
    """Configs in ``confDir`` (sorted by file name, ``.conf``/``.conflist``/``.json``), unreadable ones skipped."""
    out: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(conf_dir))
    except OSError:
        return out
    for fn in names:
        if not fn.endswith((".conf", ".conflist", ".json")):
            continue
        try:
            with open(os.path.join(conf_dir, fn), "rb") as f:
                out.append(decode(f.read(), f"config file {fn}"))
        except (OSError, CNIError) as exc:
            log.warning(f"skipping {os.path.join(conf_dir, fn)}: {exc}")
    return out


@dataclass(frozen=True)
class Primary:
    """The pod's cluster network and where it came from."""

    name: str
    conflist: ConfList
    overridden: bool = False  # chosen by the pod's v1.multus-cni.io/default-network annotation
    nad: dict[str, Any] | None = None  # the NAD object it came from (None: the node's config or confDir)


def configured_cluster_network(ctx: Context) -> tuple[str, ConfList]:
    """The node's cluster network: ``clusterNetwork`` when set (Multus: it replaces ``delegates[0]``), else ``delegates[0]``."""
    cfg = ctx.cfg
    if cfg.cluster_network:
        return _network_by_name(ctx, cfg.multus_namespace, cfg.cluster_network)
    if cfg.delegates:
        try:
            cl = conflist_from(cfg.delegates[0])
        except CNIError as exc:
            raise exc.prefixed("multinic config 'delegates[0]': ") from None
        return cl.name, cl
    raise InvalidConfig("no cluster network: set 'clusterNetwork' or 'delegates' in the multinic config")


def cluster_network(ctx: Context, pod: PodRef) -> Primary:
    """The pod's primary network: its default-network annotation, else the configured cluster network."""
    override = str(annotations_of(pod.pod).get(ann.DEFAULT_NETWORK, "") or "")
    if override:
        sel = ann.parse_default_network(override, ctx.cfg.multus_namespace)
        nad: list[dict[str, Any]] = []
        name, cl = _network_by_name(ctx, sel.namespace, sel.name, nad)
        return Primary(name, cl, overridden=True, nad=nad[0] if nad else None)
    name, cl = configured_cluster_network(ctx)
    return Primary(name, cl)


def _network_by_name(ctx: Context, namespace: str, name: str,
                     nad_out: list[dict[str, Any]] | None = None) -> tuple[str, ConfList]:
    """clusterNetwork semantics: a file/dir path, a NAD in ``namespace``, or a conf name in confDir
    (the NAD object, when it was one, is appended to ``nad_out``)."""
    if name.startswith("/"):
        try:
            if os.path.isdir(name):
                confs = conf_dir_configs(name)
                if not confs:
                    raise NotFound(f"cluster network directory {name} holds no CNI config")
                cl = conflist_from(confs[0])
            else:
                with open(name, "rb") as f:
                    cl = conflist_from(decode(f.read(), f"cluster network file {name}"))
        except OSError as exc:
            raise NotFound(f"cannot read cluster network file {name}: {exc.strerror or exc}") from None
        return cl.name, cl
    if ctx.source is not None:
        try:
            obj = ctx.source.get_nad(namespace, name)
        except CNIError as exc:
            raise SourceUnavailable(f"cannot read NetworkAttachmentDefinition {namespace}/{name}: {exc.msg}",
                                    exc.details) from None
        if obj is not None:
            net = nadmod.resolve(obj, conf_dir_configs(ctx.cfg.conf_dir))
            if nad_out is not None:
                nad_out.append(obj)
            return net.key, net.conflist
    for conf in conf_dir_configs(ctx.cfg.conf_dir):
        if conf.get("name") == name:
            cl = conflist_from(conf)
            return cl.name, cl
    raise NotFound(f"cluster network {name!r} not found as a NAD in {namespace} nor as a config in {ctx.cfg.conf_dir}")


# ---- the pod ---------------------------------------------------------------------------


def is_static(pod: dict[str, Any]) -> bool:
    """A static pod's API object is its mirror, with another UID than the kubelet's (Multus IsStaticPod)."""
    anns = annotations_of(pod)
    return "kubernetes.io/config.mirror" in anns or anns.get("kubernetes.io/config.source") not in (None, "api")


def _other_incarnation(ref: PodRef, pod: dict[str, Any]) -> bool:
    """The API's pod has another UID than the runtime's: the pod was deleted and recreated (static pods excepted)."""
    uid = uid_of(pod)
    return bool(ref.uid and uid and ref.uid != uid and not is_static(pod))


def read_pod(ctx: Context, ref: PodRef, *, retries: float = 2.5) -> PodRef:
    """GET the pod with a short bounded retry (a just-created pod may lag behind in an informer).

    Anything but the pod itself fails with code 11: an ADD that cannot see the pod's
    annotation must not succeed with the cluster network only (Multus #414, #492).
    """
    if ctx.source is None or not ref.known:
        return ref
    deadline = min(time.monotonic() + min(retries, ctx.cfg.api_timeout), ctx.read_deadline or float("inf"))
    while True:
        try:
            pod = ctx.source.get_pod(ref.namespace, ref.name)
        except CNIError as exc:
            raise SourceUnavailable(f"{ref.tag}: cannot read the pod from the API: {exc.msg}", exc.details) from None
        if pod is not None:
            break
        if time.monotonic() >= deadline:
            raise TryAgainLater(f"{ref.tag}: pod {ref.namespace}/{ref.name} not found",
                                "it may have been deleted, or the API is behind; the runtime will retry")
        time.sleep(0.25)
    if _other_incarnation(ref, pod):
        # A cached pod (thick mode's informer) may be the previous incarnation: ask the API.
        try:
            fresh = ctx.source.get_pod_live(ref.namespace, ref.name)
        except CNIError as exc:
            raise SourceUnavailable(f"{ref.tag}: cannot read the pod from the API: {exc.msg}", exc.details) from None
        if fresh is not None:
            pod = fresh
    if _other_incarnation(ref, pod):
        raise TryAgainLater(f"{ref.tag}: expected pod UID {ref.uid!r} but got {uid_of(pod)!r} from the API",
                            "the pod was deleted and recreated with the same name")
    return PodRef(ref.namespace, ref.name, ref.uid or uid_of(pod), pod)


def node_labels(ctx: Context) -> dict[str, str]:
    """This node's labels from its Node object (empty when there is no source or no such node)."""
    if ctx.source is None or not ctx.node_name:
        return {}
    try:
        node = ctx.source.get_node(ctx.node_name)
    except CNIError as exc:
        raise SourceUnavailable(f"cannot read Node {ctx.node_name} for a NAD node selector: {exc.msg}", exc.details) from None
    if node is None:
        log.warning(f"Node {ctx.node_name} not found: NAD node selectors cannot match (set 'nodeName' or NODE_NAME)")
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


# ---- the networks ----------------------------------------------------------------------


def requested(ctx: Context, pod: PodRef) -> list[tuple[ann.Selection, bool]]:
    """(selection, from defaultNetworks): defaultNetworks (outside systemNamespaces), then the pod's annotation."""
    sels: list[tuple[ann.Selection, bool]] = []
    if pod.namespace not in ctx.cfg.system_ns():
        for dn in ctx.cfg.default_networks:
            try:
                sels.extend((s, True) for s in ann.parse_networks(dn, ctx.cfg.multus_namespace))
            except CNIError as exc:
                raise exc.prefixed("multinic config 'defaultNetworks': ") from None
    value = annotations_of(pod.pod).get(ann.NETWORKS)
    if value:
        sels.extend((s, False) for s in ann.parse_networks(str(value), pod.namespace))
    return sels


def allowed_types(ctx: Context, base_types: list[str]) -> frozenset[str]:
    allowed = frozenset(ctx.cfg.allowed_plugin_types) if ctx.cfg.allowed_plugin_types is not None \
        else nadmod.DEFAULT_ALLOWED_TYPES
    return allowed | frozenset(base_types)


def resolve_networks(ctx: Context, pod: PodRef, sels: list[tuple[ann.Selection, bool]],
                     allowed: frozenset[str] = frozenset(), *, strict: bool = True,
                     guard: Guard | None = None) -> list[Resolved]:
    """Fetch and resolve every selected NAD.

    ``strict`` (ADD): apply policy (``allowed`` plugin types, namespace isolation, node
    selectors), and the first problem fails the pod. Not strict (DEL): no policy, and a NAD
    that is gone is logged and skipped — it cannot be DEL'd without its config.
    """
    if ctx.source is None:
        return []
    out: list[Resolved] = []
    labels: dict[str, str] | None = None
    confs = conf_dir_configs(ctx.cfg.conf_dir)
    fetched: dict[tuple[str, str], dict[str, Any] | None] = {}  # the same NAD twice: one GET
    for sel, from_default in sels:
        # defaultNetworks are the admin's choice, not the pod's: isolation does not apply to them.
        if strict and ctx.cfg.namespace_isolation and not from_default:
            nadmod.check_namespace_isolation(pod.namespace, sel.namespace, ctx.cfg.global_ns())
        if (sel.namespace, sel.name) not in fetched:
            try:
                fetched[(sel.namespace, sel.name)] = ctx.source.get_nad(sel.namespace, sel.name)
            except CNIError as exc:
                raise SourceUnavailable(f"cannot read NetworkAttachmentDefinition {sel.key}: {exc.msg}", exc.details) from None
        obj = fetched[(sel.namespace, sel.name)]
        if obj is None:
            if not strict:
                log.error(f"{pod.tag}: NetworkAttachmentDefinition {sel.key} is gone and not cached; cannot DEL it")
                continue
            nf = nadmod.not_found(sel.namespace, sel.name)
            raise NoNetworkFound(nf.msg, nf.details)
        net = nadmod.resolve(obj, confs)
        if strict:
            if net.node_selector:
                if labels is None:
                    labels = node_labels(ctx)
                nadmod.check_node_selector(net, ctx.node_name, labels)
            nadmod.check_allowed_types(net, allowed)
            if guard is not None:
                guard.check(sel, net.key, net.conflist, obj)  # multi-tenant policy (cni.delegator.tenancy)
        elif guard is not None:
            # DEL without a cache runs the NAD as it is now, tenant-edited or never allowed: a config the policy
            # refuses was never ADDed by this node under it, and its DEL must not write where ADD may not.
            try:
                guard.check(sel, net.key, net.conflist, obj)
            except CNIError as exc:
                log.error(f"{pod.tag}: not running DEL for {sel.key} as its NAD reads now: {exc}")
                continue
        out.append((sel, net.key, net.conflist))
    return out


def plan_for(ctx: Context, pod: PodRef) -> list[Attachment]:
    """ADD's attachments: cluster network, defaultNetworks, annotation networks (policy applied)."""
    req = ctx.req
    primary = cluster_network(ctx, pod)
    if primary.overridden:
        # The pod chose its primary: it is held to the allowlist like any NAD, against the node's
        # own cluster network types (else the annotation would allow itself).
        _, configured = configured_cluster_network(ctx)
        allowed = allowed_types(ctx, nadmod.plugin_types(configured))
        nadmod.check_allowed_types(nadmod.Network(primary.name, primary.conflist, {}), allowed)
        guard = Guard(ctx.cfg, pod.namespace, [configured], ctx.source)
        guard.check(None, primary.name, primary.conflist, primary.nad)  # a tenant NAD too
    else:
        allowed = allowed_types(ctx, nadmod.plugin_types(primary.conflist))
        guard = Guard(ctx.cfg, pod.namespace, [primary.conflist], ctx.source)
    secondaries = []
    if pod.known:
        secondaries = resolve_networks(ctx, pod, requested(ctx, pod), allowed, guard=guard)
    # Kubelet's runtimeConfig (portMappings, bandwidth …) belongs to the cluster network only
    # (multi-net spec §7.5); secondaries get what their annotation item asked for.
    return build(primary.name, primary.conflist, req.ifname, ctx.cfg.runtime_config or req.runtime_config(),
                 secondaries)


def plan_for_delete(ctx: Context, ref: PodRef) -> list[Attachment]:
    """DEL without a (usable) cache: the plan from the pod if it is still there, else the cluster network only.

    Best effort throughout: every problem is logged and narrows the plan, none is raised.
    """
    pod = ref
    if ctx.source is not None and ref.known:
        try:
            got = ctx.source.get_pod(ref.namespace, ref.name)
            if got is not None and not _other_incarnation(ref, got):
                pod = PodRef(ref.namespace, ref.name, ref.uid or uid_of(got), got)
            elif got is not None:
                log.verbose(f"warning: {ref.tag}: the pod was recreated (UID {uid_of(got)}); "
                            "not using its annotation for DEL")
        except CNIError as exc:
            log.error(f"{ref.tag}: no usable cache and the API is unavailable ({exc}); deleting the cluster network only")
    try:
        primary = cluster_network(ctx, pod)
    except CNIError as exc:
        log.error(f"{ref.tag}: no usable cache and no cluster network for DEL: {exc}")
        return []
    guard = Guard(ctx.cfg, pod.namespace, [] if primary.overridden else [primary.conflist], ctx.source)
    if primary.overridden:
        try:
            guard.check(None, primary.name, primary.conflist, primary.nad)
        except CNIError as exc:
            log.error(f"{ref.tag}: not running DEL for the pod's default network {primary.name} as it reads now: {exc}")
            return []
    rc = ctx.cfg.runtime_config or ctx.req.runtime_config()
    plan = [Attachment(0, ctx.req.ifname, primary.name, primary.conflist, rc, primary=True)]
    if pod.pod is not None:
        try:
            secondaries = resolve_networks(ctx, pod, requested(ctx, pod), strict=False, guard=guard)
            plan = build(primary.name, primary.conflist, ctx.req.ifname, rc, secondaries)
        except CNIError as exc:
            log.error(f"{ref.tag}: cannot rebuild the attachments for DEL: {exc}; deleting what is known")
    return plan
