"""``multinic webhook``: a mutating admission webhook that applies NAD node selectors to pods.

The seed: a NAD annotated ``k8s.v1.cni.cncf.io/nodeSelector: KEY=VALUE`` "forces any Pods that
reference this custom resource to be deployed on those nodes that have this label". The CNI
side (cni.delegator) refuses the attachment on other nodes; this webhook makes the scheduler
place the pod right in the first place, as network-resources-injector does.

Rules:
- PURE core (``mutation``, ``review``): AdmissionReview v1 in, AdmissionReview v1 out; NADs
  come from a ``get_nad(namespace, name)`` function, so it is tested without HTTP.
- Only Pod CREATE is mutated; anything else is allowed unchanged. A pod requesting no
  networks, or only NADs without a node selector, is allowed unchanged (no patch).
- The selectors of every requested NAD are merged into ``spec.nodeSelector`` (RFC 6902 JSON
  patch, keys escaped per RFC 6901). A key the pod already has with another value, or two
  NADs asking for different values of one key, cannot be satisfied by any node: the pod is
  denied with a message naming the key, the values and the NADs.
- An invalid network annotation is denied with the parser's reason (the CNI would fail the
  pod anyway, later and less visibly). A NAD that does not exist is allowed with a warning:
  the CNI reports it as ``NoNetworkFound`` and it may yet be created.
- The NAD lookup failing (API down) denies with code 500 so the failurePolicy decides.
- Multi-tenant policy (``cni.delegator.tenancy``, the same functions the node runs, so the same
  message): a pod whose annotation asks for a host port its namespace may not claim, or that
  selects a NAD the node would refuse, is denied (403); a NetworkAttachmentDefinition CREATE or
  UPDATE whose config the node would refuse is denied too. What only the node can see is left
  to it: symlinks (paths are judged lexically here), the node's uplinks and its cluster bridge
  when the webhook's config does not carry ``delegates``.
- The I/O shell (``serve``) is stdlib ``http.server`` + ``ssl``; ``/mutate`` takes POSTs,
  ``/healthz`` answers GETs. Certificates are loaded at start (rotate by restarting the pod).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..delegator import tenancy
from ..spec.errors import CNIError
from .annotations import NETWORKS, NODE_SELECTOR, Selection, parse_networks, parse_node_selector

GetNad = Callable[[str, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Tenancy:
    """The node policy as the webhook knows it (from ``--config``, the same keys as the node's multinic config)."""

    policies: tenancy.Policies = field(default_factory=lambda: tenancy.policies({}, "kube-system"))
    facts: tenancy.Facts = field(default_factory=tenancy.Facts)
    # Where Namespace labels come from (``policyProfiles``): an object with ``get_namespace(name)``, e.g.
    # ``NamespaceReader``; None: labels cannot be read and every namespace gets the node's policy (fail closed).
    namespaces: Any = None

    def policy_for(self, namespace: str) -> tenancy.Policy:
        """The same choice as the node's (tenancy_io.Guard.policy_for): entry, label's profile, or the node's."""
        if not self.policies.wants_labels(namespace):
            return self.policies.for_namespace(namespace)
        from ..delegator.tenancy_io import namespace_labels

        return self.policies.for_namespace(namespace, namespace_labels(self.namespaces, namespace, self.policies))

    @classmethod
    def from_config(cls, doc: dict[str, Any]) -> Tenancy:
        from ..delegator import config as cfgmod

        cfg = cfgmod.parse(doc)
        plugins = [p for d in cfg.delegates for p in (d.get("plugins") or [d]) if isinstance(p, dict)]
        return cls(cfg.policies, tenancy.Facts(cluster_bridges=tenancy.bridges_of(plugins),
                                               reserved_dirs=(cfg.cni_dir,),
                                               node_networks=tenancy.network_names(cfg.delegates)))


def _tenant_conflist(nad: dict[str, Any]) -> Any:
    """The conflist of a NAD whose config is tenant input, else None (no spec.config, or one the CNI will refuse
    as invalid anyway: that is its message to give, not a policy decision)."""
    from .nad import resolve

    if not tenancy.tenant_config(nad):
        return None
    try:
        return resolve(nad).conflist
    except CNIError:
        return None


def check_selection(sel: Selection, nad: dict[str, Any] | None, pod_namespace: str, t: Tenancy) -> None:
    """What the node's resolve step decides for one attachment, without the node (Denied with its message)."""
    conflist = _tenant_conflist(nad) if nad is not None else None
    try:
        tenancy.check_attachment(
            sel.key, pod_policy=t.policy_for(pod_namespace),
            annotation_ports=sel.runtime_config().get("portMappings"),
            nad_policy=t.policy_for(sel.namespace) if conflist is not None else None,
            conflist=conflist, facts=t.facts, resolved={})
    except CNIError as exc:
        raise Denied(str(exc)) from None


def check_nad_object(nad: dict[str, Any], namespace: str, t: Tenancy) -> None:
    """A NAD CREATE/UPDATE: its config under its namespace's policy."""
    meta = nad.get("metadata") or {}
    ns = str(meta.get("namespace") or namespace or "default")
    conflist = _tenant_conflist(nad)
    if conflist is None:
        return
    try:
        tenancy.check_nad(conflist, t.policy_for(ns), t.facts, {}, f"{ns}/{meta.get('name', '')}")
    except CNIError as exc:
        raise Denied(str(exc)) from None


class Denied(Exception):
    """The pod cannot be admitted; ``code`` is the HTTP-like status code of the answer."""

    def __init__(self, message: str, code: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Mutation:
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _escape(key: str) -> str:
    """RFC 6901 §3: '~' → '~0', '/' → '~1' (label keys like kubernetes.io/hostname have a '/')."""
    return key.replace("~", "~0").replace("/", "~1")


def mutation(pod: dict[str, Any], namespace: str, get_nad: GetNad, policy: Tenancy | None = None) -> Mutation:
    """The JSON patch that adds the requested NADs' node selectors to the pod (or Denied, also by ``policy``)."""
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or namespace or "default")
    value = ((meta.get("annotations") or {}).get(NETWORKS)) or ""
    out = Mutation()
    if not value:
        return out
    try:
        sels = parse_networks(str(value), ns)
    except CNIError as exc:
        raise Denied(f"invalid {NETWORKS} annotation: {exc}") from None
    wanted: dict[str, tuple[str, str]] = {}  # label key -> (value, NAD that asked)
    fetched: dict[str, dict[str, Any] | None] = {}
    t = policy or Tenancy()
    for sel in sels:
        if sel.key in fetched:
            # The same NAD again: its node selector is merged already; this item's host ports are its own.
            check_selection(sel, fetched[sel.key], ns, t)
            continue
        try:
            nad = get_nad(sel.namespace, sel.name)
        except CNIError as exc:
            raise Denied(f"cannot read NetworkAttachmentDefinition {sel.key}: {exc}", code=500) from None
        fetched[sel.key] = nad
        check_selection(sel, nad, ns, t)
        if nad is None:
            out.warnings.append(f"NetworkAttachmentDefinition {sel.key} does not exist; the pod will not start "
                                "until it does")
            continue
        anns = (nad.get("metadata") or {}).get("annotations") or {}
        raw = anns.get(NODE_SELECTOR)
        if not raw:
            continue
        try:
            terms = parse_node_selector(str(raw))
        except CNIError as exc:
            raise Denied(f"NetworkAttachmentDefinition {sel.key}: {exc}") from None
        for k, v in terms.items():
            if k in wanted and wanted[k][0] != v:
                raise Denied(f"networks {wanted[k][1]} and {sel.key} require different values of node label {k} "
                             f"({wanted[k][0]!r} and {v!r}); no node can satisfy both")
            wanted[k] = (v, sel.key)
    if not wanted:
        return out
    spec = pod.get("spec") or {}
    existing = spec.get("nodeSelector")
    existing = existing if isinstance(existing, dict) else None
    for k, (v, who) in wanted.items():
        if existing is not None and k in existing and existing[k] != v:
            raise Denied(f"the pod's nodeSelector has {k}={existing[k]} but network {who} requires {k}={v}")
    if existing is None:
        out.patch.append({"op": "add", "path": "/spec/nodeSelector", "value": {k: v for k, (v, _) in wanted.items()}})
    else:
        for k, (v, _) in wanted.items():
            if k not in existing:
                out.patch.append({"op": "add", "path": f"/spec/nodeSelector/{_escape(k)}", "value": v})
    return out


def review(doc: dict[str, Any], get_nad: GetNad, policy: Tenancy | None = None) -> dict[str, Any]:
    """Answer one AdmissionReview (admission.k8s.io/v1)."""
    req = doc.get("request") if isinstance(doc, dict) else None
    if not isinstance(req, dict) or not req.get("uid"):
        raise ValueError("not an AdmissionReview request (request.uid missing)")
    resp: dict[str, Any] = {"uid": req["uid"], "allowed": True}
    kind = (req.get("kind") or {}).get("kind")
    if kind == "Pod" and req.get("operation") == "CREATE" and isinstance(req.get("object"), dict):
        try:
            m = mutation(req["object"], str(req.get("namespace") or ""), get_nad, policy)
            if m.patch:
                resp["patchType"] = "JSONPatch"
                resp["patch"] = base64.b64encode(json.dumps(m.patch).encode()).decode()
            if m.warnings:
                resp["warnings"] = m.warnings
        except Denied as d:
            _deny(resp, d)
    elif kind == "NetworkAttachmentDefinition" and req.get("operation") in ("CREATE", "UPDATE") \
            and isinstance(req.get("object"), dict):
        try:
            check_nad_object(req["object"], str(req.get("namespace") or ""), policy or Tenancy())
        except Denied as d:
            _deny(resp, d)
    return {"apiVersion": doc.get("apiVersion") or "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": resp}


def _deny(resp: dict[str, Any], d: Denied) -> None:
    resp["allowed"] = False
    resp["status"] = {"code": d.code, "message": d.message, "reason": "Forbidden" if d.code == 403 else "InternalError"}


# ---- the HTTPS shell ------------------------------------------------------------------------


def make_server(host: str, port: int, cert: str, key: str, get_nad: GetNad, policy: Tenancy | None = None) -> Any:
    """A ThreadingHTTPServer over TLS answering /mutate and /healthz (not started)."""
    import http.server
    import ssl

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            from .. import log

            log.debug("webhook: " + (format % args))

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path in ("/healthz", "/readyz"):
                self._send(200, b"ok", "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if self.path.split("?")[0] != "/mutate":
                self._send(404, b"not found", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > 4 * 1024 * 1024:
                self._send(400, b"a JSON AdmissionReview body is required", "text/plain")
                return
            try:
                doc = json.loads(self.rfile.read(length))
                answer = review(doc, get_nad, policy)
            except (ValueError, TypeError) as exc:
                self._send(400, f"bad AdmissionReview: {exc}".encode(), "text/plain")
                return
            self._send(200, json.dumps(answer).encode())

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return server


def nad_getter(client: Any) -> GetNad:
    """NAD lookups through cni.k8s.client (404 → None; other API errors raise CNIError)."""
    from .client import ApiNotFound

    def get(namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(client.get_nad(namespace, name))
        except ApiNotFound:
            return None

    return get


class NamespaceReader:
    """Namespace objects for ``Tenancy.namespaces``: a GET per namespace at most every ``ttl`` seconds (a label change
    is seen within that long, as in the node daemon); an API error raises and is not cached."""

    def __init__(self, client: Any, ttl: float = 30.0) -> None:
        import threading

        self.client = client
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        import time

        from .client import ApiNotFound, core_path

        now = time.monotonic()
        with self._lock:
            got = self._cache.get(name)
        if got is not None and now - got[0] < self.ttl:
            return got[1]
        try:
            obj: dict[str, Any] | None = dict(self.client.get(core_path("namespaces", None, name)))
        except ApiNotFound:
            obj = None
        with self._lock:
            self._cache[name] = (now, obj)
        return obj


USAGE = ("usage: multinic webhook --cert FILE --key FILE [--port 8443] [--bind 0.0.0.0] [--kubeconfig FILE] "
         "[--config FILE]")


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="multinic webhook",
                                description="Mutating admission webhook: add NAD node selectors to pods.")
    p.add_argument("--cert", required=True, help="TLS certificate (PEM) of the webhook service")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--kubeconfig", default="", help="default: in-cluster service account")
    p.add_argument("--api-timeout", type=float, default=5.0)
    p.add_argument("--config", default="", help="the nodes' multinic config (JSON): its multi-tenant policy keys "
                                               "(hostPortPolicy, allowedPaths, ..., multinicPolicy, policyProfiles); default: the "
                                               "built-in defaults")
    args = p.parse_args(argv)
    from .client import Client

    try:
        policy = Tenancy()
        if args.config:
            from ..spec.config import decode

            with open(args.config, "rb") as f:
                policy = Tenancy.from_config(decode(f.read(), f"webhook config {args.config}"))
        client = Client.from_kubeconfig(args.kubeconfig or None, timeout=args.api_timeout)
        if policy.policies.profiles:
            import dataclasses

            policy = dataclasses.replace(policy, namespaces=NamespaceReader(client))
        server = make_server(args.bind, args.port, args.cert, args.key, nad_getter(client), policy)
    except (CNIError, OSError) as exc:
        sys.stderr.write(f"multinic webhook: {exc}\n")
        return 1
    sys.stderr.write(f"multinic webhook: listening on https://{args.bind}:{server.server_address[1]}/mutate\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
