"""``multinic reconcile``: free whereabouts allocations whose pod is gone, by resync against the Kubernetes API.

What is freed (the job of whereabouts' ip-reconciler, without its races):
- a pool allocation keyed on identity, not on names (whereabouts #176): one that records its pod's UID is stale
  when no pod with that UID exists, or that pod has terminated (Succeeded/Failed) — a StatefulSet pod re-created
  under the same name is a different pod, and its own ADD moves the entry to its UID and sandbox — or its container
  ID is not the pod's current sandbox: the pod's ``multinic.io/sandbox`` record (written by multinic with
  network-status) names another container whose ADD started after the entry was written (``allocatedat``), and the
  record is older than the grace period, and the address is not in the pod's network-status. A pod without a
  record, an entry without a time, or a record older than the entry (a new sandbox whose status write failed)
  never frees anything on these grounds;
- a pool allocation without a UID (written by whereabouts, or through an apiserver that pruned the field) falls
  back to the name: its pod (``podref``) no longer exists, or has terminated, or is running with a
  ``k8s.v1.cni.cncf.io/network-status`` annotation that does not list the allocated IP;
- an allocation owned by an IPAMClaim (``ipamclaimref``) only when that claim is gone: a claim's address outlives
  its pods;
- a node slice whose node is gone (no Node object in both phases) and whose IPPool is empty: the IPPool is deleted
  (guarded by its version) and the slice marked free in the NodeSlicePool (compare-and-swap);
- an OverlappingRangeIPReservation whose pod is gone, or that no pool allocation backs while its pod is running
  with a network-status that does not list the IP (an ADD that crashed between reserve and pool write).

Rules that make it safe against concurrent ADD/DEL (whereabouts #162, #207, #176):
- Pools are read BEFORE pods are listed. A pod that exists when its allocation is written also exists in every
  later pod list, so "allocation seen, pod not listed afterwards" really means the pod is gone.
- Two phases separated by a grace period: only allocations that are stale in both phases, with the same container
  ID, are freed. Pending pods, pods younger than the grace period and pods without a network-status are never judged
  (their ADD may be in flight).
- The freeing write is guarded by the resourceVersion (or etcd revision) of the phase-2 read; on a conflict the pool
  is re-read, pods are re-listed and the decision is made again (bounded).
- Allocations without a podref (written by a runtime without Kubernetes) are never touched.

One reconciler at a time: a run first takes the Lease ``multinic-reconcile`` (coordination.k8s.io, in the
whereabouts namespace) with a compare-and-swap on its resourceVersion, renews it before each phase, and skips the
run while another holder's lease is fresh. ``--dry-run`` lists what would be freed and why, and changes nothing
(not even the lease). ``--metrics-file`` writes Prometheus counters of what was freed (node-exporter textfile).

Exit status: 0 when the run completed (whether or not anything was freed), 1 on errors, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cni.k8s.network_status import SANDBOX, parse_sandbox_record
from cni.log import Logger

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
CLAIM_GROUP, CLAIM_VERSION, CLAIM_PLURAL = "k8s.cni.cncf.io", "v1alpha1", "ipamclaims"
DEFAULT_GRACE = 60.0
WRITE_TRIES = 10


@dataclass
class PodView:
    """What the reconciler needs to know about a live pod."""

    phase: str
    ips: frozenset[str] | None  # None: no (parsable) network-status yet
    created: float  # epoch seconds, 0 if unknown
    uid: str = ""
    # multinic's record of the pod's current sandbox (cni/k8s/network_status.py): (container ID, when its ADD
    # started, when the record was written), None when there is none (then no entry is judged by its sandbox)
    sandbox: tuple[str, float, float] | None = None


@dataclass
class Report:
    freed: list[tuple[str, str, str]] = field(default_factory=list)  # (pool, ip, podref)
    freed_reservations: list[tuple[str, str]] = field(default_factory=list)  # (name, podref)
    freed_slices: list[tuple[str, str, str]] = field(default_factory=list)  # (NodeSlicePool, slice, node)
    why: dict[tuple[str, str], str] = field(default_factory=dict)  # (pool, ip) -> the reason it is stale
    kept: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: str = ""  # why the run did nothing (another reconciler holds the lease)


class LostLease(Exception):
    """Another reconciler took the lease over while this run was between phases."""


LEASE_NAME = "multinic-reconcile"


def _micro_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


class LeaderLock:
    """A coordination.k8s.io/v1 Lease taken and renewed with a compare-and-swap on its resourceVersion, so two
    reconcilers never both believe they hold it (and never free the same allocation twice)."""

    def __init__(self, client: Any, namespace: str, identity: str, *, duration: float = 120.0,
                 name: str = LEASE_NAME, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self.name = name
        self.clock = clock
        self._rv: str | None = None

    def _path(self, name: str | None = None) -> str:
        from cni.k8s.client import group_path

        return group_path("coordination.k8s.io", "v1", "leases", self.namespace, name)

    def _body(self, base: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        now = _micro_time(self.clock())
        obj = dict(base or {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": self.name, "namespace": self.namespace}})
        spec = dict(obj.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = transitions
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=int(self.duration), renewTime=now)
        obj["spec"] = spec
        return obj

    def acquire(self) -> str:
        """Take the lease: "" when we hold it now, else the identity of the live holder."""
        from cni.k8s.client import ApiConflict, ApiNotFound

        try:
            cur = self.client.get(self._path(self.name))
        except ApiNotFound:
            try:
                made = self.client.create(self._path(), self._body(None, 0))
            except ApiConflict:  # created by another reconciler just now
                return "another reconciler"
            self._rv = str(made["metadata"]["resourceVersion"])
            return ""
        spec = cur.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        renewed = _parse_time(str(spec.get("renewTime") or ""))
        ttl = float(spec.get("leaseDurationSeconds") or self.duration)
        if holder and holder != self.identity and self.clock() < renewed + ttl:
            return holder
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if holder != self.identity else 0)
        try:
            got = self.client.update(self._path(self.name), self._body(cur, transitions))
        except ApiConflict:
            return "another reconciler"
        self._rv = str(got["metadata"]["resourceVersion"])
        return ""

    def renew(self) -> bool:
        """Extend the lease; False when it is not ours any more."""
        from cni.k8s.client import ApiConflict, ApiNotFound

        try:
            cur = self.client.get(self._path(self.name))
            if (cur.get("spec") or {}).get("holderIdentity") != self.identity or \
                    str(cur["metadata"]["resourceVersion"]) != self._rv:
                return False
            got = self.client.update(self._path(self.name), self._body(cur, 0))
        except (ApiConflict, ApiNotFound):
            return False
        self._rv = str(got["metadata"]["resourceVersion"])
        return True

    def release(self) -> None:
        """Hand the lease back (holder cleared) so the next reconciler need not wait for it to expire."""
        from cni.k8s.client import ApiError

        try:
            cur = self.client.get(self._path(self.name))
            if (cur.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            cur["spec"] = {**cur["spec"], "holderIdentity": "", "renewTime": _micro_time(self.clock())}
            self.client.update(self._path(self.name), cur)
        except ApiError:
            pass  # it expires on its own
        self._rv = None


class Counters:
    """What reconcile freed, as Prometheus counters (written to a node-exporter textfile)."""

    def __init__(self) -> None:
        self.freed = {"allocation": 0, "reservation": 0, "slice": 0}
        self.runs = 0
        self.skipped = 0
        self.errors = 0
        self.last = 0.0

    def add(self, report: Report, now: float) -> None:
        self.runs += 1
        self.skipped += 1 if report.skipped else 0
        self.errors += len(report.errors)
        self.freed["allocation"] += len(report.freed)
        self.freed["reservation"] += len(report.freed_reservations)
        self.freed["slice"] += len(report.freed_slices)
        self.last = now

    def render(self) -> str:
        out = ["# HELP multinic_reconcile_freed_total Stale whereabouts objects freed by multinic reconcile.",
               "# TYPE multinic_reconcile_freed_total counter"]
        out += [f'multinic_reconcile_freed_total{{kind="{k}"}} {v}' for k, v in sorted(self.freed.items())]
        out += ["# HELP multinic_reconcile_runs_total Reconcile runs (skipped: another reconciler held the lease).",
                "# TYPE multinic_reconcile_runs_total counter",
                f'multinic_reconcile_runs_total{{result="done"}} {self.runs - self.skipped}',
                f'multinic_reconcile_runs_total{{result="skipped"}} {self.skipped}',
                "# HELP multinic_reconcile_errors_total Problems a run reported (retried by the next run).",
                "# TYPE multinic_reconcile_errors_total counter", f"multinic_reconcile_errors_total {self.errors}",
                "# HELP multinic_reconcile_last_run_timestamp_seconds When the last run ended.",
                "# TYPE multinic_reconcile_last_run_timestamp_seconds gauge",
                f"multinic_reconcile_last_run_timestamp_seconds {self.last:.3f}"]
        return "\n".join(out) + "\n"

    def write(self, path: str) -> None:
        import os
        import tempfile

        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".reconcile-", suffix=".prom", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.render())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _parse_time(text: Any) -> float:
    if not isinstance(text, str) or not text:
        return 0.0
    import calendar

    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return 0.0


def _status_ips(pod: dict[str, Any]) -> frozenset[str] | None:
    import orjson

    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(NETWORK_STATUS)
    if not raw:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, list):
        return None
    out = set()
    for net in doc:
        if isinstance(net, dict):
            for ip in net.get("ips") or []:
                try:
                    out.add(str(ipaddress.ip_interface(str(ip)).ip))
                except ValueError:
                    continue
    return frozenset(out)


def pod_views(pods: Iterable[dict[str, Any]]) -> dict[str, PodView]:
    out = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        ref = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        out[ref] = PodView(str((pod.get("status") or {}).get("phase") or ""), _status_ips(pod),
                           _parse_time(meta.get("creationTimestamp")), str(meta.get("uid") or ""),
                           parse_sandbox_record((meta.get("annotations") or {}).get(SANDBOX)))
    return out


def by_uid(pods: dict[str, PodView]) -> dict[str, PodView]:
    return {p.uid: p for p in pods.values() if p.uid}


def stale_allocation(a: Any, ip: str, pods: dict[str, PodView], uids: dict[str, PodView], now: float,
                     grace: float, claims: set[str] | None) -> str | None:
    """Why the pool entry ``a`` of ``ip`` is stale, or None if it must be kept (module docstring)."""
    if a.claim:
        if claims is None or a.claim in claims:
            return None  # the claim (or whether it exists) is what keeps the address
        return f"IPAMClaim {a.claim} is gone"
    if a.pod_uid and a.podref:
        pod = uids.get(a.pod_uid)
        if pod is None:
            return f"no pod has UID {a.pod_uid} any more"
        if pod.phase in ("Succeeded", "Failed"):
            return f"pod has terminated ({pod.phase})"
        return replaced_sandbox(a, ip, pod, now, grace)
    return stale(a.podref, ip, pods, now, grace)


def replaced_sandbox(a: Any, ip: str, pod: PodView, now: float, grace: float) -> str | None:
    """Why the entry ``a`` of a live pod belongs to a sandbox that was replaced, or None. Only with proof: the pod's
    sandbox record names another container, the entry was written (``at``, the node's clock, as the record's) before
    that sandbox's ADD started — so a new sandbox whose status write failed or is in flight keeps its entries, the
    record being older than them — and the record has stood for the grace period (a replaced sandbox's late ADD
    that wrote it would have been followed by its DEL, which removes the record). An address the pod's
    network-status lists is in use, whoever's entry it is."""
    if pod.sandbox is None or not a.container_id or not a.at or (pod.ips is not None and ip in pod.ips):
        return None
    cid, started, written = pod.sandbox
    if cid == a.container_id or a.at / 1000.0 >= started or now - written < grace:
        return None
    return (f"sandbox {a.container_id[:13]} was replaced by {cid[:13]} (entry written "
            f"{started - a.at / 1000.0:.1f}s before the current sandbox's ADD started)")


