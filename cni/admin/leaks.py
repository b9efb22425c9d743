"""``multinic leaks [--fix]``: cross-check the attachment cache, the kernel and the IPAM stores.

What is a leak (each judged only within the networks multinic knows: those of the cached attachments
and the cluster network, so another runtime's networks on the same host are never touched):
- a cached sandbox whose netns is gone (a reboot, a runtime that never sent DEL);
- a host-local reservation (``<dataDir>/<network>/<ip>``) that no cached attachment owns;
- a whereabouts allocation or reservation in the local file store that no cached attachment owns;
- a whereabouts allocation in a Kubernetes or etcd store (shared by every node) that no cached attachment owns,
  is provably THIS node's (its pod's ``spec.nodeName``; once the pod is gone, the owner of the node slice it is
  in, or the container in this node's cache history) and stale by ``multinic reconcile``'s rules, grace period
  included (``leaks_stores.judge_shared``); the rest of those stores is ``multinic reconcile``'s, cluster-wide;
- a portmap DNAT rule (iptables ``CNI-HOSTPORT-DNAT`` jump or nft ``cni_hostport`` rule) whose
  comment names a container that is not cached;
- a bridge ``ipMasq`` chain (iptables ``CNI-…`` jumped to from POSTROUTING, nft ``masq_checks`` rule) of a
  network with ipMasq whose comment names a container that is not cached;
- a veth port on a known bridge that no cached result names as its host interface (not the VLAN gateway port).

``--fix`` removes them only through the plugins' own paths and for the exact owner a record names:
the meta-plugin's DEL from the cache for a dead sandbox (every attachment, newest first), host-local
and whereabouts DEL for the (containerID, ifname) in the reservation or allocation (a shared-store allocation is
judged again, pool then pod then cache, right before its DEL), portmap DEL for the (network,
containerID) in the rule's comment, the bridge plugin's masquerade teardown for the (network, ifname,
containerID) in the chain's comment. A host veth no record attributes to a container cannot be DEL'd
(DEL needs the container): it is deleted only when provably an orphan of ours (``veth_verdict``: our naming, on
a known network's bridge, peer still on the host and unused), else reported with the reason and how to remove it
by hand.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..delegator.cache import Record
    from ..spec.config import ConfList

from . import common as c
from .leaks_model import Known, Leak, plugin_request
from .leaks_stores import Shared, shared_whereabouts


def _add_conflist(known: Known, cl: ConfList) -> None:
    from ipam.host_local import DEFAULT_DATA_DIR

    for p in cl.plugins:
        raw = p.get("ipam")
        ipam: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if ipam.get("type") == "host-local":
            known.host_local.setdefault((cl.name, str(ipam.get("dataDir") or DEFAULT_DATA_DIR)), (cl.cni_version, p))
        elif ipam.get("type") == "whereabouts":
            known.whereabouts.setdefault(cl.name, (cl.cni_version, p))
        if p.get("type") == "portmap":
            known.portmap.setdefault(cl.name, (cl.cni_version, p))
        elif p.get("type") == "bridge":
            known.bridges.setdefault(str(p.get("bridge") or "cni0"), cl.name)
            if any(k.lower() == "ipmasq" and v is True for k, v in p.items()):  # Go: keys match in any case
                known.masq.add(cl.name)


def networks(node: c.NodeConf, boxes: list[c.Sandbox]) -> Known:
    from ..delegator import context, resolve
    from ..spec.errors import CNIError
    from ..spec.request import Request

    known = Known()
    try:
        _, cl = resolve.configured_cluster_network(context.Context(Request("GC"), node.cfg, None))
        _add_conflist(known, cl)
    except CNIError:
        pass  # a clusterNetwork that only the API can resolve: its attachments are in the cache anyway
    for sb in boxes:
        for e in sb.record.entries:
            _add_conflist(known, e.attachment.conflist)
    return known


def owners_of(known: Known, boxes: list[c.Sandbox]) -> None:
    known.owners.clear()
    known.containers.clear()
    known.host_ifaces.clear()
    for sb in boxes:
        known.containers.add(sb.record.container_id)
        for e in sb.record.entries:
            known.owners.add((sb.record.container_id, e.attachment.ifname))
            for itf in (e.result or {}).get("interfaces") or []:
                if isinstance(itf, dict) and not itf.get("sandbox") and itf.get("name"):
                    known.host_ifaces.add(str(itf["name"]))


# ---- finders ----------------------------------------------------------------------------------------------------


def dead_sandboxes(node: c.NodeConf, boxes: list[c.Sandbox]) -> list[Leak]:
    out = []
    for sb in boxes:
        if sb.netns_alive:
            continue
        rec = sb.record

        def fix(rec: Record = rec) -> None:
            from ..delegator import context, core, sandbox_lock
            from ..spec.request import Request

            primary = next((e.attachment.ifname for e in rec.entries if e.attachment.primary), "eth0")
            req = Request("DEL", rec.container_id, rec.netns, primary,
                          {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": rec.pod_namespace, "K8S_POD_NAME": rec.pod_name,
                           "K8S_POD_UID": rec.pod_uid}, c.cni_path(node), {})
            # No pod source, as the meta-plugin's GC does: the pod is gone, and DEL works from the cache. Under the
            # sandbox's lock, as every DEL: not beside the runtime's own DEL of it.
            with sandbox_lock.held(node.cfg.cni_dir, rec.container_id, "multinic leaks --fix"):
                core.delete(context.Context(req, node.cfg, None, context.Runner(), context.node_name(node.cfg)))

        nets = ", ".join(e.attachment.name for e in rec.entries) or "-"
        out.append(Leak("sandbox", nets, rec.container_id,
                        f"pod {sb.pod}: netns {rec.netns or '(none)'} is gone, {len(rec.entries)} attachment(s) cached",
                        fix))
    return out


def host_local(node: c.NodeConf, known: Known) -> list[Leak]:
    from ipam.host_local import store

    out = []
    for (net, data_dir), (version, conf) in sorted(known.host_local.items()):
        with store.locked(data_dir, net, create=False) as st:
            held = st.all_reservations() if st is not None else {}
        for ip, (cid, ifname) in sorted(held.items(), key=lambda kv: (kv[0].version, int(kv[0]))):
            mine = (cid, ifname) in known.owners if ifname is not None else cid in known.containers
            if mine:
                continue

            def fix(cid: str = cid, ifname: str | None = ifname, conf: dict[str, Any] = conf,
                    net: str = net, version: str = version) -> None:
                from .. import invoke

                # A legacy one-line reservation (no ifname) matches any interface of its container.
                invoke.ipam(plugin_request("DEL", cid, ifname or "eth0", node, conf, net, version))

            out.append(Leak("host-local", net, f"{cid}/{ifname or '*'}", f"{ip} reserved in {data_dir}/{net}", fix))
    return out


def whereabouts(node: c.NodeConf, known: Known, grace: float = 60.0) -> tuple[list[Leak], list[str]]:
    from ipam.whereabouts import config as wconf
    from ipam.whereabouts.manager import opened

    from ..spec.errors import CNIError

    out: list[Leak] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    shared = Shared(node, grace)
    for net, (version, conf) in sorted(known.whereabouts.items()):
        try:
            wc = wconf.parse(plugin_request("DEL", "leaks", "eth0", node, conf, net, version))
        except CNIError as exc:
            notes.append(f"whereabouts network {net}: cannot read its config: {exc}")
            continue
        if wc.datastore != "file":
            got, more = shared_whereabouts(node, known, wc, net, version, conf, shared, seen)
            out += got
            notes += more
            continue
        found: list[tuple[str, str, str, str]] = []  # (what, cid, ifname, podref)
        try:
            with opened(wc) as st:
                for rng, pool in zip(wc.ranges, wc.pool_names(), strict=True):
                    if (wc.data_dir, pool) in seen:
                        continue
                    seen.add((wc.data_dir, pool))
                    snap = st.read_pool(pool, rng.cidr)
                    for off, a in sorted(snap.allocations.items()):
                        found.append((f"{rng.ip_at(off)} allocated in pool {pool}", a.container_id, a.ifname, a.podref))
                if (wc.data_dir, "/reservations") not in seen:
                    seen.add((wc.data_dir, "/reservations"))
                    for r in st.list_reservations():
                        found.append((f"reservation {r.name}", r.container_id, r.ifname, r.podref))
        except CNIError as exc:
            notes.append(f"whereabouts network {net}: cannot read the store: {exc}")
            continue
        for what, cid, ifname, podref in found:
            mine = (cid, ifname) in known.owners if ifname else cid in known.containers
            if mine:
                continue
            ns, _, pod = podref.partition("/")
            args = {"K8S_POD_NAMESPACE": ns, "K8S_POD_NAME": pod} if pod else {}

            def fix(cid: str = cid, ifname: str = ifname, conf: dict[str, Any] = conf, net: str = net,
                    version: str = version, args: dict[str, str] = args) -> None:
                from .. import invoke

                invoke.ipam(plugin_request("DEL", cid, ifname or "eth0", node, conf, net, version, args))

            out.append(Leak("whereabouts", net, f"{cid}/{ifname or '*'}", f"{what} (pod {podref or '-'})", fix))
    return out, notes


_DNAT_COMMENT = re.compile(r'dnat name: \\?"(?P<net>[^"\\]*)\\?" id: \\?"(?P<cid>[^"\\]*)\\?"')


def _run(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def portmap(node: c.NodeConf, known: Known) -> list[Leak]:
    from plugins import _portmap_rules as R

    if not known.portmap:
        return []
    rules: set[tuple[str, str, str]] = set()  # (backend, network, containerID)
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool) is None:
            continue
        text = _run([tool, "-t", "nat"]) or ""
        for line in R.parse_iptables_save(text).chain_rules(R.DNAT_CHAIN):
            m = _DNAT_COMMENT.search(line)
            if m:
                rules.add(("iptables", m.group("net"), m.group("cid")))
    if shutil.which("nft"):
        for fam in (4, 6):
            ipx = R.nft_family(fam)
            listing = _run(["nft", "-a", "list", "table", ipx, R.NFT_TABLE]) or ""
            for rule in R.parse_nft_table(ipx, listing):
                parts = rule.comment.split(" ")
                if len(parts) == 3 and parts[0] == R.dn_chain(parts[1], parts[2]):
                    rules.add(("nftables", parts[1], parts[2]))
    out = []
    for backend, net, cid in sorted(rules):
        if net not in known.portmap or cid in known.containers:
            continue
        version, conf = known.portmap[net]

        def fix(backend: str = backend, net: str = net, cid: str = cid, version: str = version,
                conf: dict[str, Any] = conf) -> None:
            from .. import invoke

            # The rule's own backend: DEL without a state file removes what (network, containerID) names there.
            invoke.run(plugin_request("DEL", cid, "eth0", node, {**conf, "backend": backend}, net, version))

        out.append(Leak("portmap", net, cid, f"{backend} host-port rules ({R.dn_chain(net, cid)})", fix))
    return out


_MASQ_COMMENT = re.compile(r'^name: "(?P<net>[^"]*)" id: "(?P<cid>[^"]*)"$')
_NFT_MASQ_COMMENT = re.compile(r"^(?P<hash>[0-9a-f]{16}-[0-9a-f]{16}), net: (?P<net>.*), if: (?P<if>[^,]*), id: (?P<cid>\S+)$")


def masq_rules(iptables_save: dict[int, str], nft_listing: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(backend, network, ifname, containerID) of every bridge ipMasq chain or rule, each proven by its own name.

    PURE. iptables: a POSTROUTING jump whose comment is ``name: "<net>" id: "<cid>"`` to the chain
    ``chain_name(net, cid)`` (so portmap's ``dnat name: …`` and anyone else's chains never match; the ifname is not
    recorded there, "" stands for it). nftables: a ``masq_checks`` rule whose comment's leading hash is
    ``nft_instance_hash(net, ifname, cid)`` of the fields the comment spells out (a cut comment cannot prove itself
    and is skipped)."""
    from plugins import _masq as M

    out: set[tuple[str, str, str, str]] = set()
    for text in iptables_save.values():
        _chains, rules = M.parse_nat_save(text)
        for rule in rules:
            toks = M._tokens(rule)
            if len(toks) < 2 or toks[1] != "POSTROUTING" or "--comment" not in toks or "-j" not in toks:
                continue
            after = dict(zip(toks, (*toks[1:], ""), strict=True))  # option -> its value
            m = _MASQ_COMMENT.match(after["--comment"])
            if m and after["-j"] == M.chain_name(m.group("net"), m.group("cid")):
                out.add(("iptables", m.group("net"), "", m.group("cid")))
    for item in nft_listing.get("nftables", []):
        obj = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(obj, dict):
            continue
        n = _NFT_MASQ_COMMENT.match(str(obj.get("comment", "")))
        if n and n.group("hash") == M.nft_instance_hash(n.group("net"), n.group("if"), n.group("cid")):
            out.add(("nftables", n.group("net"), n.group("if"), n.group("cid")))
    return out


