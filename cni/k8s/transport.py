"""Talking HTTP(S) to one API server: connections, TLS, per-call time budgets, and error mapping.

Rules:
- Standard library only (plus orjson). ``ssl`` and ``http.client`` are imported inside the functions that need
  them: a command that never talks to the API must not pay for TLS.
- Every call has a bounded time budget (connect + send + read), cut to the caller's ``cni.deadline``. Nothing here
  waits forever (a watch stream's read timeout is set by its caller).
- Foreign exceptions (OSError, ssl errors, http.client errors, bad JSON) are translated here, at the I/O boundary,
  into the ``cni.k8s.errors`` classes. Messages name the method and URL path, and say what to do; credentials
  never appear in them.
- Keep-alive connections are reused between calls (an ADD makes several: pod, NADs, status, events), up to
  ``MAX_IDLE_CONNECTIONS`` kept idle; concurrent calls from the daemon's threads each take their own.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..deadline import call_budget
from .errors import ApiUnavailable, KubeConfigError
from .kubeconfig import KubeConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    import http.client
    import ssl

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 2.0
MAX_IDLE_CONNECTIONS = 8
_USER_AGENT = "multinic/k8s-client"


def _build_ssl_context(cfg: KubeConfig) -> ssl.SSLContext:
    import ssl
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name by default
    if cfg.insecure_skip_tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif not (cfg.ca_file or cfg.ca_data):
        ctx.load_default_certs()  # a public endpoint (managed clusters): the system store
    else:
        # A cluster CA replaces the system store, as client-go does (and skips loading it: tens of ms).
        try:
            if cfg.ca_file:
                ctx.load_verify_locations(cafile=cfg.ca_file)
            if cfg.ca_data:
                ctx.load_verify_locations(cadata=cfg.ca_data)
        except (OSError, ssl.SSLError) as e:
            raise KubeConfigError(f"cannot load the cluster CA ({cfg.ca_file or 'certificate-authority-data'}): "
                                  f"{getattr(e, 'strerror', None) or e}") from None
    if cfg.client_cert_file or cfg.client_cert_data:
        # ssl can only load a key pair from paths: -data fields go to private 0600 files that live only for the call.
        cleanup: list[str] = []
        try:
            cert = cfg.client_cert_file
            key = cfg.client_key_file
            for attr in ("client_cert_data", "client_key_data"):
                data = getattr(cfg, attr)
                if data:
                    fd, tmp = tempfile.mkstemp(prefix="multinic-kube-", suffix=".pem")  # mode 0600
                    cleanup.append(tmp)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    if attr == "client_cert_data":
                        cert = tmp
                    else:
                        key = tmp
            if not cert:
                raise KubeConfigError("kubeconfig has a client key but no client certificate")
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            # Never echo the key material: name the fields only.
            raise KubeConfigError(f"cannot load the kubeconfig client certificate/key: "
                                  f"{type(e).__name__}") from None
        finally:
            for tmp in cleanup:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    return ctx


_conn_classes: dict[str, Callable[..., http.client.HTTPConnection]] = {}


def _tls_connection_class() -> Callable[..., http.client.HTTPConnection]:
    """An HTTPConnection that speaks TLS with our context and a chosen SNI/verification name (tls-server-name)."""
    cls = _conn_classes.get("tls")
    if cls is not None:
        return cls
    import http.client

    class _TLSConnection(http.client.HTTPConnection):
        default_port = 443

        def __init__(self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext,
                     server_hostname: str) -> None:
            super().__init__(host, port, timeout=timeout)
            self._ssl_context = context
            self._sni = server_hostname

        def connect(self) -> None:
            super().connect()  # plain HTTPConnection.connect already sets TCP_NODELAY (3.7+)
            self.sock = self._ssl_context.wrap_socket(self.sock, server_hostname=self._sni)

    _conn_classes["tls"] = _TLSConnection
    return _TLSConnection


class _Target:
    """Where to connect: scheme, host, port, and the server URL's path prefix (e.g. a Rancher proxy)."""

    __slots__ = ("scheme", "host", "port", "prefix")

    def __init__(self, scheme: str, host: str, port: int, prefix: str) -> None:
        self.scheme, self.host, self.port, self.prefix = scheme, host, port, prefix


def parse_server(server: str) -> _Target:
    u = urllib.parse.urlsplit(server if "://" in server else f"https://{server}")
    if u.scheme not in ("https", "http") or not u.hostname:
        raise KubeConfigError(f"kubeconfig server {server!r} is not an http(s) URL")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise KubeConfigError(f"kubeconfig server {server!r} has an invalid port") from None
    return _Target(u.scheme, u.hostname, port, u.path.rstrip("/"))


