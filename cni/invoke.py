"""Delegation: run a plugin in-process when it is native, else exec it from CNI_PATH as libcni does.

Rules:
- Native plugins are looked up in ``NATIVE`` by type and imported only when first used
  (start-up budget: a VERSION call must not import pyroute2 or pydantic).
- External plugins get exactly what libcni gives them: the caller's environment plus the
  ``CNI_*`` variables, the plugin config on stdin, a result on stdout; a non-zero exit with an
  error document keeps the plugin's own code; anything else becomes error 104 with stderr.
- Conflists (``add_list`` …) follow libcni: ADD in order, each result becoming the next
  plugin's ``prevResult``; DEL in reverse with the final ADD result (on ≥ 0.4.0); CHECK in
  order unless ``disableCheck``. Unlike libcni, DEL does not stop at the first failure: every
  plugin gets its DEL and the errors are reported together, so one failure cannot leak the
  state of the others.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import faults  # crash points of the reliability suites (no-op unless armed)
from .spec import versions
from .spec.config import ConfList, build_plugin_conf
from .spec.errors import CNIError, ExternalPluginFailed, NotFound, TryAgainLater
from .spec.request import Request
from .spec.result import Result

if TYPE_CHECKING:
    from .plugin import Plugin

from .registry import NATIVE  # noqa: E402,F401  (re-exported: type → module defining PLUGIN)

# Types that must run as external binaries even though we have them natively (tests use this
# to put the reference binaries in a chain; an admin can use it to pin a type to a binary).
_force_exec: set[str] = set(filter(None, os.environ.get("MULTINIC_EXEC_TYPES", "").split(",")))

_NATIVE_IPAM = frozenset({"host-local", "static", "whereabouts"})

DEFAULT_TIMEOUT = 120.0


def native(plugin_type: str) -> Plugin[Any] | None:
    """The in-process plugin for ``plugin_type``, or None when it must be exec'd."""
    mod = NATIVE.get(plugin_type)
    if mod is None or plugin_type in _force_exec:
        return None
    # __import__, not importlib.import_module: only the C import path reports to ``-X importtime``,
    # which the import budget test (tests/netns/test_import_budget.py) and the bench's breakdown read.
    plugin: Plugin[Any] = __import__(mod, fromlist=("PLUGIN",)).PLUGIN
    return plugin


