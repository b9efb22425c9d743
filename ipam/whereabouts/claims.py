"""Persistent IPs: the multi-net spec v1.3 ``ipam-claim-reference`` and the ``IPAMClaim`` CRD (k8s.cni.cncf.io).

Rules:
- Only networks whose config says ``"allowPersistentIPs": true`` (OVN-Kubernetes' key) honour claims; others never
  read the pod.
- Where the reference comes from: the pod's own ``k8s.v1.cni.cncf.io/networks`` annotation, read by the plugin
  as whereabouts and OVN-Kubernetes do (the runtime passes nothing). The selection element is the one whose
  ``interface`` is this request's ifName, else the only one naming this network without an interface. A pod whose
  UID is not CNI_ARGS' K8S_POD_UID is a different pod (a re-created one): its annotation is not ours to use.
- The claim lives in the pod's namespace (a tenant cannot name another namespace's claim). Missing → error 11
  (its controller may not have created it yet; the runtime retries). A claim whose ``spec.network`` names another
  network → error 7.
- The address belongs to the claim: the pool entry records ``ipamclaimref`` (whereabouts' field); a later pod with
  the same claim takes the entry over (on any node, in whatever pool or slice holds it), DEL leaves it in place, and
  only ``multinic reconcile`` frees it, once the claim is gone. ``status.ips`` of the claim lists the addresses
  (``ip/prefix``), written with a compare-and-swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cni.spec.errors import InvalidConfig, TryAgainLater

GROUP = "k8s.cni.cncf.io"
VERSION = "v1alpha1"
PLURAL = "ipamclaims"
WRITE_TRIES = 5


@dataclass(frozen=True)
class Claim:
    namespace: str
    name: str
    ips: tuple[str, ...]  # status.ips as stored ("ip/prefix")

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def reference(pod: dict[str, Any], ifname: str, network: str, pod_uid: str) -> str:
    """The claim name this pod's annotation gives attachment ``ifname`` of ``network`` ("" = none)."""
    from cni.k8s.annotations import NETWORKS, parse_networks

    meta = pod.get("metadata") or {}
    if pod_uid and meta.get("uid") and meta.get("uid") != pod_uid:
        return ""
    raw = (meta.get("annotations") or {}).get(NETWORKS) or ""
    sels = [s for s in parse_networks(raw, str(meta.get("namespace") or "")) if s.ipam_claim_reference]
    by_if = [s for s in sels if s.interface == ifname]
    if by_if:
        return by_if[0].ipam_claim_reference
    by_name = [s for s in sels if not s.interface and s.name == network]
    return by_name[0].ipam_claim_reference if len(by_name) == 1 else ""


def lookup(client: Any, namespace: str, pod_name: str, ifname: str, network: str, pod_uid: str) -> Claim | None:
    """The IPAMClaim of this attachment, or None when its pod names none (or the pod is not found)."""
    from cni.k8s.client import ApiNotFound, group_path

    try:
        pod = client.get_pod(namespace, pod_name)
    except ApiNotFound:
        return None
    name = reference(pod, ifname, network, pod_uid)
    if not name:
        return None
    try:
        obj = client.get(group_path(GROUP, VERSION, PLURAL, namespace, name))
    except ApiNotFound:
        raise TryAgainLater(f"IPAMClaim {namespace}/{name} named by pod {namespace}/{pod_name} does not exist",
                            "create it (or let its controller create it); the runtime retries the ADD") from None
    want = str((obj.get("spec") or {}).get("network") or "")
    if want and network and want != network:
        raise InvalidConfig(f"IPAMClaim {namespace}/{name} is for network {want!r}, not {network!r}",
                            "reference a claim of this network in 'ipam-claim-reference'")
    ips = (obj.get("status") or {}).get("ips") or []
    return Claim(namespace, name, tuple(str(i) for i in ips if isinstance(i, str)))


def record(client: Any, claim: Claim, ips: list[str]) -> None:
    """Write ``status.ips`` of the claim (compare-and-swap on its resourceVersion)."""
    from cni.k8s.client import ApiConflict, ApiNotFound, group_path

    path = group_path(GROUP, VERSION, PLURAL, claim.namespace, claim.name)
    for _ in range(WRITE_TRIES):
        obj = client.get(path)
        status = dict(obj.get("status") or {})
        if list(status.get("ips") or []) == ips:
            return
        status["ips"] = ips
        obj["status"] = status
        try:
            try:
                client.update(path + "/status", obj)
            except ApiNotFound:
                client.update(path, obj)  # a CRD without a status subresource
            return
        except ApiConflict:
            continue
    raise TryAgainLater(f"IPAMClaim {claim.ref}: status keeps changing; retry")
