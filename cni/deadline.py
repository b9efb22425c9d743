"""A deadline over a sequence of blocking calls, per thread: ``with deadline(at): ...``.

Standard library only, and a leaf: the delegator sets ADD's API budget here without importing
the Kubernetes client (a command with a manifest directory, or no API, never pays for it), and
the client's transport reads it before every call.

Per thread (a ``ContextVar``): the daemon serves each CNI request in its own thread, so one
request's deadline never shortens another's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

# Past a deadline a call still gets this long: a loaded node that started late must not fail against a healthy API.
MIN_CALL_BUDGET = 0.5

# A monotonic time by which the current sequence of calls must be done.
_DEADLINE: ContextVar[float | None] = ContextVar("multinic_api_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Every call in the block gets at most until ``at`` (``time.monotonic()`` clock), at least ``MIN_CALL_BUDGET``.

    ``at=None`` lifts any outer deadline for the block.
    """
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    return _DEADLINE.get()


def call_budget(budget: float) -> float:
    """The time one call may take: ``budget``, cut to what is left before the deadline (but ``MIN_CALL_BUDGET``)."""
    at = _DEADLINE.get()
    if at is None:
        return budget
    return min(budget, max(at - time.monotonic(), MIN_CALL_BUDGET))
