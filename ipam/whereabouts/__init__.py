"""whereabouts: cluster-wide IPAM, a drop-in for k8snetworkplumbingwg/whereabouts (``type: whereabouts``).

Rules:
- Config: ``config.parse`` (every whereabouts key; values outside a range are refused with error 7 naming the field).
- Allocation is pure (``allocator``); the concurrency protocol over a store is ``manager``; stores: ``store_k8s``
  (IPPool / OverlappingRangeIPReservation CRDs), ``store_etcd`` (etcd v3), ``store_file`` (single node, default).
- ADD returns one IP per range (top-level ``range`` first, then ``ipRanges``), each with its own family's gateway,
  plus the static ``addresses`` and CNI_ARGS ``IP=`` extras, ``routes`` and ``dns``. If a later range fails, the
  IPs already allocated for this request are released again (nothing is left behind).
- ``node_slice_size`` (etcd and Kubernetes stores): each node allocates in its own slices of the range
  (``slices``); ``allowPersistentIPs`` networks honour a pod's ``ipam-claim-reference`` (``claims``): the
  address belongs to the IPAMClaim, a failed ADD does not release it, DEL keeps it.
- DEL releases by containerID + ifName in every range; nothing allocated is success. CHECK verifies that every
  range holds an IP for containerID + ifName (with its reservation) and that prevResult carries it.
- GC is a no-op: pools are shared by every node (and, without network_name, by every network using the range), so one
  runtime's list of valid attachments cannot tell which allocations are stale; ``multinic reconcile`` does that
  against the pods in the API.
- Logs go to ``log_file`` (whereabouts' format ``<RFC3339> [<level>] <msg>``) through a Logger of our own, never to
  the delegator's log.
"""

from __future__ import annotations

import contextlib
from typing import Any

from cni.log import Logger
from cni.plugin import Plugin
from cni.spec.errors import CNIError, PluginNotAvailable, UnknownContainer
from cni.spec.request import Request
from cni.spec.result import IPConfig, Result

from .config import Conf
from .config import parse as _parse_conf

TYPE = "whereabouts"

LOG = Logger()


def _configure_log(conf: Conf) -> None:
    LOG.configure(path=conf.log_file or "", level=conf.log_level)


def parse(req: Request) -> Conf:
    """The validated config (reads the flat file; no store access)."""
    conf = _parse_conf(req)
    _configure_log(conf)
    return conf


def _manager(store: Any, conf: Conf) -> Any:
    from .manager import Manager, SliceConf, store_key

    slicing = None
    if conf.node_slice_size and getattr(store, "kind", "") != "file":
        slicing = SliceConf(conf.slice_pool, conf.node_slice_size, conf.node_name)
    return Manager(store, conf.owner, network_name=conf.network_name, overlapping=conf.overlapping, log=LOG,
                   slicing=slicing, shared=store_key(conf) if slicing is not None else None)


def _mode_line(mode: int, conf: Conf) -> str:
    return (f"IPManagement -- mode: {mode} / containerID: {conf.owner.container_id} / "
            f"podRef: {conf.owner.podref}")


def _claim(conf: Conf, store: Any) -> tuple[Any, Any]:
    """(client, IPAMClaim) of this attachment, or (None, None): only for a network with ``allowPersistentIPs``,
    a kubeconfig and a pod (claims.py)."""
    if not conf.persistent_ips or not conf.kubeconfig or not conf.owner.podref:
        return None, None
    from . import claims

    client = getattr(store, "client", None) if getattr(store, "kind", "") == "kubernetes" else None
    if client is None:
        from cni.k8s.client import Client, KubeConfig

        client = Client(KubeConfig.load(conf.kubeconfig))
    ns, _, pod = conf.owner.podref.partition("/")
    return client, claims.lookup(client, ns, pod, conf.owner.ifname, conf.network, conf.owner.pod_uid)


