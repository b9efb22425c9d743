"""``dynamicNetworks``: the daemon keeps running sandboxes' secondary interfaces in line with their pods.

Level-triggered, not edge-triggered: every ``interval`` the daemon compares each cached sandbox of every
multinic config with ``dynamicNetworks: true`` against its pod as the source shows it now (the informer for
an API source, a fresh read for a ``manifestDir``) and hands what differs to ``cni.delegator.hotplug``. So a
change made while the daemon was down is applied by the first pass after it starts, a missed watch event
costs nothing, and a failure is simply retried by a later pass (with backoff, so a NAD that is refused does
not flood the pod with events).

When it looks: every ``interval`` (0.5 s), and at once when a watched directory changes — each
``manifestDir`` and the conf dir, through inotify (``cni.daemon.inotify``) — or when the API source's pod
informer sees a pod's networks annotation change. Both are only wake-ups: the poll stays the fallback.

Where configs come from: the CNI conf dir the daemon manages (``--cni-conf-dir``), read at start so that
sandboxes are reconciled before any new CNI call, and every config a CNI request carries.

Rules:
- A sandbox is worked on only under its lock (``cni.delegator.sandbox_lock``), the same one every CNI command on
  it takes — in the daemon, a thin exec, or the shim's own DEL — and never while the daemon runs a GC (GC frees
  every reservation the cache does not name when it looks). A pass does not wait for a sandbox a runtime command
  holds: it skips it, and a later pass tries again.
- Only sandboxes whose netns still exists, whose pod exists with the cached UID and is not hostNetwork.
- Thin mode has no process that outlives a CNI call, so it cannot do this: the daemon is required.
- The loop also sweeps, every ``LOCK_SWEEP_EVERY``, the sandbox lock files nobody holds and no cache record goes with
  (a process killed between dropping a record and removing its lock leaves one), in every cache dir a multinic
  config it knows names — not only those with dynamicNetworks: runtimes older than CNI 1.1 never send the GC that
  sweeps them too. A file taken in the last ``LOCK_SWEEP_GRACE`` is left for the next sweep.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .inotify import Wakeup

INTERVAL = 0.5
MIN_GAP = 0.05  # between two passes woken by inotify: a burst of writes costs one or two passes, not one each
MAX_BACKOFF = 60.0
LOCK_SWEEP_EVERY = 60.0
LOCK_SWEEP_GRACE = 60.0


def conf_from_file(path: str) -> dict[str, Any] | None:
    """The multinic plugin config inside a CNI conf/conflist file (``dynamicNetworks`` on or off), if any.

    A multinic config is one that names ``dynamicNetworks`` or has delegates / a cluster network; the
    caller's ``learn`` keeps it when it enables dynamic networks and forgets its cache dir when it does not.
    """
    import orjson

    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    listed = doc.get("plugins")
    plugins: list[Any] = listed if isinstance(listed, list) else [doc]
    for p in plugins:
        if isinstance(p, dict) and any(k in p for k in ("dynamicNetworks", "delegates", "clusterNetwork")):
            return {"cniVersion": doc.get("cniVersion", p.get("cniVersion", "1.0.0")), "name": doc.get("name", ""), **p}
    return None


def _cni_dir(conf: dict[str, Any]) -> str:
    cni_dir = conf.get("cniDir")
    return cni_dir if isinstance(cni_dir, str) else "/var/lib/cni/multus"


def _kept(conf: dict[str, Any]) -> dict[str, Any]:
    """What the loop needs of a config: not one request's ``prevResult``/``runtimeConfig``."""
    return {k: v for k, v in conf.items() if k not in ("prevResult", "runtimeConfig")}


class _State:
    """What the last pass did for one sandbox: skip it while nothing changed, back off while it fails."""

    def __init__(self) -> None:
        self.signature: tuple[Any, ...] = ()
        self.status_pending = False
        self.retry_at = 0.0
        self.backoff = 1.0
        self.attempted: str | None = None  # the annotation value the backoff is for: a new one is tried at once
        self.broken_until = 0.0  # after an unexpected error (not a CNI error): skip the sandbox until then


