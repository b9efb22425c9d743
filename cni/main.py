"""``multinic``: one executable, several faces chosen by argv[0] or a subcommand.

- ``multinic`` with ``CNI_COMMAND`` set: the meta-plugin (delegator).
- argv[0] equal to a native plugin type (``macvlan``, ``host-local`` …, via symlink) or
  ``multinic plugin TYPE``: that plugin alone, a drop-in for the reference binary.
- ``multinic SUBCOMMAND …``: daemon, shim, conformance, install, webhook, reconcile, demo.

Start-up is a budget (rule 10, cni/ARCHITECTURE.md): this module imports nothing heavy; each face imports what
it needs when it runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType

TYPE_CHECKING = False  # typing costs start-up time on the VERSION path (cni/skel.py does the same)
if TYPE_CHECKING:
    from typing import NoReturn

USAGE = """\
usage: multinic                       CNI meta-plugin (CNI_COMMAND and config on stdin)
       multinic plugin TYPE           run one native plugin as a CNI plugin
       multinic conformance ...       run the CNI conformance harness against a plugin
       multinic daemon ...            thick mode: the node daemon
       multinic shim                  thick mode: forward a CNI call to the daemon
       multinic install ...           install the binary, plugin links and config on a node
       multinic webhook ...           mutating admission webhook for NAD node selectors
       multinic reconcile ...         free IPAM allocations of pods that are gone
       multinic demo                  build the multi-NIC demo scene on this machine
       multinic status|inspect|doctor|leaks|logs ...   the node admin's tools (--help on each)
       multinic --version | --help
"""


def run_plugin(plugin_type: str) -> int:
    """Standalone face of one native plugin."""
    from . import skel
    from .registry import NATIVE

    if plugin_type not in NATIVE:
        msg = f"unknown plugin type {plugin_type!r}; native types: {', '.join(sorted(NATIVE))}"
        sys.stderr.write(f"multinic: {msg}\n")
        if os.environ.get("CNI_COMMAND"):
            # Called as a CNI plugin (even for VERSION: there is no such plugin to describe): the
            # runtime reads stdout, so answer with one error document too.
            import orjson

            from .spec.errors import PluginNotAvailable
            from .spec.versions import LATEST

            sys.stdout.buffer.write(orjson.dumps(PluginNotAvailable(msg).to_wire(LATEST)) + b"\n")
            sys.stdout.buffer.flush()
        return 2
    _configure_plugin_log()
    _no_pydantic_plugins()

    def handler(req: object) -> object:
        from . import invoke

        plugin = invoke.native(plugin_type)
        if plugin is None:  # forced to exec: refuse rather than exec ourselves in a loop
            from .spec.errors import PluginNotAvailable

            raise PluginNotAvailable(f"native plugin {plugin_type} is disabled by MULTINIC_EXEC_TYPES")
        return plugin.run(req)  # type: ignore[arg-type]

    return skel.dispatch(handler, os.environ, sys.stdin.buffer, sys.stdout.buffer, sys.stderr)


def _configure_plugin_log() -> None:
    from . import log

    path = os.environ.get("MULTINIC_LOG_FILE")
    level = os.environ.get("MULTINIC_LOG_LEVEL")
    if path or level:
        log.configure(path=path, level=level or "error")


def _no_pydantic_plugins() -> None:
    """A CNI exec never uses pydantic plugins: skip their entry-point scan over every installed
    distribution's metadata (pydantic does it at the first model build; documented switch).

    With plugins disabled pydantic's loader answers "no plugins" without looking, but importing it
    still costs ``importlib.metadata`` (≈ 16–20 ms here, with email/zipfile/csv). So the loader
    module is given as that answer alone; its one user (``pydantic.plugin._schema_validator``)
    imports only ``get_plugins`` from it (pydantic 2.x), and an import error would show in every
    test that validates a model in an exec.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    name = "pydantic.plugin._loader"
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] in ("__all__", "1", "true") and name not in sys.modules:
        loader = ModuleType(name, "pydantic plugins are disabled in a CNI exec (cni.main)")
        loader.get_plugins = tuple  # type: ignore[attr-defined]  # () : pydantic's own answer when disabled
        sys.modules[name] = loader


def run_meta() -> int:
    from . import skel

    _no_pydantic_plugins()

    def handler(req: object) -> object:
        # Imported on first use, not before dispatch: the delegator pulls in pydantic and the
        # Kubernetes client, and VERSION (or a refused request) must not pay for them.
        from .delegator import context, entry

        # A runtime exec: the API budget counts from the process start (interpreter start-up included).
        context.STARTED.set(context.process_started())
        return entry.handle(req)  # type: ignore[arg-type]

    return skel.dispatch(handler, os.environ, sys.stdin.buffer, sys.stdout.buffer, sys.stderr)


