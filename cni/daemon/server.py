"""``multinic daemon``: the thick-mode node daemon.

It keeps what a thin exec pays for on every call warm — imports (pyroute2, pydantic), the API
connection, and informer-style caches of this node's pods and all NADs — and serves CNI
calls from the shim over a unix socket.

Rules:
- The socket directory is 0700 and the socket 0600 (a CNI call can attach any network).
- Back-pressure, never OOM (Multus #1346): at most ``--max-concurrent`` calls run at once and
  at most ``--max-queue`` wait; beyond that the daemon answers 503 and the shim reports
  CNI error 11 so the runtime retries.
- Graceful shutdown (SIGTERM/SIGINT): stop accepting, let in-flight calls finish, exit.
  The node's CNI config is left in place (Multus #1527: deleting it on shutdown made pods
  start with only the cluster network).
- HTTP on the same socket: ``POST /cni`` (the shim), ``GET /healthz``, ``GET /readyz``,
  ``GET /metrics`` (Prometheus text); optionally ``/metrics`` on a TCP address too.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from .dynamic import DynamicNetworks
from .metrics import Metrics


class Limiter:
    """A concurrency limit with a bounded wait queue."""

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.sem = threading.BoundedSemaphore(max_concurrent)
        self.max_queue = max_queue
        self.waiting = 0
        self.running = 0
        self.lock = threading.Lock()

    def acquire(self, timeout: float) -> bool:
        """Take a slot: at once if one is free, else wait in the queue unless the queue is full."""
        if self.sem.acquire(blocking=False):
            with self.lock:
                self.running += 1
            return True
        with self.lock:
            if self.waiting >= self.max_queue:
                return False
            self.waiting += 1
        try:
            ok = self.sem.acquire(timeout=timeout)
        finally:
            with self.lock:
                self.waiting -= 1
        if ok:
            with self.lock:
                self.running += 1
        return ok

    def release(self) -> None:
        with self.lock:
            self.running -= 1
        self.sem.release()


class Daemon:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.metrics = Metrics()
        self.limiter = Limiter(args.max_concurrent, args.max_queue)
        self.ready = False
        self.stopping = threading.Event()
        self.idle = threading.Condition()
        self.server: _Server | None = None
        self.metrics_server: Any = None
        # GC releases every IPAM reservation it does not see in the cache: a hot-plug must not add one while
        # it runs (the runtime, for its part, never runs GC beside its own ADD).
        self.gc_lock = threading.Lock()
        # The per-sandbox lock that CNI calls and hot-plugs share is a file lock (cni.delegator.sandbox_lock), taken
        # in entry.handle: a runtime DEL during a hot-plug waits for it also when the shim runs that DEL itself.
        self.dynamic = DynamicNetworks(self.metrics.observe_dynamic, conf_dir=args.cni_conf_dir, exclusive=self.gc_lock)

    # ---- CNI ----------------------------------------------------------------------------

    def run_cni(self, env: dict[str, str], stdin: bytes, started: float | None = None) -> tuple[int, bytes]:
        from .. import log, skel
        from ..delegator import context, entry

        log.scoped()  # this request's log settings (its config's logFile/logLevel) are its own
        # An ADD's API budget counts from the request's arrival, queueing included (a thin exec: its process start).
        context.STARTED.set(time.monotonic() if started is None else started)
        out = io.BytesIO()
        err = io.StringIO()
        handle = self._exclusive(entry.handle) if env.get("CNI_COMMAND") == "GC" else entry.handle
        code = skel.dispatch(handle, env, io.BytesIO(stdin), out, err)
        if b"dynamicNetworks" in stdin or self.dynamic.watching:  # a config without the key turns it off
            self._learn(stdin)
        return code, out.getvalue()

    def _exclusive(self, handle: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``handle`` under the GC lock, waited for no longer than a sandbox's lock is (``sandbox_lock.WAIT``): a
        hot-plug stuck in a plugin must not hang the runtime's GC without a word."""
        def run(req: Any) -> Any:
            from ..delegator import sandbox_lock
            from ..spec.errors import TryAgainLater

            if not self.gc_lock.acquire(timeout=sandbox_lock.WAIT):
                raise TryAgainLater(f"GC waited {sandbox_lock.WAIT:g}s for the multinic daemon's hot-plug of sandbox "
                                    f"{self.dynamic.busy or '(finished meanwhile)'}",
                                    "the runtime will try again; the daemon's log says what the hot-plug waits for")
            try:
                return handle(req)
            finally:
                self.gc_lock.release()
        return run

    def _learn(self, stdin: bytes) -> None:
        """A config that enables dynamicNetworks: its sandboxes are watched from now on (until a later config
        for the same cache dir does not enable it)."""
        import orjson

        try:
            conf = orjson.loads(stdin)
        except orjson.JSONDecodeError:
            return
        if isinstance(conf, dict):
            self.dynamic.learn(conf)

    def warm(self) -> None:
        """Pay the imports once, before the first pod (≈ 0.4 s in a thin exec: cni/ARCHITECTURE.md, "Start-up costs")."""
        from .. import invoke, skel  # noqa: F401
        from ..delegator import core, entry  # noqa: F401
        from ..netlink import rtnl
        from ..spec import model  # noqa: F401

        rtnl.netlink_error()  # pyroute2's message layer, not its package body (cni/netlink/rtnl.py)

        for t in ("macvlan", "bridge", "host-local", "static", "sbr", "tuning", "portmap", "whereabouts", "ipvlan"):
            try:
                invoke.native(t)
            except Exception as exc:  # noqa: BLE001 - a plugin that cannot load is reported, not fatal
                sys.stderr.write(f"multinic daemon: cannot preload {t}: {exc}\n")
        import importlib

        importlib.import_module("plugins._confs")  # macvlan/ipvlan models: their modules import them in parse only
        from . import cache as informer

        # The daemon's warm source replaces the per-exec one (same interface, informer-backed).
        entry.make_source = informer.shared_source
        self.ready = True


