"""Events on the pod (``kubectl describe pod``): record now, or keep for later when the API is down.

Rules:
- Best effort: recording an event never fails a CNI command.
- A Warning the API cannot take now (code 11) is kept on the node (``pending``) and recorded,
  with the time it happened, by the next command that reaches the API (``replay``).
- Replay is bounded in time (``REPLAY_BUDGET``): a backlog must not make the command that
  happens to find the API back slow.
"""

from __future__ import annotations

import time
from typing import Any

from .. import log
from ..deadline import deadline
from ..spec.errors import TryAgainLater
from . import pending
from .context import Context, PodRef

# What recording kept events may add to the command that happens to find the API back.
REPLAY_BUDGET = 1.0


def record(ctx: Context, pod: PodRef, reason: str, message: str, type_: str = "Normal") -> None:
    """Record an event on the pod, best effort; a Warning the API cannot take now waits for it (``pending``)."""
    if ctx.source is None or pod.pod is None:
        return
    try:
        ctx.source.event(pod.pod, reason, message, type_)
    except Exception as exc:  # noqa: BLE001 - events are best effort
        log.debug(f"{pod.tag}: cannot record event {reason}: {exc}")
        if type_ == "Warning" and isinstance(exc, TryAgainLater):
            keep(ctx, pod, reason, message, type_)


def keep(ctx: Context, pod: PodRef, reason: str, message: str, type_: str = "Warning") -> None:
    """Keep an event for when the API answers again (the pod need not have been read)."""
    if ctx.source is None or not pod.known:
        return
    meta = {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}
    if pending.save(ctx.settings.cni_dir, meta, reason, message, type_):
        log.verbose(f"{pod.tag}: the API is unavailable; event {reason} kept until it is back")


def replay(ctx: Context) -> None:
    """Record events kept during an outage, now that the API answered (best effort, bounded in count and time)."""
    source = ctx.source
    if source is None or not pending.count(ctx.settings.cni_dir):
        return
    until = time.monotonic() + REPLAY_BUDGET

    def post(meta: dict[str, Any], reason: str, message: str, type_: str, at: float) -> None:
        if time.monotonic() > until:
            raise TimeoutError("this command's time for kept events is spent")  # the next command goes on
        source.event({"metadata": meta}, reason, message, type_, at=at)

    with deadline(until):
        n = pending.replay(ctx.settings.cni_dir, post)
    if n:
        log.verbose(f"recorded {n} event(s) kept while the API was unavailable")

