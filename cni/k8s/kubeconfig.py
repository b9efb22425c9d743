"""Where the API server is and how to authenticate: a kubeconfig file, or the pod's service account.

Rules:
- A bearer token, a private key or a client certificate never appears in a message, a log line or a ``repr``.
- Bearer tokens that come from a file (kubeconfig ``tokenFile``, the service-account token) are re-read whenever the
  file changes, and once more after a 401, so projected-token rotation never strands a long-lived process
  (multus-cni #852, #1263). A kubeconfig file that is rewritten in place (as Multus' daemon does) is re-read on 401.
- PyYAML is imported only for a kubeconfig that is not JSON.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import KubeConfigError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


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