def _make_handler(d: Daemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "multinic"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the CNI log says what matters
            return

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                   ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                self._reply(200, b"ok\n", ctype="text/plain")
            elif self.path == "/readyz":
                ok = d.ready and not d.stopping.is_set()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n", ctype="text/plain")
            elif self.path == "/metrics":
                self._reply(200, d.metrics.render(d.limiter).encode(), ctype="text/plain; version=0.0.4")
            else:
                self._reply(404, b'{"error":"not found"}')

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/cni":
                self._reply(404, b'{"error":"not found"}')
                return
            arrived = time.monotonic()
            length = int(self.headers.get("Content-Length", "0") or 0)
            if length <= 0 or length > d.args.max_request_bytes:
                self._reply(413, b'{"error":"request too large or empty"}')
                return
            body = self.rfile.read(length)
            if d.stopping.is_set():
                self._reply(503, b'{"error":"shutting down"}')
                return
            if not d.limiter.acquire(timeout=d.args.queue_timeout):
                d.metrics.rejected += 1
                self._reply(503, b'{"error":"busy"}')
                return
            t0 = time.monotonic()
            cmd = "?"
            try:
                import orjson

                doc = orjson.loads(body)
                env = {str(k): str(v) for k, v in (doc.get("env") or {}).items()}
                cmd = env.get("CNI_COMMAND", "?")
                stdin = str(doc.get("stdin", "")).encode()
                code, out = d.run_cni(env, stdin, arrived)
            except Exception as exc:  # noqa: BLE001 - a malformed shim request is answered, never fatal
                code, out = 1, b'{"cniVersion":"1.0.0","code":999,"msg":"multinic daemon: bad request: ' + \
                    repr(exc).replace('"', "'").encode() + b'"}'
            finally:
                d.limiter.release()
            err_code = 0
            if code != 0:
                try:
                    import orjson

                    err_code = int(orjson.loads(out).get("code", 999))
                except Exception:  # noqa: BLE001
                    err_code = 999
            d.metrics.observe(cmd, time.monotonic() - t0, err_code)
            self._reply(200, out, {"X-CNI-Exit": str(code)})

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False  # let in-flight calls finish on shutdown
    block_on_close = True
    # socketserver's default listen backlog is 5: a burst of pods overflowed the kernel's
    # accept queue (EAGAIN in the shim, reported as code 11) before our own bounded queue
    # ever saw the calls. The kernel caps this at net.core.somaxconn.
    request_queue_size = 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="multinic daemon", description="multinic thick-mode node daemon")
    p.add_argument("--socket", default="/run/multinic/multinic.sock")
    p.add_argument("--max-concurrent", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--queue-timeout", type=float, default=120.0)
    p.add_argument("--max-request-bytes", type=int, default=4 * 1024 * 1024)
    p.add_argument("--metrics-address", default="", help="also serve /metrics on HOST:PORT")
    p.add_argument("--auto-config", action="store_true",
                   help="generate the node CNI config from the first config in --cni-conf-dir and keep it current")
    p.add_argument("--cni-conf-dir", default="/etc/cni/net.d")
    p.add_argument("--multinic-config", default="", help="JSON file with extra multinic keys for the generated config")
    p.add_argument("--shim-type", default="multinic-shim")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    d = Daemon(args)
    sock_dir = os.path.dirname(args.socket)
    os.makedirs(sock_dir, mode=0o700, exist_ok=True)
    os.chmod(sock_dir, 0o700)
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        server = _Server(args.socket, _make_handler(d))
    finally:
        os.umask(old)
    os.chmod(args.socket, 0o600)
    d.server = server
    d.warm()
    if args.metrics_address:
        from http.server import ThreadingHTTPServer

        host, _, port = args.metrics_address.rpartition(":")
        d.metrics_server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _make_handler(d))
        threading.Thread(target=d.metrics_server.serve_forever, daemon=True).start()
    d.dynamic.start()
    watcher = None
    if args.auto_config:
        from . import autoconf

        watcher = autoconf.Watcher(args.cni_conf_dir, args.shim_type, args.multinic_config)
        watcher.start()

    def stop(signum: int, frame: Any) -> None:
        d.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"multinic daemon: serving on {args.socket}\n")
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if watcher is not None:
            watcher.stop()
        d.dynamic.stop()
        server.server_close()  # joins in-flight handler threads (block_on_close)
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass
    sys.stderr.write("multinic daemon: stopped; CNI config left in place\n")
    return 0