def _sub(module: str) -> Callable[[list[str]], int]:
    def go(argv: list[str]) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            if not module.startswith("packaging."):
                raise
            mod = _load_packaging(module)
        return int(mod.main(argv))

    return go


def _load_packaging(module: str) -> ModuleType:
    """Load ``packaging.<x>`` of this source tree by path.

    Our top-level ``packaging`` directory shares its name with PyPI's ``packaging`` (installed
    with pip/PyInstaller); in an editable install the site-packages one comes first on sys.path
    and hides ours. (The frozen executable bundles only ours.)
    """
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, *module.split(".")) + ".py"
    name = "multinic_" + module.replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not os.path.exists(path):
        raise ModuleNotFoundError(f"no module {module} (looked for {path})")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "conformance": _sub("conformance.cli"),
    "daemon": _sub("cni.daemon.server"),
    "shim": _sub("cni.daemon.shim"),
    "install": _sub("packaging.install"),
    "webhook": _sub("cni.k8s.webhook"),
    "reconcile": _sub("ipam.reconcile"),
    "demo": _sub("cni.demo"),
    **{name: _sub(f"cni.admin.{name}") for name in ("status", "inspect", "doctor", "leaks", "logs")},
}


def exit_now(code: int) -> NoReturn:
    """End a CNI exec without the interpreter's teardown.

    Why: after a thin ADD the process holds pydantic, pyroute2's message classes and the
    delegator; freeing them module by module (interpreter finalisation) costs tens of ms per
    exec (≈ 150 ms per pod ADD+DEL measured), and the runtime waits for our exit.
    What must still happen does: the CNI answer and anything on stderr are flushed here; log
    lines are single O_APPEND ``os.write`` calls (cni/log.py) and every state file (cache,
    IPAM, status) is written and closed (``cni.atomicfile``, ``with`` blocks) before the handler
    returns, so nothing sits in a buffer. ``atexit`` handlers run (``logging.shutdown`` among them, if a
    library configured it). If a non-daemon thread is still alive, its work is unfinished:
    then the ordinary exit joins it.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: the runtime has gone, nothing to save
            pass
    threading = sys.modules.get("threading")  # not imported: only the main thread exists
    if threading is not None and any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()
    ):
        raise SystemExit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):  # an atexit handler may have written
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run one face. ``argv`` None means "as the program" (console script, ``python -m cni``, the frozen
    binary): then a CNI exec ends with ``exit_now`` instead of returning (in-process callers pass argv)."""
    as_program = argv is None
    argv = list(sys.argv if argv is None else argv)
    prog = os.path.basename(argv[0]) if argv else "multinic"
    from .registry import NATIVE

    def cni_exec(run: Callable[[], int]) -> int:
        if not as_program:
            return run()
        # A CNI exec lives for one command and ends in exit_now: the cyclic collector would only
        # cost time — ≈ 80 collections while the ADD path's modules load (classes, schemas), which
        # find a few hundred objects. Reference counting still frees everything else. Not for
        # in-process callers (tests) nor the daemon and other long-lived faces.
        import gc

        gc.disable()
        exit_now(run())

    if prog in NATIVE:
        return cni_exec(lambda: run_plugin(prog))
    if prog == "multinic-shim":
        from .daemon import shim

        return int(shim.main(argv))
    args = argv[1:]
    if args:
        head = args[0]
        if head in ("--version", "-V", "version"):
            from . import __version__
            from .spec.versions import ALL

            print(f"multinic {__version__} (CNI {', '.join(ALL)})")
            return 0
        if head in ("--help", "-h", "help"):
            print(USAGE, end="")
            return 0
        if head == "plugin":
            if len(args) < 2:
                sys.stderr.write("usage: multinic plugin TYPE\n")
                return 2
            return cni_exec(lambda: run_plugin(args[1]))
        if head in SUBCOMMANDS:
            return SUBCOMMANDS[head](args[1:])
        sys.stderr.write(f"multinic: unknown subcommand {head!r}\n{USAGE}")
        return 2
    if any(k.startswith("CNI_") for k in os.environ):
        # A runtime is calling (even if CNI_COMMAND is missing or empty): answer with a CNI
        # error document on stdout (code 4), not with usage text.
        return cni_exec(run_meta)
    sys.stderr.write(USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
