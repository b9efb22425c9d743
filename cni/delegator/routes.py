"""Multus ``default-route``: the attachment that asked for it gets the pod's default route.

Every other attachment loses its default routes, in the kernel and in its (cached) result,
so network-status and DEL/CHECK see what is really there.
"""

from __future__ import annotations

import ipaddress
from socket import AF_INET, AF_INET6

from .. import netlink, netns
from ..netlink import RT_TABLE_MAIN
from ..spec.result import Result, Route
from .plan import Attachment


def set_default(netns_path: str, plan: list[Attachment], results: list[Result], chosen: Attachment) -> list[Result]:
    gws = [ipaddress.ip_address(g) for g in chosen.default_route]
    out: list[Result] = []
    with netns.entered(netns_path):
        sock = netlink.ipr()
    try:
        for att, res in zip(plan, results, strict=True):
            idx = netlink.link_index(sock, att.ifname)
            fams = {gw.version for gw in gws}
            if att is not chosen:
                if idx is not None:
                    # Both families asked for explicitly: get_routes defaults to IPv4 only.
                    routes = [r for af in (AF_INET, AF_INET6) for r in sock.get_routes(family=af, table=RT_TABLE_MAIN)
                              if r.get_attr("RTA_OIF") == idx]
                    for r in routes:
                        fam = 4 if r["family"] == AF_INET else 6
                        if r["dst_len"] == 0 and fam in fams:
                            with netlink.translated(f"failed to remove default route from {att.ifname}"):
                                sock.route("del", dst="default" if fam == 4 else "::/0", oif=idx,
                                           family=r["family"], table=RT_TABLE_MAIN)
                out.append(res.with_(routes=tuple(rt for rt in res.routes
                                                  if not (rt.dst.prefixlen == 0 and rt.dst.version in fams))))
                continue
            kept = [rt for rt in res.routes if rt.dst.prefixlen != 0 or rt.dst.version not in fams]
            for gw in gws:
                dst = ipaddress.ip_network("0.0.0.0/0" if gw.version == 4 else "::/0")
                route = Route(dst=dst, gw=gw)
                if idx is not None:
                    with netlink.translated(f"failed to set default route via {gw} on {att.ifname}"):
                        sock.route("replace", dst=str(dst), gateway=str(gw), oif=idx, table=RT_TABLE_MAIN)
                kept.append(route)
            out.append(res.with_(routes=tuple(kept)))
    finally:
        sock.close()
    return out
