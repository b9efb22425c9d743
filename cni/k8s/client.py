"""A small Kubernetes API client: kubeconfig / in-cluster loading, JSON over HTTPS, typed helpers.

Rules of this module:
- Standard library only (plus orjson, and PyYAML only when a kubeconfig is not JSON). ``ssl``, ``http.client`` and
  ``yaml`` are imported inside the functions that need them: this module is imported on the per-exec CNI path, and a
  plugin that never talks to the API must not pay for TLS.
- Every request has a bounded time budget (connect + send + read). Nothing here waits forever; the one exception is a
  watch stream, whose read timeout is the watch's own ``timeoutSeconds`` plus a margin. A caller can also put a
  deadline over a whole sequence of calls (``deadline()``): an ADD must fail within its budget counted from the
  exec's start, not 5 s per call.
- Foreign exceptions (OSError, ssl errors, http.client errors, bad JSON) are translated here, at the I/O boundary,
  into the ``Api*`` classes below, which are ``cni.spec.errors`` classes carrying CNI codes:
  404 → ``ApiNotFound`` (103), 409 → ``ApiConflict`` (11), 401/403 → ``ApiUnauthorized`` (102),
  5xx / 429 / refused / timeout / TLS → ``ApiUnavailable`` (11), 400/422 and other 4xx → ``ApiInvalid`` (999).
- Messages name the method and URL path, and say what to do. A bearer token, a private key or a client certificate
  never appears in a message, a log line or a ``repr``.
- Bearer tokens that come from a file (kubeconfig ``tokenFile``, the service-account token) are re-read whenever the
  file changes, and once more after a 401, so projected-token rotation never strands a long-lived process
  (multus-cni #852, #1263). A kubeconfig file that is rewritten in place (as Multus' daemon does) is re-read on 401.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from cni.spec.errors import (
    CNIError,
    InternalError,
    InvalidConfig,
    NotFound,
    PolicyDenied,
    TryAgainLater,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import http.client
    import ssl

__all__ = [
    "ApiConflict",
    "ApiAlreadyExists",
    "ApiError",
    "ApiGone",
    "ApiInvalid",
    "ApiNotFound",
    "ApiUnauthorized",
    "ApiUnavailable",
    "Client",
    "KubeConfig",
    "KubeConfigError",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "SERVICE_ACCOUNT_DIR",
    "NAD_GROUP",
    "NAD_VERSION",
    "NAD_PLURAL",
    "core_path",
    "current_deadline",
    "deadline",
    "group_path",
]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
_PATCH_ALIASES = {"merge": MERGE_PATCH, "json": JSON_PATCH, "strategic": STRATEGIC_MERGE_PATCH}

NAD_GROUP = "k8s.cni.cncf.io"
NAD_VERSION = "v1"
NAD_PLURAL = "network-attachment-definitions"

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 2.0
MAX_IDLE_CONNECTIONS = 8
# Past a deadline a call still gets this long: a loaded node that started late must not fail against a healthy API.
MIN_CALL_BUDGET = 0.5

# A monotonic time by which the current sequence of calls must be done, per thread (the daemon serves each CNI
# request in its own thread, so one request's deadline never shortens another's).
_DEADLINE: ContextVar[float | None] = ContextVar("multinic_api_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Every call in the block gets at most until ``at`` (``time.monotonic()`` clock), at least ``MIN_CALL_BUDGET``."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    return _DEADLINE.get()


def _call_budget(budget: float) -> float:
    at = _DEADLINE.get()
    if at is None:
        return budget
    return min(budget, max(at - time.monotonic(), MIN_CALL_BUDGET))
STATUS_UPDATE_TRIES = 5
_USER_AGENT = "multinic/k8s-client"

# ``Client.list`` shadows the builtin inside the class body, so annotations there use these aliases.
JsonObject = dict[str, Any]
JsonObjects = list[dict[str, Any]]


# ---- errors -------------------------------------------------------------------------------------------------------


class ApiError(CNIError):
    """Base of every Kubernetes API failure; carries the HTTP status, the Status ``reason`` and the request path.

    Concrete classes mix this with a ``cni.spec.errors`` class, which supplies the CNI code.
    """

    status: int | None = None
    reason: str = ""
    path: str = ""

    def __init__(self, msg: str, details: str = "", *, status: int | None = None, reason: str = "",
                 path: str = "", code: int | None = None) -> None:
        super().__init__(msg, details, code=code)
        self.status = status
        self.reason = reason
        self.path = path


class ApiNotFound(ApiError, NotFound):
    """404: the object (or its namespace) does not exist."""


class ApiConflict(ApiError, TryAgainLater):
    """409: stale ``resourceVersion`` (or any other conflict); re-read and retry."""


class ApiAlreadyExists(ApiConflict):
    """409 with reason ``AlreadyExists``: a create found an object of that name."""


class ApiGone(ApiError, TryAgainLater):
    """410: a watch or list asked for a ``resourceVersion`` the server has compacted away; re-list."""


class ApiUnauthorized(ApiError, PolicyDenied):
    """401/403: the credentials were refused or RBAC does not allow the verb."""


class ApiUnavailable(ApiError, TryAgainLater):
    """The API server could not be reached in time, or answered 5xx / 429."""


class ApiInvalid(ApiError, InternalError):
    """400/422 and other 4xx: the server rejected what we sent (a JSON-patch ``test`` failure is a 422 too)."""


class KubeConfigError(InvalidConfig):
    """The kubeconfig (or the in-cluster environment) cannot be used."""


# ---- paths --------------------------------------------------------------------------------------------------------


def _q(segment: str) -> str:
    # Names are DNS subdomains in practice, but a stray '/' or '?' must never change which URL we hit.
    return urllib.parse.quote(segment, safe="")


def core_path(plural: str, namespace: str | None = None, name: str | None = None,
              subresource: str | None = None) -> str:
    """``/api/v1/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]``."""
    path = "/api/v1"
    if namespace is not None:
        path += f"/namespaces/{_q(namespace)}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{_q(name)}"
        if subresource:
            path += f"/{subresource}"
    return path


def group_path(group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None,
               subresource: str | None = None) -> str:
    """``/apis/<group>/<version>/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]``."""
    path = f"/apis/{group}/{version}"
    if namespace is not None:
        path += f"/namespaces/{_q(namespace)}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{_q(name)}"
        if subresource:
            path += f"/{subresource}"
    return path


# ---- configuration ------------------------------------------------------------------------------------------------


class _FileToken:
    """A bearer token read from a file and re-read whenever the file changes (projected tokens rotate ~hourly)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._token = ""

    def get(self, force: bool = False) -> str:
        try:
            st = os.stat(self.path)  # follows the ..data symlink kubelet swaps on rotation
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if force or key != self._key:
                with open(self.path, encoding="utf-8") as f:
                    self._token = f.read().strip()
                self._key = key
        except OSError as e:
            if not self._token:
                raise KubeConfigError(f"cannot read bearer token file {self.path}: {e.strerror or e}") from None
            # Keep the last good token: a rotation swaps symlinks, and a reader can catch the gap.
        return self._token

    def __repr__(self) -> str:
        return f"_FileToken({self.path!r})"


