"""The ``k8s.v1.cni.cncf.io/network-status`` annotation. PURE.

Shape (network-attachment-definition-client, what tools parse): a JSON list, one entry per
sandbox interface: ``name`` (``<ns>/<nad>``; the cluster network's conf name for the
primary), ``interface``, ``ips`` (bare addresses, no prefix), ``mac``, ``mtu`` (when known),
``default: true`` only on the primary (the key is omitted otherwise), ``dns`` always
present (``{}`` when empty), ``gateway`` (the default-route gateways of that attachment),
``device-info`` when a device plugin supplied it.
"""

from __future__ import annotations

from typing import Any

from ..spec.result import Interface, Result


def entries_for(
    name: str,
    ifname: str,
    result: Result | None,
    *,
    default: bool,
    gateways: list[str] | None = None,
    device_info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Status entries of one attachment: one per sandbox interface in its result.

    A result with no sandbox interface (an IPAM-only or L2-less plugin) still gets one entry,
    named after the requested interface, so the attachment is never invisible.
    """
    entries: list[dict[str, Any]] = []
    res = result or Result()
    sandboxed: list[tuple[int, Interface | None]] = [
        (i, iface) for i, iface in enumerate(res.interfaces) if iface.sandbox
    ]
    if not sandboxed:
        sandboxed = [(-1, None)]
    for idx, iface in sandboxed:
        e: dict[str, Any] = {"name": name, "interface": iface.name if iface else ifname}
        ips = [str(ip.address.ip) for ip in res.ips if idx < 0 or ip.interface is None or ip.interface == idx]
        if ips:
            e["ips"] = ips
        if iface is not None and iface.mac:
            e["mac"] = iface.mac
        if iface is not None and iface.mtu:
            e["mtu"] = iface.mtu
        if default:
            e["default"] = True
        dns: dict[str, Any] = {}
        if res.dns.nameservers:
            dns["nameservers"] = list(res.dns.nameservers)
        if res.dns.domain:
            dns["domain"] = res.dns.domain
        if res.dns.search:
            dns["search"] = list(res.dns.search)
        if res.dns.options:
            dns["options"] = list(res.dns.options)
        e["dns"] = dns
        if gateways:
            e["gateway"] = list(gateways)
        if device_info:
            e["device-info"] = device_info
        entries.append(e)
    return entries


def default_gateways(result: Result | None) -> list[str]:
    """Gateways of default routes in a result (what network-status reports as ``gateway``)."""
    if result is None:
        return []
    out: list[str] = []
    for r in result.routes:
        if r.dst.prefixlen == 0:
            gw = r.gw
            if gw is None:
                gw = next((ip.gateway for ip in result.ips if ip.gateway is not None and ip.version == r.dst.version), None)
            if gw is not None and str(gw) not in out:
                out.append(str(gw))
    return out


# The pod's current sandbox, written by multinic in the same pods/status update as network-status. Kubernetes does
# not publish a pod's sandbox ID, and ``multinic reconcile`` needs it to tell a replaced sandbox's allocations from
# the live one's (issue #17). ``started`` (when that sandbox's ADD began) orders sandboxes on the pod's node: an
# allocation made before the current sandbox's ADD started belongs to an older sandbox.
SANDBOX = "multinic.io/sandbox"


def sandbox_record(container_id: str, started: float, written: float) -> str:
    """The ``multinic.io/sandbox`` value: ``{"containerID", "started", "written"}``, times in Unix milliseconds."""
    import json

    return json.dumps({"containerID": container_id, "started": int(started * 1000), "written": int(written * 1000)},
                      separators=(",", ":"))


def parse_sandbox_record(text: object) -> tuple[str, float, float] | None:
    """(container ID, started, written) in seconds, or None when absent or not ours (never guessed)."""
    import json

    if not isinstance(text, str) or not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    cid, started, written = doc.get("containerID"), doc.get("started"), doc.get("written")
    if not isinstance(cid, str) or not cid or not isinstance(started, int) or not isinstance(written, int) \
            or isinstance(started, bool) or isinstance(written, bool) or started <= 0 or written < started:
        return None
    return cid, started / 1000.0, written / 1000.0
