"""Events the API could not take, kept on the node until it answers again.

An ADD that fails because the API server is down or too slow cannot record its Warning event
on the pod: the event itself needs the API. The failure is kept here instead, and the next
command that reaches the API (kubelet retries the sandbox within seconds) records it, with
the time it happened, so ``kubectl describe pod`` shows why the pod's first attempts failed.

Rules:
- One JSON file per event in ``<cniDir>/.pending-events`` (dot-named: the cache's container
  listing skips it), directory 0700, files 0600: they name pods, and nothing else.
- Bounded: at most ``MAX_PENDING`` files (a long outage on a busy node must not fill the
  disk; the newest failures are the ones dropped, the first ones explain the outage), and an
  event older than ``MAX_AGE`` is dropped at replay (the API's own event TTL is one hour).
- Exactly once between concurrent commands: a replayer claims a file by renaming it; a claim
  whose owner died is taken over after ``CLAIM_STALE`` seconds.
- Best effort: nothing here fails a CNI command; problems are logged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .. import log

DIR = ".pending-events"
MAX_PENDING = 256
MAX_AGE = 3600.0
CLAIM_STALE = 60.0
REPLAY_BATCH = 16  # per command: a backlog must not make one ADD slow

# (pod metadata, reason, message, type, unix time of the failure) -> None; raises when the API did not take it
Poster = Callable[[dict[str, Any], str, str, str, float], None]


def _dir(cni_dir: str) -> str:
    return os.path.join(cni_dir, DIR)


def save(cni_dir: str, meta: dict[str, str], reason: str, message: str, type_: str = "Warning",
         at: float | None = None) -> bool:
    """Keep one event for later; False (logged) when it cannot be kept."""
    import orjson

    d = _dir(cni_dir)
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        if len(os.listdir(d)) >= MAX_PENDING:
            log.warning(f"{MAX_PENDING} events already wait for the API in {d}; not keeping {reason} for "
                        f"{meta.get('namespace')}/{meta.get('name')}")
            return False
        when = time.time() if at is None else at
        name = f"{time.time_ns():020d}-{os.getpid()}.json"
        doc = {"metadata": meta, "reason": reason, "message": message, "type": type_, "time": when}
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, orjson.dumps(doc))
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning(f"cannot keep the {reason} event for {meta.get('namespace')}/{meta.get('name')} "
                    f"until the API is back: {exc.strerror or exc}")
        return False
    return True


def _claim(d: str, name: str) -> str | None:
    """Rename ``name`` to a claim of this process; None when another process has it."""
    src = os.path.join(d, name)
    if ".claim-" in name:
        try:
            if time.time() - os.stat(src).st_mtime < CLAIM_STALE:
                return None
        except OSError:
            return None
        base = name.split(".claim-", 1)[0]
    else:
        base = name
    dst = os.path.join(d, f"{base}.claim-{os.getpid()}")
    try:
        os.rename(src, dst)
        os.utime(dst)  # the claim's age starts now
    except OSError:
        return None
    return dst


def replay(cni_dir: str, post: Poster, *, batch: int = REPLAY_BATCH) -> int:
    """Record waiting events, oldest first, until one fails or ``batch`` are done; returns how many were recorded."""
    import orjson

    d = _dir(cni_dir)
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return 0
    done = 0
    for name in names[: batch * 2]:  # claims of others are skipped, so look a little further
        if done >= batch:
            break
        path = _claim(d, name)
        if path is None:
            continue
        try:
            with open(path, "rb") as f:
                doc = orjson.loads(f.read())
            meta, when = dict(doc["metadata"]), float(doc["time"])
            reason, message, type_ = str(doc["reason"]), str(doc["message"]), str(doc["type"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(f"dropping unreadable pending event {path}: {exc}")
            _unlink(path)
            continue
        if time.time() - when > MAX_AGE:
            log.verbose(f"dropping pending {reason} event for {meta.get('namespace')}/{meta.get('name')}: too old")
            _unlink(path)
            continue
        try:
            post(meta, reason, message, type_, when)
        except Exception as exc:  # noqa: BLE001 - the API went away again: keep it for the next command
            log.debug(f"pending event {reason} not recorded yet: {exc}")
            try:
                os.rename(path, os.path.join(d, name.split(".claim-", 1)[0]))
            except OSError:
                pass
            break
        _unlink(path)
        done += 1
    return done


def count(cni_dir: str) -> int:
    try:
        return len(os.listdir(_dir(cni_dir)))
    except OSError:
        return 0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