@dataclass
class KubeConfig:
    """Where the API server is and how to authenticate; built by ``from_file``, ``in_cluster`` or ``load``."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = field(default=None, repr=False)
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_data: bytes | None = field(default=None, repr=False)
    namespace: str = "default"
    source: str | None = None  # the kubeconfig path, or None for in-cluster
    context: str | None = None
    context_namespace: str | None = None  # the namespace the context names explicitly (None: it names none)
    _token_source: _FileToken | None = field(default=None, init=False, repr=False, compare=False)
    _source_key: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.token_file:
            self._token_source = _FileToken(self.token_file)
        if self.source:
            self._source_key = _stat_key(self.source)

    # -- loaders --

    @classmethod
    def load(cls, kubeconfig: str | None = None, *, env: Mapping[str, str] | None = None,
             sa_dir: str = SERVICE_ACCOUNT_DIR) -> KubeConfig:
        """The kubeconfig file when a path is given, else the in-cluster service account (Multus semantics)."""
        if kubeconfig:
            return cls.from_file(kubeconfig)
        return cls.in_cluster(env=env, sa_dir=sa_dir)

    @classmethod
    def from_file(cls, path: str, context: str | None = None) -> KubeConfig:
        """Parse a kubeconfig (YAML or JSON) and resolve its current (or the given) context."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise KubeConfigError(f"cannot read kubeconfig {path}: {e.strerror or e}") from None
        doc = _parse_kubeconfig(raw, path)
        return cls._from_doc(doc, path, context)

    @classmethod
    def _from_doc(cls, doc: dict[str, Any], path: str, context: str | None) -> KubeConfig:
        base = os.path.dirname(os.path.abspath(path))
        ctx_name = context or doc.get("current-context") or ""
        contexts = _named(doc, "contexts", "context")
        if ctx_name:
            if ctx_name not in contexts:
                raise KubeConfigError(f"kubeconfig {path}: context {ctx_name!r} not found")
            ctx = contexts[ctx_name]
        elif len(contexts) == 1:
            ctx_name, ctx = next(iter(contexts.items()))
        else:
            raise KubeConfigError(f"kubeconfig {path}: no current-context set")
        clusters = _named(doc, "clusters", "cluster")
        users = _named(doc, "users", "user")
        cluster_name = str(ctx.get("cluster") or "")
        if cluster_name not in clusters:
            raise KubeConfigError(f"kubeconfig {path}: cluster {cluster_name!r} of context {ctx_name!r} not found")
        cluster = clusters[cluster_name]
        user_name = str(ctx.get("user") or "")
        user = users.get(user_name, {}) if user_name else {}
        if user_name and user_name not in users:
            raise KubeConfigError(f"kubeconfig {path}: user {user_name!r} of context {ctx_name!r} not found")
        for unsupported in ("exec", "auth-provider"):
            if user.get(unsupported):
                raise KubeConfigError(
                    f"kubeconfig {path}: user {user_name!r} uses {unsupported!r}, which multinic does not run; "
                    "give it a token, tokenFile or client certificate (e.g. a service-account kubeconfig)")

        server = str(cluster.get("server") or "")
        if not server:
            raise KubeConfigError(f"kubeconfig {path}: cluster {cluster_name!r} has no server")

        def rel(p: Any) -> str | None:
            # kubectl resolves relative file references against the kubeconfig's directory.
            return os.path.join(base, str(p)) if p else None

        return cls(
            server=server,
            ca_file=rel(cluster.get("certificate-authority")),
            ca_data=_b64_text(cluster.get("certificate-authority-data"), path, "certificate-authority-data"),
            insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
            tls_server_name=cluster.get("tls-server-name") or None,
            token=str(user["token"]) if user.get("token") else None,
            token_file=rel(user.get("tokenFile")),
            client_cert_file=rel(user.get("client-certificate")),
            client_key_file=rel(user.get("client-key")),
            client_cert_data=_b64_bytes(user.get("client-certificate-data"), path, "client-certificate-data"),
            client_key_data=_b64_bytes(user.get("client-key-data"), path, "client-key-data"),
            namespace=str(ctx.get("namespace") or "default"),
            source=path,
            context=ctx_name,
            context_namespace=str(ctx["namespace"]) if ctx.get("namespace") else None,
        )

    @classmethod
    def in_cluster(cls, *, env: Mapping[str, str] | None = None, sa_dir: str = SERVICE_ACCOUNT_DIR) -> KubeConfig:
        """The pod's service account: ``KUBERNETES_SERVICE_HOST``/``PORT`` and ``<sa_dir>/{token,ca.crt,namespace}``."""
        env = os.environ if env is None else env
        host = env.get("KUBERNETES_SERVICE_HOST", "")
        port = env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise KubeConfigError(
                "no kubeconfig configured and not running in a cluster "
                "(KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset); set 'kubeconfig' in the multinic config")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        token_file = os.path.join(sa_dir, "token")
        if not os.path.exists(token_file):
            raise KubeConfigError(f"in-cluster config: service-account token {token_file} is missing")
        namespace = "default"
        try:
            with open(os.path.join(sa_dir, "namespace"), encoding="utf-8") as f:
                namespace = f.read().strip() or "default"
        except OSError:
            pass
        ca = os.path.join(sa_dir, "ca.crt")
        return cls(server=f"https://{host}:{port}", ca_file=ca if os.path.exists(ca) else None,
                   token_file=token_file, namespace=namespace)

    # -- credentials --

    def bearer_token(self, force: bool = False) -> str | None:
        """The current bearer token; a file-backed one is re-read when the file changed (or when ``force``)."""
        if self._token_source is not None:
            tok = self._token_source.get(force)
            if tok:
                return tok
        return self.token

    def refresh(self) -> bool:
        """After a 401: re-read the token file and, if the kubeconfig file changed, its token. True if anything changed."""
        before = self.bearer_token()
        if self.source:
            key = _stat_key(self.source)
            if key is not None and key != self._source_key:
                try:
                    fresh = KubeConfig.from_file(self.source, self.context)
                except KubeConfigError:
                    fresh = None  # half-written file: keep what we have
                if fresh is not None and fresh.server == self.server:
                    self.token = fresh.token
                    self.token_file = fresh.token_file
                    self._token_source = _FileToken(fresh.token_file) if fresh.token_file else None
                    self._source_key = key
        return self.bearer_token(force=True) != before


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def _parse_kubeconfig(raw: bytes, path: str) -> dict[str, Any]:
    doc: Any
    if raw.lstrip()[:1] == b"{":
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise KubeConfigError(f"kubeconfig {path} is not valid JSON: {e}") from None
    else:
        import yaml  # only YAML kubeconfigs pay for PyYAML

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            doc = yaml.load(raw, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as e:
            raise KubeConfigError(f"kubeconfig {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path}: top level is not a mapping")
    return doc


def _named(doc: dict[str, Any], list_key: str, item_key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in doc.get(list_key) or []:
        if isinstance(entry, dict) and "name" in entry:
            body = entry.get(item_key)
            out[str(entry["name"])] = body if isinstance(body, dict) else {}
    return out


def _b64_bytes(value: Any, path: str, key: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=False)
    except (ValueError, TypeError):
        raise KubeConfigError(f"kubeconfig {path}: {key} is not valid base64") from None


def _b64_text(value: Any, path: str, key: str) -> str | None:
    data = _b64_bytes(value, path, key)
    return data.decode("ascii", "replace") if data is not None else None


# ---- transport ----------------------------------------------------------------------------------------------------


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


def _parse_server(server: str) -> _Target:
    u = urllib.parse.urlsplit(server if "://" in server else f"https://{server}")
    if u.scheme not in ("https", "http") or not u.hostname:
        raise KubeConfigError(f"kubeconfig server {server!r} is not an http(s) URL")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise KubeConfigError(f"kubeconfig server {server!r} has an invalid port") from None
    return _Target(u.scheme, u.hostname, port, u.path.rstrip("/"))


def _decode(data: bytes, method: str, path: str) -> Any:
    if not data:
        return {}
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ApiUnavailable(f"Kubernetes API answered {method} {path} with a body that is not JSON",
                             "is the kubeconfig server URL pointing at an API server?", path=path) from None


def _error_from_status(status: int, data: bytes, method: str, path: str) -> ApiError:
    """Map an HTTP error answer (normally a ``Status`` object) to our error classes."""
    reason = ""
    message = ""
    try:
        doc = orjson.loads(data) if data else {}
        if isinstance(doc, dict):
            reason = str(doc.get("reason") or "")
            message = str(doc.get("message") or "")
    except orjson.JSONDecodeError:
        message = data[:200].decode("utf-8", "replace").strip()
    where = f"{method} {path}"
    detail = message or reason or f"HTTP {status}"
    kw: dict[str, Any] = {"status": status, "reason": reason, "path": path}
    if status == 404:
        return ApiNotFound(f"{where}: not found", detail, **kw)
    if status == 409:
        if reason == "AlreadyExists":
            return ApiAlreadyExists(f"{where}: already exists", detail, **kw)
        return ApiConflict(f"{where}: conflict (the object changed meanwhile); retry", detail, **kw)
    if status == 410:
        return ApiGone(f"{where}: resourceVersion too old; list again", detail, **kw)
    if status == 401:
        return ApiUnauthorized(
            f"{where}: Kubernetes API refused the credentials (401 Unauthorized); check the kubeconfig's token, "
            "tokenFile or client certificate, or the service-account token (it may have expired)", detail, **kw)
    if status == 403:
        return ApiUnauthorized(
            f"{where}: forbidden (403); grant multinic's service account RBAC for this verb and resource", detail, **kw)
    if status >= 500 or status == 429:
        return ApiUnavailable(f"{where}: Kubernetes API unavailable (HTTP {status}); retry later", detail, **kw)
    return ApiInvalid(f"{where}: rejected by the Kubernetes API (HTTP {status})", detail, **kw)


# ---- the client ---------------------------------------------------------------------------------------------------


class Client:
    """JSON-over-HTTPS access to one API server. Safe to share between threads: calls run in parallel.

    ``timeout`` bounds each call (connect + send + read); ``connect_timeout`` bounds the TCP/TLS connect alone.
    Keep-alive connections are reused between calls (an ADD makes several: pod, NADs, status, events), up to
    ``MAX_IDLE_CONNECTIONS`` of them kept idle.
    """

    def __init__(self, config: KubeConfig, *, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        import threading

        self.config = config
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._target = _parse_server(config.server)
        self._ssl: ssl.SSLContext | None = None
        # Keep-alive connections not in use. Each call takes one (or opens one), so concurrent calls from the
        # daemon's threads run in parallel and one slow answer never holds up the others.
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, **kwargs: Any) -> Client:
        """``KubeConfig.load(kubeconfig)`` then a client (kwargs: timeout, connect_timeout)."""
        return cls(KubeConfig.load(kubeconfig), **kwargs)

    def __repr__(self) -> str:
        return f"Client(server={self.config.server!r})"

    def close(self) -> None:
        """Drop the idle keep-alive connections."""
        self._drop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        t = self._target
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
            return self._idle.pop() if self._idle else None

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        self._close(conn)

    @staticmethod
    def _close(conn: http.client.HTTPConnection | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _drop(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close(conn)

    def _headers(self, content_type: str | None, force_token: bool = False) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if content_type:
            h["Content-Type"] = content_type
        token = self.config.bearer_token(force_token)
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    def _url(self, path: str, query: Mapping[str, str] | None) -> str:
        url = self._target.prefix + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None, body: Any = None,
                content_type: str = "application/json", timeout: float | None = None) -> Any:
        """One API call; returns the decoded JSON answer, raises an ``ApiError`` subclass on failure."""
        payload = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
        status, data = self._roundtrip(method, path, query, payload, content_type if payload is not None else None,
                                       timeout)
        if status == 401 and self.config.refresh():
            # The token rotated under us (or the kubeconfig was rewritten): one more try with the fresh one.
            status, data = self._roundtrip(method, path, query, payload,
                                           content_type if payload is not None else None, timeout)
        if 200 <= status < 300:
            return _decode(data, method, path)
        raise _error_from_status(status, data, method, path)

    def _roundtrip(self, method: str, path: str, query: Mapping[str, str] | None, payload: bytes | None,
                   content_type: str | None, timeout: float | None) -> tuple[int, bytes]:
        import http.client
        import ssl

        budget = _call_budget(self.timeout if timeout is None else timeout)
        deadline = time.monotonic() + budget
        url = self._url(path, query)
        for attempt in (0, 1):
            conn = self._take()
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._new_connection(max(0.05, min(self.connect_timeout, deadline - time.monotonic())))
                    conn.connect()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("time budget exhausted")
                if conn.sock is not None:
                    conn.sock.settimeout(remaining)
                conn.request(method, url, body=payload, headers=self._headers(content_type))
                resp = conn.getresponse()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("time budget exhausted")
                if conn.sock is not None:
                    conn.sock.settimeout(remaining)
                data = resp.read()
                if resp.will_close:
                    self._close(conn)
                else:
                    self._give_back(conn)
                return resp.status, data
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                    http.client.RemoteDisconnected) as e:
                self._close(conn)
                # A kept-alive connection the server closed while idle: retry once on a fresh one.
                if reused and attempt == 0 and time.monotonic() < deadline:
                    continue
                raise self._unavailable(method, path, e, budget) from None
            except KubeConfigError:
                self._close(conn)
                raise
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                self._close(conn)
                raise self._unavailable(method, path, e, budget) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, method: str, path: str, exc: BaseException,
                     budget: float | None = None) -> ApiUnavailable:
        import ssl

        server = f"{self._target.scheme}://{self._target.host}:{self._target.port}"
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

    # -- verbs --

    def get(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        """GET one object."""
        out: dict[str, Any] = self.request("GET", path, timeout=timeout)
        return out

    def list(self, path: str, label_selector: str | None = None, field_selector: str | None = None, *,
             limit: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """LIST a collection; follows ``continue`` tokens and returns one list object with every item."""
        query: dict[str, str] = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if limit:
            query["limit"] = str(limit)
        result: dict[str, Any] = self.request("GET", path, query=query, timeout=timeout)
        items: JsonObjects = [*(result.get("items") or [])]
        meta = result.get("metadata") or {}
        while meta.get("continue"):
            query["continue"] = str(meta["continue"])
            page = self.request("GET", path, query=query, timeout=timeout)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
        result["items"] = items
        result.setdefault("metadata", {}).pop("continue", None)
        return result

    def create(self, path: str, obj: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """POST ``obj`` to the collection ``path``."""
        out: dict[str, Any] = self.request("POST", path, body=obj, timeout=timeout)
        return out

    def update(self, path: str, obj: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """PUT ``obj`` (with its ``metadata.resourceVersion``: a stale one raises ``ApiConflict``)."""
        out: dict[str, Any] = self.request("PUT", path, body=obj, timeout=timeout)
        return out

    def patch(self, path: str, body: Any, patch_type: str = MERGE_PATCH, *,
              timeout: float | None = None) -> dict[str, Any]:
        """PATCH with a merge (RFC 7386), JSON (RFC 6902) or strategic-merge patch; ``patch_type`` is the media
        type or one of ``"merge"``, ``"json"``, ``"strategic"``."""
        ctype = _PATCH_ALIASES.get(patch_type, patch_type)
        if ctype not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH):
            raise ValueError(f"unknown patch type {patch_type!r}")
        out: dict[str, Any] = self.request("PATCH", path, body=body, content_type=ctype, timeout=timeout)
        return out

    def delete(self, path: str, *, preconditions: Mapping[str, str] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
        """DELETE; ``preconditions`` (``uid`` / ``resourceVersion``) make the server refuse with 409 if stale."""
        body = None
        if preconditions:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": dict(preconditions)}
        out: dict[str, Any] = self.request("DELETE", path, body=body, timeout=timeout)
        return out

    def watch(self, path: str, resource_version: str | None = None, *, label_selector: str | None = None,
              field_selector: str | None = None, timeout_seconds: int | None = None,
              read_timeout: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream ``(type, object)`` pairs (ADDED / MODIFIED / DELETED / BOOKMARK) from ``?watch=1``.

        Runs on its own connection. An ``ERROR`` event is raised as the matching ``ApiError`` (410 → ``ApiGone``:
        re-list). The iterator ends when the server closes the stream (after ``timeout_seconds``).
        ``read_timeout`` bounds the silence between events (default: ``timeout_seconds`` + 5 s, else 300 s).
        """
        import http.client
        import ssl

        query: dict[str, str] = {"watch": "1"}
        if resource_version is not None:
            query["resourceVersion"] = str(resource_version)
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if timeout_seconds is not None:
            query["timeoutSeconds"] = str(int(timeout_seconds))
        idle = read_timeout if read_timeout is not None else (timeout_seconds + 5.0 if timeout_seconds else 300.0)
        url = self._url(path, query)

        def open_stream(force_token: bool) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
            conn = self._new_connection(min(self.connect_timeout, self.timeout))
            try:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
                conn.request("GET", url, headers=self._headers(None, force_token))
                resp = conn.getresponse()
            except KubeConfigError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                conn.close()
                raise self._unavailable("WATCH", path, e) from None
            return conn, resp

        conn, resp = open_stream(False)
        if resp.status == 401 and self.config.refresh():
            conn.close()
            conn, resp = open_stream(True)
        if resp.status != 200:
            data = resp.read()
            conn.close()
            raise _error_from_status(resp.status, data, "WATCH", path)
        return self._watch_events(conn, resp, path, idle)

    def _watch_events(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, path: str,
                      idle: float) -> Iterator[tuple[str, dict[str, Any]]]:
        import http.client
        import ssl

        try:
            if conn.sock is not None:
                conn.sock.settimeout(idle)
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                    raise self._unavailable("WATCH", path, e) from None
                if not line:
                    return
                line = line.strip()
                if not line:
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise ApiUnavailable(f"WATCH {path}: malformed event in the watch stream", path=path) from None
                etype = str(event.get("type", ""))
                obj = event.get("object") or {}
                if etype == "ERROR":
                    code = int(obj.get("code") or 500)
                    raise _error_from_status(code, orjson.dumps(obj), "WATCH", path)
                yield etype, obj
        finally:
            conn.close()

    # -- typed helpers --

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The pod ``namespace/name``."""
        return self.get(core_path("pods", namespace, name))

    def get_node(self, name: str) -> dict[str, Any]:
        """The node ``name``."""
        return self.get(core_path("nodes", None, name))

    def get_nad(self, namespace: str, name: str) -> dict[str, Any]:
        """The NetworkAttachmentDefinition ``namespace/name`` (k8s.cni.cncf.io/v1)."""
        return self.get(group_path(NAD_GROUP, NAD_VERSION, NAD_PLURAL, namespace, name))

    def list_nads(self, namespace: str | None = None) -> JsonObjects:
        """Every NetworkAttachmentDefinition of ``namespace`` (all namespaces when None)."""
        items: JsonObjects = self.list(group_path(NAD_GROUP, NAD_VERSION, NAD_PLURAL, namespace))["items"]
        return items

    def update_pod_status_annotation(self, namespace: str, name: str, key: str, value: str | None) -> bool:
        """Set (or, with None, remove) one pod annotation through ``pods/<name>/status``.

        GET + PUT with the read ``resourceVersion``, re-read and retried on 409 up to ``STATUS_UPDATE_TRIES`` times.
        The status subresource is what Multus uses for network-status: it needs only ``pods/status`` RBAC and the
        apiserver keeps metadata annotations written through it. Returns False, without error, when the pod is gone.
        """
        status_path = core_path("pods", namespace, name, "status")
        last: ApiConflict | None = None
        for attempt in range(STATUS_UPDATE_TRIES):
            try:
                pod = self.get(core_path("pods", namespace, name))
            except ApiNotFound:
                return False
            annotations = pod.setdefault("metadata", {}).get("annotations") or {}
            if value is None:
                if key not in annotations:
                    return True
                annotations.pop(key)
            else:
                if annotations.get(key) == value:
                    return True
                annotations[key] = value
            pod["metadata"]["annotations"] = annotations
            try:
                self.update(status_path, pod)
                return True
            except ApiNotFound:
                return False
            except ApiConflict as e:
                last = e
                import random

                # Small jittered pause: the other writer (usually kubelet) is mid-update.
                time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
        assert last is not None
        raise ApiConflict(f"pod {namespace}/{name}: annotation {key} not written after {STATUS_UPDATE_TRIES} "
                          "conflicting updates; retry", last.details, status=409, reason=last.reason,
                          path=status_path)

    def create_event(self, namespace: str, involved_object: Mapping[str, Any], reason: str, message: str,
                     type_: str = "Normal", component: str = "multinic", host: str | None = None,
                     at: float | None = None) -> dict[str, Any]:
        """Record a core/v1 Event about ``involved_object`` (a full object, e.g. a pod, or an ObjectReference);
        ``at`` is when it happened (unix time, default now), for an event recorded after the fact."""
        if type_ not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, not {type_!r}")
        ref = _object_reference(involved_object, namespace)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        source: dict[str, str] = {"component": component}
        if host:
            source["host"] = host
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": source,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        return self.create(core_path("events", namespace), event)

    # -- custom resources (whereabouts) --

    def get_cr(self, group: str, version: str, namespace: str | None, plural: str, name: str) -> dict[str, Any]:
        """GET a custom resource (``namespace`` None for a cluster-scoped one)."""
        return self.get(group_path(group, version, plural, namespace, name))

    def list_cr(self, group: str, version: str, namespace: str | None, plural: str,
                label_selector: str | None = None) -> JsonObjects:
        """LIST custom resources of ``namespace`` (every namespace when None)."""
        items: JsonObjects = self.list(group_path(group, version, plural, namespace),
                                                label_selector=label_selector)["items"]
        return items

    def create_cr(self, group: str, version: str, namespace: str | None, plural: str,
                  obj: Mapping[str, Any]) -> dict[str, Any]:
        """POST a custom resource; ``ApiAlreadyExists`` if the name is taken."""
        return self.create(group_path(group, version, plural, namespace), obj)

    def update_cr(self, group: str, version: str, namespace: str | None, plural: str,
                  obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT a custom resource (name and resourceVersion from ``obj['metadata']``)."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        if not name:
            raise ValueError("update_cr: obj has no metadata.name")
        return self.update(group_path(group, version, plural, namespace, name), obj)

    def patch_cr(self, group: str, version: str, namespace: str | None, plural: str, name: str, body: Any,
                 patch_type: str = MERGE_PATCH) -> dict[str, Any]:
        """PATCH a custom resource (whereabouts: a JSON patch guarded by a ``test`` of resourceVersion)."""
        return self.patch(group_path(group, version, plural, namespace, name), body, patch_type)

    def delete_cr(self, group: str, version: str, namespace: str | None, plural: str, name: str,
                  preconditions: Mapping[str, str] | None = None) -> dict[str, Any]:
        """DELETE a custom resource."""
        return self.delete(group_path(group, version, plural, namespace, name), preconditions=preconditions)


def _object_reference(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """An ObjectReference for an event: from a full object, or passed through if it already is a reference."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return {k: v for k, v in obj.items() if v is not None}
    ref: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", "Pod"),
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", namespace),
    }
    for src, dst in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
        if meta.get(src):
            ref[dst] = meta[src]
    return ref
