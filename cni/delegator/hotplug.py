"""Dynamic attachments: bring a running sandbox's secondary interfaces in line with its pod's annotation.

The daemon calls ``reconcile`` for one cached sandbox at a time, holding that sandbox's lock, so a hot-plug
never runs beside the runtime's own ADD/DEL/CHECK of the same sandbox (a DEL that arrives meanwhile waits,
then removes everything the cache holds, including what was just added).

Invariants (the same discipline as pod creation):
- Every new attachment passes the same policy as at creation: namespace isolation, the NAD's node selector,
  the plugin allowlist, the multi-tenant policy (``tenancy``), interface-name rules (``resolve``;
  ``hotplug_plan`` for names).
- The cache is the truth: a new attachment is written to it (durably) before the kernel is touched and is
  marked ``dynamic``; an attachment is dropped from it only after its DEL succeeded. A daemon killed mid-change
  leaves a ``dynamic`` entry that is not ``added``: the next pass DELs it and tries again.
- A failed ADD removes only what that attachment made (its plugins undo their own partial work, as at
  creation) and leaves the pod's other interfaces alone. A failed DEL keeps the entry, to be retried.
- network-status is rewritten from the cache after every change; when the API refuses, the daemon retries
  (``Outcome.status_written`` is False) — a later change rewrites it whole, so nothing is lost when an add and
  a remove overlap (multus-dynamic-networks-controller #157, #235).
- The cluster network and anything the runtime's ADD has not finished are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import faults, log
from ..k8s import annotations as ann
from ..k8s import nad as nadmod
from ..k8s.network_status import default_gateways, entries_for
from ..spec.errors import CNIError, InvalidConfig
from . import cache, events, loglines
from .context import Context, PodRef
from .hotplug_plan import changes
from .plan import Attachment
from .resolve import allowed_types, requested, resolve_networks
from .tenancy_io import Guard


@dataclass
class Outcome:
    added: list[str] = field(default_factory=list)  # interface names
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "add net2: why" / "remove net1: why"
    status_written: bool = True

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def runtime_owned(rec: cache.Record) -> bool:
    """True while the runtime's own ADD has not made every attachment it planned (it still owns the sandbox)."""
    return any(not e.dynamic and e.state != "added" for e in rec.entries) or not rec.entries


def _attached(rec: cache.Record) -> list[Attachment]:
    return [e.attachment for e in rec.entries if e.state == "added"]


def _del(ctx: Context, pod: PodRef, entry: cache.Entry) -> None:
    att = entry.attachment
    if log.enabled("verbose"):
        log.verbose(loglines.del_line(pod, att))
    ctx.runner.delete(ctx.base_for(att), att.plugin_list(), cache.cached_result(entry), att.runtime_config)


def _drop_interrupted(ctx: Context, rec: cache.Record, pod: PodRef, out: Outcome) -> None:
    """DEL the dynamic attachments a killed daemon left half made (planned or failed), and forget them."""
    for entry in [e for e in rec.entries if e.dynamic and e.state != "added"]:
        try:
            _del(ctx, pod, entry)
        except CNIError as exc:
            out.failed.append(f"remove {entry.attachment.ifname}: {exc.msg}")
            log.error(f"{pod.tag_for(entry.attachment.name)}: cleaning up the interrupted "
                      f"hot-plug of {entry.attachment.ifname} failed: {exc}")
            continue
        rec.entries.remove(entry)
        cache.save(ctx.cfg.cni_dir, rec, durable=False)


def _remove(ctx: Context, rec: cache.Record, pod: PodRef, att: Attachment, out: Outcome) -> None:
    entry = next(e for e in rec.entries if e.attachment is att)
    try:
        _del(ctx, pod, entry)
    except CNIError as exc:
        msg = f"{pod.tag_for(att.name)}: error removing {att.ifname}: {exc}"
        log.error(msg)
        events.record(ctx, pod, "FailedRemovingInterface", msg, "Warning")
        out.failed.append(f"remove {att.ifname}: {exc.msg}")
        return
    rec.entries.remove(entry)
    cache.save(ctx.cfg.cni_dir, rec, durable=False)
    out.removed.append(att.ifname)
    events.record(ctx, pod, "RemovedInterface", f"Remove {att.ifname} from {att.name}")


