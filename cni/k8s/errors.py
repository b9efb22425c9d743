"""The Kubernetes API's failures as CNI errors: one class per thing the caller does about it.

Each class mixes ``ApiError`` (HTTP status, Status ``reason``, request path) with the
``cni.spec.errors`` class that supplies its CNI code: 404 → ``ApiNotFound`` (103),
409 → ``ApiConflict`` (11), 410 → ``ApiGone`` (11), 401/403 → ``ApiUnauthorized`` (102),
5xx / 429 / refused / timeout / TLS → ``ApiUnavailable`` (11), 400/422 and other 4xx →
``ApiInvalid`` (999). ``error_from_status`` (below) is the one place that maps an HTTP answer to them;
``transport`` makes ``ApiUnavailable`` for calls that got no answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from cni.spec.errors import CNIError, InternalError, InvalidConfig, NotFound, PolicyDenied, TryAgainLater


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


def error_from_status(status: int, data: bytes, method: str, path: str) -> ApiError:
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
