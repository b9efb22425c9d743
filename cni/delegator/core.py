"""The meta-plugin's orchestration: ADD / DEL / CHECK / STATUS / GC over a pod's attachments.

Seams are arguments (STYLE, after Multus' ``CmdAdd(args, exec, kubeClient)``): the pod/NAD
``Source`` and the ``Runner`` that executes a conflist are passed in, so scenario tests use a
real API double or a local manifest directory and real namespaces.

Invariants:
- ADD fails unless every requested attachment was made; on the first failure every
  attachment already made is torn down in reverse order (multi-net spec §7.2).
- If the pod cannot be read, ADD fails with code 11 — never an empty success (Multus #414).
- The plan is cached before the kernel is touched; DEL works from the cache when the pod or
  its NADs are gone, continues past failures, and tears down every recorded attachment
  even when the cache is damaged (Multus #948/#1087).
- Messages carry ``[ns/pod/uid]`` (and ``:network`` for one attachment), as Multus' do.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import invoke, log
from ..k8s import annotations as ann
from ..k8s import nad as nadmod
from ..k8s.network_status import default_gateways, entries_for
from ..k8s.source import Source
from ..spec.config import ConfList, conflist_from, decode
from ..spec.errors import CNIError, InvalidConfig, NotFound, TryAgainLater
from ..spec.request import Request
from ..spec.result import Result, from_wire, to_wire
from . import cache
from .config import MultinicConfig
from .plan import Attachment, build


@dataclass
class Runner:
    """Executes one attachment's conflist. Defaults to ``cni.invoke``; tests may wrap it."""

    add: Callable[[Request, ConfList, dict[str, Any]], Result] = invoke.add_list
    delete: Callable[[Request, ConfList, Result | None, dict[str, Any]], None] = invoke.del_list
    check: Callable[[Request, ConfList, Result | None, dict[str, Any]], None] = invoke.check_list
    status: Callable[[Request, ConfList], None] = invoke.status_list
    gc: Callable[[Request, ConfList, list[dict[str, str]]], None] = invoke.gc_list


@dataclass
class PodRef:
    namespace: str = ""
    name: str = ""
    uid: str = ""
    pod: dict[str, Any] | None = None

    @property
    def tag(self) -> str:
        return f"[{self.namespace}/{self.name}/{self.uid}]"

    @property
    def known(self) -> bool:
        return bool(self.name)


@dataclass
class Context:
    req: Request
    cfg: MultinicConfig
    source: Source | None
    runner: Runner = field(default_factory=Runner)
    node_name: str = ""

    def base(self, ifname: str) -> Request:
        """The request an attachment's plugins get: its ifname, CNI_PATH = binDir + the runtime's."""
        path = tuple(dict.fromkeys((self.cfg.bin_dir, *self.req.path)))
        return self.req.with_(ifname=ifname, path=path)


def pod_ref(req: Request) -> PodRef:
    a = req.cni_args
    return PodRef(a.get("K8S_POD_NAMESPACE", ""), a.get("K8S_POD_NAME", ""), a.get("K8S_POD_UID", ""))


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


def cluster_network(ctx: Context, pod: PodRef) -> tuple[str, ConfList]:
    """The pod's primary network: the default-network annotation, ``delegates[0]`` or ``clusterNetwork``."""
    cfg = ctx.cfg
    override = ""
    if pod.pod is not None:
        anns = (pod.pod.get("metadata") or {}).get("annotations") or {}
        override = str(anns.get(ann.DEFAULT_NETWORK, "") or "")
    if override:
        sel = ann.parse_default_network(override, cfg.multus_namespace)
        return _network_by_name(ctx, sel.namespace, sel.name)
    if cfg.delegates:
        cl = conflist_from(cfg.delegates[0])
        return cl.name, cl
    if cfg.cluster_network:
        return _network_by_name(ctx, cfg.multus_namespace, cfg.cluster_network)
    raise InvalidConfig("no cluster network: set 'delegates' or 'clusterNetwork' in the multinic config")