def _add(ctx: Context, rec: cache.Record, pod: PodRef, att: Attachment, out: Outcome) -> None:
    entry = cache.Entry(att, dynamic=True)
    rec.entries.append(entry)
    cache.save(ctx.cfg.cni_dir, rec)  # durable: the kernel is about to be touched
    faults.point("hotplug-after-cache-write")
    try:
        res = ctx.runner.add(ctx.base_for(att), att.plugin_list(), att.runtime_config)
    except CNIError as exc:
        # The attachment's plugins undid their own partial work; nothing of it is left to DEL.
        rec.entries.remove(entry)
        cache.save(ctx.cfg.cni_dir, rec, durable=False)
        _refused(ctx, pod, att.name, att.ifname, exc, out)
        return
    faults.point("hotplug-after-add")
    entry.state = "added"
    entry.result = cache.to_wire_safe(res, att)
    cache.save(ctx.cfg.cni_dir, rec, durable=False)
    out.added.append(att.ifname)
    log.verbose(loglines.add_line(pod, att, res))
    ips = " ".join(str(ip.address) for ip in res.ips)
    events.record(ctx, pod, "AddedInterface", f"Add {att.ifname} [{ips}] from {att.name}")


def _refused(ctx: Context, pod: PodRef, network: str, ifname: str, exc: CNIError, out: Outcome) -> None:
    msg = f'{pod.tag_for(network)}: error adding container to network "{network}": {exc}'
    log.error(msg)
    events.record(ctx, pod, "FailedAddingInterface", msg, "Warning")
    out.failed.append(f"add {ifname or network}: {exc.msg}")


def write_status(ctx: Context, rec: cache.Record, pod: PodRef) -> bool:
    """network-status from the cache (every attachment made, in cache order); False when the API refused."""
    if ctx.source is None or not pod.known:
        return True
    import orjson

    entries: list[dict[str, Any]] = []
    for e in rec.entries:
        res = cache.cached_result(e) if e.state == "added" else None
        if res is None:
            continue
        att = e.attachment
        entries.extend(entries_for(att.name, att.ifname, res, default=att.primary,
                                   gateways=default_gateways(res) or None))
    try:
        ctx.source.set_network_status(pod.namespace, pod.name, orjson.dumps(entries).decode())
    except CNIError as exc:
        log.warning(f"{pod.tag}: cannot write {ann.NETWORK_STATUS} after a hot-plug: {exc}; will retry")
        return False
    return True


def reconcile(ctx: Context, rec: cache.Record, pod: PodRef, *, status_pending: bool = False) -> Outcome:
    """Apply the difference between ``pod``'s annotation and the sandbox's cached attachments; network-status
    is rewritten after a change, or when an earlier write is still ``status_pending``."""
    out = Outcome()
    _drop_interrupted(ctx, rec, pod, out)
    if runtime_owned(rec):
        return out
    try:
        wanted = requested(ctx, pod)
    except CNIError as exc:
        # The annotation does not parse: change nothing and tell the pod's author; the daemon tries again
        # when the annotation changes (and, with backoff, when it does not).
        msg = f"{pod.tag}: cannot apply {ann.NETWORKS}: {exc}"
        log.error(msg)
        events.record(ctx, pod, "FailedAddingInterface", msg, "Warning")
        out.failed.append(f"add {ann.NETWORKS}: {exc.msg}")
        if status_pending:
            out.status_written = write_status(ctx, rec, pod)
        return out
    from_default = {id(s): d for s, d in wanted}
    ch = changes(_attached(rec), [s for s, _ in wanted])
    for sel, why in ch.refused:
        _refused(ctx, pod, sel.key, sel.interface, InvalidConfig(why), out)
    for att in ch.remove:
        _remove(ctx, rec, pod, att, out)
    if ch.add:
        primary = rec.entries[0].attachment
        allowed = allowed_types(ctx, nadmod.plugin_types(primary.conflist))
        guard = Guard(ctx.cfg, pod.namespace, [primary.conflist], ctx.source)  # multi-tenant policy, as at creation
        for new in ch.add:
            sel = new.selection
            if sel.default_route:
                _refused(ctx, pod, sel.key, new.ifname, InvalidConfig(
                    "default-route cannot be changed on a running pod", "recreate the pod to move its default route"),
                    out)
                continue
            try:
                ((_, key, conflist),) = resolve_networks(ctx, pod, [(sel, from_default[id(sel)])], allowed,
                                                      guard=guard)
            except CNIError as exc:
                _refused(ctx, pod, sel.key, new.ifname, exc, out)
                continue
            att = Attachment(new.index, new.ifname, key, conflist, sel.runtime_config(), cni_args=sel.cni_args)
            _add(ctx, rec, pod, att, out)
    if out.changed or status_pending:
        out.status_written = write_status(ctx, rec, pod)
    return out
