"""Informer-style caches for the daemon: this node's pods and all NADs, kept by watch streams.

A cache hit saves the per-call GET that makes thin Multus slow and loads the API (#452).
Correctness never depends on the cache: a miss, a pod whose UID differs from the one the
runtime passed, or a cache that is not yet synced falls through to a live GET; writes
(network-status, events) always go to the API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..k8s.source import ApiSource, LocalSource

_lock = threading.Lock()
_sources: dict[tuple[str, float, str], Any] = {}


class Informer:
    """LIST then WATCH one collection into a dict keyed by (namespace, name); re-list on 410/errors."""

    def __init__(self, client: Any, path: str, field_selector: str | None = None) -> None:
        self.client, self.path, self.field_selector = client, path, field_selector
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        # Called (old, new) from the informer's thread after each change; (None, None) after a re-list
        # (anything may have changed). dynamicNetworks wakes its loop with it.
        self.listeners: list[Callable[[dict[str, Any] | None, dict[str, Any] | None], None]] = []
        self.synced = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"informer {path}")
        self.thread.start()

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        m = obj.get("metadata") or {}
        return (str(m.get("namespace", "")), str(m.get("name", "")))

    def _run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                lst = self.client.list(self.path, field_selector=self.field_selector)
                self.items = {self._key(o): o for o in lst.get("items") or []}
                rv = (lst.get("metadata") or {}).get("resourceVersion")
                self.synced.set()
                self._tell(None, None)
                backoff = 0.5
                for typ, obj in self.client.watch(self.path, rv, field_selector=self.field_selector,
                                                  timeout_seconds=300):
                    if self.stop.is_set():
                        return
                    if typ == "DELETED":
                        self._tell(self.items.pop(self._key(obj), None), None)
                    elif typ in ("ADDED", "MODIFIED"):
                        old = self.items.get(self._key(obj))
                        self.items[self._key(obj)] = obj
                        self._tell(old, obj)
            except Exception:  # noqa: BLE001 - any failure: re-list after a pause; lookups fall back to GET
                self.synced.clear()
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _tell(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(old, new)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
                pass

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        if not self.synced.is_set():
            return None
        return self.items.get((namespace, name))


class CachedApiSource(ApiSource):
    def __init__(self, client: Any, node_name: str) -> None:
        super().__init__(client)
        from ..k8s.client import NAD_GROUP, NAD_PLURAL, NAD_VERSION, core_path, group_path

        self.pods = Informer(client, core_path("pods"), f"spec.nodeName={node_name}" if node_name else None)
        self.nads = Informer(client, group_path(NAD_GROUP, NAD_VERSION, NAD_PLURAL))
        self.hits = 0
        self.misses = 0
        self._ns_lock = threading.Lock()
        self._ns_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}  # name -> (read at, Namespace or None)

    # A label change reaches the daemon within this long: namespaces are few and change rarely, so a TTL cache
    # costs one GET per namespace per TTL instead of an informer's list and watch of every Namespace.
    NAMESPACE_TTL = 30.0

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._ns_lock:
            got = self._ns_cache.get(name)
        if got is not None and now - got[0] < self.NAMESPACE_TTL:
            self.hits += 1
            return got[1]
        self.misses += 1
        obj = self.read_namespace(name)  # an API error raises and is not cached: the next ADD asks again
        with self._ns_lock:
            self._ns_cache[name] = (now, obj)
        return obj

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self.pods.get(namespace, name)
        if pod is not None:
            self.hits += 1
            return dict(pod)
        self.misses += 1
        return super().get_pod(namespace, name)

    def get_pod_live(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Bypass the cache (the delegator calls this when the cached pod's UID is not the runtime's)."""
        self.misses += 1
        return super().get_pod(namespace, name)

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        """This node's pods as the informer has them (empty until it has synced)."""
        if not self.pods.synced.is_set():
            return []
        return list(self.pods.items.values())

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        nad = self.nads.get(namespace, name)
        if nad is not None:
            self.hits += 1
            return dict(nad)
        self.misses += 1
        return super().get_nad(namespace, name)


def shared_source(cfg: Any) -> Any:
    """The daemon's source for a config: one warm API source per (kubeconfig, timeout, node)."""
    if cfg.manifest_dir:
        return LocalSource(cfg.manifest_dir)  # files may change between calls: read them fresh
    import os

    if not (cfg.kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST")):
        return None
    from ..delegator.context import node_name

    key = (cfg.kubeconfig, cfg.api_timeout, node_name(cfg))
    with _lock:
        src = _sources.get(key)
        if src is None:
            from ..k8s.client import Client

            src = CachedApiSource(Client.from_kubeconfig(cfg.kubeconfig or None, timeout=cfg.api_timeout), key[2])
            _sources[key] = src
            src.pods.synced.wait(2.0)  # first call: give the informers a moment, then fall back to GETs
    return src


def reset() -> None:
    with _lock:
        for s in _sources.values():
            s.pods.stop.set()
            s.nads.stop.set()
        _sources.clear()
        time.sleep(0)