class DynamicNetworks:
    def __init__(self, observe: Callable[[str, str], None], conf_dir: str = "",
                 interval: float = INTERVAL, exclusive: threading.Lock | None = None) -> None:
        self.exclusive = exclusive or threading.Lock()  # held by GC: no hot-plug while it runs
        self.busy = ""  # the container ID of the sandbox a hot-plug holds now (for a GC that gives up waiting)
        self.observe = observe  # (op, result) -> metric
        self.conf_dir = conf_dir
        self.interval = interval
        self.configs: dict[str, dict[str, Any]] = {}  # cniDir -> raw multinic config
        self.cni_dirs: set[str] = set()  # every cache dir a multinic config named, dynamicNetworks or not
        self.next_lock_sweep = 0.0
        self.states: dict[str, _State] = {}
        self.warned_host_network: set[tuple[str, str]] = set()
        self.stop_event = threading.Event()
        self.wakeup: Wakeup | None = None  # inotify on the manifest dirs and the conf dir; None: poll only
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    # ---- configs ------------------------------------------------------------------------

    def learn(self, conf: dict[str, Any]) -> None:
        """Remember a multinic config a CNI request carried that asks for dynamic networks, and forget its
        cache dir's config when it does not: the runtime's latest config wins, so turning ``dynamicNetworks``
        off in the node's config stops hot-plugs without a daemon restart."""
        cni_dir = _cni_dir(conf)
        with self.lock:
            self.cni_dirs.add(cni_dir)
            if conf.get("dynamicNetworks") is True:
                self.configs[cni_dir] = _kept(conf)
            else:
                self.configs.pop(cni_dir, None)

    @property
    def watching(self) -> bool:
        """True once some config enables dynamic networks (then every request's config is looked at)."""
        return bool(self.configs)

    def _scan_conf_dir(self) -> None:
        """The conf dir's files are authoritative for the cache dirs they name: a cache dir is watched when
        any file's multinic config enables dynamic networks for it, and forgotten when files name it but none
        enables it (so a stale file, e.g. an old Multus config, cannot turn off the active one)."""
        if not self.conf_dir:
            return
        try:
            names = sorted(os.listdir(self.conf_dir))
        except OSError:
            return
        enabled: dict[str, dict[str, Any]] = {}
        named: set[str] = set()
        for fn in names:
            if fn.endswith((".conf", ".conflist", ".json")):
                conf = conf_from_file(os.path.join(self.conf_dir, fn))
                if conf is None:
                    continue
                named.add(_cni_dir(conf))
                if conf.get("dynamicNetworks") is True:
                    enabled.setdefault(_cni_dir(conf), conf)  # the first file, as the runtime loads it
        with self.lock:
            self.cni_dirs |= named
            for cni_dir in named:
                if cni_dir in enabled:
                    self.configs[cni_dir] = _kept(enabled[cni_dir])
                else:
                    self.configs.pop(cni_dir, None)

    # ---- the loop -----------------------------------------------------------------------

    def start(self) -> None:
        self._scan_conf_dir()
        self.wakeup = Wakeup.open()
        self.thread = threading.Thread(target=self._run, daemon=True, name="dynamic networks")
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.wakeup is not None:
            self.wakeup.wake()
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self.wakeup is not None:
            self.wakeup.close()
            self.wakeup = None

    def _run(self) -> None:
        from .. import log

        log.scoped()  # each config's logFile/logLevel applies to its own sandboxes only
        while not self.stop_event.is_set():
            if self.wakeup is not None and self.conf_dir:
                self.wakeup.watch(self.conf_dir)  # before the pass reads it: no change falls between the two
            try:
                self.pass_once()
            except Exception as exc:  # noqa: BLE001 - one bad pass must not end the loop
                from .. import log

                log.error(f"dynamic networks: reconcile pass failed: {exc!r}")
            self._wait()

    def _on_pod(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """The informer saw a pod change: wake the loop when its networks annotation changed (not on every
        status update; a re-list, ``(None, None)``, or a pod that came or went always wakes it)."""
        from ..k8s import annotations as ann

        def value(pod: dict[str, Any]) -> Any:
            annotations = (pod.get("metadata") or {}).get("annotations")
            return annotations.get(ann.NETWORKS) if isinstance(annotations, dict) else None

        wakeup = self.wakeup
        if wakeup is not None and (old is None or new is None or value(old) != value(new)):
            wakeup.wake()

    def _wait(self) -> None:
        """Until the next pass: ``interval``, or less when a watched directory changed."""
        if self.wakeup is None:
            self.stop_event.wait(self.interval)
            return
        if self.wakeup.wait(self.interval):
            self.stop_event.wait(MIN_GAP)  # let the rest of a burst of writes land; one pass sees them all

    def pass_once(self) -> None:
        self._scan_conf_dir()
        with self.lock:
            configs = list(self.configs.values())
        seen: set[str] = set()
        for raw in configs:
            seen.update(self._pass_config(raw))
        for cid in [c for c in self.states if c not in seen]:
            del self.states[cid]  # the sandbox is gone (its DEL dropped the cache record): forget it
        self._sweep_locks()

    def _sweep_locks(self) -> None:
        """Every ``LOCK_SWEEP_EVERY``: the leftover sandbox lock files of every cache dir we know (module rules)."""
        now = time.monotonic()
        if now < self.next_lock_sweep:
            return
        self.next_lock_sweep = now + LOCK_SWEEP_EVERY
        from .. import log
        from ..delegator import sandbox_lock

        with self.lock:
            dirs = sorted(self.cni_dirs)
        for cni_dir in dirs:
            removed = sandbox_lock.sweep(cni_dir, min_age=LOCK_SWEEP_GRACE)
            if removed:
                log.verbose(f"dynamic networks: removed {removed} lock file(s) of sandboxes that have no cache record "
                            f"in {cni_dir}")

    def _pass_config(self, raw: dict[str, Any]) -> list[str]:
        """Reconcile every cached sandbox of one config; the container IDs it looked at."""
        from .. import log
        from ..delegator import cache
        from ..delegator import config as cfgmod
        from ..spec.errors import CNIError

        try:
            cfg = cfgmod.parse(raw)
        except CNIError as exc:
            log.error(f"dynamic networks: invalid multinic config: {exc}")
            return []
        from ..delegator.entry import configure_log
        from .cache import shared_source

        configure_log(cfg)
        source = shared_source(cfg)
        if source is None:
            return []
        if cfg.manifest_dir and self.wakeup is not None:
            self.wakeup.watch_tree(cfg.manifest_dir)  # before the pods are read: no change falls between the two
        pods = getattr(source, "pods", None)  # the API source's informer of this node's pods
        if self.wakeup is not None and pods is not None and self._on_pod not in pods.listeners:
            pods.listeners.append(self._on_pod)
        self._warn_host_network(cfg, source)
        ids = cache.list_ids(cfg.cni_dir)
        for cid in ids:
            if self.stop_event.is_set():
                break
            try:
                self._sandbox(raw, cfg, source, cid)
            except CNIError as exc:  # e.g. a manifest that does not parse: tried again next pass, as soon as fixed
                log.error(f"dynamic networks: sandbox {cid[:12]}: {exc}")
            except Exception as exc:  # noqa: BLE001 - one sandbox's failure (a disk error, a bug) must not stall the rest
                log.error(f"dynamic networks: sandbox {cid[:12]}: {exc!r}")
                st = self.states.setdefault(cid, _State())  # retried with backoff, not every pass
                st.signature, st.broken_until = (), time.monotonic() + st.backoff
                st.backoff = min(st.backoff * 2, MAX_BACKOFF)
        return ids

    def _sandbox(self, raw: dict[str, Any], cfg: Any, source: Any, cid: str) -> None:
        from ..delegator import cache
        from ..delegator.context import PodRef
        from ..k8s import annotations as ann

        broken = self.states.get(cid)
        if broken is not None and time.monotonic() < broken.broken_until:
            return

        rec = cache.load(cfg.cni_dir, cid)
        if rec is None or not rec.pod_name or not rec.netns or not os.path.exists(rec.netns):
            self.states.pop(cid, None)
            return
        pod = source.get_pod(rec.pod_namespace, rec.pod_name)
        if pod is None:
            return
        meta = pod.get("metadata") or {}
        if rec.pod_uid and str(meta.get("uid", "")) not in ("", rec.pod_uid):
            return  # a new incarnation of the pod: its own sandbox gets its own ADD
        st = self.states.setdefault(cid, _State())
        value = (meta.get("annotations") or {}).get(ann.NETWORKS, "")
        sig = (value, tuple((e.attachment.index, e.attachment.ifname, e.state) for e in rec.entries))
        now = time.monotonic()
        if sig == st.signature and not st.status_pending:
            return
        if now < st.retry_at and value == st.attempted:
            return  # backing off from a failure of this very annotation; an edit is tried at once (within 5 s)
        st.attempted = value
        from ..delegator import sandbox_lock
        from ..spec.errors import TryAgainLater

        with self.exclusive, contextlib.ExitStack() as locked:
            try:
                # No wait: a runtime command has the sandbox (and may be stuck); a later pass tries again, and the
                # other sandboxes are not held up behind this one meanwhile.
                locked.enter_context(sandbox_lock.held(cfg.cni_dir, cid, "hot-plug by the multinic daemon", wait=0))
            except TryAgainLater as exc:
                from .. import log

                log.verbose(f"dynamic networks: sandbox {cid[:12]} skipped this pass: {exc.msg}")
                return
            rec = cache.load(cfg.cni_dir, cid)  # again, under the lock: a runtime call may have changed it
            if rec is None or not os.path.exists(rec.netns):
                return
            ctx = self._context(raw, cfg, source, rec)
            ref = PodRef(rec.pod_namespace, rec.pod_name, rec.pod_uid or str(meta.get("uid", "")), pod)
            from ..delegator import hotplug

            self.busy = f"{cid} (pod {rec.pod_namespace}/{rec.pod_name})"
            try:
                out = hotplug.reconcile(ctx, rec, ref, status_pending=st.status_pending)
            finally:
                self.busy = ""
        if not out.status_written:
            self.observe("status", "error")
        for _ in out.added:
            self.observe("add", "success")
        for _ in out.removed:
            self.observe("remove", "success")
        for f in out.failed:
            self.observe(f.split(" ", 1)[0], "error")
        rec2 = cache.load(cfg.cni_dir, cid)
        sig2 = (value, tuple((e.attachment.index, e.attachment.ifname, e.state) for e in (rec2.entries if rec2 else [])))
        self._after(st, sig2, not out.failed, out.status_written)

    def _after(self, st: _State, sig: tuple[Any, ...], ok: bool, status_ok: bool) -> None:
        st.status_pending = not status_ok
        if ok and status_ok:
            st.signature, st.retry_at, st.backoff = sig, 0.0, 1.0
            return
        # Retry later, with backoff; a failed add is retried even though the annotation did not change.
        st.signature = sig if ok else ()
        st.retry_at = time.monotonic() + st.backoff
        st.backoff = min(st.backoff * 2, MAX_BACKOFF)

    @staticmethod
    def _context(raw: dict[str, Any], cfg: Any, source: Any, rec: Any) -> Any:
        from ..delegator.context import Context, node_name
        from ..spec.request import Request

        args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": rec.pod_namespace, "K8S_POD_NAME": rec.pod_name,
                "K8S_POD_INFRA_CONTAINER_ID": rec.container_id}
        if rec.pod_uid:
            args["K8S_POD_UID"] = rec.pod_uid
        primary = rec.entries[0].attachment.ifname if rec.entries else "eth0"
        req = Request("ADD", rec.container_id, rec.netns, primary, args, tuple(rec.cni_path), raw)
        return Context(req, cfg, source, node_name=node_name(cfg))

    def _warn_host_network(self, cfg: Any, source: Any) -> None:
        """hostNetwork pods have no sandbox netns to plug into: tell their authors once per annotation value."""
        lister = getattr(source, "pods_on_node", None)
        if lister is None:
            return
        from ..delegator.context import node_name
        from ..k8s import annotations as ann

        node = node_name(cfg)
        for pod in lister(node):
            spec = pod.get("spec") or {}
            meta = pod.get("metadata") or {}
            value = (meta.get("annotations") or {}).get(ann.NETWORKS)
            if not spec.get("hostNetwork") or not value:
                continue
            key = (str(meta.get("uid", "")) or f"{meta.get('namespace')}/{meta.get('name')}", str(value))
            if key in self.warned_host_network:
                continue
            self.warned_host_network.add(key)
            try:
                source.event(pod, "FailedAddingInterface",
                             "hostNetwork pods cannot get secondary interfaces: "
                             f"{ann.NETWORKS} is ignored for this pod", "Warning")
            except Exception:  # noqa: BLE001 - events are best effort
                pass