def _network_by_name(ctx: Context, namespace: str, name: str) -> tuple[str, ConfList]:
    """clusterNetwork semantics: a file/dir path, a NAD in ``namespace``, or a conf name in confDir."""
    if name.startswith("/"):
        if os.path.isdir(name):
            confs = conf_dir_configs(name)
            if not confs:
                raise NotFound(f"cluster network directory {name} holds no CNI config")
            cl = conflist_from(confs[0])
        else:
            with open(name, "rb") as f:
                cl = conflist_from(decode(f.read(), f"cluster network file {name}"))
        return cl.name, cl
    if ctx.source is not None:
        obj = ctx.source.get_nad(namespace, name)
        if obj is not None:
            net = nadmod.resolve(obj, conf_dir_configs(ctx.cfg.conf_dir))
            return net.key, net.conflist
    for conf in conf_dir_configs(ctx.cfg.conf_dir):
        if conf.get("name") == name:
            cl = conflist_from(conf)
            return cl.name, cl
    raise NotFound(f"cluster network {name!r} not found as a NAD in {namespace} nor as a config in {ctx.cfg.conf_dir}")


# ---- pod and networks ------------------------------------------------------------------


def read_pod(ctx: Context, ref: PodRef, *, retries: float = 2.5) -> PodRef:
    """GET the pod with a short bounded retry (a just-created pod may lag in the cache)."""
    if ctx.source is None or not ref.known:
        return ref
    deadline = time.monotonic() + retries
    while True:
        try:
            pod = ctx.source.get_pod(ref.namespace, ref.name)
        except CNIError as exc:
            raise TryAgainLater(f"{ref.tag}: cannot read the pod from the API: {exc.msg}", exc.details) from None
        if pod is not None:
            break
        if time.monotonic() >= deadline:
            raise NotFound(f"{ref.tag}: pod {ref.namespace}/{ref.name} not found", "it may have been deleted")
        time.sleep(0.25)
    uid = str((pod.get("metadata") or {}).get("uid", ""))
    anns = (pod.get("metadata") or {}).get("annotations") or {}
    static = "kubernetes.io/config.mirror" in anns or anns.get("kubernetes.io/config.source") not in (None, "api")
    if ref.uid and uid and ref.uid != uid and not static:
        raise TryAgainLater(f"{ref.tag}: expected pod UID {ref.uid} but got {uid} from the API",
                            "the pod was deleted and recreated with the same name")
    return PodRef(ref.namespace, ref.name, ref.uid or uid, pod)


def node_labels(ctx: Context) -> dict[str, str]:
    if ctx.source is None or not ctx.node_name:
        return {}
    node = ctx.source.get_node(ctx.node_name)
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def requested(ctx: Context, pod: PodRef) -> list[ann.Selection]:
    """defaultNetworks (outside systemNamespaces) followed by the pod's annotation."""
    sels: list[ann.Selection] = []
    if pod.namespace not in ctx.cfg.system_ns():
        for dn in ctx.cfg.default_networks:
            sels.extend(ann.parse_networks(dn, ctx.cfg.multus_namespace))
    if pod.pod is not None:
        anns = (pod.pod.get("metadata") or {}).get("annotations") or {}
        value = anns.get(ann.NETWORKS)
        if value:
            sels.extend(ann.parse_networks(str(value), pod.namespace))
    return sels


def resolve_networks(ctx: Context, pod: PodRef, sels: list[ann.Selection], primary_types: list[str]) -> list[tuple[ann.Selection, str, ConfList]]:
    """Fetch and resolve every selected NAD and apply policy; the first problem fails the pod."""
    out = []
    allowed = frozenset(ctx.cfg.allowed_plugin_types) if ctx.cfg.allowed_plugin_types is not None \
        else nadmod.DEFAULT_ALLOWED_TYPES
    allowed = allowed | frozenset(primary_types)
    labels: dict[str, str] | None = None
    confs = conf_dir_configs(ctx.cfg.conf_dir)
    for sel in sels:
        if ctx.cfg.namespace_isolation and sel not in _defaults(ctx):
            nadmod.check_namespace_isolation(pod.namespace, sel.namespace, ctx.cfg.global_ns())
        assert ctx.source is not None
        try:
            obj = ctx.source.get_nad(sel.namespace, sel.name)
        except CNIError as exc:
            raise TryAgainLater(f"cannot read NetworkAttachmentDefinition {sel.key}: {exc.msg}", exc.details) from None
        if obj is None:
            err = nadmod.not_found(sel.namespace, sel.name)
            _event(ctx, pod, "NoNetworkFound", f"{err.msg}", "Warning")
            raise err
        net = nadmod.resolve(obj, confs)
        if net.node_selector:
            if labels is None:
                labels = node_labels(ctx)
            nadmod.check_node_selector(net, ctx.node_name, labels)
        nadmod.check_allowed_types(net, allowed)
        out.append((sel, net.key, net.conflist))
    return out