def add(req: Request, conf: Conf) -> Result:
    import dataclasses

    from .manager import opened

    LOG.debug(_mode_line(0, conf))
    import time

    from . import group
    from .manager import store_key

    # Entries record when they were written (the reconciler orders them against the pod's current sandbox).
    conf = dataclasses.replace(conf, owner=dataclasses.replace(conf.owner, at=int(time.time() * 1000)))
    ips: list[IPConfig] = []
    node = (store_key(conf), conf.node_name) if conf.node_slice_size and conf.datastore != "file" else None
    with group.arriving(node) as arrival, opened(conf) as store, contextlib.ExitStack() as undo:
        client, claim = _claim(conf, store)
        if claim is not None:
            conf = dataclasses.replace(conf, owner=dataclasses.replace(conf.owner, claim=claim.ref))
        mgr = _manager(store, conf)
        mgr.arrival = arrival
        if claim is not None:
            mgr.claim_ips = claim.ips
        for rng, gw in zip(conf.ranges, conf.gateways, strict=True):
            try:
                ip = mgr.allocate(rng)
            except CNIError as e:
                LOG.error(f"Error assigning IP: {e}")
                raise
            if claim is None:  # a claim's address stays with the claim even if this ADD fails
                undo.callback(_undo_release, mgr, rng)
            ips.append(IPConfig(address=_iface(ip, rng.network.prefixlen), gateway=gw))
        if claim is not None:
            from . import claims

            claims.record(client, claim, [str(i.address) for i in ips])
            LOG.debug(f"IPAMClaim {claim.ref} holds {', '.join(str(i.address) for i in ips)}")
        undo.pop_all()
    for addr, gw in conf.addresses:
        ips.append(IPConfig(address=addr, gateway=gw))
    for addr in conf.static_ips:
        if all(ipc.address != addr for ipc in ips):
            ips.append(IPConfig(address=addr))
    LOG.debug(f"IPs assigned: {', '.join(str(i.address) for i in ips)}")
    return Result(cni_version=req.cni_version, ips=tuple(ips), routes=conf.routes, dns=conf.dns)


def _undo_release(mgr: Any, rng: Any) -> None:
    try:
        mgr.release(rng, budget=10.0)
    except CNIError as e:
        LOG.error(f"could not release {rng.network} after a failed ADD: {e}")


def _iface(ip: Any, prefixlen: int) -> Any:
    import ipaddress

    return ipaddress.ip_interface(f"{ip}/{prefixlen}")


def delete(req: Request, conf: Conf) -> None:
    from .manager import opened

    LOG.debug(_mode_line(1, conf))
    errors: list[CNIError] = []
    with opened(conf) as store:
        mgr = _manager(store, conf)
        for rng in conf.ranges:
            try:
                mgr.release(rng)
            except CNIError as e:
                # Keep releasing the other ranges; report the failure so the runtime retries the DEL.
                LOG.error(f"Error deallocating IP in {rng.network}: {e}")
                errors.append(e)
    if errors:
        from cni.invoke import raise_all

        raise_all(errors)


def check(req: Request, conf: Conf) -> None:
    from cni.spec.errors import InvalidConfig
    from cni.spec.result import from_wire

    from .manager import opened

    prev = None
    if isinstance(req.config.get("prevResult"), dict):
        prev = from_wire(req.config["prevResult"], err_cls=InvalidConfig)
    with opened(conf) as store:
        mgr = _manager(store, conf)
        for rng in conf.ranges:
            ip = mgr.check(rng)
            if prev is not None and all(ipc.address.ip != ip for ipc in prev.ips):
                raise UnknownContainer(f"whereabouts: allocated IP {ip} of container {conf.owner.container_id} "
                                       f"is not in prevResult")


def status(req: Request, conf: Conf) -> None:
    from .manager import opened

    try:
        with opened(conf) as store:
            store.ping()
    except CNIError as e:
        raise PluginNotAvailable(f"whereabouts datastore {conf.datastore} is not usable: {e.msg}", e.details) from None


def gc(req: Request, conf: Conf) -> None:
    return None  # see the module docstring: 'multinic reconcile' frees stale allocations


PLUGIN = Plugin(TYPE, parse, add, delete, check, status, gc)
