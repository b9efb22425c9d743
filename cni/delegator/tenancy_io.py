"""The I/O the multi-tenant decisions need, and nothing else: ``realpath`` of every path a NAD names (and of the
allowed roots), the node's uplinks from ``/proc/net``, and — only when ``policyProfiles`` are configured — the
labels of the pod's and the NAD's Namespace through the pod source (``Source.get_namespace``: once per command in
thin mode, a TTL cache in the daemon). A Namespace that is missing or cannot be read gives the node's policy
(fail closed) and one log line. The decisions are ``cni.delegator.tenancy`` (PURE).

One ``Guard`` per ADD; ``Guard.check`` once per attachment, after the NAD is resolved and before anything is
written (the cache, the kernel). Node facts are gathered lazily and once: a pod whose NADs name no master, bridge
or path pays for nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import log
from ..k8s.annotations import Selection
from ..spec.config import ConfList
from ..spec.errors import CNIError
from . import tenancy

if TYPE_CHECKING:
    from .config import MultinicConfig


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def node_uplinks() -> frozenset[str]:
    """The interfaces of this network namespace's default routes (the namespace multinic runs in: the node's)."""
    return tenancy.uplinks_from_proc(_read("/proc/net/route"), _read("/proc/net/ipv6_route"))


# Extra roots for every policy's allowedPaths (colon list), from the runtime's environment: for test suites and
# packaging whose state lives elsewhere. Deliberately not a NAD-reachable knob; the config key is allowedPaths.
EXTRA_PATHS_ENV = "MULTINIC_EXTRA_ALLOWED_PATHS"


def extra_roots() -> tuple[str, ...]:
    return tuple(p for p in os.environ.get(EXTRA_PATHS_ENV, "").split(":") if p.startswith("/"))


def resolve_paths(paths: Iterable[str]) -> dict[str, str]:
    """Each path as the kernel will resolve it: symlinks followed, ``..`` applied after them."""
    return {p: os.path.realpath(p) for p in paths}


def namespace_labels(source: Any, namespace: str, policies: tenancy.Policies) -> dict[str, str] | None:
    """The labels of ``namespace`` through ``source``, or None (fail closed) with the reason logged."""
    get = getattr(source, "get_namespace", None)
    if get is None:
        log.warning(f"namespace {namespace}: no API to read its {tenancy.PROFILE_LABEL} label from; "
                    "using the node's tenancy policy")
        return None
    try:
        labels = tenancy.namespace_labels(get(namespace))
    except CNIError as exc:
        log.warning(f"namespace {namespace}: cannot read its {tenancy.PROFILE_LABEL} label ({exc}); "
                    "using the node's tenancy policy")
        return None
    if labels is None:
        log.warning(f"namespace {namespace}: no such Namespace; using the node's tenancy policy")
        return None
    problem = policies.label_problem(namespace, labels)
    if problem:
        log.warning(problem)
    return labels


class Guard:
    """The tenancy checks of one ADD: the pod's namespace, the node's own networks, the config's policies."""

    def __init__(self, cfg: MultinicConfig, pod_namespace: str, node_networks: Iterable[ConfList],
                 source: Any = None) -> None:
        self.cfg = cfg
        self.policies = cfg.policies
        self.source = source
        self._labels: dict[str, dict[str, str] | None] = {}
        self.pod_policy = self.policy_for(pod_namespace)
        self._extra = extra_roots()
        node_networks = list(node_networks)
        self._node_plugins = [p for cl in node_networks for p in cl.plugins]
        self._node_names = frozenset(cl.name for cl in node_networks if cl.name)
        self._facts: tenancy.Facts | None = None

    def policy_for(self, namespace: str) -> tenancy.Policy:
        """The namespace's policy; its Namespace's labels are read only when a profile could apply."""
        if not self.policies.wants_labels(namespace):
            return self.policies.for_namespace(namespace)
        if namespace not in self._labels:
            self._labels[namespace] = namespace_labels(self.source, namespace, self.policies)
        return self.policies.for_namespace(namespace, self._labels[namespace])

    def facts(self) -> tenancy.Facts:
        if self._facts is None:
            self._facts = tenancy.Facts(
                uplinks=node_uplinks(),
                cluster_bridges=tenancy.bridges_of(self._node_plugins),
                reserved_dirs=(os.path.realpath(self.cfg.cni_dir),),
                node_networks=self._node_names,
            )
        return self._facts

    def check(self, sel: Selection | None, key: str, conflist: ConfList, nad: Mapping[str, Any] | None) -> None:
        """One attachment: ``sel`` is the annotation item that asked for it (None: the pod's default network),
        ``nad`` the object its config came from (a config from confDir is the node admin's, not checked)."""
        ports = sel.runtime_config().get("portMappings") if sel is not None else None
        nad_policy = None
        facts = tenancy.Facts()
        resolved: dict[str, str] = {}
        if tenancy.tenant_config(nad):
            nad_policy = self.policy_for(tenancy.namespace_of(key, self.cfg.multus_namespace))
            if self._extra:
                nad_policy = tenancy.with_extra_paths(nad_policy, self._extra)
            uses = tenancy.path_uses(conflist)
            resolved = resolve_paths([u.value for u in uses] + (list(nad_policy.allowed_paths) if uses else []))
            facts = self.facts()
        tenancy.check_attachment(key, pod_policy=self.pod_policy, annotation_ports=ports, nad_policy=nad_policy,
                                 conflist=conflist, facts=facts, resolved=resolved)