def _defaults(ctx: Context) -> list[ann.Selection]:
    out: list[ann.Selection] = []
    for dn in ctx.cfg.default_networks:
        out.extend(ann.parse_networks(dn, ctx.cfg.multus_namespace))
    return out


def _event(ctx: Context, pod: PodRef, reason: str, message: str, type_: str = "Normal") -> None:
    if ctx.source is None or pod.pod is None:
        return
    try:
        ctx.source.event(pod.pod, reason, message, type_)
    except Exception as exc:  # noqa: BLE001 - events are best effort
        log.debug(f"{pod.tag}: cannot record event {reason}: {exc}")


def _log_id(pod: PodRef, att: Attachment) -> str:
    return f"{pod.namespace}:{pod.name}:{pod.uid}:{att.name}({att.conflist.name}):{att.ifname}"


# ---- commands ---------------------------------------------------------------------------


def add(ctx: Context) -> Result:
    req = ctx.req
    ref = pod_ref(req)
    wait_ready(ctx.cfg)
    pod = read_pod(ctx, ref)
    try:
        primary_name, primary = cluster_network(ctx, pod)
        secondaries = []
        if ctx.source is not None and pod.known:
            secondaries = resolve_networks(ctx, pod, requested(ctx, pod), nadmod.plugin_types(primary))
        plan = build(primary_name, primary, req.ifname, ctx.cfg.runtime_config or req.runtime_config(), secondaries)
    except CNIError as exc:
        log.error(f"{pod.tag}: {exc}")
        if exc.code != 103 or "network-attachment-definition" not in exc.msg:  # NoNetworkFound already sent
            _event(ctx, pod, "ErrorAddingNetwork", f"{pod.tag}: {exc}", "Warning")
        raise exc.prefixed(f"{pod.tag}: ")
    rec = cache.Record(req.container_id, req.netns, pod.namespace, pod.name, pod.uid,
                       [cache.Entry(a) for a in plan])
    cache.save(ctx.cfg.cni_dir, rec)
    results: list[Result] = []
    for entry in rec.entries:
        att = entry.attachment
        try:
            res = ctx.runner.add(ctx.base(att.ifname), att.plugin_list(), att.runtime_config)
        except CNIError as exc:
            entry.state = "failed"
            cache.save(ctx.cfg.cni_dir, rec)
            msg = f"[{pod.namespace}/{pod.name}/{pod.uid}:{att.name}]: error adding container to network {att.name!r}: {exc}"
            log.error(msg)
            _event(ctx, pod, "ErrorAddingNetwork", msg, "Warning")
            _rollback(ctx, rec, pod)
            raise type(exc)(msg, "", code=exc.code) from None
        entry.state = "added"
        entry.result = to_wire_safe(res, att)
        cache.save(ctx.cfg.cni_dir, rec)
        results.append(res)
        ips = ",".join(str(ip.address) for ip in res.ips)
        log.verbose(f"Add: {_log_id(pod, att)} {_result_json(res, att)}")
        if not att.primary:
            _event(ctx, pod, "AddedInterface", f"Add {att.ifname} [{ips}] from {att.name}")
    if any(a.default_route for a in plan):
        results = apply_default_route(ctx, plan, results)
        for entry, res in zip(rec.entries, results):
            entry.result = to_wire_safe(res, entry.attachment)
        cache.save(ctx.cfg.cni_dir, rec)
    write_status(ctx, pod, plan, results)
    return results[0].with_(cni_version=req.cni_version)


def to_wire_safe(res: Result, att: Attachment) -> dict[str, Any]:
    """Cache form of a result in the attachment's version; 0.1/0.2 results without IPs cached as 1.1."""
    try:
        return to_wire(res, att.conflist.cni_version)
    except CNIError:
        return to_wire(res, "1.1.0")


def _result_json(res: Result, att: Attachment) -> str:
    import orjson

    return orjson.dumps(to_wire_safe(res, att)).decode()


