"""Meta-plugin entry point: one ``Request`` in, a ``Result`` (ADD) or None out.

Parses the multinic config, sets up logging, picks the pod source (local manifests, a
kubeconfig, in-cluster, or none) and hands over to ``core``.
"""

from __future__ import annotations

import os

from .. import log
from ..spec.request import Request
from ..spec.result import Result
from . import config as cfgmod
from . import core


def make_source(cfg: cfgmod.MultinicConfig) -> object | None:
    if cfg.manifest_dir:
        from ..k8s.source import LocalSource

        return LocalSource(cfg.manifest_dir)
    if cfg.kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"):
        from ..k8s.client import Client
        from ..k8s.source import ApiSource

        return ApiSource(Client.from_kubeconfig(cfg.kubeconfig or None, timeout=cfg.api_timeout))
    return None


def configure_log(cfg: cfgmod.MultinicConfig) -> None:
    o = cfg.log_options
    log.configure(
        path=cfg.log_file or "",
        level=cfg.log_level or "panic",
        to_stderr=cfg.log_to_stderr,
        options=log.Options(max_size_mb=o.max_size, max_backups=o.max_backups, max_age_days=o.max_age, compress=o.compress),
    )


def handle(req: Request) -> Result | None:
    cfg = cfgmod.parse(req.config)
    configure_log(cfg)
    source = make_source(cfg)
    ctx = core.Context(req, cfg, source, node_name=core.node_name(cfg))  # type: ignore[arg-type]
    if req.command == "ADD":
        return core.add(ctx)
    if req.command == "DEL":
        core.delete(ctx)
    elif req.command == "CHECK":
        core.check(ctx)
    elif req.command == "STATUS":
        core.status(ctx)
    elif req.command == "GC":
        core.gc(ctx)
    return None
