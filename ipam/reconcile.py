"""``multinic reconcile``: free whereabouts allocations whose pod is gone, by resync against the Kubernetes API.

What is freed (the job of whereabouts' ip-reconciler, without its races):
- a pool allocation whose pod (``podref``) no longer exists, or has terminated (Succeeded/Failed), or is running
  with a ``k8s.v1.cni.cncf.io/network-status`` annotation that does not list the allocated IP;
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

Exit status: 0 when the run completed (whether or not anything was freed), 1 on errors, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cni.log import Logger

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
DEFAULT_GRACE = 60.0
WRITE_TRIES = 10


@dataclass
class PodView:
    """What the reconciler needs to know about a live pod."""

    phase: str
    ips: frozenset[str] | None  # None: no (parsable) network-status yet
    created: float  # epoch seconds, 0 if unknown
    uid: str = ""


@dataclass
class Report:
    freed: list[tuple[str, str, str]] = field(default_factory=list)  # (pool, ip, podref)
    freed_reservations: list[tuple[str, str]] = field(default_factory=list)  # (name, podref)
    kept: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)


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
                           _parse_time(meta.get("creationTimestamp")), str(meta.get("uid") or ""))
    return out


def stale(podref: str, ip: str, pods: dict[str, PodView], now: float, grace: float) -> str | None:
    """Why the allocation of ``ip`` to ``podref`` is stale, or None if it must be kept."""
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
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.list_pods = list_pods
        self.grace = grace
        self.dry_run = dry_run
        self.log = log or Logger()
        self.sleep = sleep
        self.clock = clock

    def _pool_candidates(self, pools: list[Any], pods: dict[str, PodView]) -> dict[str, dict[int, str]]:
        """pool name → {offset: container id} of stale allocations."""
        now = self.clock()
        out: dict[str, dict[int, str]] = {}
        for snap in pools:
            for off, a, ip, _ in _pool_entries(snap):
                if stale(a.podref, ip, pods, now, self.grace):
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
        from ipam.whereabouts.store import Conflict

        report = Report()
        # Phase 1: pools and reservations first, then pods.
        pools = self.store.list_pools()
        reservations = self.store.list_reservations()
        pods = pod_views(self.list_pods())
        cand = self._pool_candidates(pools, pods)
        rcand = self._res_candidates(pools, reservations, pods)
        report.kept = sum(len(p.allocations) for p in pools) - sum(len(c) for c in cand.values())
        if not cand and not rcand:
            return report
        self.log.verbose(f"reconcile: {sum(len(c) for c in cand.values())} allocation(s) and {len(rcand)} "
                         f"reservation(s) look stale; re-checking in {self.grace:g}s")
        self.sleep(self.grace)

        # Phase 2: per pool, read it, list pods, decide again, write guarded by the version just read.
        by_name = {p.name: p for p in pools}
        for name, offsets in cand.items():
            for _ in range(WRITE_TRIES):
                snap = self.store.read_pool(name, by_name[name].range)
                pods = pod_views(self.list_pods())
                now = self.clock()
                drop = {}
                for off, a, ip, _rn in _pool_entries(snap):
                    if off in offsets and offsets[off] == a.container_id:
                        why = stale(a.podref, ip, pods, now, self.grace)
                        if why:
                            drop[off] = (a, ip, why)
                if not drop:
                    break
                if self.dry_run:
                    for a, ip, _why in drop.values():
                        report.freed.append((name, ip, a.podref))
                    break
                try:
                    self.store.write_pool(snap, {k: v for k, v in snap.allocations.items() if k not in drop})
                except Conflict:
                    report.conflicts += 1
                    continue
                for off, (a, ip, why) in drop.items():
                    report.freed.append((name, ip, a.podref))
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
        return report

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
    p.add_argument("--dry-run", action="store_true", help="report what would be freed, change nothing")
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

    rec = Reconciler(store, list_pods, grace=args.grace, dry_run=args.dry_run, log=log)
    status = 0
    while True:
        try:
            report = rec.run_once()
        except CNIError as e:
            log.error(f"reconcile failed: {e}")
            status = 1
        else:
            verb = "would free" if args.dry_run else "freed"
            print(f"{verb} {len(report.freed)} allocation(s), {len(report.freed_reservations)} reservation(s); "
                  f"kept {report.kept}; {report.conflicts} conflict(s)")
            for pool, ip, podref in report.freed:
                print(f"  {pool}: {ip} ({podref})")
            for err in report.errors:
                log.error(f"reconcile: {err}")
            status = 1 if report.errors else 0
        if args.interval <= 0:
            break
        time.sleep(args.interval)
    store.close()
    client.close()
    return status