def _rollback(ctx: Context, rec: cache.Record, pod: PodRef) -> None:
    """Tear down every attachment attempted so far, newest first; the cache goes with them."""
    errors = []
    for entry in reversed(rec.entries):
        if entry.state == "planned":
            continue
        att = entry.attachment
        prev = from_wire(entry.result) if entry.result else None
        try:
            ctx.runner.delete(ctx.base(att.ifname), att.plugin_list(), prev, att.runtime_config)
        except CNIError as exc:
            errors.append(exc)
            log.error(f"[{pod.namespace}/{pod.name}/{pod.uid}:{att.name}]: rollback of {att.ifname} failed: {exc}")
    if not errors:
        cache.remove(ctx.cfg.cni_dir, rec.container_id)


def write_status(ctx: Context, pod: PodRef, plan: list[Attachment], results: list[Result]) -> None:
    if ctx.source is None or not pod.known:
        return
    import orjson

    entries: list[dict[str, Any]] = []
    for att, res in zip(plan, results):
        gws = list(att.default_route) or (default_gateways(res) if not att.primary else [])
        entries.extend(entries_for(att.name, att.ifname, res, default=att.primary, gateways=gws or None))
    value = orjson.dumps(entries).decode()
    try:
        if not ctx.source.set_network_status(pod.namespace, pod.name, value):
            log.verbose(f"{pod.tag}: pod is gone; network-status not written")
    except CNIError as exc:
        # The attachments exist and work; a status write failure must not tear them down.
        log.error(f"{pod.tag}: cannot write {ann.NETWORK_STATUS}: {exc}")


def apply_default_route(ctx: Context, plan: list[Attachment], results: list[Result]) -> list[Result]:
    """One attachment asked for the default route: move it there (Multus ``default-route``)."""
    from . import routes

    chosen = next(a for a in plan if a.default_route)
    return routes.set_default(ctx.req.netns, plan, results, chosen)


def wait_ready(cfg: MultinicConfig) -> None:
    path = cfg.readiness_indicator_file
    if not path:
        return
    deadline = time.monotonic() + cfg.readiness_timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            raise TryAgainLater(
                f"readiness indicator {path} did not appear within {cfg.readiness_timeout:.0f}s",
                "the cluster network is not ready on this node yet",
            )
        time.sleep(0.1)


def delete(ctx: Context) -> None:
    req = ctx.req
    ref = pod_ref(req)
    rec = None
    try:
        rec = cache.load(ctx.cfg.cni_dir, req.container_id)
    except CNIError as exc:
        log.error(f"{ref.tag}: cannot read the cache: {exc}")
    plan: list[tuple[Attachment, Result | None]] = []
    if rec is not None and rec.entries:
        ref = PodRef(rec.pod_namespace or ref.namespace, rec.pod_name or ref.name, rec.pod_uid or ref.uid)
        for e in rec.entries:
            prev = None
            if e.result:
                try:
                    prev = from_wire(e.result)
                except CNIError:
                    prev = None
            plan.append((e.attachment, prev))
        if rec.damaged:
            log.error(f"{ref.tag}: cache for {req.container_id} is damaged; deleting every attachment it still records")
            plan = _with_primary(ctx, ref, plan)
    else:
        plan = _rebuild_for_delete(ctx, ref)
    errors: list[CNIError] = []
    for att, prev in reversed(plan):
        try:
            ctx.runner.delete(ctx.base(att.ifname), att.plugin_list(), prev, att.runtime_config)
            log.verbose(f"Del: {ref.namespace}:{ref.name}:{ref.uid}:{att.conflist.name}:{att.ifname} {att.name}")
        except CNIError as exc:
            errors.append(exc.prefixed(f"[{ref.namespace}/{ref.name}/{ref.uid}:{att.name}]: error deleting {att.ifname}: "))
            log.error(str(errors[-1]))
    if errors:
        # Keep the cache so the runtime's retry still knows everything that may exist (Multus
        # drops it and leaks); retryDeleteOnError is therefore always in effect.
        invoke.raise_all(errors)
    cache.remove(ctx.cfg.cni_dir, req.container_id)


def _with_primary(ctx: Context, ref: PodRef, plan: list[tuple[Attachment, Result | None]]) -> list[tuple[Attachment, Result | None]]:
    """A damaged cache may have lost the primary's line: add it from config if missing."""
    if any(a.primary for a, _ in plan):
        return plan
    try:
        name, cl = cluster_network(ctx, ref)
    except CNIError:
        return plan
    return [(Attachment(0, ctx.req.ifname, name, cl, primary=True), None), *plan]