def find_in_path(plugin_type: str, path: tuple[str, ...]) -> str:
    """libcni FindInPath: the first executable named ``plugin_type`` in CNI_PATH."""
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise NotFound(f"invalid plugin type {plugin_type!r}", "a plugin type is a file name, not a path")
    for d in path:
        candidate = os.path.join(d, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise NotFound(
        f"failed to find plugin {plugin_type!r} in path {list(path)}",
        "install the plugin binary in one of the CNI_PATH directories (binDir)",
    )


def exec_plugin(
    binary: str,
    req: Request,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: bytes | None = None,
) -> bytes:
    """Exec ``binary`` for ``req``; return its stdout on success, raise its error otherwise."""
    return _exec(binary, req, timeout=timeout, stdin=stdin)[0]


def _exec(binary: str, req: Request, *, timeout: float, stdin: bytes | None) -> tuple[bytes, bytes]:
    """Exec ``binary``; (stdout, stderr) on exit 0, the plugin's error (or 104/11) otherwise."""
    import signal
    import subprocess

    import orjson

    from .spec import errors as E

    env = dict(os.environ)
    env.update(req.to_env())
    data = stdin if stdin is not None else orjson.dumps(req.config)
    try:
        # A session of its own, so a timeout kills the plugin's children too: a grandchild
        # holding the stdout pipe would otherwise keep us waiting long after the deadline.
        proc = subprocess.Popen(
            [binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, start_new_session=True,
        )
    except OSError as exc:
        raise ExternalPluginFailed(f"cannot execute plugin {binary}", exc.strerror or str(exc)) from None
    try:
        out, err_out = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        raise TryAgainLater(f"plugin {binary} timed out after {timeout:g}s on {req.command}") from None
    if proc.returncode == 0:
        return out, err_out
    stderr = err_out.decode(errors="replace").strip()
    try:
        doc = orjson.loads(out)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "code" in doc:
        err = E.from_wire(doc)
        if not err.details and stderr:
            err.details = stderr[-2000:]
        raise err
    raise ExternalPluginFailed(
        f"plugin {binary} failed with exit status {proc.returncode} on {req.command}",
        (stderr or out.decode(errors="replace"))[-2000:],
    )


def _result_of(binary: str, out: bytes, err_out: bytes) -> Result:
    """Parse an exec'd plugin's ADD output; anything but a result document is error 104 with its stderr."""
    import orjson

    from .spec.result import from_wire

    try:
        doc = orjson.loads(out)
    except orjson.JSONDecodeError as exc:
        stderr = err_out.decode(errors="replace").strip()
        raise ExternalPluginFailed(
            f"plugin {binary} succeeded but printed no JSON result ({exc})",
            (stderr or out.decode(errors="replace"))[-2000:],
        ) from None
    return from_wire(doc)


def run(req: Request, *, timeout: float = DEFAULT_TIMEOUT) -> Result | None:
    """Run one plugin config (``req.config``) for ``req.command``, in-process or by exec."""
    ptype = req.plugin_type
    plugin = native(ptype)
    if plugin is not None:
        return plugin.run(req)
    binary = find_in_path(ptype, req.path)
    out, err_out = _exec(binary, req, timeout=timeout, stdin=None)
    if req.command != "ADD":
        return None
    return _result_of(binary, out, err_out)


def ipam(req: Request) -> Result | None:
    """Delegate to the IPAM plugin named in ``req.config['ipam']['type']`` with the same config (libcni ipam.Exec*)."""
    from .spec.errors import InvalidConfig

    ipam_conf = req.config.get("ipam")
    if not isinstance(ipam_conf, dict) or not isinstance(ipam_conf.get("type"), str) or not ipam_conf["type"]:
        raise InvalidConfig("network config field 'ipam.type' is missing")
    ptype = ipam_conf["type"]
    if ptype in NATIVE and ptype not in _NATIVE_IPAM:
        # An interface/chained plugin as IPAM would delegate to itself for ever (fuzzing found it).
        raise InvalidConfig(f"ipam.type {ptype!r} is not an IPAM plugin", f"native IPAM types: {', '.join(sorted(_NATIVE_IPAM))}")
    plugin = native(ptype)
    if plugin is not None:
        return plugin.run(req)
    binary = find_in_path(ptype, req.path)
    out, err_out = _exec(binary, req, timeout=DEFAULT_TIMEOUT, stdin=None)
    if req.command != "ADD":
        return None
    return _result_of(binary, out, err_out)


# ---- configuration lists ------------------------------------------------------


def _plugin_req(base: Request, conflist: ConfList, i: int, prev: Result | None, runtime_config: dict[str, Any] | None) -> Request:
    conf = build_plugin_conf(
        conflist.plugins[i],
        name=conflist.name,
        cni_version=conflist.cni_version,
        prev_result=prev,
        runtime_config=runtime_config,
    )
    return base.with_config(conf)


def add_list(base: Request, conflist: ConfList, runtime_config: dict[str, Any] | None = None) -> Result:
    """ADD every plugin in order; on failure DEL those already added (reverse) and re-raise."""
    prev: Result | None = None
    done: list[int] = []
    try:
        for i in range(len(conflist.plugins)):
            req = _plugin_req(base.with_(command="ADD"), conflist, i, prev, runtime_config)
            res = run(req)
            done.append(i)
            faults.point("between-plugins")
            if res is not None:
                prev = res
    except Exception:
        # Undo our own partial work (plugins#29 and friends): the runtime may never call DEL.
        # Only plugins whose ADD succeeded are undone: the failed one cleans up after itself,
        # and a DEL for it could remove an interface of the same name it refused to replace.
        # A bug (non-CNIError) in a plugin must not skip the rollback, and a failing rollback
        # must not hide the error that caused it.
        send_prev = prev if versions.at_least(conflist.cni_version, "0.4.0") else None
        for i in reversed(done):
            try:
                run(_plugin_req(base.with_(command="DEL"), conflist, i, send_prev, runtime_config))
            except Exception as exc:  # noqa: BLE001
                from . import log

                log.error(f"rollback: DEL of plugin {conflist.plugins[i].get('type')} failed: {exc}")
        raise
    if prev is None:
        prev = Result(cni_version=conflist.cni_version)
    return prev.with_(cni_version=conflist.cni_version)


def del_list(
    base: Request,
    conflist: ConfList,
    prev: Result | None,
    runtime_config: dict[str, Any] | None = None,
) -> None:
    """DEL every plugin in reverse order; continue past failures and raise them together."""
    send_prev = prev if versions.at_least(conflist.cni_version, "0.4.0") else None
    errors: list[CNIError] = []
    for i in reversed(range(len(conflist.plugins))):
        try:
            run(_plugin_req(base.with_(command="DEL"), conflist, i, send_prev, runtime_config))
        except Exception as exc:  # noqa: BLE001 - a bug in one plugin must not leak the others' state
            errors.append(_as_cni(exc).prefixed(f"plugin {conflist.plugins[i].get('type')}: "))
    raise_all(errors)


def check_list(base: Request, conflist: ConfList, prev: Result | None, runtime_config: dict[str, Any] | None = None) -> None:
    if conflist.disable_check:
        return
    for i in range(len(conflist.plugins)):
        run(_plugin_req(base.with_(command="CHECK"), conflist, i, prev, runtime_config))


def status_list(base: Request, conflist: ConfList) -> None:
    for i in range(len(conflist.plugins)):
        run(_plugin_req(base.with_(command="STATUS"), conflist, i, None, None))


def gc_list(base: Request, conflist: ConfList, valid: list[dict[str, str]]) -> None:
    """Forward GC to every plugin with both key spellings (libcni sends both)."""
    if conflist.disable_gc:
        return
    errors: list[CNIError] = []
    for i in range(len(conflist.plugins)):
        req = _plugin_req(base.with_(command="GC"), conflist, i, None, None)
        conf = dict(req.config)
        conf["cni.dev/valid-attachments"] = valid
        conf["cni.dev/attachments"] = valid
        try:
            run(req.with_config(conf))
        except Exception as exc:  # noqa: BLE001 - keep collecting in the other plugins
            errors.append(_as_cni(exc))
    raise_all(errors)


def _as_cni(exc: Exception) -> CNIError:
    """A CNIError as is; anything else (a bug) as error 999 naming the exception."""
    if isinstance(exc, CNIError):
        return exc
    from .spec.errors import InternalError

    return InternalError(f"internal error: {type(exc).__name__}: {exc}", "this is a bug")


def raise_all(errors: list[CNIError]) -> None:
    """Raise nothing, the one error, or the first error with every message in its details."""
    if not errors:
        return
    if len(errors) == 1:
        raise errors[0]
    first = errors[0]
    raise type(first)(first.msg, "; ".join(str(e) for e in errors), code=first.code)