def stale(podref: str, ip: str, pods: dict[str, PodView], now: float, grace: float) -> str | None:
    """Why the allocation of ``ip`` to ``podref`` is stale, or None if it must be kept (no pod UID known)."""
    if not podref:
        return None
    pod = pods.get(podref)
    if pod is None:
        return "pod is gone"
    if pod.phase in ("Succeeded", "Failed"):
        return f"pod has terminated ({pod.phase})"
    if pod.phase != "Running" or pod.ips is None or now - pod.created < grace:
        return None  # its ADD may still be in flight
    if ip not in pod.ips:
        return "IP is not in the pod's network-status"
    return None


def _network_name(pool_name: str, cidr: str) -> str:
    from ipam.whereabouts.allocator import pool_name as name_of

    try:
        norm = name_of(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        return ""
    return pool_name[: -len(norm) - 1] if pool_name.endswith("-" + norm) else ""


def _pool_entries(snap: Any) -> list[tuple[int, Any, str, str]]:
    """(offset, allocation, ip, reservation name) of a pool snapshot."""
    from ipam.whereabouts.allocator import reservation_name

    try:
        net = ipaddress.ip_network(snap.range, strict=False)
    except ValueError:
        return []
    nn = _network_name(snap.name, snap.range)
    base = int(net.network_address)
    out = []
    for off, a in snap.allocations.items():
        ip = ipaddress.ip_address(base + off)
        out.append((off, a, str(ip), reservation_name(ip, nn)))
    return out


def _reservation_ip(name: str, prefixes: set[str]) -> str | None:
    """The IP a reservation name stands for, given the network names in use ('' included)."""
    for p in sorted(prefixes, key=len, reverse=True):
        if p and not name.startswith(p + "-"):
            continue
        rest = name[len(p) + 1:] if p else name
        text = rest if "." in rest else rest.replace("-", ":")
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


class Reconciler:
    def __init__(self, store: Any, list_pods: Callable[[], list[dict[str, Any]]], *, grace: float = DEFAULT_GRACE,
                 dry_run: bool = False, log: Logger | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time,
                 list_nodes: Callable[[], set[str]] | None = None,
                 list_claims: Callable[[], set[str] | None] | None = None,
                 lock: LeaderLock | None = None) -> None:
        self.list_nodes = list_nodes
        self.list_claims = list_claims or (lambda: None)
        self.lock = lock
        self.store = store
        self.list_pods = list_pods
        self.grace = grace
        self.dry_run = dry_run
        self.log = log or Logger()
        self.sleep = sleep
        self.clock = clock

    def _pool_candidates(self, pools: list[Any], pods: dict[str, PodView],
                         claims: set[str] | None) -> dict[str, dict[int, str]]:
        """pool name → {offset: container id} of stale allocations."""
        now = self.clock()
        uids = by_uid(pods)
        out: dict[str, dict[int, str]] = {}
        for snap in pools:
            for off, a, ip, _ in _pool_entries(snap):
                if stale_allocation(a, ip, pods, uids, now, self.grace, claims):
                    out.setdefault(snap.name, {})[off] = a.container_id
        return out

    def _res_candidates(self, pools: list[Any], reservations: list[Any],
                        pods: dict[str, PodView]) -> dict[str, tuple[str, str]]:
        """reservation name → (container id, podref) of stale reservations."""
        now = self.clock()
        backed = {(rn, a.podref) for snap in pools for _, a, _, rn in _pool_entries(snap)}
        prefixes = {""} | {_network_name(s.name, s.range) for s in pools}
        out = {}
        for r in reservations:
            # A reservation backed by a pool entry goes with that entry (never alone: no entry without one).
            if not r.podref or (r.name, r.podref) in backed:
                continue
            if r.podref not in pods:
                out[r.name] = (r.container_id, r.podref)
                continue
            ip = _reservation_ip(r.name, prefixes)
            if ip is not None and stale(r.podref, ip, pods, now, self.grace):
                out[r.name] = (r.container_id, r.podref)
        return out

    def run_once(self) -> Report:
        report = Report()
        if self.lock is not None and not self.dry_run:
            holder = self.lock.acquire()
            if holder:
                report.skipped = f"another reconciler ({holder}) holds the lease"
                self.log.verbose(f"reconcile: {report.skipped}; skipping this run")
                return report
        try:
            self._run(report)
        finally:
            if self.lock is not None and not self.dry_run:
                self.lock.release()
        return report

    def _renew(self) -> None:
        if self.lock is not None and not self.dry_run and not self.lock.renew():
            raise LostLease("the reconcile lease was taken over (this run took longer than the lease); stopping")

    def _run(self, report: Report) -> None:
        from ipam.whereabouts.store import Conflict

        # Phase 1: pools and reservations first, then pods.
        pools = self.store.list_pools()
        reservations = self.store.list_reservations()
        pods = pod_views(self.list_pods())
        claims = self.list_claims()
        nodes = self.list_nodes() if self.list_nodes is not None else None
        slice_cand = self._slice_candidates(nodes)
        cand = self._pool_candidates(pools, pods, claims)
        rcand = self._res_candidates(pools, reservations, pods)
        report.kept = sum(len(p.allocations) for p in pools) - sum(len(c) for c in cand.values())
        if not cand and not rcand and not slice_cand:
            return
        self.log.verbose(f"reconcile: {sum(len(c) for c in cand.values())} allocation(s), {len(rcand)} "
                         f"reservation(s) and {len(slice_cand)} node slice(s) look stale; re-checking in "
                         f"{self.grace:g}s")
        self.sleep(self.grace)
        self._renew()

        # Phase 2: per pool, read it, list pods, decide again, write guarded by the version just read.
        by_name = {p.name: p for p in pools}
        for name, offsets in cand.items():
            for _ in range(WRITE_TRIES):
                snap = self.store.read_pool(name, by_name[name].range)
                pods = pod_views(self.list_pods())
                claims = self.list_claims()
                uids = by_uid(pods)
                now = self.clock()
                drop = {}
                for off, a, ip, _rn in _pool_entries(snap):
                    if off in offsets and offsets[off] == a.container_id:
                        why = stale_allocation(a, ip, pods, uids, now, self.grace, claims)
                        if why:
                            drop[off] = (a, ip, why)
                if not drop:
                    break
                if self.dry_run:
                    for a, ip, why in drop.values():
                        report.freed.append((name, ip, a.podref))
                        report.why[(name, ip)] = why
                    break
                try:
                    self.store.write_pool(snap, {k: v for k, v in snap.allocations.items() if k not in drop})
                except Conflict:
                    report.conflicts += 1
                    continue
                for off, (a, ip, why) in drop.items():
                    report.freed.append((name, ip, a.podref))
                    report.why[(name, ip)] = why
                    self.log.verbose(f"reconcile: freed {ip} of pool {name} (pod {a.podref}, containerID "
                                     f"{a.container_id}): {why}")
                    self._drop_reservation(snap, off, a, report)
                break
            else:
                report.errors.append(f"pool {name}: still conflicting after {WRITE_TRIES} attempts; next run")

        # Reservations: re-read each, re-check against a fresh pool view and pod list, delete guarded.
        if rcand:
            pools = self.store.list_pools()
            pods = pod_views(self.list_pods())
            fresh = self._res_candidates(pools, [r for r in self.store.list_reservations() if r.name in rcand], pods)
            for name, (cid, podref) in fresh.items():
                if rcand.get(name) != (cid, podref):
                    continue
                res = self.store.get_reservation(name)
                if res is None or res.container_id != cid:
                    continue
                if not self.dry_run:
                    self.store.release(res)
                report.freed_reservations.append((name, podref))
                self.log.verbose(f"reconcile: deleted orphan reservation {name} of pod {podref}")

        if slice_cand:
            self._give_back_slices(slice_cand, report)

    # ---- node slices ----

    def _slice_candidates(self, nodes: set[str] | None) -> list[tuple[str, str, str]]:
        """(NodeSlicePool, slice, node) of slices held by nodes that do not exist (nothing when nodes unknown)."""
        if nodes is None or not hasattr(self.store, "list_slices"):
            return []
        out = []
        for pool in self.store.list_slices():
            for a in pool.allocations:
                if a.node and a.node not in nodes:
                    out.append((pool.name, a.cidr, a.node))
        return out

    def _give_back_slices(self, cand: list[tuple[str, str, str]], report: Report) -> None:
        from ipam.whereabouts import slices
        from ipam.whereabouts.store import Conflict

        assert self.list_nodes is not None
        nodes = self.list_nodes()
        for pool_name, cidr, node in cand:
            if node in nodes:
                continue  # the node came back (or was only slow to register)
            pool = self.store.read_slices(pool_name)
            if not any(a.node == node and a.cidr == cidr for a in pool.allocations):
                continue
            sub = ipaddress.ip_network(cidr, strict=False)
            # whereabouts names a NodeSlicePool by network_name, else by the network's name, and only in the
            # first case are the slice IPPools prefixed: look at both names, keep the slice if either is in use.
            ippools = [self.store.read_pool(slices.slice_pool_name(sub, node, nn), cidr) for nn in (pool_name, "")]
            if any(p.allocations for p in ippools):
                continue  # still in use (or stale entries this run could not free): next run
            if self.dry_run:
                report.freed_slices.append((pool_name, cidr, node))
                continue
            try:
                for ippool in ippools:  # first, so a node that comes back cannot keep writing into them
                    if ippool.version is not None:
                        self.store.delete_pool(ippool)
                for _ in range(WRITE_TRIES):
                    try:
                        self.store.write_slices(slices.give_back(pool, node, cidr))
                        break
                    except Conflict:
                        report.conflicts += 1
                        pool = self.store.read_slices(pool_name)
                else:
                    report.errors.append(f"NodeSlicePool {pool_name}: still conflicting; next run")
                    continue
            except Conflict:
                report.conflicts += 1
                continue  # someone wrote the pool meanwhile: not empty any more
            report.freed_slices.append((pool_name, cidr, node))
            self.log.verbose(f"reconcile: gave back slice {cidr} of NodeSlicePool {pool_name}: node {node} is gone "
                             "and its pool is empty")

    def _drop_reservation(self, snap: Any, off: int, a: Any, report: Report) -> None:
        from ipam.whereabouts.store import Reservation

        for o, _a, _ip, rn in _pool_entries(snap):
            if o == off:
                try:
                    self.store.release(Reservation(rn, a.container_id, a.podref, a.ifname))
                except Exception as e:  # noqa: BLE001 - reported, the next run retries
                    report.errors.append(f"reservation {rn}: {e}")
                return


# ---- command line ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multinic reconcile", description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", help="kubeconfig for the pod list (and the kubernetes datastore); "
                                        "default: in-cluster service account")
    p.add_argument("--namespace", help="namespace of the whereabouts CRDs (default: the kubeconfig context's, "
                                       "else kube-system)")
    p.add_argument("--datastore", choices=("kubernetes", "etcd", "file"), default="kubernetes")
    p.add_argument("--etcd-endpoints", default="", help="comma-separated etcd client URLs (datastore etcd)")
    p.add_argument("--etcd-prefix", default="/whereabouts/")
    p.add_argument("--etcd-username", default="")
    p.add_argument("--etcd-password-file", default="", help="file holding the etcd password (never on argv)")
    p.add_argument("--etcd-ca-cert-file", default="")
    p.add_argument("--etcd-cert-file", default="")
    p.add_argument("--etcd-key-file", default="")
    p.add_argument("--data-dir", default="/var/lib/cni/whereabouts", help="file datastore directory")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE,
                   help="seconds between the two checks of an allocation (and the minimum pod age judged)")
    p.add_argument("--interval", type=float, default=0.0, help="repeat every N seconds (0: run once)")
    p.add_argument("--dry-run", action="store_true", help="report what would be freed and why, change nothing")
    p.add_argument("--metrics-file", default="", help="write Prometheus counters here after each run "
                                                      "(node-exporter textfile collector)")
    p.add_argument("--lease-duration", type=float, default=0.0,
                   help="seconds the reconcile Lease is held without renewal (default: 2 x grace + 60)")
    p.add_argument("--identity", default="", help="holder identity in the Lease (default: host name and pid)")
    p.add_argument("--log-file", default="")
    p.add_argument("--log-level", default="verbose", choices=("debug", "verbose", "error", "panic"))
    return p


