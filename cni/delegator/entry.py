"""Meta-plugin entry point: one ``Request`` in, a ``Result`` (ADD) or None out.

Parses the multinic config, sets up logging, picks the pod source (local manifests, a
kubeconfig, in-cluster, or none) and hands over to ``core``. DEL reads only the keys it needs
(cni/delegator/settings.py, no pydantic); the full config is parsed if DEL turns out to need it
(no usable cache: the plan is rebuilt from the pod and the config).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .. import log
from ..spec.request import Request
from ..spec.result import Result
from . import core, sandbox_lock, settings
from .context import Context, node_name

if TYPE_CHECKING:
    from ..k8s.source import Source
    from . import config as cfgmod


def make_source(cfg: cfgmod.MultinicConfig | settings.Settings) -> Source | None:
    if cfg.manifest_dir:
        from ..k8s.source import LocalSource

        return LocalSource(cfg.manifest_dir)
    if cfg.kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"):
        from ..k8s.client import Client
        from ..k8s.source import ApiSource

        client = Client.from_kubeconfig(cfg.kubeconfig or None, timeout=cfg.api_timeout,
                                        connect_timeout=min(2.0, cfg.api_timeout))
        return ApiSource(client, host=node_name(cfg))
    return None


def configure_log(cfg: cfgmod.MultinicConfig) -> None:
    o = cfg.log_options
    log.configure(
        path=cfg.log_file or "",
        level=cfg.log_level or "panic",
        to_stderr=cfg.log_to_stderr,
        options=log.Options(max_size_mb=o.max_size, max_backups=o.max_backups, max_age_days=o.max_age, compress=o.compress),
    )


def configure_log_early(conf: dict[str, Any]) -> None:
    """Log settings taken leniently from the raw config, so that even a config that fails
    validation is logged where the admin looks (and rotated as configured)."""
    path = conf.get("logFile")
    level = conf.get("logLevel")
    raw = conf.get("logOptions")
    opts: dict[str, Any] = raw if isinstance(raw, dict) else {}
    try:
        options = log.Options(
            max_size_mb=float(opts.get("maxSize", 100)), max_backups=int(opts.get("maxBackups", 5)),
            max_age_days=float(opts.get("maxAge", 5)), compress=bool(opts.get("compress", True)),
        )
    except (TypeError, ValueError):
        options = log.Options()
    log.configure(
        # Only an absolute path: a relative one would land wherever the runtime's cwd is.
        path=path if isinstance(path, str) and path.startswith("/") else "",
        level=level if isinstance(level, str) and level else "panic",
        to_stderr=conf.get("logToStderr") is True,
        options=options,
    )


def handle(req: Request) -> Result | None:
    configure_log_early(req.config)
    cfg: cfgmod.MultinicConfig | settings.Settings | None = None
    if req.command == "DEL":
        cfg = settings.for_delete(req.config)  # None: a key DEL needs is malformed, the full parse says which
    if cfg is None:
        from . import config as cfgmod

        cfg = cfgmod.parse(req.config)
        configure_log(cfg)
    source = make_source(cfg)
    ctx = Context(req, cfg, source, node_name=node_name(cfg))
    if req.command in sandbox_lock.COMMANDS:
        # Serialised with every other command and hot-plug of this sandbox, in any process (sandbox_lock).
        with sandbox_lock.held(cfg.cni_dir, req.container_id, f"CNI {req.command}"):
            return _command(ctx)
    return _command(ctx)


def _command(ctx: Context) -> Result | None:
    command = ctx.req.command
    if command == "ADD":
        return core.add(ctx)
    if command == "DEL":
        core.delete(ctx)
    elif command == "CHECK":
        core.check(ctx)
    elif command == "STATUS":
        core.status(ctx)
    elif command == "GC":
        core.gc(ctx)
    return None
