"""Fault injection for the reliability suites: ``faults.point("after-cache-write")``.

A *point* names a step of an operation where a crash is interesting (the plan is cached
but nothing made yet, a link exists but has no address, an address is reserved but not
configured, ...). Off, a point costs one global lookup and a branch: the environment is
read once at import and nothing else happens (the per-exec start-up budget: rule 10, cni/ARCHITECTURE.md).

Armed by either
- ``MULTINIC_FAULTS=spec[,spec...]`` (read once, at import), or
- ``MULTINIC_FAULTS_FILE=/path`` whose content (same syntax, commas or newlines) is re-read
  at every point, so a long-lived process (the thick daemon) can be armed while it runs;

where ``spec`` is ``NAME[@N][:ACTION]``:
- ``NAME``: the point's name, or ``*`` for every point;
- ``@N``: fire on the N-th time this process reaches NAME (1-based, default 1);
- ``ACTION``: ``kill`` (default: SIGKILL this process — a crash, no ``finally``, no undo),
  ``raise`` (raise ``InjectedFault``, for in-process tests of error paths) or ``exit``
  (``os._exit(137)``, for platforms without signals to self).

Every point reached while armed is appended to ``MULTINIC_FAULTS_TRACE`` (a file) when set,
so a test can tell which points an operation passes through and which one fired.

Rules: this module imports only ``os``; it never writes stdout; it is not a feature — nothing
in production sets these variables.
"""

from __future__ import annotations

import os

_ENV = os.environ.get("MULTINIC_FAULTS", "")
_FILE = os.environ.get("MULTINIC_FAULTS_FILE", "")
_TRACE = os.environ.get("MULTINIC_FAULTS_TRACE", "")
ARMED = bool(_ENV or _FILE or _TRACE)

_hits: dict[str, int] = {}

ACTIONS = ("kill", "raise", "exit")


class InjectedFault(Exception):
    """Raised at a point armed with the ``raise`` action (never in production)."""


def parse(text: str) -> list[tuple[str, int, str]]:
    """``name[@n][:action]`` items separated by commas/newlines → (name, n, action). Bad items are ignored."""
    out: list[tuple[str, int, str]] = []
    for raw in text.replace("\n", ",").split(","):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        name, _, action = item.partition(":")
        action = action.strip() or "kill"
        name, _, nth = name.partition("@")
        try:
            n = int(nth) if nth.strip() else 1
        except ValueError:
            continue
        if action in ACTIONS and n >= 1 and name.strip():
            out.append((name.strip(), n, action))
    return out


def _specs() -> list[tuple[str, int, str]]:
    specs = parse(_ENV) if _ENV else []
    if _FILE:
        try:
            with open(_FILE, encoding="utf-8") as f:
                specs.extend(parse(f.read()))
        except OSError:
            pass
    return specs


def point(name: str) -> None:
    """A step where a crash may be injected; does nothing unless armed (see the module docstring)."""
    if ARMED:
        _reached(name)


def _trace(event: str) -> None:
    if not _TRACE:
        return
    # One O_APPEND write per line: processes that share the trace file never interleave inside a line.
    try:
        fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {event}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # tracing is best effort: it must never change what the traced step does


def _reached(name: str) -> None:
    count = _hits.get(name, 0) + 1
    _hits[name] = count
    _trace(f"{name} {count}")
    for want, n, action in _specs():
        if want in (name, "*") and n == count:
            _fire(name, count, action)


def _fire(name: str, count: int, action: str) -> None:
    _trace(f"FIRE {name} {count} {action}")
    if action == "raise":
        raise InjectedFault(f"injected fault at {name} (hit {count})")
    if action == "exit":
        os._exit(137)
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # pragma: no cover - SIGKILL does not return


def reset() -> None:
    """Forget hit counts (in-process tests re-arm between cases)."""
    _hits.clear()


def arm(spec: str = "", *, file: str = "", trace: str = "") -> None:
    """Arm in-process (tests): the same as starting with the environment variables set."""
    global _ENV, _FILE, _TRACE, ARMED
    _ENV, _FILE, _TRACE = spec, file, trace
    ARMED = bool(_ENV or _FILE or _TRACE)
    reset()