def masquerade(known: Known) -> list[Leak]:
    """Bridge ipMasq chains/rules of a known ipMasq network whose container is not cached; --fix runs the bridge
    plugin's own masquerade teardown for that (network, ifname, containerID), which removes exactly those."""
    from plugins import _masq as M

    if not known.masq:
        return []
    saves: dict[int, str] = {}
    for version in (4, 6):
        tool = "iptables-save" if version == 4 else "ip6tables-save"
        if shutil.which(tool) is not None:
            saves[version] = _run([tool, "-t", "nat"]) or ""
    listing: dict[str, Any] = {}
    if shutil.which("nft") is not None:
        import orjson

        text = _run(["nft", "-j", "list", "chain", "inet", M.NFT_TABLE, M.NFT_CHAIN])
        try:
            doc = orjson.loads(text) if text else {}
        except orjson.JSONDecodeError:
            doc = {}
        listing = doc if isinstance(doc, dict) else {}
    out = []
    for backend, net, ifname, cid in sorted(masq_rules(saves, listing)):
        if net not in known.masq or cid in known.containers:
            continue

        def fix(net: str = net, ifname: str = ifname, cid: str = cid) -> None:
            M.teardown(net, ifname, cid)

        what = (f"iptables masquerade chain {M.chain_name(net, cid)}" if backend == "iptables"
                else f"nftables masquerade rule in inet {M.NFT_TABLE} {M.NFT_CHAIN} (interface {ifname})")
        out.append(Leak("masquerade", net, cid if backend == "iptables" else f"{cid}/{ifname}", what, fix))
    return out


