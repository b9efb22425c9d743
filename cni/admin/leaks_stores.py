"""``multinic leaks`` over whereabouts' shared stores (Kubernetes CRDs, etcd): this node's leaks only.

A shared store holds every node's allocations; an allocation no cached attachment owns is this node's leak only when
``judge_shared`` proves it this node's (its pod's ``spec.nodeName``; once the pod is gone, the owner of the node slice
it is in, or the container in this node's cache history) and stale by ``multinic reconcile``'s rules, grace period
included. The rest of those stores is ``multinic reconcile``'s, cluster-wide. ``--fix`` judges an allocation again
(pool, then pod, then cache) right before whereabouts' own DEL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import common as c
from .leaks_model import Known, Leak, plugin_request

LEAK, KEEP, OTHER = "leak", "keep", "other"


def judge_shared(a: Any, ip: str, *, node: str, slice_owner: str, pod: dict[str, Any] | None, hist: Any,
                 now: float, grace: float) -> tuple[str, str]:
    """Whether a shared-store allocation with no cached attachment is a leak of THIS node. PURE.

    Returns (LEAK | KEEP | OTHER, why). Whose it is: the pod's ``spec.nodeName`` while the pod (the same
    incarnation: its UID when the allocation records one) exists; once it is gone, the owner of the node slice
    the address is in, else this node's cache history naming the container (``cache.history``). Nothing else
    makes it this node's: OTHER is never reported (``multinic reconcile`` judges those cluster-wide). Whether it
    is stale: ``ipam.reconcile.stale_allocation`` (terminated, gone, re-created, or running without the IP in its
    network-status; never a pod younger than the grace period, pending, or without network-status), and a
    container first seen less than ``grace`` ago is kept (its ADD may be in flight; multinic records the plan,
    and so the container, in the cache before its IPAM ADD, so an ADD in flight here is cached anyway)."""
    from ipam import reconcile

    if a.claim:
        return KEEP, f"it belongs to IPAMClaim {a.claim} (multinic reconcile frees it once the claim is gone)"
    if not a.podref:
        return KEEP, "no pod reference: written by a runtime without Kubernetes"
    same = pod is not None and (not a.pod_uid or str((pod.get("metadata") or {}).get("uid") or "") == a.pod_uid)
    if same:
        assert pod is not None
        where = str((pod.get("spec") or {}).get("nodeName") or "")
        if where != node:
            return OTHER, f"pod {a.podref} runs on node {where or '(none yet)'}"
        views = reconcile.pod_views([pod])
        why = reconcile.stale_allocation(a, ip, views, reconcile.by_uid(views), now, grace, None)
        if why is None:
            return KEEP, f"pod {a.podref} on this node may be using it (running with it, or its ADD may be in flight)"
        return LEAK, f"pod {a.podref} on this node: {why}"
    if slice_owner == node:
        evidence = "in this node's slice"
    elif hist is not None:
        evidence = "its container is in this node's cache history"
    else:
        return OTHER, "its pod is gone and nothing says it was made on this node"
    if hist is not None and now - hist[0] < grace:
        return KEEP, f"its container was planned {int(now - hist[0])}s ago: its ADD may be in flight"
    gone = "pod is gone" if pod is None else f"pod was re-created (UID is no longer {a.pod_uid})"
    return LEAK, f"{gone}; {evidence}"


@dataclass
class Shared:
    """What judging shared stores needs once per run: this node's name, the pod source, the cache history."""

    node: c.NodeConf
    grace: float
    _src: Any = None
    _hist: dict[str, tuple[float, str]] | None = None

    @property
    def name(self) -> str:
        from ..delegator.context import node_name

        return node_name(self.node.cfg)

    def history(self) -> dict[str, tuple[float, str]]:
        if self._hist is None:
            from ..delegator import cache

            self._hist = cache.history(self.node.cfg.cni_dir)
        return self._hist

    def source(self) -> Any:
        from ..spec.errors import TryAgainLater

        if self._src is None:
            from ..delegator.entry import make_source

            self._src = make_source(self.node.cfg) or False
        if self._src is False:
            raise TryAgainLater("no pod source (no kubeconfig, manifestDir or in-cluster service account)")
        return self._src

    def pod(self, podref: str) -> dict[str, Any] | None:
        """The pod (None: it does not exist); raises CNIError when the source cannot tell."""
        ns, _, name = podref.partition("/")
        got: dict[str, Any] | None = self.source().get_pod(ns, name)
        return got

    def here(self) -> dict[str, dict[str, Any]]:
        """"ns/name" -> pod, for the pods scheduled to this node: one LIST instead of a GET per allocation (the
        pools must be read before: a pod that holds an address when its pool is read is in this list)."""
        src = self.source()
        if hasattr(src, "client"):
            from ..k8s.client import core_path

            items = src.client.list(core_path("pods"), field_selector=f"spec.nodeName={self.name}").get("items") or []
        else:
            items = src.pods_on_node(self.name)
        out = {}
        for pod in items:
            meta = pod.get("metadata") or {}
            out[f"{meta.get('namespace', '')}/{meta.get('name', '')}"] = pod
        return out


