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

import contextlib
import os
import re
import socket
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .. import faults, invoke, log
from ..k8s import annotations as ann
from ..k8s import nad as nadmod
from ..k8s.network_status import default_gateways, entries_for
from ..k8s.source import Source
from ..spec.args import ignore_unknown
from ..spec.config import ConfList, conflist_from, decode
from ..spec.errors import CheckFailed, CNIError, InvalidConfig, NotFound, PluginNotAvailable, TryAgainLater
from ..spec.request import Request
from ..spec.result import Result, from_wire, to_wire
from . import cache, pending
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


# When the current CNI command began (``time.monotonic()`` clock). The daemon sets it as a request
# arrives; a runtime's exec (cni.main) sets its process start, so the interpreter's start-up counts
# too; anything else (a library call, a test) starts the clock when its Context is made.
STARTED: ContextVar[float | None] = ContextVar("multinic_command_started", default=None)

# Of the API budget, what is kept for the error path (log, undo, the error JSON, interpreter exit),
# so that the runtime sees the failure within apiTimeoutSeconds of the exec, not after it.
ERROR_PATH_RESERVE = 0.3


def process_started() -> float:
    """This process's start on the monotonic clock (from /proc: fork time, which includes a pyenv shim's exec)."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return now
    return now - age if 0 <= age < 3600 else now


def command_started() -> float:
    started = STARTED.get()
    return time.monotonic() if started is None else started


@dataclass
class Context:
    req: Request
    cfg: MultinicConfig
    source: Source | None
    runner: Runner = field(default_factory=Runner)
    node_name: str = ""
    started: float = field(default_factory=command_started)
    read_deadline: float | None = None  # ADD: when the pod, its NADs and the Node must have been read

    def base(self, ifname: str) -> Request:
        """The request a network's plugins get: its ifname, CNI_PATH = binDir + the runtime's."""
        path = tuple(dict.fromkeys((self.cfg.bin_dir, *self.req.path)))
        return self.req.with_(ifname=ifname, path=path)

    def base_for(self, att: Attachment) -> Request:
        """``base`` for one attachment, with its CNI_ARGS additions (the annotation's ``MAC``/``IP``)."""
        req = self.base(att.ifname)
        extra = att.env_args()
        if not extra:
            return req
        args = dict(req.cni_args)
        if ignore_unknown(args):  # already set by the runtime: keep its spelling
            extra.pop("IgnoreUnknown", None)
        return req.with_(cni_args={**args, **extra})


_POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")  # a Kubernetes object name


def pod_ref(req: Request) -> PodRef:
    """The pod from CNI_ARGS. Names become API URL path segments and file names, so anything
    that is not a Kubernetes name (``..``, ``/``) is refused with code 4."""
    from ..spec.errors import InvalidEnvironment

    a = req.cni_args
    name = a.get("K8S_POD_NAME", "")
    # podman passes K8S_POD_NAME but no K8S_POD_NAMESPACE: like a manifest without a namespace,
    # such a pod is in "default" (kubelet always passes both).
    namespace = a.get("K8S_POD_NAMESPACE", "") or ("default" if name else "")
    uid = a.get("K8S_POD_UID", "")
    for key, value in (("K8S_POD_NAME", name), ("K8S_POD_NAMESPACE", namespace)):
        if value and not _POD_NAME.match(value):
            raise InvalidEnvironment(f"invalid {key} {value!r} in CNI_ARGS", "expected a Kubernetes object name")
    if uid and not all(c.isalnum() or c == "-" for c in uid):
        raise InvalidEnvironment(f"invalid K8S_POD_UID {uid!r} in CNI_ARGS", "expected a UID like 3f6e0c7a-...")
    return PodRef(namespace, name, uid)


class SourceUnavailable(TryAgainLater):
    """The pod source (the API) could not be read: retry later; an event about it must wait for the API."""


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
    override = ""
    if pod.pod is not None:
        anns = (pod.pod.get("metadata") or {}).get("annotations") or {}
        override = str(anns.get(ann.DEFAULT_NETWORK, "") or "")
    if override:
        sel = ann.parse_default_network(override, ctx.cfg.multus_namespace)
        name, cl = _network_by_name(ctx, sel.namespace, sel.name)
        return Primary(name, cl, overridden=True)
    name, cl = configured_cluster_network(ctx)
    return Primary(name, cl)


def _network_by_name(ctx: Context, namespace: str, name: str) -> tuple[str, ConfList]:
    """clusterNetwork semantics: a file/dir path, a NAD in ``namespace``, or a conf name in confDir."""
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
            return net.key, net.conflist
    for conf in conf_dir_configs(ctx.cfg.conf_dir):
        if conf.get("name") == name:
            cl = conflist_from(conf)
            return cl.name, cl
    raise NotFound(f"cluster network {name!r} not found as a NAD in {namespace} nor as a config in {ctx.cfg.conf_dir}")


# ---- pod and networks ------------------------------------------------------------------


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
    uid = str((pod.get("metadata") or {}).get("uid", ""))
    refresh = getattr(ctx.source, "get_pod_live", None)
    if ref.uid and uid and ref.uid != uid and not is_static(pod) and refresh is not None:
        # A cached pod (thick mode's informer) may be the previous incarnation: ask the API.
        try:
            fresh = refresh(ref.namespace, ref.name)
        except CNIError as exc:
            raise SourceUnavailable(f"{ref.tag}: cannot read the pod from the API: {exc.msg}", exc.details) from None
        if fresh is not None:
            pod = fresh
            uid = str((pod.get("metadata") or {}).get("uid", ""))
    if ref.uid and uid and ref.uid != uid and not is_static(pod):
        raise TryAgainLater(f"{ref.tag}: expected pod UID {ref.uid!r} but got {uid!r} from the API",
                            "the pod was deleted and recreated with the same name")
    return PodRef(ref.namespace, ref.name, ref.uid or uid, pod)


def is_static(pod: dict[str, Any]) -> bool:
    """A static pod's API object is its mirror, with another UID than the kubelet's (Multus IsStaticPod)."""
    anns = (pod.get("metadata") or {}).get("annotations") or {}
    return "kubernetes.io/config.mirror" in anns or anns.get("kubernetes.io/config.source") not in (None, "api")


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


def requested(ctx: Context, pod: PodRef) -> list[tuple[ann.Selection, bool]]:
    """(selection, from defaultNetworks): defaultNetworks (outside systemNamespaces), then the pod's annotation."""
    sels: list[tuple[ann.Selection, bool]] = []
    if pod.namespace not in ctx.cfg.system_ns():
        for dn in ctx.cfg.default_networks:
            try:
                sels.extend((s, True) for s in ann.parse_networks(dn, ctx.cfg.multus_namespace))
            except CNIError as exc:
                raise exc.prefixed("multinic config 'defaultNetworks': ") from None
    if pod.pod is not None:
        anns = (pod.pod.get("metadata") or {}).get("annotations") or {}
        value = anns.get(ann.NETWORKS)
        if value:
            sels.extend((s, False) for s in ann.parse_networks(str(value), pod.namespace))
    return sels


class NoNetworkFound(NotFound):
    """A requested NAD does not exist (its own event reason, as in Multus)."""


def allowed_types(ctx: Context, base_types: list[str]) -> frozenset[str]:
    allowed = frozenset(ctx.cfg.allowed_plugin_types) if ctx.cfg.allowed_plugin_types is not None \
        else nadmod.DEFAULT_ALLOWED_TYPES
    return allowed | frozenset(base_types)


def resolve_networks(ctx: Context, pod: PodRef, sels: list[tuple[ann.Selection, bool]],
                     allowed: frozenset[str]) -> list[tuple[ann.Selection, str, ConfList]]:
    """Fetch and resolve every selected NAD and apply policy; the first problem fails the pod."""
    out = []
    labels: dict[str, str] | None = None
    confs = conf_dir_configs(ctx.cfg.conf_dir)
    fetched: dict[tuple[str, str], dict[str, Any] | None] = {}  # the same NAD twice: one GET
    for sel, from_default in sels:
        # defaultNetworks are the admin's choice, not the pod's: isolation does not apply to them.
        if ctx.cfg.namespace_isolation and not from_default:
            nadmod.check_namespace_isolation(pod.namespace, sel.namespace, ctx.cfg.global_ns())
        assert ctx.source is not None
        if (sel.namespace, sel.name) not in fetched:
            try:
                fetched[(sel.namespace, sel.name)] = ctx.source.get_nad(sel.namespace, sel.name)
            except CNIError as exc:
                raise SourceUnavailable(f"cannot read NetworkAttachmentDefinition {sel.key}: {exc.msg}", exc.details) from None
        obj = fetched[(sel.namespace, sel.name)]
        if obj is None:
            nf = nadmod.not_found(sel.namespace, sel.name)
            raise NoNetworkFound(nf.msg, nf.details)
        net = nadmod.resolve(obj, confs)
        if net.node_selector:
            if labels is None:
                labels = node_labels(ctx)
            nadmod.check_node_selector(net, ctx.node_name, labels)
        nadmod.check_allowed_types(net, allowed)
        out.append((sel, net.key, net.conflist))
    return out


def _event(ctx: Context, pod: PodRef, reason: str, message: str, type_: str = "Normal") -> None:
    """Record an event on the pod, best effort; a Warning the API cannot take now waits for it (``pending``)."""
    if ctx.source is None or pod.pod is None:
        return
    try:
        ctx.source.event(pod.pod, reason, message, type_)
    except Exception as exc:  # noqa: BLE001 - events are best effort
        log.debug(f"{pod.tag}: cannot record event {reason}: {exc}")
        if type_ == "Warning" and isinstance(exc, CNIError) and exc.code == TryAgainLater.code:
            _keep_event(ctx, pod, reason, message, type_)


def _keep_event(ctx: Context, pod: PodRef, reason: str, message: str, type_: str = "Warning") -> None:
    if ctx.source is None or not pod.known:
        return
    meta = {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}
    if pending.save(ctx.cfg.cni_dir, meta, reason, message, type_):
        log.verbose(f"{pod.tag}: the API is unavailable; event {reason} kept until it is back")


# What recording kept events may add to the command that happens to find the API back.
REPLAY_BUDGET = 1.0


def _replay_events(ctx: Context) -> None:
    """Record events kept during an outage, now that the API answered (best effort, bounded in count and time)."""
    source = ctx.source
    if source is None or not pending.count(ctx.cfg.cni_dir):
        return
    from ..k8s.client import deadline

    until = time.monotonic() + REPLAY_BUDGET

    def post(meta: dict[str, Any], reason: str, message: str, type_: str, at: float) -> None:
        if time.monotonic() > until:
            raise TimeoutError("this command's time for kept events is spent")  # the next command goes on
        source.event({"metadata": meta}, reason, message, type_, at=at)

    with deadline(until):
        n = pending.replay(ctx.cfg.cni_dir, post)
    if n:
        log.verbose(f"recorded {n} event(s) kept while the API was unavailable")


def _log_id(pod: PodRef, att: Attachment) -> str:
    """Multus' ``ns:pod:uid:net(confname):ifname`` (DelegateAdd's verbose line)."""
    return f"{pod.namespace}:{pod.name}:{pod.uid or 'unknownUID'}:{att.name}({att.conflist.name}):{att.ifname}"


def _conf_json(att: Attachment) -> str:
    import orjson

    raw = att.conflist.raw or {"cniVersion": att.conflist.cni_version, "name": att.conflist.name,
                               "plugins": list(att.conflist.plugins)}
    return orjson.dumps(raw).decode()


# ---- commands ---------------------------------------------------------------------------


def plan_for(ctx: Context, pod: PodRef) -> list[Attachment]:
    """The pod's attachments: cluster network, defaultNetworks, annotation networks (policy applied)."""
    req = ctx.req
    primary = cluster_network(ctx, pod)
    if primary.overridden:
        # The pod chose its primary: it is held to the allowlist like any NAD, against the node's
        # own cluster network types (else the annotation would allow itself).
        _, configured = configured_cluster_network(ctx)
        allowed = allowed_types(ctx, nadmod.plugin_types(configured))
        nadmod.check_allowed_types(nadmod.Network(primary.name, primary.conflist, {}), allowed)
    else:
        allowed = allowed_types(ctx, nadmod.plugin_types(primary.conflist))
    secondaries = []
    if ctx.source is not None and pod.known:
        secondaries = resolve_networks(ctx, pod, requested(ctx, pod), allowed)
    # Kubelet's runtimeConfig (portMappings, bandwidth …) belongs to the cluster network only
    # (multi-net spec §7.5); secondaries get what their annotation item asked for.
    return build(primary.name, primary.conflist, req.ifname, ctx.cfg.runtime_config or req.runtime_config(),
                 secondaries)


def _logged(err: CNIError) -> CNIError:
    """Log ``err`` here, with the pod's context, and mark it so skel does not log it again."""
    log.error(str(err))
    err.logged = True
    return err



def _api_deadline(ctx: Context) -> contextlib.AbstractContextManager[None]:
    """Every API call in the block ends by ``ctx.read_deadline`` (only an API source has calls to bound:
    manifests and no source do not import the client)."""
    if getattr(ctx.source, "client", None) is None:
        return contextlib.nullcontext()
    from ..k8s.client import deadline

    return deadline(ctx.read_deadline)


def add(ctx: Context) -> Result:
    req = ctx.req
    ref = pod_ref(req)
    # The pod, its NADs and the Node must be read within apiTimeoutSeconds of the command's start
    # (time spent waiting for the readiness indicator not counted): with the API down or hanging, the
    # runtime gets code 11 in that time and retries, instead of waiting for one timeout per call.
    try:
        waited = wait_ready(ctx.cfg)
    except CNIError as exc:
        raise _logged(exc.prefixed(f"{ref.tag}: ")) from None
    ctx.read_deadline = ctx.started + waited + ctx.cfg.api_timeout - min(ERROR_PATH_RESERVE, ctx.cfg.api_timeout / 4)
    with _api_deadline(ctx):
        try:
            pod = read_pod(ctx, ref)
        except CNIError as exc:
            err = exc if exc.msg.startswith(ref.tag) else exc.prefixed(f"{ref.tag}: ")
            if isinstance(exc, SourceUnavailable):
                # No event can be recorded now (no API): the next command that reaches it records this one.
                _keep_event(ctx, ref, "ErrorAddingNetwork", f"ADD failed: {err.msg}")
            raise _logged(err) from None
        try:
            plan = plan_for(ctx, pod)
        except CNIError as exc:
            reason = "NoNetworkFound" if isinstance(exc, NoNetworkFound) else "ErrorAddingNetwork"
            if isinstance(exc, SourceUnavailable):
                _keep_event(ctx, pod, reason, f"{pod.tag}: ADD failed: {exc}")
            else:
                _event(ctx, pod, reason, f"{pod.tag}: {exc}", "Warning")
            raise _logged(exc.prefixed(f"{pod.tag}: ")) from None
    rec = cache.Record(req.container_id, req.netns, pod.namespace, pod.name, pod.uid,
                       [cache.Entry(a) for a in plan], cni_path=req.path)
    cache.save(ctx.cfg.cni_dir, rec)
    faults.point("after-cache-write")
    results: list[Result] = []
    for entry in rec.entries:
        att = entry.attachment
        try:
            res = ctx.runner.add(ctx.base_for(att), att.plugin_list(), att.runtime_config)
        except CNIError as exc:
            entry.state = "failed"
            cache.save(ctx.cfg.cni_dir, rec, durable=False)
            raise _failed(ctx, rec, pod, exc, f'[{pod.namespace}/{pod.name}/{pod.uid}:{att.name}]: error adding '
                                              f'container to network "{att.name}": {exc}') from None
        entry.state = "added"
        entry.result = to_wire_safe(res, att)
        cache.save(ctx.cfg.cni_dir, rec, durable=False)
        results.append(res)
        faults.point("between-attachments")
        log.verbose(f"Add: {_log_id(pod, att)} {_result_json(res, att)}")
        if res.interfaces or res.ips:
            # Go's %v of a []string: "[a b]" (Multus DelegateAdd).
            ips = " ".join(str(ip.address) for ip in res.ips)
            _event(ctx, pod, "AddedInterface", f"Add {att.ifname} [{ips}] from {att.name}")
    if any(a.default_route for a in plan):
        try:
            results = apply_default_route(ctx, plan, results)
        except CNIError as exc:
            raise _failed(ctx, rec, pod, exc, f"{pod.tag}: error setting the default route: {exc}") from None
        for entry, res in zip(rec.entries, results, strict=True):
            entry.result = to_wire_safe(res, entry.attachment)
        cache.save(ctx.cfg.cni_dir, rec, durable=False)
    write_status(ctx, pod, plan, results)
    _replay_events(ctx)  # the API answered this ADD: events kept during an outage can go now
    return results[0].with_(cni_version=req.cni_version)


def _failed(ctx: Context, rec: cache.Record, pod: PodRef, exc: CNIError, msg: str) -> CNIError:
    """An ADD that made some attachments failed: log and record ``msg``, undo everything, and return the
    error to raise (``exc``'s class and code, ``msg`` as its message, already logged)."""
    log.error(msg)
    _event(ctx, pod, "ErrorAddingNetwork", msg, "Warning")
    _rollback(ctx, rec, pod)
    err = type(exc)(msg, "", code=exc.code)
    err.logged = True
    return err


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
    """Tear down every attachment made so far, newest first; the cache goes with them.

    The attachment that failed is not DEL'd: its plugins undid their own partial work
    (``invoke.add_list``), and a DEL could remove an interface of that name that was there
    before and made the ADD fail.
    """
    errors = []
    for entry in reversed(rec.entries):
        if entry.state != "added":
            continue
        att = entry.attachment
        prev = from_wire(entry.result) if entry.result else None
        try:
            ctx.runner.delete(ctx.base_for(att), att.plugin_list(), prev, att.runtime_config)
            entry.state = "planned"
        except CNIError as exc:
            errors.append(exc)
            log.error(f"[{pod.namespace}/{pod.name}/{pod.uid}:{att.name}]: rollback of {att.ifname} failed: {exc}")
    if errors:
        cache.save(ctx.cfg.cni_dir, rec, durable=False)  # the runtime's DEL finishes the job from here
    else:
        cache.remove(ctx.cfg.cni_dir, rec.container_id)


def write_status(ctx: Context, pod: PodRef, plan: list[Attachment], results: list[Result]) -> None:
    """network-status as nad-client writes it: one entry per sandbox interface, gateways of default routes."""
    if ctx.source is None or not pod.known:
        return
    import orjson

    entries: list[dict[str, Any]] = []
    for att, res in zip(plan, results, strict=True):
        entries.extend(entries_for(att.name, att.ifname, res, default=att.primary,
                                   gateways=default_gateways(res) or None))
    value = orjson.dumps(entries).decode()
    try:
        faults.point("mid-status-write")
        if not ctx.source.set_network_status(pod.namespace, pod.name, value):
            log.verbose(f"{pod.tag}: pod is gone; network-status not written")
    except CNIError as exc:
        # The attachments exist and work; a status write failure must not tear them down.
        log.warning(f"{pod.tag}: cannot write {ann.NETWORK_STATUS}: {exc}")
        _event(ctx, pod, "ErrorSettingNetworkStatus", f"{pod.tag}: cannot write {ann.NETWORK_STATUS}: {exc}", "Warning")


def apply_default_route(ctx: Context, plan: list[Attachment], results: list[Result]) -> list[Result]:
    """One attachment asked for the default route: move it there (Multus ``default-route``)."""
    from . import routes

    chosen = next(a for a in plan if a.default_route)
    return routes.set_default(ctx.req.netns, plan, results, chosen)


def wait_ready(cfg: MultinicConfig) -> float:
    """Wait for the readiness indicator file (when configured); returns the seconds waited."""
    path = cfg.readiness_indicator_file
    if not path or os.path.exists(path):
        return 0.0
    t0 = time.monotonic()
    deadline = t0 + cfg.readiness_timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            raise TryAgainLater(
                "have you checked that your default network is ready? still waiting for "
                f"readinessindicatorfile @ {path} (waited {cfg.readiness_timeout:g}s)",
            )
        time.sleep(0.1)
    return time.monotonic() - t0


def delete(ctx: Context) -> None:
    """DEL every attachment that may exist, newest first; never stop at the first failure.

    Sources, best first: the cache; when it is missing or damaged, the plan rebuilt from the
    API/manifests (pod annotation) and the config (the cluster network). Both are merged by
    interface name, so a truncated cache still cleans everything it or the pod names.
    """
    req = ctx.req
    try:
        ref = pod_ref(req)
    except CNIError as exc:
        # DEL must still clean up what the cache records; the bad names are simply not used.
        log.error(f"DEL of {req.container_id}: {exc}; using the attachment cache only")
        ref = PodRef()
    rec = None
    try:
        rec = cache.load(ctx.cfg.cni_dir, req.container_id)
    except CNIError as exc:
        log.error(f"{ref.tag}: cannot read the cache: {exc}")
    plan: list[tuple[Attachment, Result | None]] = []
    if rec is not None:
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
            log.error(f"{ref.tag}: cache for {req.container_id} is damaged; deleting every attachment it still "
                      "records plus those the pod and config name")
    pod: PodRef | None = None
    if rec is None or rec.damaged or not rec.entries:
        pod, rebuilt = _rebuild_for_delete(ctx, ref)
        have = {a.ifname for a, _ in plan}
        plan.extend((a, None) for a in rebuilt if a.ifname not in have)
        plan.sort(key=lambda ap: ap[0].index)
    errors: list[CNIError] = []
    for att, prev in reversed(plan):
        try:
            log.verbose(f"Del: {ref.namespace}:{ref.name}:{ref.uid or 'unknownUID'}:{att.conflist.name}:{att.ifname} "
                        f"{_conf_json(att)}")
            ctx.runner.delete(ctx.base_for(att), att.plugin_list(), prev, att.runtime_config)
        except CNIError as exc:
            errors.append(exc.prefixed(f"[{ref.namespace}/{ref.name}/{ref.uid}:{att.name}]: error deleting {att.ifname}: "))
            log.error(str(errors[-1]))
    _clear_status(ctx, ref)
    if errors:
        # Keep the cache so the runtime's retry still knows everything that may exist (Multus
        # drops it and leaks); retryDeleteOnError is therefore always in effect.
        try:
            invoke.raise_all(errors)
        except CNIError as exc:
            exc.logged = True  # each failure was logged above with its attachment
            raise
    cache.remove(ctx.cfg.cni_dir, req.container_id)


def _clear_status(ctx: Context, ref: PodRef) -> None:
    """Multus unsets network-status on DEL; best effort, and never for a recreated pod (UID differs)."""
    if ctx.source is None or not ref.known:
        return
    try:
        ctx.source.clear_network_status(ref.namespace, ref.name, ref.uid)
    except CNIError as exc:
        log.verbose(f"{ref.tag}: network-status not cleared: {exc}")
        return
    _replay_events(ctx)  # the API answered: events kept during an outage can go now


def _rebuild_for_delete(ctx: Context, ref: PodRef) -> tuple[PodRef, list[Attachment]]:
    """No (usable) cache: the plan from the pod if it is still there, else the cluster network only."""
    pod = ref
    if ctx.source is not None and ref.known:
        try:
            got = ctx.source.get_pod(ref.namespace, ref.name)
            uid = str(((got or {}).get("metadata") or {}).get("uid", ""))
            if got is not None and (not ref.uid or not uid or uid == ref.uid or is_static(got)):
                pod = PodRef(ref.namespace, ref.name, ref.uid or uid, got)
            elif got is not None:
                log.verbose(f"warning: {ref.tag}: the pod was recreated (UID {uid}); not using its annotation for DEL")
        except CNIError as exc:
            log.error(f"{ref.tag}: no usable cache and the API is unavailable ({exc}); deleting the cluster network only")
    try:
        primary = cluster_network(ctx, pod)
    except CNIError as exc:
        log.error(f"{ref.tag}: no usable cache and no cluster network for DEL: {exc}")
        return pod, []
    rc = ctx.cfg.runtime_config or ctx.req.runtime_config()
    plan = [Attachment(0, ctx.req.ifname, primary.name, primary.conflist, rc, primary=True)]
    if pod.pod is not None:
        try:
            # No policy on DEL: whatever was attached must be detached, even if no longer allowed.
            secondaries = resolve_networks_for_delete(ctx, pod)
            plan = build(primary.name, primary.conflist, ctx.req.ifname, rc, secondaries)
        except CNIError as exc:
            log.error(f"{ref.tag}: cannot rebuild the attachments for DEL: {exc}; deleting what is known")
    return pod, plan


def resolve_networks_for_delete(ctx: Context, pod: PodRef) -> list[tuple[ann.Selection, str, ConfList]]:
    out = []
    confs = conf_dir_configs(ctx.cfg.conf_dir)
    assert ctx.source is not None
    for sel, _ in requested(ctx, pod):
        obj = ctx.source.get_nad(sel.namespace, sel.name)
        if obj is None:
            log.error(f"{pod.tag}: NetworkAttachmentDefinition {sel.key} is gone and not cached; cannot DEL it")
            continue
        net = nadmod.resolve(obj, confs)
        out.append((sel, net.key, net.conflist))
    return out


def check(ctx: Context) -> None:
    """CHECK every cached attachment (Multus checks only its config's delegates)."""
    from ..spec import versions

    req = ctx.req
    rec = cache.load(ctx.cfg.cni_dir, req.container_id)
    if rec is None or not rec.entries:
        raise NotFound(f"no attachments recorded for container {req.container_id}", "was ADD ever run for it?")
    errors: list[CNIError] = []
    for e in rec.entries:
        att = e.attachment
        if e.state != "added":
            errors.append(CheckFailed(f"attachment {att.name} ({att.ifname}) was never completed"))
            continue
        if not versions.at_least(att.conflist.cni_version, "0.4.0"):
            log.debug(f"CHECK: {att.name} ({att.ifname}) has cniVersion {att.conflist.cni_version}: nothing to check")
            continue
        prev = from_wire(e.result) if e.result else None
        try:
            log.verbose(f"Check: {rec.pod_namespace}:{rec.pod_name}:{att.name}({att.conflist.name}):{att.ifname} "
                        f"{_conf_json(att)}")
            ctx.runner.check(ctx.base_for(att), att.plugin_list(), prev, att.runtime_config)
        except CNIError as exc:
            errors.append(exc.prefixed(f"{att.name} ({att.ifname}): "))
    invoke.raise_all(errors)


def status(ctx: Context) -> None:
    """STATUS: the readiness indicator, then the cluster network's own STATUS (1.1.0+ conflists)."""
    from ..spec import versions

    path = ctx.cfg.readiness_indicator_file
    if path and not os.path.exists(path):
        raise PluginNotAvailable(f"readiness indicator {path} is missing: the cluster network is not ready on this node")
    _, primary = configured_cluster_network(ctx)
    if versions.at_least(primary.cni_version, "1.1.0"):
        ctx.runner.status(ctx.base(ctx.req.ifname or "eth0"), primary)


def gc(ctx: Context) -> None:
    """GC: release what the runtime no longer knows, then forward GC to every network we know.

    - A cached container whose (containerID, primary ifname) is not in the valid list is
      DEL'd from its cache (every attachment), and its cache file goes.
    - Every network recorded in a cache, plus the cluster network, gets GC (1.1.0+ only, as
      libcni) with the valid attachments expanded to all interfaces of each valid container.
    """
    from ..plugin import valid_attachments
    from ..spec import versions

    valid = valid_attachments(ctx.req.config)
    if valid is None:
        return
    swept = cache.sweep(ctx.cfg.cni_dir)
    if swept:
        log.verbose(f"GC: removed {swept} temp file(s) of cache writes that never finished")
    valid_set = set(valid)
    errors: list[CNIError] = []
    for cid in cache.list_ids(ctx.cfg.cni_dir):
        try:
            rec = cache.load(ctx.cfg.cni_dir, cid)
        except CNIError as exc:
            errors.append(exc)
            continue
        if rec is None:
            continue
        primary_if = next((e.attachment.ifname for e in rec.entries if e.attachment.primary), "eth0")
        if (cid, primary_if) in valid_set:
            continue
        sub = Context(ctx.req.with_(command="DEL", container_id=cid, netns=rec.netns, ifname=primary_if,
                                    cni_args={"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": rec.pod_namespace,
                                              "K8S_POD_NAME": rec.pod_name, "K8S_POD_UID": rec.pod_uid}),
                      ctx.cfg, None, ctx.runner, ctx.node_name)
        try:
            delete(sub)
            log.verbose(f"GC: released the attachments of container {cid}")
        except CNIError as exc:
            errors.append(exc.prefixed(f"GC of container {cid}: "))
            log.error(f"GC: cannot delete stale attachments of {cid}: {exc}")
    valid_list = [{"containerID": c, "ifname": i} for c, i in valid]
    networks: dict[str, ConfList] = {}
    for cid in cache.list_ids(ctx.cfg.cni_dir):
        try:
            rec = cache.load(ctx.cfg.cni_dir, cid)
        except CNIError:
            continue
        for e in rec.entries if rec else []:
            networks.setdefault(e.attachment.conflist.name, e.attachment.conflist)
            if any(c == cid for c, _ in valid):
                valid_list.append({"containerID": cid, "ifname": e.attachment.ifname})
    try:
        _, primary = configured_cluster_network(ctx)
        networks.setdefault(primary.name, primary)
    except CNIError as exc:
        errors.append(exc)
    for name, cl in networks.items():
        if not versions.at_least(cl.cni_version, "1.1.0"):
            continue
        try:
            ctx.runner.gc(ctx.base(ctx.req.ifname or "eth0"), cl, valid_list)
        except CNIError as exc:
            errors.append(exc.prefixed(f"GC of network {name}: "))
    invoke.raise_all(errors)


def node_name(cfg: MultinicConfig) -> str:
    return cfg.node_name or os.environ.get("NODE_NAME", "") or socket.gethostname()
