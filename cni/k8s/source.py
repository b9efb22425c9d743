"""Where pods, NADs and nodes come from: the Kubernetes API, or a local manifest directory.

Both sources answer the same small interface (``Source``), so the delegator is the same code
with or without a cluster. "Not found" is ``None``; "cannot tell" (API down, timeout) is a
``TryAgainLater`` (code 11) — the two must never be confused, or a pod gets an empty success
(Multus #414).

Local source layout: any ``*.yaml``/``*.yml``/``*.json`` under the directory (multi-document
YAML allowed) holding Pod, NetworkAttachmentDefinition and Node objects. What the API would
store is written back under ``<dir>/.multinic/``: ``status/<ns>_<pod>.json`` (the pod's
network-status annotation) and ``events.jsonl`` (one event per line).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..spec.args import safe_path_component
from ..spec.errors import InvalidConfig

if TYPE_CHECKING:
    from .client import Client


class Source(Protocol):
    """Everything the delegator asks of a pod source. "Not found" is None; "cannot tell" raises (code 11)."""

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def get_pod_live(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as the API has it now, bypassing any cache (a cached pod may be a previous incarnation)."""
    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def get_node(self, name: str) -> dict[str, Any] | None: ...
    def get_namespace(self, name: str) -> dict[str, Any] | None:
        """The Namespace object (its labels select a tenancy profile); None when there is none."""
    def set_network_status(self, namespace: str, name: str, value: str, sandbox: str = "") -> bool:
        """Write network-status (and, when given, the ``multinic.io/sandbox`` record) in one update."""
    def clear_network_status(self, namespace: str, name: str, uid: str, container_id: str = "") -> bool:
        """Drop network-status and the sandbox record, unless the record names another sandbox than
        ``container_id`` (a late DEL of a replaced sandbox must not erase its successor's status)."""
    def event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal",
              at: float | None = None) -> None:
        """Record an event about ``pod`` (``at``: when it happened, unix time; default now). Raises when it could not."""