def _open(args: argparse.Namespace, client: Any) -> Any:
    if args.datastore == "kubernetes":
        from ipam.whereabouts.store_k8s import K8sStore, whereabouts_namespace

        return K8sStore(client, args.namespace or whereabouts_namespace(client.config))
    if args.datastore == "etcd":
        from ipam.whereabouts.config import EtcdConf
        from ipam.whereabouts.store_etcd import EtcdStore

        endpoints = tuple(e.strip() for e in args.etcd_endpoints.split(",") if e.strip())
        if not endpoints:
            raise SystemExit("multinic reconcile: --etcd-endpoints is required with --datastore etcd")
        password = ""
        if args.etcd_password_file:
            with open(args.etcd_password_file, encoding="utf-8") as f:
                password = f.read().strip()
        return EtcdStore(EtcdConf(endpoints=endpoints, username=args.etcd_username, password=password,
                                  ca_file=args.etcd_ca_cert_file, cert_file=args.etcd_cert_file,
                                  key_file=args.etcd_key_file, prefix=args.etcd_prefix))
    from ipam.whereabouts.store_file import FileStore

    return FileStore(args.data_dir)


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if e.code in (0, None) else 2
    from cni.k8s.client import Client, core_path
    from cni.spec.errors import CNIError

    log = Logger()
    log.configure(path=args.log_file or "", level=args.log_level, to_stderr=not args.log_file)
    try:
        client = Client.from_kubeconfig(args.kubeconfig or None)
        store = _open(args, client)
    except CNIError as e:
        sys.stderr.write(f"multinic reconcile: {e}\n")
        return 1

    def list_pods() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = client.list(core_path("pods"))["items"]
        return items

    def list_nodes() -> set[str]:
        return {str((n.get("metadata") or {}).get("name") or "") for n in client.list(core_path("nodes"))["items"]}

    def list_claims() -> set[str] | None:
        from cni.k8s.client import ApiNotFound, group_path

        try:
            items = client.list(group_path(CLAIM_GROUP, CLAIM_VERSION, CLAIM_PLURAL))["items"]
        except ApiNotFound:
            return None  # the IPAMClaim CRD is not installed: claim-owned addresses are kept
        return {f"{(c.get('metadata') or {}).get('namespace', '')}/{(c.get('metadata') or {}).get('name', '')}"
                for c in items}

    import os
    import socket

    from ipam.whereabouts.store_k8s import whereabouts_namespace

    lock = LeaderLock(client, args.namespace or whereabouts_namespace(client.config),
                      args.identity or f"{socket.gethostname()}_{os.getpid()}",
                      duration=args.lease_duration or 2 * args.grace + 60)
    rec = Reconciler(store, list_pods, grace=args.grace, dry_run=args.dry_run, log=log,
                     list_nodes=list_nodes if args.datastore != "file" else None, list_claims=list_claims,
                     lock=lock)
    counters = Counters()
    status = 0
    while True:
        try:
            report = rec.run_once()
        except (CNIError, LostLease) as e:
            log.error(f"reconcile failed: {e}")
            status = 1
        else:
            verb = "would free" if args.dry_run else "freed"
            if report.skipped:
                print(f"skipped: {report.skipped}")
            print(f"{verb} {len(report.freed)} allocation(s), {len(report.freed_reservations)} reservation(s), "
                  f"{len(report.freed_slices)} node slice(s); kept {report.kept}; {report.conflicts} conflict(s)")
            for pool, ip, podref in report.freed:
                print(f"  {pool}: {ip} ({podref}): {report.why.get((pool, ip), 'stale')}")
            for name, podref in report.freed_reservations:
                print(f"  reservation {name} ({podref}): no pool entry backs it and its pod is gone or elsewhere")
            for pool, cidr, node in report.freed_slices:
                print(f"  NodeSlicePool {pool}: slice {cidr} of node {node}: the node is gone and the slice is empty")
            for err in report.errors:
                log.error(f"reconcile: {err}")
            status = 1 if report.errors else 0
            if not args.dry_run:
                counters.add(report, time.time())
        if args.metrics_file:
            try:
                counters.write(args.metrics_file)
            except OSError as e:
                log.error(f"reconcile: cannot write {args.metrics_file}: {e.strerror or e}")
                status = 1
        if args.interval <= 0:
            break
        time.sleep(args.interval)
    store.close()
    client.close()
    return status
