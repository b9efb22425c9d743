"""The meta-plugin's commands: ADD / DEL / CHECK / STATUS / GC over a pod's attachments.

What a command works with is in ``context`` (request, config, seams, pod, clock); how a pod
becomes a plan of attachments is in ``resolve``; events on the pod are in ``events``.

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
import time
from typing import TYPE_CHECKING, Any

from .. import faults, invoke, log
from ..deadline import deadline
from ..k8s import annotations as ann
from ..k8s.network_status import default_gateways, entries_for
from ..netlink import batched_link_deletes
from ..spec.config import ConfList
from ..spec.errors import CheckFailed, CNIError, NotFound, PluginNotAvailable, TryAgainLater
from ..spec.result import Result, from_wire
from . import cache, events, loglines, sandbox_lock
from .context import Context, PodRef, pod_ref
from .plan import Attachment
from .resolve import NoNetworkFound, SourceUnavailable, configured_cluster_network, plan_for, plan_for_delete, read_pod

if TYPE_CHECKING:
    from .config import MultinicConfig

# Of the API budget, what is kept for the error path (log, undo, the error JSON, interpreter exit),
# so that the runtime sees the failure within apiTimeoutSeconds of the exec, not after it.
ERROR_PATH_RESERVE = 0.3


# ---- ADD --------------------------------------------------------------------------------


def add(ctx: Context) -> Result:
    """ADD: plan the pod's attachments, cache the plan, make each attachment, then the default route
    and network-status. A failure after the plan is cached undoes every attachment made so far."""
    req = ctx.req
    pod, plan = _plan(ctx, pod_ref(req))
    rec = cache.Record(req.container_id, req.netns, pod.namespace, pod.name, pod.uid,
                       [cache.Entry(a) for a in plan], cni_path=req.path)
    cache.save(ctx.cfg.cni_dir, rec)
    faults.point("after-cache-write")
    results = [_attach(ctx, rec, entry, pod) for entry in rec.entries]
    if any(a.default_route for a in plan):
        results = _move_default_route(ctx, rec, pod, plan, results)
    write_status(ctx, pod, plan, results)
    events.replay(ctx)  # the API answered this ADD: events kept during an outage can go now
    return results[0].with_(cni_version=req.cni_version)


def _plan(ctx: Context, ref: PodRef) -> tuple[PodRef, list[Attachment]]:
    """ADD's first step: wait for the cluster network, read the pod and resolve its networks, within the API budget.

    The pod, its NADs and the Node must be read within apiTimeoutSeconds of the command's start
    (time spent waiting for the readiness indicator not counted): with the API down or hanging, the
    runtime gets code 11 in that time and retries, instead of waiting for one timeout per call.
    """
    try:
        waited = wait_ready(ctx.cfg)
    except CNIError as exc:
        raise _logged(exc.prefixed(f"{ref.tag}: ")) from None
    ctx.read_deadline = ctx.started + waited + ctx.cfg.api_timeout - min(ERROR_PATH_RESERVE, ctx.cfg.api_timeout / 4)
    with deadline(ctx.read_deadline):  # every API call of the block ends by then
        try:
            pod = read_pod(ctx, ref)
        except CNIError as exc:
            err = exc if exc.msg.startswith(ref.tag) else exc.prefixed(f"{ref.tag}: ")
            if isinstance(exc, SourceUnavailable):
                # No event can be recorded now (no API): the next command that reaches it records this one.
                events.keep(ctx, ref, "ErrorAddingNetwork", f"ADD failed: {err.msg}")
            raise _logged(err) from None
        try:
            return pod, plan_for(ctx, pod)
        except CNIError as exc:
            reason = "NoNetworkFound" if isinstance(exc, NoNetworkFound) else "ErrorAddingNetwork"
            if isinstance(exc, SourceUnavailable):
                events.keep(ctx, pod, reason, f"{pod.tag}: ADD failed: {exc}")
            else:
                events.record(ctx, pod, reason, f"{pod.tag}: {exc}", "Warning")
            raise _logged(exc.prefixed(f"{pod.tag}: ")) from None


def _attach(ctx: Context, rec: cache.Record, entry: cache.Entry, pod: PodRef) -> Result:
    """Make one attachment and record it in the cache; on failure undo every attachment (``_failed``)."""
    att = entry.attachment
    try:
        res = ctx.runner.add(ctx.base_for(att), att.plugin_list(), att.runtime_config)
    except CNIError as exc:
        entry.state = "failed"
        cache.save(ctx.cfg.cni_dir, rec, durable=False)
        raise _failed(ctx, rec, pod, exc,
                      f'{pod.tag_for(att.name)}: error adding container to network "{att.name}": {exc}') from None
    entry.state = "added"
    entry.result = cache.to_wire_safe(res, att)
    cache.save(ctx.cfg.cni_dir, rec, durable=False)
    faults.point("between-attachments")
    log.verbose(loglines.add_line(pod, att, res))
    if res.interfaces or res.ips:
        # Go's %v of a []string: "[a b]" (Multus DelegateAdd).
        ips = " ".join(str(ip.address) for ip in res.ips)
        events.record(ctx, pod, "AddedInterface", f"Add {att.ifname} [{ips}] from {att.name}")
    return res


def _move_default_route(ctx: Context, rec: cache.Record, pod: PodRef, plan: list[Attachment],
                        results: list[Result]) -> list[Result]:
    """One attachment asked for the default route (Multus ``default-route``): move it there, in the kernel
    and in the cached results; on failure undo every attachment (``_failed``)."""
    from . import routes

    chosen = next(a for a in plan if a.default_route)
    try:
        results = routes.set_default(ctx.req.netns, plan, results, chosen)
    except CNIError as exc:
        raise _failed(ctx, rec, pod, exc, f"{pod.tag}: error setting the default route: {exc}") from None
    for entry, res in zip(rec.entries, results, strict=True):
        entry.result = cache.to_wire_safe(res, entry.attachment)
    cache.save(ctx.cfg.cni_dir, rec, durable=False)
    return results


def _failed(ctx: Context, rec: cache.Record, pod: PodRef, exc: CNIError, msg: str) -> CNIError:
    """An ADD that made some attachments failed: log and record ``msg``, undo everything, and return the
    error to raise (``exc``'s class and code, ``msg`` as its message, already logged)."""
    log.error(msg)
    events.record(ctx, pod, "ErrorAddingNetwork", msg, "Warning")
    _rollback(ctx, rec, pod)
    err = type(exc)(msg, "", code=exc.code)
    err.logged = True
    return err


def _rollback(ctx: Context, rec: cache.Record, pod: PodRef) -> None:
    """Tear down every attachment made so far, newest first; the cache goes with them.

    The attachment that failed is not DEL'd: its plugins undid their own partial work
    (``invoke.add_list``), and a DEL could remove an interface of that name that was there
    before and made the ADD fail.
    """
    errors = []
    with batched_link_deletes() as links:  # the links go together at the end, as in DEL
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
                log.error(f"{pod.tag_for(att.name)}: rollback of {att.ifname} failed: {exc}")
    for entry in rec.entries:
        failure = links.failures.get(entry.attachment.ifname)
        if failure is not None and entry.state == "planned":
            entry.state = "added"  # its link is still there: the runtime's DEL deletes it
            errors.append(failure)
            log.error(f"{pod.tag_for(entry.attachment.name)}: rollback of {entry.attachment.ifname} failed: {failure}")
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
    # The sandbox record goes with the status (one update): `multinic reconcile` tells a replaced sandbox's
    # whereabouts entries from the live one's by it (cni/k8s/network_status.py).
    from ..k8s.network_status import sandbox_record
    from .context import STARTED

    now = time.time()
    began = STARTED.get()
    started = now - (time.monotonic() - began) if began is not None else now
    record = sandbox_record(ctx.req.container_id, started, now) if ctx.req.container_id else ""
    try:
        faults.point("mid-status-write")
        if not ctx.source.set_network_status(pod.namespace, pod.name, value, sandbox=record):
            log.verbose(f"{pod.tag}: pod is gone; network-status not written")
    except CNIError as exc:
        # The attachments exist and work; a status write failure must not tear them down.
        log.warning(f"{pod.tag}: cannot write {ann.NETWORK_STATUS}: {exc}")
        events.record(ctx, pod, "ErrorSettingNetworkStatus", f"{pod.tag}: cannot write {ann.NETWORK_STATUS}: {exc}", "Warning")


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


# ---- DEL --------------------------------------------------------------------------------


def delete(ctx: Context) -> None:
    """DEL every attachment that may exist, newest first; never stop at the first failure."""
    ref, plan = _delete_plan(ctx)
    # The native plugins' pod links are unregistered together when the block ends (one kernel batch,
    # one RCU wait for all of them: cni.netlink.batched_link_deletes), IPAM, rules and state as before.
    with batched_link_deletes() as links:
        errors = [err for att, prev in reversed(plan) if (err := _detach(ctx, ref, att, prev)) is not None]
    errors += _link_failures(ref, [att for att, _ in plan], links.failures)
    _clear_status(ctx, ref)
    if errors:
        # Keep the cache so the runtime's retry still knows everything that may exist (Multus
        # drops it and leaks); retryDeleteOnError is therefore always in effect.
        try:
            invoke.raise_all(errors)
        except CNIError as exc:
            exc.logged = True  # each failure was logged above with its attachment
            raise
    cache.remove(ctx.settings.cni_dir, ctx.req.container_id)


def _delete_plan(ctx: Context) -> tuple[PodRef, list[tuple[Attachment, Result | None]]]:
    """What DEL tears down, each attachment with its cached result, and the pod it belongs to.

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
        rec = cache.load(ctx.settings.cni_dir, req.container_id)
    except CNIError as exc:
        log.error(f"{ref.tag}: cannot read the cache: {exc}")
    plan: list[tuple[Attachment, Result | None]] = []
    if rec is not None:
        ref = PodRef(rec.pod_namespace or ref.namespace, rec.pod_name or ref.name, rec.pod_uid or ref.uid)
        plan = [(e.attachment, cache.cached_result(e)) for e in rec.entries]
        if rec.damaged:
            log.error(f"{ref.tag}: cache for {req.container_id} is damaged; deleting every attachment it still "
                      "records plus those the pod and config name")
    if rec is None or rec.damaged or not rec.entries:
        rebuilt = plan_for_delete(ctx, ref)
        have = {a.ifname for a, _ in plan}
        plan.extend((a, None) for a in rebuilt if a.ifname not in have)
        plan.sort(key=lambda ap: ap[0].index)
    return ref, plan


def _detach(ctx: Context, ref: PodRef, att: Attachment, prev: Result | None) -> CNIError | None:
    """DEL one attachment; its failure is logged and returned, not raised, so that DEL goes on."""
    try:
        if log.enabled("verbose"):  # the line's JSON costs an orjson import a thin DEL otherwise skips
            log.verbose(loglines.del_line(ref, att))
        ctx.runner.delete(ctx.base_for(att), att.plugin_list(), prev, att.runtime_config)
    except CNIError as exc:
        err = exc.prefixed(f"{ref.tag_for(att.name)}: error deleting {att.ifname}: ")
        log.error(str(err))
        return err
    return None


def _link_failures(ref: PodRef, atts: list[Attachment], failures: dict[str, CNIError]) -> list[CNIError]:
    """The batch's link deletions that failed (after their one-by-one retry), each named with its attachment."""
    out = []
    for ifname, exc in failures.items():
        att = next((a for a in atts if a.ifname == ifname), None)
        err = exc.prefixed(f"{ref.tag_for(att.name) if att else ref.tag}: error deleting {ifname}: ")
        log.error(str(err))
        out.append(err)
    return out


def _clear_status(ctx: Context, ref: PodRef) -> None:
    """Multus unsets network-status on DEL; best effort, and never for a recreated pod (UID differs)."""
    if ctx.source is None or not ref.known:
        return
    try:
        ctx.source.clear_network_status(ref.namespace, ref.name, ref.uid, ctx.req.container_id)
    except CNIError as exc:
        log.verbose(f"{ref.tag}: network-status not cleared: {exc}")
        return
    events.replay(ctx)  # the API answered: events kept during an outage can go now


# ---- CHECK, STATUS, GC -----------------------------------------------------------------


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
            if log.enabled("verbose"):
                log.verbose(f"Check: {rec.pod_namespace}:{rec.pod_name}:{att.name}({att.conflist.name}):{att.ifname} "
                            f"{loglines.conf_json(att)}")
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
    """GC: release what the runtime no longer knows, then forward GC to every network we know (never stops early)."""
    from ..plugin import valid_attachments

    valid = valid_attachments(ctx.req.config)
    if valid is None:
        return
    swept = cache.sweep(ctx.cfg.cni_dir)
    if swept:
        log.verbose(f"GC: removed {swept} temp file(s) of cache writes that never finished")
    errors = _release_stale(ctx, set(valid))
    errors += _gc_networks(ctx, valid)
    unlocked = sandbox_lock.sweep(ctx.cfg.cni_dir)
    if unlocked:
        log.verbose(f"GC: removed {unlocked} lock file(s) of sandboxes that have no cache record")
    invoke.raise_all(errors)


def _release_stale(ctx: Context, valid: set[tuple[str, str]]) -> list[CNIError]:
    """DEL every cached container whose (containerID, primary ifname) is not valid: all its attachments, then
    its cache file. Returns the failures."""
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
        if (cid, primary_if) in valid:
            continue
        sub = Context(ctx.req.with_(command="DEL", container_id=cid, netns=rec.netns, ifname=primary_if,
                                    cni_args={"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": rec.pod_namespace,
                                              "K8S_POD_NAME": rec.pod_name, "K8S_POD_UID": rec.pod_uid}),
                      ctx.cfg, None, ctx.runner, ctx.node_name)
        try:
            with sandbox_lock.held(ctx.cfg.cni_dir, cid, "CNI GC"):  # not beside a DEL or hot-plug of the same sandbox
                if cache.load(ctx.cfg.cni_dir, cid) is None:
                    continue  # its DEL completed while we waited
                delete(sub)
            log.verbose(f"GC: released the attachments of container {cid}")
        except CNIError as exc:
            errors.append(exc.prefixed(f"GC of container {cid}: "))
            log.error(f"GC: cannot delete stale attachments of {cid}: {exc}")
    return errors


def _gc_networks(ctx: Context, valid: list[tuple[str, str]]) -> list[CNIError]:
    """GC of every network recorded in a cache, plus the cluster network (1.1.0+ only, as libcni), with the
    valid attachments expanded to all interfaces of each valid container. Returns the failures."""
    from ..spec import versions

    errors: list[CNIError] = []
    valid_list = [{"containerID": c, "ifname": i} for c, i in valid]
    valid_ids = {c for c, _ in valid}
    networks: dict[str, ConfList] = {}
    for cid in cache.list_ids(ctx.cfg.cni_dir):
        try:
            rec = cache.load(ctx.cfg.cni_dir, cid)
        except CNIError:
            continue
        for e in rec.entries if rec else []:
            networks.setdefault(e.attachment.conflist.name, e.attachment.conflist)
            if cid in valid_ids:
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
    return errors


# ---- messages and log lines ----------------------------------------------------------------


def _logged(err: CNIError) -> CNIError:
    """Log ``err`` here, with the pod's context, and mark it so skel does not log it again."""
    log.error(str(err))
    err.logged = True
    return err