def pools_of(st: Any, wc: Any, node: str) -> list[tuple[str, Any, str]]:
    """(IPPool name, usable range, the node whose slice it is or "") of every pool the network's config names."""
    from ipam.whereabouts import slices

    out: list[tuple[str, Any, str]] = []
    for rng, name in zip(wc.ranges, wc.pool_names(), strict=True):
        if not wc.node_slice_size:
            out.append((name, rng, ""))
            continue
        pool = st.read_slices(wc.slice_pool)
        for alloc in pool.allocations:
            if not alloc.node:
                continue
            try:
                sub = ipaddress.ip_network(alloc.cidr, strict=False)
            except ValueError:
                continue
            r = slices.sub_range(rng, sub)
            if r is not None:
                out.append((slices.slice_pool_name(sub, alloc.node, wc.network_name), r, alloc.node))
    return out


def shared_whereabouts(node: c.NodeConf, known: Known, wc: Any, net: str, version: str, conf: dict[str, Any],
                       sh: Shared, seen: set[tuple[str, str]] | None = None) -> tuple[list[Leak], list[str]]:
    """This node's allocations in a Kubernetes or etcd store that no cached attachment owns (``judge_shared``);
    --fix runs whereabouts' own DEL for the (containerID, ifname) after judging it again."""
    import time

    from ipam.whereabouts.manager import opened

    from ..spec.errors import CNIError

    out: list[Leak] = []
    kept: list[str] = []
    others = 0
    me = sh.name
    seen = set() if seen is None else seen
    # Two networks on one range without network_name share its pools: each pool is judged once per run.
    where = f"{wc.datastore}:{wc.kubeconfig or ''}:{wc.etcd or ''}"
    try:
        with opened(wc) as st:
            snaps = []
            for name, rng, owner in pools_of(st, wc, me):
                if (where, name) not in seen:
                    seen.add((where, name))
                    snaps.append((name, rng, owner, st.read_pool(name, rng.cidr)))
    except CNIError as exc:
        return [], [f"whereabouts network {net}: cannot read the {wc.datastore} store: {exc}"]
    now = time.time()
    hist = sh.history()
    try:
        here = sh.here()
    except CNIError as exc:
        return [], [f"whereabouts network {net} ({wc.datastore} store): cannot list this node's pods, so nothing "
                    f"there is judged: {exc}"]
    for name, rng, owner, snap in snaps:
        for off, a in sorted(snap.allocations.items()):
            if (a.container_id, a.ifname) in known.owners or (not a.ifname and a.container_id in known.containers):
                continue
            ip = str(rng.ip_at(off))
            pod = here.get(a.podref) if a.podref and not a.claim else None
            if pod is None and a.podref and not a.claim:
                if owner != me and a.container_id not in hist:
                    others += 1  # not on this node, and nothing says this node made it: no GET needed
                    continue
                try:
                    pod = sh.pod(a.podref)  # gone, or on another node?
                except CNIError as exc:
                    kept.append(f"{ip} ({a.podref}): cannot read the pod ({exc.msg})")
                    continue
            verdict, why = judge_shared(a, ip, node=me, slice_owner=owner, pod=pod, hist=hist.get(a.container_id),
                                        now=now, grace=sh.grace)
            if verdict == OTHER:
                others += 1
                continue
            if verdict == KEEP:
                kept.append(f"{ip} ({a.podref or a.container_id[:12]}): {why}")
                continue
            out.append(Leak("whereabouts", net, f"{a.container_id}/{a.ifname or '*'}",
                            f"{ip} allocated in {wc.datastore} pool {name} (pod {a.podref}): {why}",
                            _shared_fix(node, known, wc, sh, net, version, conf, name, rng, owner, off, a)))
    notes = [f"whereabouts network {net} ({wc.datastore} store): kept {k}" for k in kept]
    if others:
        notes.append(f"whereabouts network {net} ({wc.datastore} store): {others} allocation(s) of other nodes or "
                     "of no known node left alone (`multinic reconcile` judges them cluster-wide)")
    return out, notes


def _shared_fix(node: c.NodeConf, known: Known, wc: Any, sh: Shared, net: str, version: str, conf: dict[str, Any],
                pool: str, rng: Any, owner: str, off: int, a: Any) -> Callable[[], None]:
    def fix() -> None:
        import os
        import time

        from ipam.whereabouts.manager import opened

        from .. import invoke
        from ..delegator import cache
        from ..spec.errors import TryAgainLater

        # Judge again, in reconcile's order: the pool first, then the pod, then the cache; DEL only if all still say
        # it is this node's leak with the same container.
        with opened(wc) as st:
            cur = st.read_pool(pool, rng.cidr).allocations.get(off)
        if cur is None or (cur.container_id, cur.ifname) != (a.container_id, a.ifname):
            return  # released or re-used meanwhile: nothing of this leak is left
        pod = sh.pod(a.podref)
        verdict, why = judge_shared(cur, str(rng.ip_at(off)), node=sh.name, slice_owner=owner, pod=pod,
                                    hist=cache.history(node.cfg.cni_dir).get(a.container_id), now=time.time(),
                                    grace=sh.grace)
        if verdict != LEAK or cache.load(node.cfg.cni_dir, a.container_id) is not None:
            raise TryAgainLater(f"not released: on a second look it is not a leak ({why})")
        ns, _, name = a.podref.partition("/")
        args = {"K8S_POD_NAMESPACE": ns, "K8S_POD_NAME": name}
        old = os.environ.get("NODENAME")
        os.environ["NODENAME"] = sh.name  # whereabouts finds this node's slices by it
        try:
            invoke.ipam(plugin_request("DEL", a.container_id, a.ifname or "eth0", node, conf, net, version, args))
        finally:
            if old is None:
                os.environ.pop("NODENAME", None)
            else:
                os.environ["NODENAME"] = old

    return fix

