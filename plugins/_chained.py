"""Shared pieces of the chained plugins (sbr, tuning, portmap). PURE except ``state_file``/``locked``.

Rules:
- A chained plugin gets the previous plugin's result as ``prevResult`` in its config
  (SPEC "Chained plugins"); it is parsed here with the config's ``cniVersion``, and a
  malformed one is error 7 (it is part of the network config, not plugin output).
- "The interface" of a chained plugin is ``CNI_IFNAME``. Its IPs are those whose
  ``interface`` index points at an interface of that name, plus those without an index
  (the reference plugins assume a match when the index is missing).
- Per-attachment state files live in a plugin's ``dataDir``, are named from validated
  parts only (container ID and ifname are validated by ``cni.spec.request``; the network
  name by ``validate_network_name``), written atomically with mode 0600, without fsync
  (``write_state`` says why).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cni import fslock
from cni.atomicfile import atomic_write
from cni.plugin import prev_result as plugin_prev_result
from cni.spec.args import safe_path_component
from cni.spec.errors import InvalidConfig, IOFailure
from cni.spec.request import Request
from cni.spec.result import IPConfig, Result


def prev_result(req: Request, plugin: str, *, required: bool) -> Result | None:
    """The parsed ``prevResult``; error 7 when it is required and missing, or malformed."""
    return plugin_prev_result(req, required=required, plugin=plugin)


def interface_index(result: Result, ifname: str) -> int | None:
    """Index of the container interface named ``ifname`` (one with a sandbox preferred)."""
    fallback = None
    for i, iface in enumerate(result.interfaces):
        if iface.name == ifname:
            if iface.sandbox:
                return i
            if fallback is None:
                fallback = i
    return fallback


def ips_of(result: Result, ifname: str, *, sandbox_only: bool = False) -> list[IPConfig]:
    """The IPs of ``ifname`` in ``result`` (IPs without an interface index count as its own).

    ``sandbox_only`` also skips IPs of same-named interfaces that are not in a sandbox (host
    side), as portmap does.
    """
    out = []
    for ip in result.ips:
        if ip.interface is None:
            out.append(ip)
            continue
        iface = result.interfaces[ip.interface]
        if iface.name != ifname:
            continue
        if sandbox_only and not iface.sandbox:
            continue
        out.append(ip)
    return out


def absolute_data_dir(v: str) -> str:
    # A relative dataDir would put state wherever the runtime's working directory is.
    if not v.startswith("/"):
        raise ValueError(f"dataDir must be an absolute path, got {v!r}")
    return v


# Tables an admin cannot hand to sbr: unspec, default, main, local (its model and its DEL both refuse them).
SBR_RESERVED_TABLES = frozenset({0, 253, 254, 255})


def state_path(data_dir: str, *parts: str) -> str:
    """``<data_dir>/<part>:<part>....json`` from parts that cannot escape the directory.

    The separator is ':' because no part can contain it (container IDs, interface and network
    names all refuse ':'), so two attachments never map to one file — with '_' they could:
    ("a_b", "c") and ("a", "b_c").
    """
    for p in parts:
        safe_path_component(p, what="state file name part")
        if ":" in p:
            raise InvalidConfig(f"invalid state file name part {p!r}: it contains ':'")
    return os.path.join(data_dir, ":".join(parts) + ".json")


def write_state(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` as JSON atomically (``cni.atomicfile``: a unique temp name per process and thread,
    so concurrent daemon threads never share one), file mode 0600, dir 0700.

    Not durable (no fsync, ≈ 2 ms per write here): the state describes kernel state in the pod's
    namespace or in netfilter/sysctl (tuning's saved values, sbr's tables, portmap's rules and
    route_localnet), none of which survives the power loss that would lose the file; a killed
    process cannot tear it (atomic rename), and DEL without it still cleans up (portmap derives
    its names; the others act on the pod's namespace, gone with a reboot).
    """
    import orjson

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2), durable=False)
    except OSError as exc:
        raise IOFailure(f"cannot write state file {path}", exc.strerror or str(exc)) from None


def read_state(path: str) -> dict[str, Any] | None:
    """The state document at ``path``; None when it does not exist or is unreadable garbage."""
    import orjson

    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def remove_state(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        # NotADirectory: dataDir is a file, so no state was ever stored there; a DEL that
        # failed here for ever would leave the pod undeletable (fuzzing found it).
        pass
    except OSError as exc:
        raise IOFailure(f"cannot remove state file {path}", exc.strerror or str(exc)) from None


@contextmanager
def locked(data_dir: str, name: str = "lock", *, create: bool = True) -> Iterator[None]:
    """Hold an exclusive flock on ``<data_dir>/<name>`` (different containers run concurrently).

    ``create=False`` (DEL): when the directory does not exist no ADD ever stored state there,
    so there is nothing to serialise against and nothing is created on the host.
    """
    if not create and not os.path.isdir(data_dir):
        yield
        return
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        fd = fslock.acquire(os.path.join(data_dir, name))
    except OSError as exc:
        raise IOFailure(f"cannot open lock file in {data_dir}", exc.strerror or str(exc)) from None
    try:
        yield
    finally:
        os.close(fd)  # closing releases the flock
