"""The CNI dispatcher: environment + stdin → one plugin command → stdout + exit status.

Rules (SPEC "Plugin execution", pkg/skel):
- All I/O is passed in (``environ``, ``stdin``, ``stdout``, ``stderr``), so this is tested
  without root and without a process boundary.
- stdout receives exactly one JSON document: the result, the VERSION answer or the error.
  Nothing else ever writes to stdout; tracebacks go to stderr/the log only.
- This is the one place where exceptions become CNI error codes: a ``CNIError`` keeps its
  code, anything else is 999 with a message that says it is a bug.
- Version negotiation: an unknown or unsupported ``cniVersion`` is error 1; CHECK below
  0.4.0 and STATUS/GC below 1.1.0 are error 1.
"""

from __future__ import annotations

import sys

from . import log
from .spec import versions
from .spec.errors import CNIError, IncompatibleVersion, InternalError

TYPE_CHECKING = False  # typing/collections.abc cost start-up time on the VERSION path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, BinaryIO, TextIO

    Handler = Callable[[Any], Any]  # Request -> Result | None

VERSION_ANSWER_VERSION = versions.LATEST


def _write(stdout: BinaryIO, doc: dict[str, Any]) -> None:
    # stdlib json, not orjson: importing orjson pulls in dataclasses, uuid and platform (~90 ms),
    # which VERSION and early errors would otherwise pay; on ADD orjson has loaded json anyway.
    import json

    stdout.write(json.dumps(doc, separators=(",", ":")).encode())
    stdout.write(b"\n")
    stdout.flush()


def version_answer(supported: tuple[str, ...] = versions.ALL) -> dict[str, Any]:
    return {"cniVersion": VERSION_ANSWER_VERSION, "supportedVersions": list(supported)}


def dispatch(
    handler: Callable[[Any], Any],
    environ: Mapping[str, str],
    stdin: BinaryIO,
    stdout: BinaryIO,
    stderr: TextIO = sys.stderr,
    *,
    supported: tuple[str, ...] = versions.ALL,
    max_stdin: int = 4 * 1024 * 1024,
) -> int:
    """Run one CNI command. Returns the process exit status (0 success, 1 error)."""
    from .spec.commands import command_from_env

    cni_version = VERSION_ANSWER_VERSION
    try:
        cmd = command_from_env(environ)
        raw = stdin.read(max_stdin + 1)
        if len(raw) > max_stdin:
            from .spec.errors import DecodeFailure

            raise DecodeFailure(f"network configuration on stdin is larger than {max_stdin} bytes")
        if cmd == "VERSION":
            _write(stdout, version_answer(supported))
            return 0
        from .spec.config import cni_version_of, decode, plugin_conf
        from .spec.request import from_env

        conf = plugin_conf(decode(raw))  # skel's version decoder is a Go struct too
        version = cni_version_of(conf)
        versions.key(version)  # malformed → error 1 before anything else
        if version in versions.ALL:
            cni_version = version
        versions.require_supported(version, supported)
        floor = versions.COMMAND_FLOOR[cmd]
        if not versions.at_least(version, floor):
            raise IncompatibleVersion(f"{cmd} needs cniVersion {floor} or later, config has {version}")
        req = from_env(environ, conf)
        result = handler(req)
        if cmd == "ADD":
            from .spec.result import Result, to_wire

            if not isinstance(result, Result):
                raise InternalError("plugin returned no result for ADD")
            try:
                wire = to_wire(result, version)
            except CNIError:
                # The work is done but cannot be reported in the caller's version (a 0.1/0.2
                # result needs an IP): undo it, or the failed ADD leaves an interface behind.
                try:
                    handler(req.with_(command="DEL"))
                except Exception as undo_exc:  # noqa: BLE001 - report the original error
                    log.error(f"undo of ADD after a version conversion failure failed: {undo_exc}")
                raise
            _write(stdout, wire)
        return 0
    except CNIError as exc:
        if not exc.logged:
            log.error(str(exc))
        _write(stdout, exc.to_wire(cni_version))
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place foreign exceptions become code 999
        import traceback

        tb = traceback.format_exc()
        log.error(f"internal error: {exc!r}\n{tb}")
        try:
            stderr.write(tb)
        except (OSError, ValueError):
            pass
        err = InternalError(f"internal error in multinic: {type(exc).__name__}: {exc}", "this is a bug; the traceback is in the log")
        _write(stdout, err.to_wire(cni_version))
        return 1
