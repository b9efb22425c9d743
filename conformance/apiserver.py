"""An honest Kubernetes API server double for tests and the conformance lab: real HTTPS, real wire protocol, in-memory storage.

Rules of this module:
- It is a test fixture, not a mock of our client: it knows nothing about ``cni.k8s.client`` and answers what a
  kube-apiserver would answer — JSON objects with server-managed metadata (uid, resourceVersion, creationTimestamp,
  generateName), ``Status`` failure bodies (401, 403, 404 NotFound with ``details``, 409 AlreadyExists / Conflict,
  410 Expired, 415, 422 Invalid), keep-alive HTTP/1.1, chunked ``?watch=1`` streams.
- One resourceVersion counter is shared by every object, as etcd's revision is; it only grows.
- Memory is bounded as kube-apiserver's is: watch history is a window of the newest ``watch_cache_size`` events per
  resource (its watch cache); a watch from an older resourceVersion gets 410 Expired "too old resource version", and
  a watcher that falls further behind than the window has its stream ended (as the cacher closes an unresponsive
  watcher), so it re-watches and, if it must, re-lists. The request log (a test hook) keeps the newest
  ``request_log_size`` requests.
- Subresource semantics follow the apiserver's strategies: a PUT/PATCH of ``pods/<name>/status`` keeps the old spec
  and ownerReferences but persists status and metadata labels/annotations (that is how Multus writes network-status);
  a PUT of the main pod/node resource keeps the old status; a custom resource's ``/status`` changes only status.
- What kubectl asks first is answered too: ``/version``; classic discovery (``/api``, ``/apis``, ``/api/v1``,
  ``/apis/<group>[/<version>]``) in its plain JSON form (as before aggregated discovery, 1.26: clients fall back to
  it), listing the built-in resources and every served version of each stored CustomResourceDefinition; OpenAPI v3
  (``/openapi/v3`` and one document per group version) whose write operations carry the ``fieldValidation``
  parameter, so kubectl leaves validation to the server. ``fieldValidation`` is honoured: Strict answers 400 for
  duplicate fields and for fields a custom resource's CRD schema does not declare, Warn (the default) sends them as
  ``Warning: 299`` headers. A CRD create is validated (name = plural.group, scope, one storage version) and is
  Established at once.
- Known simplifications (a test relying on them would be relying on the double, not on Kubernetes): deletion is
  immediate (no graceful deletionTimestamp, no finalizers); strategic merge patch is a JSON merge patch and refuses
  ``$``-directives; label selectors support ``=``, ``==``, ``!=``, ``key`` and ``!key`` only; field selectors
  ``metadata.name``, ``metadata.namespace``, ``spec.nodeName`` and the Event fields (``involvedObject.*``,
  ``reason``, ``type``...), accepted on every resource; no admission, defaulting or schema validation beyond what is
  listed here; watches do not turn a selector mismatch into DELETED. Custom resources are served whether or not
  their CRD exists (discovery lists only those with one); unknown fields are not pruned; deleting a CRD deletes its
  objects at once; a CRD update is not validated again; no managedFields, no server-side apply, no Table
  (server-side printing: kubectl prints NAME and AGE), no protobuf (but for ``/openapi/v2``, which describes
  nothing: see ``_openapi_v2_protobuf``), no aggregated discovery; built-in kinds have no OpenAPI schema and are
  not checked for unknown fields.
- Test hooks are plain Python methods (``seed``, ``get_obj``, ``set_down``, ``set_latency``, ``inject_conflicts``,
  ``fail_next``, ``forbid``, ``deny``, ``rotate_token``, ``requests``...), never HTTP endpoints.
- ``selfsubjectaccessreviews`` (authorization.k8s.io/v1) is answered, not stored: ``status.allowed`` is false exactly
  when the request the attributes describe would get 403 from the ``deny``/``forbid`` rules.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import hashlib
import http.server
import json
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

__all__ = ["ApiServerDouble", "RecordedRequest", "TestPKI", "test_pki", "json_merge_patch", "json_patch",
           "JsonPatchError"]

# ---- PKI ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestPKI:
    """A throw-away CA, a server certificate for 127.0.0.1/::1/localhost, a client certificate, and a foreign CA."""

    __test__ = False  # not a pytest test class

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # signs nothing we serve: for "wrong CA" tests


_pki: TestPKI | None = None
_pki_lock = threading.Lock()
_pki_tmp: tempfile.TemporaryDirectory[str] | None = None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_pki() -> TestPKI:
    """The process-wide test PKI (made once with the ``openssl`` CLI: EC keys, so this takes tens of ms)."""
    global _pki, _pki_tmp
    with _pki_lock:
        if _pki is not None:
            return _pki
        _pki_tmp = tempfile.TemporaryDirectory(prefix="multinic-pki-")
        d = Path(_pki_tmp.name)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for name, cn in (("ca", "multinic-test-ca"), ("other-ca", "someone-else-ca")):
            _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
                     "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        (d / "server.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes.default.svc\n")
        (d / "client.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        for name, subj in (("server", "/CN=kube-apiserver"), ("client", "/O=system:nodes/CN=system:node:test")):
            _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                     "-out", f"{name}.crt", "-days", "3", "-extfile", f"{name}.ext", cwd=d)
        _pki = TestPKI(d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key", d / "client.crt",
                       d / "client.key", d / "other-ca.crt")
        return _pki


# ---- JSON merge patch (RFC 7386) and JSON patch (RFC 6902) ---------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 §2: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


class JsonPatchError(Exception):
    """An RFC 6902 operation could not be applied (the apiserver answers 422)."""


def _json_equal(a: Any, b: Any) -> bool:
    # RFC 6902 §4.6: compare as JSON values — unlike Python, true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _pointer(ptr: str) -> list[str]:
    # RFC 6901 §3-4: "" is the whole document; "~1" is "/", "~0" is "~" (in that order).
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {ptr!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]


def _index(token: str, size: int, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return size
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise JsonPatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > size or (i == size and not allow_end):
        raise JsonPatchError(f"array index {i} out of range")
    return i


def _resolve(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise JsonPatchError(f"path component {t!r} does not exist")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(t, len(cur), allow_end=False)]
        else:
            raise JsonPatchError(f"path component {t!r} is inside a scalar")
    return cur


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True), value)
    else:
        raise JsonPatchError("cannot add inside a scalar")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise JsonPatchError("cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise JsonPatchError(f"cannot remove missing member {last!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), allow_end=False))
    raise JsonPatchError("cannot remove inside a scalar")


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch to a copy of ``doc``; any failing operation (``test`` included) fails the whole."""
    if not isinstance(ops, list):
        raise JsonPatchError("a JSON patch must be an array of operations")
    doc = _clone(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise JsonPatchError(f"malformed operation {op!r}")
        kind, path = op["op"], _pointer(str(op["path"]))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise JsonPatchError(f"{kind} needs a value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _resolve(doc, path)  # §4.3: the target must exist
            if path:
                doc, _ = _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            src = _pointer(str(op.get("from", "")))
            if kind == "move" and path[: len(src)] == src and len(path) > len(src):
                raise JsonPatchError("cannot move a value into one of its children")
            value = copy.deepcopy(_resolve(doc, src))
            if kind == "move":
                doc, _ = _remove(doc, src)
            doc = _add(doc, path, value)
        elif kind == "test":
            if not _json_equal(_resolve(doc, path), op["value"]):
                raise JsonPatchError(f"testing value {op['path']} failed")
        else:
            raise JsonPatchError(f"unknown operation {kind!r}")
    return doc


# ---- resources ----------------------------------------------------------------------------------------------------

_CORE_KINDS = {
    "pods": "Pod", "nodes": "Node", "events": "Event", "namespaces": "Namespace", "configmaps": "ConfigMap",
    "secrets": "Secret", "services": "Service", "serviceaccounts": "ServiceAccount", "endpoints": "Endpoints",
}
_CORE_CLUSTER_SCOPED = {"nodes", "namespaces", "persistentvolumes"}
_KNOWN_CR_KINDS = {
    "network-attachment-definitions": "NetworkAttachmentDefinition", "ippools": "IPPool",
    "overlappingrangeipreservations": "OverlappingRangeIPReservation", "nodeslicepools": "NodeSlicePool",
    "leases": "Lease", "customresourcedefinitions": "CustomResourceDefinition",
}
_PLURAL_OF_KIND = {v: k for k, v in {**_CORE_KINDS, **_KNOWN_CR_KINDS}.items()}
# Resources whose /status strategy is the pod/node one (spec kept, metadata mostly writable).
_POD_LIKE_STATUS = {("v1", "pods"), ("v1", "nodes")}
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's generateName alphabet (no vowels, no look-alikes)


@dataclass(frozen=True)
class _Route:
    gv: str  # "v1" for core, "<group>/<version>" otherwise
    plural: str
    namespace: str | None
    name: str | None
    sub: str | None

    @property
    def group(self) -> str:
        return self.gv.split("/")[0] if "/" in self.gv else ""

    @property
    def resource(self) -> str:  # how the apiserver names a resource in messages: "pods", "ippools.<group>"
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _parse_route(path: str) -> _Route | None:
    segs = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
    if segs[:2] == ["api", "v1"]:
        gv, rest = "v1", segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        gv, rest = f"{segs[1]}/{segs[2]}", segs[3:]
    else:
        return None
    namespace = None
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3 or not all(rest):
        return None
    plural = rest[0]
    if gv == "v1":
        # The core group knows which resources are namespaced; a wrong-scope URL is simply not served.
        if plural in _CORE_CLUSTER_SCOPED and namespace is not None:
            return None
        if plural not in _CORE_CLUSTER_SCOPED and namespace is None and len(rest) > 1:
            return None
    return _Route(gv, plural, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)


# How the authorizer names a request's verb (k8s.io/apiserver RequestInfoFactory), and back for access reviews.
_VERB_METHOD = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT", "patch": "PATCH",
                "delete": "DELETE", "deletecollection": "DELETE"}
_PREFERRED_VERSION = {"k8s.cni.cncf.io": "v1", "whereabouts.cni.cncf.io": "v1alpha1"}


def _request_verb(method: str, route: _Route, query: Mapping[str, str]) -> str:
    if method == "GET":
        if query.get("watch") in ("1", "true"):
            return "watch"
        return "get" if route.name else "list"
    if method == "DELETE":
        return "delete" if route.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _kind(route: _Route, obj: Mapping[str, Any] | None = None) -> str:
    if obj and obj.get("kind"):
        return str(obj["kind"])
    if route.gv == "v1" and route.plural in _CORE_KINDS:
        return _CORE_KINDS[route.plural]
    return _KNOWN_CR_KINDS.get(route.plural, route.plural[:1].upper() + route.plural[1:].rstrip("s"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` failure object, the body of every apiserver error."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = dict(details)
    return body


def _dumps(body: Any) -> bytes:
    """JSON bytes of a body: orjson (several times faster than ``json``, which the double spent most of its time in
    under load); the stdlib for what orjson refuses (integers beyond 64 bits), so nothing that encoded before fails
    now."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


def _loads(raw: bytes) -> Any:
    """A request body: orjson, and the stdlib for what orjson refuses (NaN, lone surrogates), so the double accepts
    what it accepted before. An integer beyond 64 bits becomes a float, as in the apiserver's unstructured decoding
    (sigs.k8s.io/json: int64, else float64)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


_J = TypeVar("_J")


def _clone(obj: _J) -> _J:
    """A deep copy of a JSON value (what request bodies and stored objects are: ``seed`` stores JSON too): an orjson
    round trip is several times faster than ``copy.deepcopy``; what orjson refuses is copied by ``deepcopy``."""
    try:
        return cast(_J, orjson.loads(orjson.dumps(obj)))
    except (TypeError, orjson.JSONDecodeError):
        return copy.deepcopy(obj)


class _Fail(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = status_body(code, reason, message, details)
        self.code = code


def _not_found(route: _Route, name: str | None = None) -> _Fail:
    n = name if name is not None else route.name
    return _Fail(404, "NotFound", f'{route.resource} "{n}" not found',
                 {"name": n, "group": route.group, "kind": route.plural})


def _conflict(route: _Route, name: str, why: str = "the object has been modified; please apply your changes to "
              "the latest version and try again") -> _Fail:
    return _Fail(409, "Conflict", f'Operation cannot be fulfilled on {route.resource} "{name}": {why}',
                 {"name": name, "group": route.group, "kind": route.plural})


def _invalid(route: _Route, name: str, causes: str) -> _Fail:
    return _Fail(422, "Invalid", f'{_kind(route)} "{name}" is invalid: {causes}',
                 {"name": name, "group": route.group, "kind": _kind(route)})


# ---- selectors ----------------------------------------------------------------------------------------------------


def _match_labels(selector: str, labels: Mapping[str, str]) -> bool:
    for req in filter(None, (r.strip() for r in selector.split(","))):
        if "!=" in req:
            k, v = (x.strip() for x in req.split("!=", 1))
            if labels.get(k) == v:
                return False
        elif "==" in req or "=" in req:
            k, v = (x.strip() for x in req.replace("==", "=", 1).split("=", 1))
            if labels.get(k) != v:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif " in " in req or " notin " in req or "(" in req:
            raise _Fail(400, "BadRequest", f"the API server double does not implement set-based selector {req!r}")
        elif req not in labels:
            return False
    return True


_FIELDS = {
    "metadata.name": lambda o: (o.get("metadata") or {}).get("name", ""),
    "metadata.namespace": lambda o: (o.get("metadata") or {}).get("namespace", ""),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
}


def _field_getter(path: str) -> Callable[[Mapping[str, Any]], str]:
    def get(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        return "" if cur is None else str(cur)
    return get


# Event fields (pkg/registry/core/event/strategy.go ToSelectableFields): what `kubectl describe` selects by.
_FIELDS.update({f: _field_getter(f) for f in (
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
    "reportingComponent", "type")})


def _check_fields(selector: str) -> list[tuple[str, str, bool]]:
    reqs = []
    for req in filter(None, (r.strip() for r in selector.split(","))):
        neg = "!=" in req
        if neg:
            k, v = req.split("!=", 1)
        elif "=" in req:
            k, v = req.replace("==", "=", 1).split("=", 1)
        else:
            k, v = req, ""
        if ("=" not in req) or k.strip() not in _FIELDS:
            raise _Fail(400, "BadRequest", f'"{k.strip()}" is not a known field selector: only '
                        + ", ".join(f'"{f}"' for f in _FIELDS))
        reqs.append((k.strip(), v.strip(), neg))
    return reqs


def _match_fields(reqs: list[tuple[str, str, bool]], obj: Mapping[str, Any]) -> bool:
    return all((_FIELDS[k](obj) == v) != neg for k, v, neg in reqs)


# ---- discovery, OpenAPI v3 and CRDs: what kubectl asks before it sends a request ----------------------------------
# kubectl (1.32) reads /version, then discovery (/api, /apis, /api/v1, /apis/<group>/<version>) to map a kind to a
# resource, then /openapi/v3 to learn whether the server validates fields itself (the PATCH operation of the kind
# lists a ``fieldValidation`` query parameter); when it does, kubectl sends ``?fieldValidation=Strict`` and skips its
# client-side check against the protobuf /openapi/v2 (see _OPENAPI_V2_PB). Discovery is the classic, unaggregated form: kubectl
# asks for ``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`` first and falls back to plain
# APIGroupList/APIResourceList when the answer's Content-Type is plain ``application/json``, as with an apiserver
# older than 1.26.

SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-multinic-double", "gitCommit": "",
                  "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
                  "compiler": "gc", "platform": "linux/amd64"}
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]  # no deletecollection: not implemented
_SUB_VERBS = ["get", "patch", "update"]
_OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields"})
_CRD_GV, _CRD_PLURAL = "apiextensions.k8s.io/v1", "customresourcedefinitions"


@dataclass(frozen=True)
class ApiResource:
    """One resource as discovery names it (``APIResource``)."""

    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource
    categories: tuple[str, ...] = ()
    schema: Mapping[str, Any] | None = None  # OpenAPI v3 schema (custom resources: the CRD's)
    singular: str = ""  # default: the kind in lower case (as the apiserver names built-in kinds)

    def entries(self) -> list[dict[str, Any]]:
        main: dict[str, Any] = {"name": self.plural, "singularName": self.singular or self.kind.lower(),
                                "namespaced": self.namespaced, "kind": self.kind, "verbs": list(_VERBS)}
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        out = [main]
        if self.status:
            out.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": list(_SUB_VERBS)})
        return out


# Built-in group versions the double stores; other test helpers may add theirs here.
BUILTIN_RESOURCES: dict[str, list[ApiResource]] = {
    "v1": [
        ApiResource("pods", "Pod", True, ("po",), True, ("all",)),
        ApiResource("nodes", "Node", False, ("no",), True),
        ApiResource("events", "Event", True, ("ev",)),
        ApiResource("namespaces", "Namespace", False, ("ns",), True),
        ApiResource("configmaps", "ConfigMap", True, ("cm",)),
        ApiResource("secrets", "Secret", True),
        ApiResource("services", "Service", True, ("svc",), True, ("all",)),
        ApiResource("serviceaccounts", "ServiceAccount", True, ("sa",)),
        ApiResource("endpoints", "Endpoints", True, ("ep",)),
    ],
    _CRD_GV: [ApiResource(_CRD_PLURAL, "CustomResourceDefinition", False, ("crd", "crds"), True)],
    "coordination.k8s.io/v1": [ApiResource("leases", "Lease", True)],
}


def _builtin_fingerprint() -> tuple[tuple[str, int], ...]:
    # BUILTIN_RESOURCES may be extended by test helpers: a cached resource table notices.
    return tuple((gv, len(rs)) for gv, rs in BUILTIN_RESOURCES.items())


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order (apimachinery ``CompareKubeAwareVersionStrings``): GA, then beta, then alpha, the
    higher number first; anything else after, alphabetically. Smaller tuples sort first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), "")


def _crd_problems(obj: Mapping[str, Any]) -> list[str]:
    """What apiextensions' CRD validation would refuse (the subset the double checks)."""
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
    name = (obj.get("metadata") or {}).get("name", "")
    group, plural = spec.get("group") or "", names.get("plural") or ""
    problems: list[str] = []
    if not group or "." not in group:
        problems.append(f'spec.group: Invalid value: "{group}": should be a domain with at least one dot')
    if not plural:
        problems.append("spec.names.plural: Required value")
    if not names.get("kind"):
        problems.append("spec.names.kind: Required value")
    if name != f"{plural}.{group}":
        problems.append(f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(f'spec.scope: Unsupported value: "{spec.get("scope") or ""}": supported values: '
                        '"Cluster", "Namespaced"')
    versions: list[Any] = spec["versions"] if isinstance(spec.get("versions"), list) else []
    if not versions:
        problems.append("spec.versions: Invalid value: null: must have exactly one version marked as storage version")
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        problems.append("spec.versions: Invalid value: ...: must have exactly one version marked as storage version")
    return problems


def _unknown_fields(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """Fields of ``value`` a structural schema does not declare (what pruning would drop; Strict refuses them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                out += _unknown_fields(v, props[k], sub)
            elif isinstance(extra, dict):
                out += _unknown_fields(v, extra, sub)
            elif extra is not True:
                out.append(sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += _unknown_fields(v, schema["items"], f"{path}[{i}]")
    return out


def _duplicate_fields(raw: bytes, parsed: Any = None) -> list[str]:
    """Keys repeated inside one JSON object (Go's strict decoder refuses them; plain decoding keeps the last)."""
    if parsed is not None and _surely_no_duplicates(raw, parsed):
        return []
    dups: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                dups.append(k)
            seen.add(k)
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=hook)
    except ValueError:
        return []
    return dups


def _surely_no_duplicates(raw: bytes, parsed: Any) -> bool:
    """True when ``raw`` (as decoded into ``parsed``) has no repeated key: the exact check's Python hook per object
    cost ~0.2 ms per pool write. Without a backslash every ``"`` in ``raw`` delimits a string, and without
    whitespace after a ``"`` every key is followed by ``":``; so ``raw.count('":')`` is its keys plus the strings
    that start with ":". Re-encoding ``parsed`` (compact) writes the same strings minus those of dropped duplicates:
    the counts are equal exactly when nothing was dropped. Any other input (escapes, pretty-printing) takes the
    exact check."""
    if b"\\" in raw or _QUOTE_SPACE.search(raw):
        return False
    return raw.count(b'":') == _dumps(parsed).count(b'":')


_QUOTE_SPACE = re.compile(rb'"[ \t\r\n]')


def _openapi_operations(gv: str, res: ApiResource) -> dict[str, Any]:
    group, _, version = gv.rpartition("/")
    gvk = {"group": group, "version": version, "kind": res.kind}
    ref = {"$ref": f"#/components/schemas/{_schema_name(gv, res.kind)}"}
    body = {"content": {"application/json": {"schema": ref}}, "required": True}
    # The patch types the double implements. Not apply-patch (no server-side apply), and not strategic merge: the
    # double's is a JSON merge patch, and declaring it would make kubectl compute one from schemas that carry no
    # patch strategies; undeclared, kubectl computes it from its compiled-in types (an apiserver lists it for every
    # built-in kind).
    patch_types = ["application/json-patch+json", "application/merge-patch+json"]
    patch_body = {"content": {t: {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}
                              for t in patch_types}, "required": True}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
                        "description": "Ignore, Warn or Strict: what the server does with unknown or duplicate "
                                       "fields"}
    prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
    coll = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"

    def op(action: str, verb: str, *, validates: bool, request: bool) -> dict[str, Any]:
        o: dict[str, Any] = {"operationId": f"{verb}{res.kind}", "responses": ok, "x-kubernetes-action": action,
                             "x-kubernetes-group-version-kind": gvk,
                             "parameters": [field_validation] if validates else []}
        if request:
            o["requestBody"] = patch_body if action == "patch" else body
        return o

    item = {"get": op("get", "read", validates=False, request=False),
            "put": op("put", "replace", validates=True, request=True),
            "patch": op("patch", "patch", validates=True, request=True),
            "delete": op("delete", "delete", validates=False, request=False)}
    paths = {coll: {"get": op("list", "list", validates=False, request=False),
                    "post": op("post", "create", validates=True, request=True)},
             f"{coll}/{{name}}": item}
    if res.status:
        paths[f"{coll}/{{name}}/status"] = {k: item[k] for k in ("get", "put", "patch")}
    return paths


# /openapi/v2 describes no path and no definition. kubectl reads it only to validate, client-side, a kind whose
# PATCH does not list fieldValidation in /openapi/v3, i.e. a kind the server does not serve: finding no definition
# it skips validation, and the apply then fails on the REST mapping ("no matches for kind ... ensure CRDs are
# installed first"), as against a real apiserver. client-go asks for it only in gnostic's protobuf form.
# client-go asks for "...spec.v2@v1.0+protobuf"; kube-openapi answers with the dotted form, because Go's
# mime.ParseMediaType refuses "@" in a Content-Type.
_OPENAPI_V2_PB = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_OPENAPI_V2_JSON = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                    "paths": {}, "definitions": {}}


def _openapi_v2_protobuf() -> bytes:
    """``_OPENAPI_V2_JSON`` as a gnostic ``openapi.v2.Document`` (swagger = 1, info = 2 {title = 1, version = 2};
    empty paths and definitions are simply absent in proto3)."""
    def field(num: int, data: bytes) -> bytes:  # wire type 2 (length-delimited); every length here is < 128
        assert len(data) < 128
        return bytes([num << 3 | 2, len(data)]) + data

    info = field(1, b"Kubernetes") + field(2, SERVER_VERSION["gitVersion"].encode())
    return field(1, b"2.0") + field(2, info)


def _schema_name(gv: str, kind: str) -> str:
    group, _, version = gv.rpartition("/")
    return ".".join(reversed((group or "core").split("."))) + f".{version}.{kind}"


class _DiscoveryMixin:
    """Discovery, OpenAPI v3 and CRD admission for :class:`ApiServerDouble` (callers hold ``self._cond``)."""

    _objects: dict[tuple[str, str, str, str], dict[str, Any]]
    _by_resource: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]]
    _resources_cache: dict[str, list[ApiResource]] | None
    _resources_builtin: tuple[tuple[str, int], ...]
    _cond: threading.Condition
    _delete_key: Callable[[tuple[str, str, str, str]], dict[str, Any]]
    host: str
    port: int

    def _meta(self, method: str, path: str, accept: str) -> tuple[int, Any]:
        """Answer a path outside /api/v1/... and /apis/<g>/<v>/...: version, discovery, OpenAPI, or 404.

        The body is JSON-able, or ``(content_type, bytes)`` for the protobuf OpenAPI v2 document."""
        body: Any
        if path.rstrip("/") == "/openapi/v2":
            wants_pb = "com.github.proto-openapi.spec.v2" in accept
            body = (_OPENAPI_V2_PB, _openapi_v2_protobuf()) if wants_pb else _OPENAPI_V2_JSON
        else:
            with self._cond:
                body = self._meta_get(path)
        if body is None:
            return 404, status_body(404, "NotFound", "the server could not find the requested resource")
        if method != "GET":
            return 405, status_body(405, "MethodNotAllowed", f"the server does not allow this method on the "
                                    f"requested resource ({method} {path})")
        return 200, body

    def _validate_fields(self, route: _Route, query: Mapping[str, str], raw: bytes, body: Any,
                         content_type: str) -> list[str]:
        """``fieldValidation``: Strict refuses (400), Warn (the default) returns warnings, Ignore returns none."""
        directive = query.get("fieldValidation") or "Warn"
        if directive not in ("Ignore", "Warn", "Strict"):
            raise _Fail(400, "BadRequest", f"fieldValidation parameter unsupported: {directive!r} (one of "
                        "Ignore, Warn, Strict)")
        if directive == "Ignore":
            return []
        with self._cond:
            problems = self._field_problems(route, raw, body, content_type.split(";")[0].strip())
        if problems and directive == "Strict":
            kind = _kind(route, body if isinstance(body, dict) else None)
            raise _Fail(400, "BadRequest", f'{kind} in version "{route.gv.rpartition("/")[2]}" cannot be handled '
                        f"as a {kind}: strict decoding error: {', '.join(problems)}")
        return problems

    def api_resources(self) -> dict[str, list[ApiResource]]:
        """Every served group version and its resources: built-ins, then what stored CRDs define."""
        return {gv: list(rs) for gv, rs in self._resources().items()}

    def _resources(self) -> dict[str, list[ApiResource]]:
        # Every write asks for its resource's schema (fieldValidation): computed once per change of the stored CRDs
        # (_store/_unstore drop it), not from every stored object per request. Callers must not change the answer.
        if self._resources_cache is not None and self._resources_builtin == _builtin_fingerprint():
            return self._resources_cache
        out = {gv: list(rs) for gv, rs in BUILTIN_RESOURCES.items()}
        for _, crd in sorted(self._by_resource.get((_CRD_GV, _CRD_PLURAL), {}).items()):
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            for v in spec.get("versions") or []:
                if not isinstance(v, dict) or not v.get("served"):
                    continue
                schema = dict(((v.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object"})
                out.setdefault(f"{spec.get('group')}/{v.get('name')}", []).append(ApiResource(
                    str(names.get("plural")), str(names.get("kind")), spec.get("scope") == "Namespaced",
                    tuple(names.get("shortNames") or ()), "status" in (v.get("subresources") or {}),
                    tuple(names.get("categories") or ()), schema, str(names.get("singular") or "")))
        self._resources_cache, self._resources_builtin = out, _builtin_fingerprint()
        return out

    def _meta_get(self, path: str) -> dict[str, Any] | None:
        """The body of a discovery/version/OpenAPI GET, or None when ``path`` is none of those."""
        resources = self._resources()
        p = path.rstrip("/")
        if p == "/version":
            return dict(SERVER_VERSION)
        if p == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]}
        if p == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(self._groups(resources).values())}
        if p.startswith("/apis/") and p.count("/") == 2:
            grp = self._groups(resources).get(p.split("/")[2])
            return None if grp is None else {"kind": "APIGroup", "apiVersion": "v1", **grp}
        gv = "v1" if p == "/api/v1" else p[len("/apis/"):] if p.startswith("/apis/") and p.count("/") == 3 else None
        if gv is not None and gv in resources:
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": [e for r in resources[gv] for e in r.entries()]}
        if p == "/openapi/v3":
            return {"paths": {self._openapi_key(gv): {"serverRelativeURL": f"/openapi/v3/{self._openapi_key(gv)}"
                                                      f"?hash={self._openapi_hash(gv, rs)}"}
                              for gv, rs in resources.items()}}
        if p.startswith("/openapi/v3/"):
            key = p[len("/openapi/v3/"):]
            for gv, rs in resources.items():
                if self._openapi_key(gv) == key:
                    return self._openapi_doc(gv, rs)
        return None

    @staticmethod
    def _groups(resources: Mapping[str, list[ApiResource]]) -> dict[str, dict[str, Any]]:
        versions: dict[str, list[str]] = {}
        for gv in resources:
            if "/" in gv:
                g, v = gv.split("/", 1)
                versions.setdefault(g, []).append(v)
        out: dict[str, dict[str, Any]] = {}
        for g, vs in sorted(versions.items()):
            entries = [{"groupVersion": f"{g}/{v}", "version": v} for v in sorted(vs, key=version_priority)]
            out[g] = {"name": g, "versions": entries, "preferredVersion": entries[0]}
        return out

    @staticmethod
    def _openapi_key(gv: str) -> str:
        return "api/v1" if gv == "v1" else f"apis/{gv}"

    def _openapi_hash(self, gv: str, rs: list[ApiResource]) -> str:
        return hashlib.sha512(json.dumps(self._openapi_doc(gv, rs), sort_keys=True).encode()).hexdigest().upper()

    @staticmethod
    def _openapi_doc(gv: str, rs: list[ApiResource]) -> dict[str, Any]:
        group, _, version = gv.rpartition("/")
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        for r in rs:
            paths.update(_openapi_operations(gv, r))
            schema: dict[str, Any] = dict(r.schema) if r.schema is not None else {
                "type": "object", "description": "a built-in kind whose schema the API server double does not model"}
            schema["x-kubernetes-group-version-kind"] = [{"group": group, "version": version, "kind": r.kind}]
            schemas[_schema_name(gv, r.kind)] = schema
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Patch"] = {
            "type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes "
                                             "PATCH request body."}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                "paths": paths, "components": {"schemas": schemas}}

    def _resource_schema(self, route: _Route) -> Mapping[str, Any] | None:
        for r in self._resources().get(route.gv, []):
            if r.plural == route.plural:
                return r.schema
        return None

    def _field_problems(self, route: _Route, raw: bytes, body: Any, content_type: str) -> list[str]:
        """Duplicate fields, and fields a custom resource's schema does not declare (core kinds: duplicates only)."""
        problems = [f'duplicate field "{k}"' for k in _duplicate_fields(raw, body)]
        schema = self._resource_schema(route)
        if isinstance(body, dict) and schema is not None and route.sub is None and \
                content_type != "application/json-patch+json":
            meta = body.get("metadata")
            if isinstance(meta, dict):
                problems += [f'unknown field "metadata.{k}"' for k in meta if k not in _OBJECT_META_FIELDS]
            rest = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")}
            problems += [f'unknown field "{f}"' for f in _unknown_fields(rest, schema, "")]
        return problems

    def _delete_crd_objects(self, route: _Route) -> None:
        """Deleting a CRD deletes its custom resources, every version (the apiserver's customresourcecleanup
        finalizer, done at once: the double has no finalizers)."""
        if (route.gv, route.plural) != (_CRD_GV, _CRD_PLURAL):
            return
        crd = self._objects.get((_CRD_GV, _CRD_PLURAL, "", route.name or ""))
        spec = (crd or {}).get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        for gv, p in [r for r in self._by_resource if r[1] == plural and "/" in r[0] and r[0].split("/")[0] == group]:
            for ns, name in list(self._by_resource[(gv, p)]):
                self._delete_key((gv, p, ns, name))

    def _admit_crd(self, route: _Route, obj: dict[str, Any]) -> None:
        """CRD create: validate, then mark it Established at once (the apiextensions controllers do that within
        milliseconds; the double has no controllers)."""
        if (route.gv, route.plural) != (_CRD_GV, _CRD_PLURAL):
            return
        problems = _crd_problems(obj)
        name = obj["metadata"].get("name", "")
        if problems:
            causes = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
            raise _Fail(422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: {causes}',
                        {"name": name, "group": "apiextensions.k8s.io", "kind": "CustomResourceDefinition"})
        spec, names = obj["spec"], dict(obj["spec"]["names"])
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
        now = _now()
        obj["status"] = {
            "acceptedNames": names,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now, "reason": r, "message": m}
                           for t, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                           ("Established", "InitialNamesAccepted",
                                            "the initial names have been accepted"))],
            "storedVersions": [v["name"] for v in spec["versions"] if isinstance(v, dict) and v.get("storage")]}


# ---- the double ---------------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the server saw it (for assertions)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0
    user: str | None = None

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None


@dataclass
class _Event:
    rv: int
    type: str
    gv: str
    plural: str
    namespace: str
    obj: dict[str, Any]


@dataclass
class _Faults:
    down: bool = False
    latency: float = 0.0
    fail: list[tuple[int, frozenset[str] | None]] = field(default_factory=list)
    forbidden: list[tuple[str, str]] = field(default_factory=list)
    denied: list[tuple[str, str, str]] = field(default_factory=list)  # (verb, group, resource[/subresource])


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of clients connecting at once (8 node processes x 8
    # threads) overflows it, their SYNs are dropped and retried after 1 s and 3 s, and a client with a 2 s connect
    # budget reports the API unreachable. Go's net.Listen uses the kernel's somaxconn (4096); the kernel caps this.
    request_queue_size = 4096

    def __init__(self, addr: tuple[str, int], double: ApiServerDouble) -> None:
        self.double = double
        super().__init__(addr, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.double._faults.down:
            # Down: reset at once (the client sees ECONNRESET, as behind a load balancer with no backend).
            # The port stays ours: closing the listener would let another process on the machine take it.
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.close()
            return
        # TLS handshake here, in the worker thread, so a slow client never stalls accept().
        request.settimeout(5.0)
        # Go's net/http sets TCP_NODELAY; without it, Nagle + delayed ACK add ~40 ms to every answer.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.double._server_ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        tls.settimeout(None)
        self.double._track(tls, True)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]  # typeshed wants Self
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.double._track(tls, False)
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is normal in these tests


_date_cache: list[Any] = [0, ""]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.double._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def send_bytes(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, code: int, body: Any, warnings: Iterable[str] = ()) -> None:
        """Send ``body`` (JSON-able, or already encoded ``bytes``)."""
        data = body if isinstance(body, bytes) else _dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        for w in warnings:  # RFC 7234 §5.5 warn-code 299, as the apiserver sends fieldValidation=Warn findings
            self.send_header("Warning", '299 - "' + w.replace('"', '\\"') + '"')
        self.send_header("Content-Length", str(len(data)))
        # Head and body in one write (one TLS record, one segment), not end_headers() + write(): the body is part of
        # the buffer flush_headers() sends.
        self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]  # typeshed omits it
        self.flush_headers()

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header, formatted once a second rather than once per answer.
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        if _date_cache[0] != now:
            _date_cache[:] = [now, super().date_time_string(now)]
        return str(_date_cache[1])


class ApiServerDouble(_DiscoveryMixin):
    """An in-memory kube-apiserver on ``https://127.0.0.1:<port>``; see the module docstring for what it does."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, token: str = "test-token-0123456789",
                 host: str = "127.0.0.1", watch_cache_size: int = 1000, request_log_size: int = 100_000) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="multinic-apiserver-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = 0
        self.pki = test_pki()
        self.tokens: set[str] = {token}
        self.token = token
        self.requests: list[RecordedRequest] = []
        self.request_log_size = request_log_size
        # Stored objects are never changed in place (a write stores a new dict), so the watch history, a LIST and
        # an answer being encoded can share them without copies. One index by key, one by resource for LIST/watch.
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._by_resource: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._resources_cache: dict[str, list[ApiResource]] | None = None
        self._resources_builtin: tuple[tuple[str, int], ...] = ()
        # Namespaces are implicit (every name exists) except these, which answer 404 like a deleted Namespace.
        self.missing_namespaces: set[str] = set()
        # Watch history per (group version, plural), in resourceVersion order: the newest ``watch_cache_size`` events.
        self.watch_cache_size = watch_cache_size
        self._history: dict[tuple[str, str], list[_Event]] = {}
        self._expired_rv: dict[tuple[str, str], int] = {}  # per resource: the newest resourceVersion dropped
        self._compacted_rv = 0
        self._rv = 0
        self._cond = threading.Condition(threading.RLock())
        self._faults = _Faults()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[Any] = set()
        self._stopping = False
        self._epoch = 0  # bumped on set_down/stop so live watch streams end
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.pki.server_cert), str(self.pki.server_key))
        ctx.load_verify_locations(cafile=str(self.pki.ca_cert))
        ctx.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is one way to authenticate, not required
        self._server_ctx = ctx

    # ---- lifecycle ----

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str:
        return str(self.pki.ca_cert)

    def start(self) -> ApiServerDouble:
        self._stopping = False
        self._listen()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._unlisten()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> ApiServerDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"apiserver-double-{self.port}", daemon=True)
        self._thread.start()

    def _unlisten(self) -> None:
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._cut_connections()

    def _cut_connections(self) -> None:
        with self._cond:
            self._epoch += 1  # live watch streams end
            self._cond.notify_all()
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _track(self, conn: Any, add: bool) -> None:
        with self._cond:
            (self._conns.add if add else self._conns.discard)(conn)

    # ---- fault hooks ----

    def set_down(self, down: bool = True) -> None:
        """Down: every new connection is reset and open ones (watches too) are cut. Up: serve again.

        The listening socket is kept, so the port cannot be taken by another process meanwhile."""
        if down and not self._faults.down:
            self._faults.down = True
            self._cut_connections()
        elif not down and self._faults.down:
            self._faults.down = False

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (after the request is read)."""
        self._faults.latency = seconds

    def inject_conflicts(self, n: int) -> None:
        """The next ``n`` PUT/PATCH requests answer 409 Conflict, as if another writer got there first."""
        self.fail_next(n, 409, methods=("PUT", "PATCH"))

    def fail_next(self, n: int, code: int, methods: Iterable[str] | None = None) -> None:
        """The next ``n`` requests (of ``methods``, default any) answer ``code`` with a matching Status."""
        with self._cond:
            self._faults.fail.extend([(code, frozenset(methods) if methods else None)] * n)

    def forbid(self, method: str, path_prefix: str) -> None:
        """RBAC says no: requests of ``method`` ('*' = any) under ``path_prefix`` answer 403 Forbidden."""
        self._faults.forbidden.append((method.upper(), path_prefix))

    def deny(self, verb: str, resource: str, group: str = "") -> None:
        """RBAC lacks one verb: ``verb`` ('*' = any) on ``resource`` (``pods``, ``pods/status``) of ``group`` answers 403,
        and a SelfSubjectAccessReview for it answers ``allowed: false``."""
        self._faults.denied.append((verb, group, resource))

    def allow(self, verb: str, resource: str, group: str = "") -> None:
        """Undo ``deny`` for exactly that verb, resource and group."""
        with contextlib.suppress(ValueError):
            self._faults.denied.remove((verb, group, resource))

    def rotate_token(self, new: str, *, keep_old: bool = False) -> None:
        """Accept ``new`` from now on; unless ``keep_old``, every earlier token becomes Unauthorized."""
        with self._cond:
            if not keep_old:
                self.tokens.clear()
            self.tokens.add(new)
            self.token = new

    def compact(self) -> None:
        """Forget watch history: a watch from an older resourceVersion gets 410 Expired."""
        with self._cond:
            self._history.clear()
            self._compacted_rv = self._rv

    def _too_old(self, resource: tuple[str, str]) -> int:
        """A watch must start at or after this resourceVersion: an event after an older one is gone."""
        return max(self._compacted_rv, self._expired_rv.get(resource, 0))

    # ---- object hooks ----

    @property
    def resource_version(self) -> int:
        return self._rv

    def seed(self, obj: Mapping[str, Any], *, plural: str | None = None) -> dict[str, Any]:
        """Store ``obj`` as if created through the API (server fields filled in, ADDED sent to watchers)."""
        body = json.loads(json.dumps(dict(obj)))  # stored as JSON, as it would be after a trip over the wire
        api_version = str(body.get("apiVersion") or "v1")
        kind = str(body.get("kind") or "")
        plural = plural or _PLURAL_OF_KIND.get(kind) or (kind.lower() + "s")
        meta = body.setdefault("metadata", {})
        ns = meta.get("namespace")
        if api_version == "v1" and plural in _CORE_CLUSTER_SCOPED:
            ns = None
        elif api_version == "v1" and ns is None:
            ns = "default"
        route = _Route(api_version, plural, ns, meta.get("name"), None)
        with self._cond:
            return _clone(self._create(route, body, from_api=False))

    def get_obj(self, plural: str, name: str, namespace: str | None = None,
                api_version: str = "v1") -> dict[str, Any] | None:
        """A copy of the stored object, or None."""
        with self._cond:
            obj = self._objects.get((api_version, plural, namespace or "", name))
            return _clone(obj) if obj is not None else None

    def objects(self, plural: str, api_version: str = "v1", namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of every stored object of a resource (optionally one namespace)."""
        with self._cond:
            return [_clone(o) for (ns, _), o in sorted(self._by_resource.get((api_version, plural), {}).items())
                    if namespace is None or ns == namespace]

    def delete_obj(self, plural: str, name: str, namespace: str | None = None, api_version: str = "v1") -> bool:
        """Remove an object behind the client's back (DELETED is still sent to watchers)."""
        with self._cond:
            key = (api_version, plural, namespace or "", name)
            if key not in self._objects:
                return False
            self._delete_key(key)
            return True

    def requests_for(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        """The request log filtered by method and path prefix."""
        with self._cond:
            return [r for r in self.requests
                    if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    # ---- client-side files ----

    def kubeconfig_path(self, *, token: str | None = None, token_file: str | os.PathLike[str] | None = None,
                        embed_ca: bool = False, client_cert: bool = False, embed_client_cert: bool = False,
                        fmt: str = "yaml", namespace: str | None = None, insecure: bool = False,
                        ca_file: str | os.PathLike[str] | None = None, server: str | None = None,
                        name: str = "kubeconfig") -> str:
        """Write a kubeconfig for this server and return its path.

        Authentication: ``token`` (default: the current token) unless ``token_file`` or a client certificate is
        chosen. ``embed_*`` use the ``-data`` fields; ``ca_file`` overrides the CA (e.g. ``pki.other_ca_cert``).
        """
        cluster: dict[str, Any] = {"server": server or self.url}
        if insecure:
            cluster["insecure-skip-tls-verify"] = True
        elif embed_ca:
            cluster["certificate-authority-data"] = _b64(Path(ca_file or self.pki.ca_cert).read_bytes())
        else:
            cluster["certificate-authority"] = str(ca_file or self.pki.ca_cert)
        user: dict[str, Any] = {}
        if client_cert or embed_client_cert:
            if embed_client_cert:
                user["client-certificate-data"] = _b64(self.pki.client_cert.read_bytes())
                user["client-key-data"] = _b64(self.pki.client_key.read_bytes())
            else:
                user["client-certificate"] = str(self.pki.client_cert)
                user["client-key"] = str(self.pki.client_key)
        elif token_file is not None:
            user["tokenFile"] = str(token_file)
        else:
            user["token"] = token if token is not None else self.token
        context: dict[str, Any] = {"cluster": "double", "user": "multinic"}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "multinic@double",
            "clusters": [{"name": "double", "cluster": cluster}],
            "users": [{"name": "multinic", "user": user}],
            "contexts": [{"name": "multinic@double", "context": context}],
        }
        path = self.workdir / name
        if fmt == "json":
            path.write_text(json.dumps(doc, indent=1))
        else:
            import yaml

            path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    def serviceaccount_dir(self, namespace: str = "kube-system", *, token: str | None = None,
                           name: str = "serviceaccount") -> str:
        """A directory shaped like ``/var/run/secrets/kubernetes.io/serviceaccount`` for this server."""
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "token").write_text(token if token is not None else self.token)
        (d / "ca.crt").write_bytes(self.pki.ca_cert.read_bytes())
        (d / "namespace").write_text(namespace)
        return str(d)

    def in_cluster_env(self) -> dict[str, str]:
        """``KUBERNETES_SERVICE_HOST``/``PORT`` for this server."""
        return {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}

    # ---- request handling ----

    def _handle(self, h: _Handler) -> None:
        split = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        if self._faults.down:  # a request on a connection that slipped in as the server went down
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        rec = RecordedRequest(h.command, split.path, query, headers, None)
        warnings: list[str] = []
        with self._cond:
            self.requests.append(rec)
            if len(self.requests) > self.request_log_size:
                del self.requests[:len(self.requests) - self.request_log_size]
        if self._faults.latency:
            time.sleep(self._faults.latency)
        try:
            if raw:
                try:
                    rec.body = _loads(raw)
                except ValueError:
                    raise _Fail(400, "BadRequest", "the request body is not valid JSON") from None
            rec.user = self._authenticate(h, headers)
            if rec.user is None:
                raise _Fail(401, "Unauthorized", "Unauthorized")
            self._authorize(h.command, split.path, rec.user, query)
            self._injected_failure(h.command, split.path)
            route = _parse_route(split.path)
            if route is None:
                code, body = self._meta(h.command, split.path, headers.get("accept", ""))
                rec.status = code
                if isinstance(body, tuple):
                    h.send_bytes(code, body[1], body[0])
                else:
                    h.send_json(code, body)
                return
            if h.command in ("POST", "PUT", "PATCH"):
                warnings = self._validate_fields(route, query, raw, rec.body, headers.get("content-type", ""))
            if h.command == "GET" and query.get("watch") in ("1", "true"):
                rec.status = 200
                self._watch(h, route, query)
                return
            code, body = self._dispatch(h.command, route, query, rec.body, headers.get("content-type", ""))
        except _Fail as f:
            code, body = f.code, f.body
        rec.status = code
        h.send_json(code, body, warnings)

    def _authenticate(self, h: _Handler, headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            with self._cond:
                return "system:serviceaccount:token" if auth[7:] in self.tokens else None
        cert: Any = h.connection.getpeercert() if isinstance(h.connection, ssl.SSLSocket) else None
        if cert:  # verified against our CA by the TLS layer (CERT_OPTIONAL)
            for rdn in cert.get("subject", ()):
                for attr in rdn:
                    if attr[0] == "commonName":
                        return str(attr[1])
        return None

    def _authorize(self, method: str, path: str, user: str, query: Mapping[str, str] | None = None) -> None:
        route = _parse_route(path)
        verb = _request_verb(method, route, query or {}) if route is not None else ""
        res = route.plural + (f"/{route.sub}" if route.sub else "") if route is not None else ""
        if route is not None and self._denied(verb, route.group, res):
            where = f' in the namespace "{route.namespace}"' if route.namespace else " at the cluster scope"
            raise _Fail(403, "Forbidden", f'{res} "{route.name or ""}" is forbidden: User "{user}" cannot {verb} '
                        f'resource "{res}" in API group "{route.group}"{where}',
                        {"name": route.name or "", "group": route.group, "kind": route.plural})
        for m, prefix in self._faults.forbidden:
            if (m in ("*", method)) and path.startswith(prefix):
                route = _parse_route(path)
                verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                        "DELETE": "delete"}.get(method, method.lower())
                res = route.plural + (f"/{route.sub}" if route.sub else "") if route else path
                grp = route.group if route else ""
                where = f' in the namespace "{route.namespace}"' if route and route.namespace else " at the cluster scope"
                raise _Fail(403, "Forbidden", f'{res} "{route.name if route else ""}" is forbidden: User "{user}" '
                            f'cannot {verb} resource "{res}" in API group "{grp}"{where}',
                            {"name": route.name if route else "", "group": grp,
                             "kind": route.plural if route else ""})

    def _denied(self, verb: str, group: str, resource: str) -> bool:
        return any(v in ("*", verb) and g == group and r == resource for v, g, r in self._faults.denied)

    def _access_review(self, body: Any) -> dict[str, Any]:
        """POST selfsubjectaccessreviews: may the caller do this? Answered from the same rules that answer requests
        (``deny`` and ``forbid``), never stored (the apiserver does not persist reviews either)."""
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise _Fail(400, "BadRequest", "the body of a SelfSubjectAccessReview must be an object with a spec")
        spec = body["spec"]
        attrs = spec.get("resourceAttributes")
        if not isinstance(attrs, dict):
            if isinstance(spec.get("nonResourceAttributes"), dict):
                return {**body, "status": {"allowed": True}}
            raise _invalid(_Route("authorization.k8s.io/v1", "selfsubjectaccessreviews", None, None, None), "",
                           "spec.resourceAttributes: Required value: exactly one of nonResourceAttributes or "
                           "resourceAttributes must be specified")
        verb, group = str(attrs.get("verb") or ""), str(attrs.get("group") or "")
        res = str(attrs.get("resource") or "") + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
        denied = self._denied(verb, group, res)
        if not denied:
            # A path-prefix rule (``forbid``) denies the request the attributes describe.
            version = str(attrs.get("version") or _PREFERRED_VERSION.get(group, "v1"))
            base = "/api/v1" if not group else f"/apis/{group}/{version}"
            ns = f"/namespaces/{attrs['namespace']}" if attrs.get("namespace") else ""
            name = f"/{attrs['name']}" if attrs.get("name") else ""
            sub = f"/{attrs['subresource']}" if attrs.get("subresource") and name else ""
            path = f"{base}{ns}/{attrs.get('resource')}{name}{sub}"
            method = _VERB_METHOD.get(verb, verb.upper())
            denied = any(m in ("*", method) and path.startswith(prefix) for m, prefix in self._faults.forbidden)
        status: dict[str, Any] = {"allowed": not denied}
        if denied:
            status["reason"] = "no RBAC rule allows it (test double: deny/forbid)"
        out = copy.deepcopy(body)
        out.setdefault("apiVersion", "authorization.k8s.io/v1")
        out.setdefault("kind", "SelfSubjectAccessReview")
        out.setdefault("metadata", {})["creationTimestamp"] = None
        out["status"] = status
        return out

    def _injected_failure(self, method: str, path: str) -> None:
        if not self._faults.fail:  # the usual case: no lock taken (fail_next appends under it, we pop under it)
            return
        with self._cond:
            hit = next((i for i, (_, methods) in enumerate(self._faults.fail)
                        if methods is None or method in methods), None)
            if hit is None:
                return
            code, _ = self._faults.fail.pop(hit)
        route = _parse_route(path)
        if code == 409 and route is not None:
            raise _conflict(route, route.name or "")
        reasons = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests", 504: "Timeout",
                   404: "NotFound", 401: "Unauthorized", 403: "Forbidden"}
        raise _Fail(code, reasons.get(code, "InternalError"), f"injected failure {code}")

    def _dispatch(self, method: str, route: _Route, query: Mapping[str, str], body: Any,
                  content_type: str) -> tuple[int, Any]:
        if (route.gv, route.plural) == ("authorization.k8s.io/v1", "selfsubjectaccessreviews"):
            if method != "POST" or route.name is not None or route.namespace is not None:
                raise _Fail(405, "MethodNotAllowed", "selfsubjectaccessreviews only supports create")
            return 201, self._access_review(body)
        if route.sub is not None and route.sub != "status":
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        # Answers are encoded here, under the lock, straight from the stored objects (no copy: see __init__).
        with self._cond:
            if method == "GET":
                if route.name is None:
                    return 200, _dumps(self._list(route, query))
                return 200, _dumps(self._get(route))
            if method == "POST":
                if route.name is not None:
                    raise _Fail(405, "MethodNotAllowed", "POST is only allowed on a collection")
                if not isinstance(body, dict):
                    raise _Fail(400, "BadRequest", "the body of a create must be a JSON object")
                return 201, _dumps(self._create(route, body, from_api=True))
            if route.name is None:
                raise _Fail(405, "MethodNotAllowed", f"{method} needs an object name in the URL")
            if method == "PUT":
                if not isinstance(body, dict):
                    raise _Fail(400, "BadRequest", "the body of an update must be a JSON object")
                return 200, _dumps(self._update(route, body, from_patch=False))
            if method == "PATCH":
                return 200, _dumps(self._patch(route, body, content_type.split(";")[0].strip()))
            if method == "DELETE":
                return 200, _dumps(self._delete(route, body))
        raise _Fail(405, "MethodNotAllowed", f"method {method} not allowed")

    # ---- storage (callers hold self._cond) ----

    def _key(self, route: _Route, name: str | None = None) -> tuple[str, str, str, str]:
        return (route.gv, route.plural, route.namespace or "", name if name is not None else route.name or "")

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, etype: str, route: _Route, obj: dict[str, Any], rv: int) -> None:
        events = self._history.setdefault((route.gv, route.plural), [])
        events.append(_Event(rv, etype, route.gv, route.plural, route.namespace or "", obj))
        if len(events) > self.watch_cache_size:
            drop = len(events) - self.watch_cache_size
            self._expired_rv[(route.gv, route.plural)] = events[drop - 1].rv
            del events[:drop]
        self._cond.notify_all()

    def _store(self, key: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        self._objects[key] = obj
        self._by_resource.setdefault(key[:2], {})[key[2:]] = obj
        if key[:2] == (_CRD_GV, _CRD_PLURAL):
            self._resources_cache = None

    def _unstore(self, key: tuple[str, str, str, str]) -> dict[str, Any]:
        obj = self._objects.pop(key)
        del self._by_resource[key[:2]][key[2:]]
        if key[:2] == (_CRD_GV, _CRD_PLURAL):
            self._resources_cache = None
        return obj

    def _get(self, route: _Route) -> dict[str, Any]:
        obj = self._objects.get(self._key(route))
        if obj is None:
            if route.gv == "v1" and route.plural == "namespaces" and route.name \
                    and route.name not in self.missing_namespaces:
                # Namespaces are implicit: every namespace exists and is Active.
                return {"kind": "Namespace", "apiVersion": "v1",
                        "metadata": {"name": route.name, "resourceVersion": "1"}, "status": {"phase": "Active"}}
            raise _not_found(route)
        return obj

    def _list(self, route: _Route, query: Mapping[str, str]) -> dict[str, Any]:
        label_sel = query.get("labelSelector", "")
        field_reqs = _check_fields(query.get("fieldSelector", ""))
        items = []
        for (ns, _), obj in sorted(self._by_resource.get((route.gv, route.plural), {}).items()):
            if route.namespace is not None and ns != route.namespace:
                continue
            if label_sel and not _match_labels(label_sel, (obj.get("metadata") or {}).get("labels") or {}):
                continue
            if field_reqs and not _match_fields(field_reqs, obj):
                continue
            items.append(obj)
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        start = 0
        if query.get("continue"):
            try:
                start = int(json.loads(base64.b64decode(query["continue"]))["start"])
            except (ValueError, KeyError, TypeError):
                raise _Fail(400, "BadRequest", "invalid continue token") from None
        limit = int(query.get("limit") or 0)
        if limit > 0:
            if start + limit < len(items):
                meta["continue"] = base64.b64encode(json.dumps({"start": start + limit}).encode()).decode()
                meta["remainingItemCount"] = len(items) - start - limit
            items = items[start:start + limit]
        else:
            items = items[start:]
        kind = _kind(route, items[0] if items else None)
        return {"kind": f"{kind}List", "apiVersion": route.gv, "metadata": meta, "items": items}

    def _create(self, route: _Route, body: dict[str, Any], *, from_api: bool) -> dict[str, Any]:
        obj = _clone(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _Fail(400, "BadRequest", "metadata must be an object")
        if route.namespace is not None:
            if meta.get("namespace") not in (None, "", route.namespace):
                raise _Fail(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                            "sent on the request")
            meta["namespace"] = route.namespace
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        if not name:
            gen = meta.get("generateName") or ""
            if not gen:
                raise _invalid(route, "", "metadata.name: Required value: name or generateName is required")
            for _ in range(100):
                name = gen + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                if self._key(route, name) not in self._objects:
                    break
            meta["name"] = name
        key = self._key(route, name)
        if key in self._objects:
            raise _Fail(409, "AlreadyExists", f'{route.resource} "{name}" already exists',
                        {"name": name, "group": route.group, "kind": route.plural})
        if from_api:
            self._validate_create(route, obj)
            self._admit_crd(route, obj)
        obj.setdefault("apiVersion", route.gv)
        obj.setdefault("kind", _kind(route))
        rv = self._bump()
        if from_api or not meta.get("uid"):
            meta["uid"] = str(uuid.uuid4())
        if from_api or not meta.get("creationTimestamp"):
            meta["creationTimestamp"] = _now()
        meta["resourceVersion"] = str(rv)
        if from_api and (route.gv, route.plural) == ("v1", "pods"):
            # podStrategy.PrepareForCreate: clients cannot create a pod with a status.
            obj["status"] = {"phase": "Pending"}
        self._store(key, obj)
        self._record("ADDED", _Route(route.gv, route.plural, route.namespace, name, None), obj, rv)
        return obj

    def _validate_create(self, route: _Route, obj: dict[str, Any]) -> None:
        if (route.gv, route.plural) == ("v1", "events"):
            inv = obj.get("involvedObject") or {}
            name = obj["metadata"]["name"]
            if not inv.get("name") and not inv.get("kind"):
                raise _invalid(route, name, "involvedObject: Required value")
            if inv.get("namespace") and inv.get("namespace") != route.namespace:
                raise _invalid(route, name, f"involvedObject.namespace: Invalid value: \"{inv.get('namespace')}\": "
                               "does not match event.namespace")
            if obj.get("type") not in (None, "", "Normal", "Warning"):
                raise _invalid(route, name, f"type: Unsupported value: \"{obj.get('type')}\"")

    def _update(self, route: _Route, body: dict[str, Any], *, from_patch: bool) -> dict[str, Any]:
        key = self._key(route)
        old = self._objects.get(key)
        if old is None:
            raise _not_found(route)
        name = route.name or ""
        new = _clone(body)
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _Fail(400, "BadRequest", "metadata must be an object")
        if meta.get("name") not in (None, "", name):
            raise _Fail(400, "BadRequest", f"the name of the object ({meta.get('name')}) does not match the name on "
                        f"the URL ({name})")
        if route.namespace is not None and meta.get("namespace") not in (None, "", route.namespace):
            raise _Fail(400, "BadRequest", "the namespace of the provided object does not match the namespace sent "
                        "on the request")
        old_meta = old["metadata"]
        sent_rv = str(meta.get("resourceVersion") or "")
        if sent_rv and sent_rv != old_meta["resourceVersion"]:
            raise _conflict(route, name)
        if not sent_rv and not from_patch and route.gv != "v1":
            # Custom resources do not allow unconditional updates (core types mostly do).
            raise _invalid(route, name, "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise _conflict(route, name, f"Precondition failed: UID in precondition: {meta['uid']}, UID in object "
                            f"meta: {old_meta['uid']}")
        pod_like = (route.gv, route.plural) in _POD_LIKE_STATUS
        if route.sub == "status":
            if pod_like:
                # podStatusStrategy.PrepareForUpdate: spec and ownerReferences come from the stored object;
                # labels and annotations from the request are kept.
                if "spec" in old:
                    new["spec"] = _clone(old["spec"])
                else:
                    new.pop("spec", None)
                if "ownerReferences" in old_meta:
                    meta["ownerReferences"] = _clone(old_meta["ownerReferences"])
                else:
                    meta.pop("ownerReferences", None)
            else:
                status = new.get("status")
                new = _clone(old)
                meta = new["metadata"]
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
        elif pod_like:
            # The main resource cannot change status (that is what /status is for).
            if "status" in old:
                new["status"] = _clone(old["status"])
            else:
                new.pop("status", None)
            if route.plural == "pods":
                self._check_pod_spec_update(route, old.get("spec") or {}, new.get("spec") or {})
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "generateName"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta["name"] = name
        if route.namespace is not None:
            meta["namespace"] = route.namespace
        new.setdefault("apiVersion", old.get("apiVersion", route.gv))
        new.setdefault("kind", old.get("kind", _kind(route)))
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if new == old:
            return old  # a no-op write does not bump the resourceVersion, nor notify watchers
        rv = self._bump()
        meta["resourceVersion"] = str(rv)
        self._store(key, new)
        self._record("MODIFIED", route, new, rv)
        return new

    def _check_pod_spec_update(self, route: _Route, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        def mutable_stripped(spec: Mapping[str, Any]) -> dict[str, Any]:
            s = copy.deepcopy(dict(spec))
            for k in ("activeDeadlineSeconds", "tolerations"):
                s.pop(k, None)
            for ck in ("containers", "initContainers"):
                for c in s.get(ck) or []:
                    if isinstance(c, dict):
                        c.pop("image", None)
            return s

        if mutable_stripped(old) != mutable_stripped(new):
            raise _invalid(route, route.name or "", "spec: Forbidden: pod updates may not change fields other than "
                           "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                           "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)")

    def _patch(self, route: _Route, body: Any, content_type: str) -> dict[str, Any]:
        current = self._objects.get(self._key(route))
        if current is None:
            raise _not_found(route)
        if content_type == "application/json-patch+json":
            try:
                patched = json_patch(current, body)
            except JsonPatchError as e:
                raise _invalid(route, route.name or "", f"the JSON patch could not be applied: {e}") from None
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise _Fail(400, "BadRequest", "a merge patch must be a JSON object")
            if content_type.startswith("application/strategic") and _has_directive(body):
                raise _Fail(400, "BadRequest", "the API server double does not implement strategic-merge directives")
            patched = json_merge_patch(current, body)
        else:
            raise _Fail(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted '
                        f'media types include: application/json-patch+json, application/merge-patch+json, '
                        f'application/strategic-merge-patch+json (got "{content_type}")')
        if not isinstance(patched, dict):
            raise _invalid(route, route.name or "", "the patch turned the object into a non-object")
        return self._update(route, patched, from_patch=True)

    def _delete(self, route: _Route, body: Any) -> dict[str, Any]:
        key = self._key(route)
        obj = self._objects.get(key)
        if obj is None:
            raise _not_found(route)
        pre = (body or {}).get("preconditions") or {} if isinstance(body, dict) else {}
        meta = obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise _conflict(route, route.name or "", f"Precondition failed: UID in precondition: {pre['uid']}, UID "
                            f"in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise _conflict(route, route.name or "", f"Precondition failed: ResourceVersion in precondition: "
                            f"{pre['resourceVersion']}, ResourceVersion in object meta: {meta.get('resourceVersion')}")
        self._delete_crd_objects(route)
        return self._delete_key(key)

    def _delete_key(self, key: tuple[str, str, str, str]) -> dict[str, Any]:
        old = self._unstore(key)
        rv = self._bump()
        # A new dict: the stored one may still be in the watch history with its own resourceVersion.
        obj = {**old, "metadata": {**old["metadata"], "resourceVersion": str(rv)}}
        gv, plural, ns, name = key
        self._record("DELETED", _Route(gv, plural, ns or None, name, None), obj, rv)
        return obj

    # ---- watch ----

    def _watch(self, h: _Handler, route: _Route, query: Mapping[str, str]) -> None:
        label_sel = query.get("labelSelector", "")
        field_reqs = _check_fields(query.get("fieldSelector", ""))
        if route.name is not None:
            field_reqs.append(("metadata.name", route.name, False))
        timeout = float(query.get("timeoutSeconds") or 1800)
        end = time.monotonic() + timeout
        rv_param = query.get("resourceVersion", "")

        def matches(gv: str, plural: str, ns: str, obj: Mapping[str, Any]) -> bool:
            if gv != route.gv or plural != route.plural:
                return False
            if route.namespace is not None and ns != route.namespace:
                return False
            if label_sel and not _match_labels(label_sel, (obj.get("metadata") or {}).get("labels") or {}):
                return False
            return not field_reqs or _match_fields(field_reqs, obj)

        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.close_connection = True

        def send(etype: str, obj: Mapping[str, Any]) -> None:
            line = _dumps({"type": etype, "object": obj}) + b"\n"
            h.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")

        try:
            with self._cond:
                epoch = self._epoch
                if rv_param in ("", "0"):
                    # "Any" resourceVersion: the current state as synthetic ADDED events, then changes.
                    pending = [("ADDED", o) for (ns, _), o in
                               sorted(self._by_resource.get((route.gv, route.plural), {}).items())
                               if matches(route.gv, route.plural, ns, o)]
                    since = self._rv
                else:
                    try:
                        since = int(rv_param)
                    except ValueError:
                        since = -1
                    oldest = self._too_old((route.gv, route.plural))
                    if since < oldest or since < 0:
                        pending = [("ERROR", status_body(410, "Expired", f"too old resource version: {rv_param} "
                                                         f"({oldest})"))]
                        since = -1
                    else:
                        pending = []
            for etype, obj in pending:
                send(etype, obj)
            while since >= 0 and not self._stopping:
                with self._cond:
                    if since < self._too_old((route.gv, route.plural)):
                        break  # fell behind the window: events it has not seen are gone (the cacher closes it)
                    # The history is in resourceVersion order: find the first newer event, do not scan them all.
                    history = self._history.get((route.gv, route.plural), [])
                    batch = history[bisect.bisect_right(history, since, key=lambda e: e.rv):]
                    if not batch:
                        remaining = end - time.monotonic()
                        if remaining <= 0 or self._epoch != epoch:
                            break
                        self._cond.wait(min(remaining, 0.5))
                        if self._epoch != epoch:
                            break
                        continue
                for e in batch:
                    since = e.rv
                    if matches(e.gv, e.plural, e.namespace, e.obj):
                        send(e.type, e.obj)
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client went away, or set_down cut the connection


def _has_directive(patch: Any) -> bool:
    if isinstance(patch, dict):
        return any(str(k).startswith("$") or _has_directive(v) for k, v in patch.items())
    if isinstance(patch, list):
        return any(_has_directive(v) for v in patch)
    return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