GATEWAY_PORT = "it is the VLAN gateway port of"  # not a leak at all: node state, like the bridge
_OUR_VETH = re.compile(r"^veth[0-9a-f]{8}$")  # plugins/bridge.py random_veth_name (the reference's scheme too)


def _links(argv: list[str]) -> list[dict[str, Any]]:
    import orjson

    text = _run(argv)
    try:
        doc = orjson.loads(text) if text else []
    except orjson.JSONDecodeError:
        return []
    return [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []


def veth_verdict(port: dict[str, Any], peer: dict[str, Any] | None, bridge: str) -> str:
    """Why the veth ``port`` of ``bridge`` must be left alone, or "" when it is provably ours and orphaned. PURE.

    Provable: our bridge plugin's host-end name, and its peer is still in the host netns, unused (no address, no
    master) and not a VLAN gateway port (``<bridge>.<vlan>``, node state shared by pods). Our ADD creates the pair
    with the peer directly in the pod netns (plugins/bridge.py create_veth), so a pair with both ends here is never
    an ADD in flight; and the kernel deletes both ends when a pod netns goes, so a peer in another netns means that
    netns is alive: some process or mount holds it, a pod we have no record of may be using it."""
    name = str(port.get("ifname", ""))
    if not _OUR_VETH.match(name):
        return "its name is not the bridge plugin's (veth + 8 hex digits): another tool may own it"
    if "link_netnsid" in port:
        return (f"its peer lives in another network namespace (nsid {port['link_netnsid']}), which is alive: "
                "a pod we have no record of may use it")
    if peer is None:
        return "its peer cannot be found"
    pname = str(peer.get("ifname", ""))
    if re.fullmatch(re.escape(bridge) + r"\.[0-9]+", pname):
        return f"{GATEWAY_PORT} {pname} (shared by the VLAN's pods)"
    # An IPv6 link-local address comes with any link that is up; only an address someone configured is a use.
    if peer.get("master") or any(a.get("scope") != "link" for a in peer.get("addr_info") or [] if isinstance(a, dict)):
        return f"its peer {pname} is in use on the host (enslaved or addressed)"
    return ""


def host_links(known: Known) -> list[Leak]:
    out = []
    for bridge, net in sorted(known.bridges.items()):
        for port in _links(["ip", "-j", "-d", "link", "show", "master", bridge]):
            name = str(port.get("ifname", ""))
            kind = str((port.get("linkinfo") or {}).get("info_kind", ""))
            if not name or name in known.host_ifaces or not (name.startswith("veth") or kind == "veth"):
                continue
            why = _orphan_veth(port, bridge)
            if why.startswith(GATEWAY_PORT):
                continue
            if why:
                out.append(Leak("host-link", net, name, f"veth port of bridge {bridge} that no cached attachment names",
                                manual=f"left: {why}. Check it is unused (ip -d link show {name}), then "
                                       f"`ip link del {name}`"))
                continue

            index = port.get("ifindex")

            def fix(name: str = name, index: Any = index, bridge: str = bridge) -> None:
                from ..spec.errors import KernelError

                # Judge again right before deleting: the same link (by index), still an orphan.
                now = next((p for p in _links(["ip", "-j", "-d", "link", "show", "master", bridge])
                            if p.get("ifname") == name and p.get("ifindex") == index), None)
                if now is None:
                    return  # gone already
                why = _orphan_veth(now, bridge)
                if why:
                    raise KernelError(f"veth {name} is no longer an orphan: {why}")
                proc = subprocess.run(["ip", "link", "del", name], capture_output=True, text=True, timeout=30,
                                      check=False)
                if proc.returncode != 0 and _links(["ip", "-j", "link", "show", name]):
                    raise KernelError(f"could not delete veth {name}", proc.stderr.strip())

            out.append(Leak("host-link", net, name, f"veth port of bridge {bridge} whose peer "
                            f"{port.get('link', '?')} is also on the host and unused: an orphaned pair", fix))
    return out


def _orphan_veth(port: dict[str, Any], bridge: str) -> str:
    peer = None
    if port.get("link") and "link_netnsid" not in port:
        got = _links(["ip", "-j", "-d", "addr", "show", "dev", str(port["link"])])
        peer = got[0] if got else None
    return veth_verdict(port, peer, bridge)


def scan(node: c.NodeConf, known: Known, grace: float = 60.0) -> tuple[list[Leak], list[str]]:
    boxes = c.sandboxes(node.cfg.cni_dir)
    owners_of(known, boxes)
    leaks = dead_sandboxes(node, boxes)
    leaks += host_local(node, known)
    wb, notes = whereabouts(node, known, grace)
    leaks += wb
    leaks += portmap(node, known)
    leaks += masquerade(known)
    leaks += host_links(known)
    return leaks, notes


def fix_all(leaks: list[Leak]) -> None:
    for leak in leaks:
        if leak.fix is None:
            continue
        try:
            leak.fix()
            leak.removed = True
        except Exception as exc:  # noqa: BLE001 - one failed DEL is reported and must not stop the others
            leak.error = str(exc)


def fix(node: c.NodeConf, known: Known, leaks: list[Leak], grace: float = 60.0
        ) -> tuple[list[Leak], list[Leak], list[str]]:
    """Remove what can be removed; returns (the leaks with their outcome, what is left, notes)."""
    # Dead sandboxes first: their DEL releases everything they recorded; what it could not release
    # shows up in the next scan and is DEL'd by owner with the others.
    report = [lk for lk in leaks if lk.kind == "sandbox"]
    fix_all(report)
    again, _ = scan(node, known, grace)
    rest = [lk for lk in again if lk.kind != "sandbox"]
    fix_all(rest)
    report += rest
    left, notes = scan(node, known, grace)
    left_keys = {lk.key() for lk in left}
    for lk in report:
        if lk.removed and lk.key() in left_keys:
            lk.removed = False
            lk.error = lk.error or "still there after its DEL"
    return report, left, notes


# ---- the command ------------------------------------------------------------------------------------------------


def render(leaks: list[Leak], left: list[Leak], notes: list[str], fixing: bool) -> str:
    if not leaks:
        text = "no leaks: every sandbox's netns exists and every reservation, rule and port has a cached attachment\n"
    else:
        rows = []
        for lk in leaks:
            if fixing:
                action = "removed" if lk.removed else (f"FAILED: {lk.error}" if lk.error else "not removed (see below)")
            else:
                action = "--fix removes it" if lk.fix is not None else "manual (see below)"
            rows.append([lk.kind, lk.network, lk.owner[:40], lk.what, action])
        text = c.table(["KIND", "NETWORK", "OWNER", "WHAT", "ACTION"], rows)
        manual = [lk for lk in (left if fixing else leaks) if lk.manual]
        if manual:
            text += "\n" + "".join(f"! {lk.owner}: {lk.manual}\n" for lk in manual)
        if fixing:
            text += f"\n{sum(lk.removed for lk in leaks)} removed, {len(left)} left\n"
        else:
            text += f"\n{len(leaks)} leak(s); `multinic leaks --fix` removes the fixable ones through the plugins' DEL\n"
    text += "".join(f"note: {n}\n" for n in notes)
    return text


def _main(argv: list[str], out: IO[str]) -> int:
    p = c.parser("leaks", "Find what outlived its pod: dead sandboxes, IPAM reservations, host-port rules, host links.")
    p.add_argument("--fix", action="store_true", help="remove them through the plugins' DEL (and report each)")
    p.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                   help="whereabouts Kubernetes/etcd stores: leave allocations of pods (or containers) younger than "
                        "this alone, their ADD may be in flight (default 60, as multinic reconcile)")
    args = p.parse_args(argv)
    node = c.load(args.conf)
    known = networks(node, c.sandboxes(node.cfg.cni_dir))
    leaks, notes = scan(node, known, args.grace)
    left = leaks
    if args.fix and leaks:
        leaks, left, notes = fix(node, known, leaks, args.grace)
    if args.output == "json":
        out.write(c.dump_json({"leaks": [lk.to_json() for lk in leaks], "left": [lk.to_json() for lk in left],
                               "notes": notes, "fixed": bool(args.fix)}))
    else:
        out.write(render(leaks, left, notes, args.fix))
    return c.EXIT_PROBLEMS if left else c.EXIT_OK


def main(argv: list[str]) -> int:
    return c.run("leaks", _main, argv)