def _rebuild_for_delete(ctx: Context, ref: PodRef) -> list[tuple[Attachment, Result | None]]:
    """No cache: rebuild the plan from the API if the pod is still there, else the primary only."""
    pod = ref
    if ctx.source is not None and ref.known:
        try:
            got = ctx.source.get_pod(ref.namespace, ref.name)
            if got is not None:
                pod = PodRef(ref.namespace, ref.name, ref.uid, got)
        except CNIError as exc:
            log.error(f"{ref.tag}: no cache and the API is unavailable ({exc}); deleting the cluster network only")
    try:
        primary_name, primary = cluster_network(ctx, pod)
    except CNIError as exc:
        log.error(f"{ref.tag}: no cache and no cluster network for DEL: {exc}")
        return []
    plan = [Attachment(0, ctx.req.ifname, primary_name, primary, ctx.cfg.runtime_config or ctx.req.runtime_config(), primary=True)]
    if pod.pod is not None:
        try:
            secondaries = resolve_networks(ctx, pod, requested(ctx, pod), nadmod.plugin_types(primary))
            plan = build(primary_name, primary, ctx.req.ifname, plan[0].runtime_config, secondaries)
        except CNIError as exc:
            log.error(f"{ref.tag}: cannot rebuild the attachments for DEL: {exc}; deleting what is known")
    return [(a, None) for a in plan]


def check(ctx: Context) -> None:
    """CHECK every cached attachment (Multus checks only its config's delegates)."""
    req = ctx.req
    rec = cache.load(ctx.cfg.cni_dir, req.container_id)
    if rec is None or not rec.entries:
        raise NotFound(f"no attachments recorded for container {req.container_id}", "was ADD ever run for it?")
    errors: list[CNIError] = []
    for e in rec.entries:
        att = e.attachment
        if e.state != "added":
            errors.append(InvalidConfig(f"attachment {att.name} ({att.ifname}) was never completed"))
            continue
        prev = from_wire(e.result) if e.result else None
        try:
            ctx.runner.check(ctx.base(att.ifname), att.plugin_list(), prev, att.runtime_config)
        except CNIError as exc:
            errors.append(exc.prefixed(f"{att.name} ({att.ifname}): "))
    invoke.raise_all(errors)


def status(ctx: Context) -> None:
    ref = PodRef()
    _, primary = cluster_network(ctx, ref)
    ctx.runner.status(ctx.base(ctx.req.ifname or "eth0"), primary)


def gc(ctx: Context) -> None:
    """GC: drop cache entries not in the valid list, then forward GC to every network we know."""
    from ..plugin import valid_attachments

    valid = valid_attachments(ctx.req.config)
    if valid is None:
        return
    keep_ids = {cid for cid, _ in valid}
    for cid in cache.list_ids(ctx.cfg.cni_dir):
        if cid not in keep_ids:
            try:
                rec = cache.load(ctx.cfg.cni_dir, cid)
                if rec is not None:
                    sub = Context(ctx.req.with_(container_id=cid, netns=rec.netns, ifname="eth0",
                                                cni_args={"K8S_POD_NAMESPACE": rec.pod_namespace,
                                                          "K8S_POD_NAME": rec.pod_name, "K8S_POD_UID": rec.pod_uid}),
                                  ctx.cfg, None, ctx.runner, ctx.node_name)
                    delete(sub)
            except CNIError as exc:
                log.error(f"GC: cannot delete stale attachments of {cid}: {exc}")
    # Forward to every network with the attachments that are valid for it (all ifnames).
    valid_list = [{"containerID": c, "ifname": i} for c, i in valid]
    for cid in cache.list_ids(ctx.cfg.cni_dir):
        rec = cache.load(ctx.cfg.cni_dir, cid)
        for e in rec.entries if rec else []:
            valid_list.append({"containerID": cid, "ifname": e.attachment.ifname})
    _, primary = cluster_network(ctx, PodRef())
    ctx.runner.gc(ctx.base(ctx.req.ifname or "eth0"), primary, valid_list)


def node_name(cfg: MultinicConfig) -> str:
    return cfg.node_name or os.environ.get("NODE_NAME", "") or socket.gethostname()