def _event_obj(pod: dict[str, Any], reason: str, message: str, type_: str, at: float | None) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'pod')}.", "namespace": meta.get("namespace", "default")},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name", ""),
                           "namespace": meta.get("namespace", ""), "uid": meta.get("uid", "")},
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": "multinic"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class LocalSource:
    """A directory of manifests standing in for the API server."""

    def __init__(self, directory: str) -> None:
        if not os.path.isdir(directory):
            raise InvalidConfig(f"manifestDir {directory} is not a directory")
        self.dir = directory
        self.state = os.path.join(directory, ".multinic")
        self._objs: dict[tuple[str, str, str], dict[str, Any]] | None = None

    def _load(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        if self._objs is not None:
            return self._objs
        objs: dict[tuple[str, str, str], dict[str, Any]] = {}
        for root, dirs, files in os.walk(self.dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for fn in sorted(files):
                if not fn.endswith((".yaml", ".yml", ".json")):
                    continue
                path = os.path.join(root, fn)
                for doc in _read_manifests(path):
                    kind = str(doc.get("kind", ""))
                    meta = doc.get("metadata") or {}
                    ns = "" if kind in ("Node", "Namespace") else str(meta.get("namespace") or "default")
                    objs[(kind, ns, str(meta.get("name", "")))] = doc
        self._objs = objs
        return objs

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self._load().get(("Pod", namespace, name))
        if pod is None:
            return None
        status = self._status_path(namespace, name)
        if os.path.exists(status):
            import orjson

            with open(status, "rb") as f:
                ann = orjson.loads(f.read())
            pod = {**pod, "metadata": {**pod.get("metadata", {}),
                                       "annotations": {**(pod.get("metadata", {}).get("annotations") or {}), **ann}}}
        return pod

    def get_pod_live(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get_pod(namespace, name)  # files are read fresh: there is no cache to bypass

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._load().get(("NetworkAttachmentDefinition", namespace, name))

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        """The manifests' pods scheduled to ``node`` (or to no node: a manifest directory is one node's)."""
        return [p for (kind, _, _), p in self._load().items()
                if kind == "Pod" and (p.get("spec") or {}).get("nodeName", node) in (node, "")]

    def get_node(self, name: str) -> dict[str, Any] | None:
        return self._load().get(("Node", "", name))

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        return self._load().get(("Namespace", "", name))

    def _status_path(self, namespace: str, name: str) -> str:
        safe_path_component(namespace, what="namespace")
        safe_path_component(name, what="pod name")
        return os.path.join(self.state, "status", f"{namespace}_{name}.json")

    def set_network_status(self, namespace: str, name: str, value: str, sandbox: str = "") -> bool:
        import orjson

        from ..atomicfile import atomic_write

        pod = self.get_pod(namespace, name)
        if pod is None:
            return False
        from .annotations import NETWORK_STATUS
        from .network_status import SANDBOX

        path = self._status_path(namespace, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        written = {NETWORK_STATUS: value}
        record = sandbox or ((pod.get("metadata") or {}).get("annotations") or {}).get(SANDBOX)
        if record:
            written[SANDBOX] = record
        # Not durable: like the API's pod status it reports what the kernel holds, which a power
        # loss takes with it; the next ADD writes it again (2 fsyncs per ADD saved).
        atomic_write(path, orjson.dumps(written, option=orjson.OPT_INDENT_2), durable=False)
        return True

    def clear_network_status(self, namespace: str, name: str, uid: str, container_id: str = "") -> bool:
        """DEL: drop the pod's network-status, unless the pod was recreated (another UID) meanwhile or another
        sandbox of it wrote the status since."""
        pod = self.get_pod(namespace, name)
        if pod is None or (uid and str((pod.get("metadata") or {}).get("uid", "")) not in ("", uid)):
            return False
        if _other_sandbox(pod, container_id):
            return False
        try:
            os.unlink(self._status_path(namespace, name))
        except FileNotFoundError:
            pass
        return True

    def event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal",
              at: float | None = None) -> None:
        import orjson

        os.makedirs(self.state, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.state, "events.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, orjson.dumps(_event_obj(pod, reason, message, type_, at)) + b"\n")
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        import orjson

        try:
            with open(os.path.join(self.state, "events.jsonl"), "rb") as f:
                return [orjson.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []


def _read_manifests(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        data = f.read()
    docs: list[Any]
    if path.endswith(".json"):
        import orjson

        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidConfig(f"manifest {path} is not valid JSON", str(exc)) from None
        docs = doc.get("items", []) if isinstance(doc, dict) and doc.get("kind", "").endswith("List") else [doc]
    else:
        import yaml

        try:
            # libyaml's C loader when PyYAML has it: ~10x faster on every ADD with manifestDir.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            docs = list(yaml.load_all(data, Loader=loader))
        except yaml.YAMLError as exc:
            raise InvalidConfig(f"manifest {path} is not valid YAML", str(exc)) from None
    out: list[dict[str, Any]] = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind", "").endswith("List") and isinstance(d.get("items"), list):
            out.extend(i for i in d["items"] if isinstance(i, dict))
        elif isinstance(d, dict):
            out.append(d)
    return out


class ApiSource:
    """The Kubernetes API through ``cni.k8s.client.Client``."""

    def __init__(self, client: Client, host: str = "") -> None:
        self.client = client
        self.host = host  # the node, as events' source.host
        self._namespaces: dict[str, dict[str, Any] | None] = {}  # one read per namespace per command (thin mode)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        from .client import ApiNotFound

        try:
            return dict(self.client.get_pod(namespace, name))
        except ApiNotFound:
            return None

    def get_pod_live(self, namespace: str, name: str) -> dict[str, Any] | None:
        return ApiSource.get_pod(self, namespace, name)  # a GET is live; a caching subclass overrides get_pod

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        from .client import ApiNotFound

        try:
            return dict(self.client.get_nad(namespace, name))
        except ApiNotFound:
            return None

    def get_node(self, name: str) -> dict[str, Any] | None:
        from .client import ApiNotFound

        try:
            return dict(self.client.get_node(name))
        except ApiNotFound:
            return None

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        """GET the Namespace (an API error raises and is not remembered: the caller fails closed this time)."""
        if name not in self._namespaces:
            self._namespaces[name] = self.read_namespace(name)
        return self._namespaces[name]

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        from .client import ApiNotFound, core_path

        try:
            return dict(self.client.get(core_path("namespaces", None, name)))
        except ApiNotFound:
            return None

    def set_network_status(self, namespace: str, name: str, value: str, sandbox: str = "") -> bool:
        from .annotations import NETWORK_STATUS
        from .network_status import SANDBOX

        if sandbox:
            return update_pod_status_annotations(self.client, namespace, name,
                                                 {NETWORK_STATUS: value, SANDBOX: sandbox})
        return update_pod_status_annotation(self.client, namespace, name, NETWORK_STATUS, value)

    def clear_network_status(self, namespace: str, name: str, uid: str, container_id: str = "") -> bool:
        """DEL: drop the pod's network-status, unless the pod was recreated (another UID) meanwhile or another
        sandbox of it wrote the status since."""
        from .annotations import NETWORK_STATUS
        from .network_status import SANDBOX

        pod = self.get_pod(namespace, name)
        if pod is None or (uid and str((pod.get("metadata") or {}).get("uid", "")) not in ("", uid)):
            return False
        # Whose sandbox the record names is decided on the update's own fresh GET (a daemon's pod may be cached).
        anns = (pod.get("metadata") or {}).get("annotations") or {}
        if NETWORK_STATUS not in anns and SANDBOX not in anns:
            return True
        return update_pod_status_annotations(self.client, namespace, name, {NETWORK_STATUS: None, SANDBOX: None},
                                             only_if_sandbox=container_id)

    def event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal",
              at: float | None = None) -> None:
        meta = pod.get("metadata") or {}
        create_event(self.client, meta.get("namespace", "default"), pod, reason, message, type_=type_,
                     host=self.host or None, at=at)


# ---- what the API source writes to a pod ---------------------------------------------------------------------------

# A status write that keeps meeting 409 gives up after this many tries (the runtime's retry goes on).
STATUS_UPDATE_TRIES = 5


def _other_sandbox(pod: dict[str, Any], container_id: str) -> bool:
    """The pod's sandbox record names a sandbox other than ``container_id``."""
    from .network_status import SANDBOX, parse_sandbox_record

    rec = parse_sandbox_record(((pod.get("metadata") or {}).get("annotations") or {}).get(SANDBOX))
    return bool(container_id) and rec is not None and rec[0] != container_id


def update_pod_status_annotation(client: Client, namespace: str, name: str, key: str, value: str | None) -> bool:
    """``update_pod_status_annotations`` for one key."""
    return update_pod_status_annotations(client, namespace, name, {key: value})


def update_pod_status_annotations(client: Client, namespace: str, name: str, values: Mapping[str, str | None],
                                  *, only_if_sandbox: str = "") -> bool:
    """Set (or, with None, remove) pod annotations in one update through ``pods/<name>/status``; with
    ``only_if_sandbox``, nothing is changed when the pod's sandbox record (read in the same GET as the update's
    base) names another sandbox.

    GET + PUT with the read ``resourceVersion``, re-read and retried on 409 up to ``STATUS_UPDATE_TRIES`` times.
    The status subresource is what Multus uses for network-status: it needs only ``pods/status`` RBAC and the
    apiserver keeps metadata annotations written through it. Returns False, without error, when the pod is gone.
    """
    from .client import ApiConflict, ApiNotFound, core_path

    status_path = core_path("pods", namespace, name, "status")
    last: ApiConflict | None = None
    for attempt in range(STATUS_UPDATE_TRIES):
        try:
            pod = client.get(core_path("pods", namespace, name))
        except ApiNotFound:
            return False
        if only_if_sandbox and _other_sandbox(pod, only_if_sandbox):
            return False
        annotations = pod.setdefault("metadata", {}).get("annotations") or {}
        changed = False
        for key, value in values.items():
            if value is None:
                changed |= annotations.pop(key, None) is not None
            elif annotations.get(key) != value:
                annotations[key] = value
                changed = True
        if not changed:
            return True
        pod["metadata"]["annotations"] = annotations
        try:
            client.update(status_path, pod)
            return True
        except ApiNotFound:
            return False
        except ApiConflict as e:
            last = e
            import random

            # Small jittered pause: the other writer (usually kubelet) is mid-update.
            time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
    assert last is not None
    raise ApiConflict(f"pod {namespace}/{name}: annotation {', '.join(values)} not written after {STATUS_UPDATE_TRIES} "
                      "conflicting updates; retry", last.details, status=409, reason=last.reason,
                      path=status_path)


def create_event(client: Client, namespace: str, involved_object: Mapping[str, Any], reason: str, message: str,
                 type_: str = "Normal", component: str = "multinic", host: str | None = None,
                 at: float | None = None) -> dict[str, Any]:
    """Record a core/v1 Event about ``involved_object`` (a full object, e.g. a pod, or an ObjectReference);
    ``at`` is when it happened (unix time, default now), for an event recorded after the fact."""
    from .client import core_path

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
    return client.create(core_path("events", namespace), event)


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
