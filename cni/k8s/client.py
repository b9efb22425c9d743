"""A small Kubernetes API client: the generic verbs (get, list, create, update, patch, delete, watch) over JSON.

The client is split along what each part knows:
- ``cni.k8s.errors``: the API's failures as CNI errors (what the caller does about each) and the HTTP status → error
  mapping;
- ``cni.k8s.kubeconfig``: where the server is and the credentials (tokens re-read as they rotate, TLS material);
- ``cni.k8s.transport``: connections, TLS, per-call time budgets, no answer → ``ApiUnavailable``;
- ``cni.deadline``: a deadline over a sequence of calls (an ADD must fail within its budget counted from the
  exec's start, not 5 s per call) — standard library only, so setting one does not import the client;
- here: URL paths and the verbs. What the delegator writes to a pod (network-status, events) is built by the API
  source (``cni.k8s.source``), its only caller.

Rules: nothing here waits forever (a watch's read timeout is its ``timeoutSeconds`` plus a margin); ``ssl``,
``http.client`` and ``yaml`` are imported only when used — this module is on the per-exec CNI path.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .errors import (
    ApiAlreadyExists,
    ApiConflict,
    ApiError,
    ApiGone,
    ApiInvalid,
    ApiNotFound,
    ApiUnauthorized,
    ApiUnavailable,
    KubeConfigError,
    error_from_status,
)
from .kubeconfig import SERVICE_ACCOUNT_DIR, KubeConfig
from .transport import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, Transport, decode

if TYPE_CHECKING:  # pragma: no cover - typing only
    import http.client

# Errors and the kubeconfig are re-exported: callers catch ``client.ApiNotFound`` next to the calls that raise it.
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
    "group_path",
]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
_PATCH_ALIASES = {"merge": MERGE_PATCH, "json": JSON_PATCH, "strategic": STRATEGIC_MERGE_PATCH}

NAD_GROUP = "k8s.cni.cncf.io"
NAD_VERSION = "v1"
NAD_PLURAL = "network-attachment-definitions"

# ``Client.list`` shadows the builtin inside the class body, so annotations there use these aliases.
JsonObject = dict[str, Any]
JsonObjects = list[dict[str, Any]]


# ---- paths --------------------------------------------------------------------------------------------------------


def _q(segment: str) -> str:
    # Names are DNS subdomains in practice, but a stray '/' or '?' must never change which URL we hit.
    return urllib.parse.quote(segment, safe="")


def _path(root: str, plural: str, namespace: str | None, name: str | None, subresource: str | None) -> str:
    # The shape below the API root is the same for the core group and every named group.
    path = root
    if namespace is not None:
        path += f"/namespaces/{_q(namespace)}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{_q(name)}"
        if subresource:
            path += f"/{subresource}"
    return path


def core_path(plural: str, namespace: str | None = None, name: str | None = None,
              subresource: str | None = None) -> str:
    """``/api/v1/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]``."""
    return _path("/api/v1", plural, namespace, name, subresource)


def group_path(group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None,
               subresource: str | None = None) -> str:
    """``/apis/<group>/<version>/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]``."""
    return _path(f"/apis/{group}/{version}", plural, namespace, name, subresource)


# ---- the client ---------------------------------------------------------------------------------------------------


class Client:
    """JSON-over-HTTPS access to one API server. Safe to share between threads: calls run in parallel.

    ``timeout`` bounds each call (connect + send + read); ``connect_timeout`` bounds the TCP/TLS connect alone.
    Keep-alive connections are reused between calls (an ADD makes several: pod, NADs, status, events), up to
    ``MAX_IDLE_CONNECTIONS`` of them kept idle.
    """

    def __init__(self, config: KubeConfig, *, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout
        self.transport = Transport(config, timeout=timeout, connect_timeout=connect_timeout)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, **kwargs: Any) -> Client:
        """``KubeConfig.load(kubeconfig)`` then a client (kwargs: timeout, connect_timeout)."""
        return cls(KubeConfig.load(kubeconfig), **kwargs)

    def __repr__(self) -> str:
        return f"Client(server={self.config.server!r})"

    def close(self) -> None:
        """Drop the idle keep-alive connections."""
        self.transport.drop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None, body: Any = None,
                content_type: str = "application/json", timeout: float | None = None) -> Any:
        """One API call; returns the decoded JSON answer, raises an ``ApiError`` subclass on failure."""
        payload = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
        ctype = content_type if payload is not None else None
        status, data = self.transport.roundtrip(method, path, query, payload, ctype, timeout)
        if status == 401 and self.config.refresh():
            # The token rotated under us (or the kubeconfig was rewritten): one more try with the fresh one.
            status, data = self.transport.roundtrip(method, path, query, payload, ctype, timeout)
        if 200 <= status < 300:
            return decode(data, method, path)
        raise error_from_status(status, data, method, path)

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
        url = self.transport.url(path, query)

        def open_stream(force_token: bool) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
            conn = self.transport.new_connection(min(self.transport.connect_timeout, self.timeout))
            try:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
                conn.request("GET", url, headers=self.transport.headers(None, force_token))
                resp = conn.getresponse()
            except KubeConfigError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                conn.close()
                raise self.transport.unavailable("WATCH", path, e) from None
            return conn, resp

        conn, resp = open_stream(False)
        if resp.status == 401 and self.config.refresh():
            conn.close()
            conn, resp = open_stream(True)
        if resp.status != 200:
            data = resp.read()
            conn.close()
            raise error_from_status(resp.status, data, "WATCH", path)
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
                    raise self.transport.unavailable("WATCH", path, e) from None
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
                    raise error_from_status(code, orjson.dumps(obj), "WATCH", path)
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