def decode(data: bytes, method: str, path: str) -> Any:
    if not data:
        return {}
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ApiUnavailable(f"Kubernetes API answered {method} {path} with a body that is not JSON",
                             "is the kubeconfig server URL pointing at an API server?", path=path) from None


def _arm(conn: http.client.HTTPConnection, deadline: float) -> None:
    """Give the socket what is left of the call's budget before the next blocking step (send, then read)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("time budget exhausted")  # mapped to ApiUnavailable with the rest of OSError
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


class Transport:
    """Connections to one API server, shared between threads.

    ``timeout`` bounds each call (connect + send + read); ``connect_timeout`` bounds the TCP/TLS connect alone.
    """

    def __init__(self, config: KubeConfig, *, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        import threading

        self.config = config
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.target = parse_server(config.server)
        self._ssl: ssl.SSLContext | None = None
        # Keep-alive connections not in use. Each call takes one (or opens one), so concurrent calls from the
        # daemon's threads run in parallel and one slow answer never holds up the others.
        self.idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def new_connection(self, timeout: float) -> http.client.HTTPConnection:
        t = self.target
        if t.scheme == "http":
            import http.client

            return http.client.HTTPConnection(t.host, t.port, timeout=timeout)
        if self._ssl is None:
            self._ssl = _build_ssl_context(self.config)
        return _tls_connection_class()(t.host, t.port, timeout=timeout, context=self._ssl,
                                       server_hostname=self.config.tls_server_name or t.host)

    def _take(self) -> http.client.HTTPConnection | None:
        """An idle keep-alive connection, or None (the caller opens one)."""
        with self._lock:
            return self.idle.pop() if self.idle else None

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self.idle) < MAX_IDLE_CONNECTIONS:
                self.idle.append(conn)
                return
        self.close_conn(conn)

    @staticmethod
    def close_conn(conn: http.client.HTTPConnection | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def drop(self) -> None:
        with self._lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            self.close_conn(conn)

    def headers(self, content_type: str | None, force_token: bool = False) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if content_type:
            h["Content-Type"] = content_type
        token = self.config.bearer_token(force_token)
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    def url(self, path: str, query: Mapping[str, str] | None) -> str:
        url = self.target.prefix + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def roundtrip(self, method: str, path: str, query: Mapping[str, str] | None, payload: bytes | None,
                  content_type: str | None, timeout: float | None) -> tuple[int, bytes]:
        """One HTTP exchange within the call budget; a kept-alive connection the server dropped is retried once."""
        import http.client
        import ssl

        budget = call_budget(self.timeout if timeout is None else timeout)
        deadline = time.monotonic() + budget
        url = self.url(path, query)
        for attempt in (0, 1):
            conn = self._take()
            reused = conn is not None
            try:
                if conn is None:
                    conn = self.new_connection(max(0.05, min(self.connect_timeout, deadline - time.monotonic())))
                    conn.connect()
                _arm(conn, deadline)
                conn.request(method, url, body=payload, headers=self.headers(content_type))
                resp = conn.getresponse()
                _arm(conn, deadline)
                data = resp.read()
                if resp.will_close:
                    self.close_conn(conn)
                else:
                    self._give_back(conn)
                return resp.status, data
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                    http.client.RemoteDisconnected) as e:
                self.close_conn(conn)
                # A kept-alive connection the server closed while idle: retry once on a fresh one.
                if reused and attempt == 0 and time.monotonic() < deadline:
                    continue
                raise self.unavailable(method, path, e, budget) from None
            except KubeConfigError:
                self.close_conn(conn)
                raise
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                self.close_conn(conn)
                raise self.unavailable(method, path, e, budget) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def unavailable(self, method: str, path: str, exc: BaseException,
                    budget: float | None = None) -> ApiUnavailable:
        """The error for a call that got no answer (``exc``: why), saying what to check."""
        import ssl

        server = f"{self.target.scheme}://{self.target.host}:{self.target.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = (f"TLS verification of {server} failed ({exc.verify_message}); check the kubeconfig's "
                   "certificate-authority / tls-server-name")
        elif isinstance(exc, TimeoutError):
            why = f"no answer from {server} within {self.timeout if budget is None else budget:.3g}s"
        elif isinstance(exc, ConnectionRefusedError):
            why = f"connection to {server} refused"
        else:
            why = f"cannot talk to {server}: {getattr(exc, 'strerror', None) or type(exc).__name__}"
        return ApiUnavailable(f"{method} {path}: Kubernetes API unreachable; retry later", why, path=path)
