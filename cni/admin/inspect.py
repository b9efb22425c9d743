"""``multinic inspect NAMESPACE/POD``: everything multinic knows about one pod, in the order an ADD uses it.

1. the pod's requested networks (its annotation, and the conf's defaultNetworks);
2. the NADs they resolve to (types, node selector) and the policy decisions an ADD would take now
   (namespace isolation, NAD node selector vs this node's labels, the plugin type allowlist);
3. the cached plan and results of each of its sandboxes on this node;
4. ``k8s.v1.cni.cncf.io/network-status`` as written on the pod;
5. the kernel's view inside each sandbox's netns (``ip`` links, addresses, routes of every table, rules);
6. the last log lines about the pod.
Every part is best effort: an unreachable API or a gone netns is shown as such, and the rest still prints.
The pod is unknown (exit 4) when neither the cache, the pod source nor the log knows it.
"""

from __future__ import annotations

import subprocess
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..k8s.source import Source

from . import common as c
from . import logs as logsmod

TAIL = 20


def pod_source(node: c.NodeConf) -> tuple[Source | None, str]:
    """The pod source the meta-plugin would use (API or manifestDir), or (None, why not)."""
    from ..delegator import entry
    from ..spec.errors import CNIError

    try:
        src = entry.make_source(node.cfg)
    except CNIError as exc:
        return None, f"cannot set up the pod source: {exc}"
    if src is None:
        return None, "no kubeconfig, in-cluster service account or manifestDir configured"
    return src, ""


def _decision(fn: Any, *args: Any) -> str:
    from ..spec.errors import CNIError

    try:
        fn(*args)
    except CNIError as exc:
        return f"denied: {exc.msg}"
    return "allowed"


def networks(node: c.NodeConf, src: Source | None, pod: dict[str, Any] | None, namespace: str, name: str) -> dict[str, Any]:
    """Requested networks, their NADs and today's policy decisions for them."""
    from ..delegator import context, resolve
    from ..k8s import annotations as ann
    from ..k8s import nad as nadmod
    from ..spec.errors import CNIError
    from ..spec.request import Request

    req = Request("ADD", "inspect", "", "eth0", {"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": name})
    ctx = context.Context(req, node.cfg, src, node_name=context.node_name(node.cfg))
    ref = context.PodRef(namespace, name, context.uid_of(pod), pod)
    doc: dict[str, Any] = {"annotation": context.annotations_of(pod).get(ann.NETWORKS, ""), "requested": [],
                           "clusterNetwork": None, "nodeName": ctx.node_name}
    try:
        primary = resolve.cluster_network(ctx, ref)
        base_types = nadmod.plugin_types(primary.conflist)
        doc["clusterNetwork"] = {"name": primary.name, "types": base_types, "fromPodAnnotation": primary.overridden}
        if primary.overridden:
            _, configured = resolve.configured_cluster_network(ctx)
            base_types = nadmod.plugin_types(configured)
    except CNIError as exc:
        doc["clusterNetwork"] = {"error": str(exc)}
        base_types = []
    try:
        sels = resolve.requested(ctx, ref)
    except CNIError as exc:
        doc["error"] = f"the pod's network request is invalid (ADD fails with it): {exc}"
        return doc
    allowed = resolve.allowed_types(ctx, base_types)
    labels: dict[str, str] | None = None
    confs = resolve.conf_dir_configs(node.cfg.conf_dir)
    for sel, from_default in sels:
        item: dict[str, Any] = {"network": sel.key, "interface": sel.interface or "",
                                "from": "defaultNetworks" if from_default else "annotation"}
        policy: dict[str, str] = {}
        if node.cfg.namespace_isolation and not from_default:
            policy["namespaceIsolation"] = _decision(nadmod.check_namespace_isolation, namespace, sel.namespace,
                                                     node.cfg.global_ns())
        obj = None
        if src is not None:
            try:
                obj = src.get_nad(sel.namespace, sel.name)
                if obj is None:
                    item["nad"] = "not found (ADD fails with NoNetworkFound)"
            except CNIError as exc:
                item["nad"] = f"cannot read: {exc.msg}"
        if obj is not None:
            try:
                net = nadmod.resolve(obj, confs)
            except CNIError as exc:
                item["nad"] = f"invalid: {exc.msg}"
            else:
                item["nad"] = net.key
                item["types"] = nadmod.plugin_types(net.conflist)
                item["nodeSelector"] = net.node_selector
                if net.node_selector:
                    if labels is None:
                        try:
                            labels = resolve.node_labels(ctx)
                        except CNIError as exc:
                            labels = {}
                            policy["nodeSelector"] = f"cannot tell: {exc.msg}"
                    policy.setdefault("nodeSelector", _decision(nadmod.check_node_selector, net, ctx.node_name, labels))
                policy["allowedPluginTypes"] = _decision(nadmod.check_allowed_types, net, allowed)
        item["policy"] = policy
        doc["requested"].append(item)
    return doc


def kernel_view(netns: str, as_json: bool) -> dict[str, Any]:
    """``ip`` links, addresses, routes (every table) and rules inside ``netns``; only cni.netns enters it."""
    from .. import netns as nsmod
    from ..spec.errors import CNIError

    if not c.netns_alive(netns):
        return {"error": f"netns {netns or '(none)'} is gone"}
    brief = [] if as_json else ["-br"]
    cmds = {"links": ["ip", *brief, "link", "show"], "addresses": ["ip", *brief, "addr", "show"],
            "routes": ["ip", "-4", "route", "show", "table", "all"], "routes6": ["ip", "-6", "route", "show", "table", "all"],
            "rules": ["ip", "-4", "rule", "show"], "rules6": ["ip", "-6", "rule", "show"]}
    out: dict[str, Any] = {}
    try:
        with nsmod.entered(netns):
            # A child forked from this thread starts in the thread's namespace.
            for key, argv in cmds.items():
                if as_json:
                    argv = [argv[0], "-j", *argv[1:]]
                try:
                    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    out[key] = f"cannot run {' '.join(argv)}: {exc}"
                    continue
                text = proc.stdout if proc.returncode == 0 else proc.stderr.strip()
                if as_json:
                    import orjson

                    try:
                        out[key] = orjson.loads(text or "[]")
                    except orjson.JSONDecodeError:
                        out[key] = text
                elif key.startswith("routes"):
                    # The kernel's own local/broadcast/multicast entries are noise next to what the plugins made.
                    out[key] = "\n".join(line for line in text.splitlines() if " table local " not in f" {line} ")
                else:
                    out[key] = text
    except CNIError as exc:
        return {"error": str(exc)}
    return out


def cached(node: c.NodeConf, namespace: str, name: str) -> list[c.Sandbox]:
    return [sb for sb in c.sandboxes(node.cfg.cni_dir)
            if sb.record.pod_namespace == namespace and sb.record.pod_name == name]


def collect(node: c.NodeConf, namespace: str, name: str, as_json: bool) -> dict[str, Any]:
    from ..k8s import annotations as ann
    from ..spec.errors import CNIError

    src, why = pod_source(node)
    pod = None
    source_note = why
    if src is not None:
        try:
            pod = src.get_pod(namespace, name)
            if pod is None:
                source_note = "pod not found in the API (deleted?)"
        except CNIError as exc:
            source_note = f"cannot read the pod: {exc.msg}"
    boxes = cached(node, namespace, name)
    log_lines: list[str] = []
    if node.cfg.log_file:
        log_lines = logsmod.pod_lines(node.cfg.log_file, namespace, name, [b.record.container_id for b in boxes])
    if pod is None and not boxes and not log_lines:
        raise c.AdminError(f"pod {namespace}/{name} is unknown on this node: not in the attachment cache "
                           f"({node.cfg.cni_dir}), the log, nor the pod source ({source_note or 'not found'})",
                           c.EXIT_NOT_FOUND)
    from ..delegator.context import annotations_of, uid_of

    status_raw = annotations_of(pod).get(ann.NETWORK_STATUS)
    status: Any = status_raw
    if isinstance(status_raw, str):
        import orjson

        try:
            status = orjson.loads(status_raw)
        except orjson.JSONDecodeError:
            status = status_raw
    doc: dict[str, Any] = {
        "pod": f"{namespace}/{name}", "uid": uid_of(pod), "source": source_note or "ok",
        "networks": networks(node, src, pod, namespace, name) if pod is not None else None,
        "networkStatus": status,
        "sandboxes": [],
        "log": log_lines[-TAIL:],
    }
    for sb in boxes:
        rec = sb.record
        doc["sandboxes"].append({
            "containerID": rec.container_id, "netns": rec.netns, "netnsAlive": sb.netns_alive, "podUID": rec.pod_uid,
            "state": c.sandbox_state(rec.entries), "problems": sb.problems,
            "attachments": [{"index": e.attachment.index, "network": e.attachment.name,
                             "interface": e.attachment.ifname, "state": c.attachment_state(rec.entries, i),
                             "types": [str(p.get("type")) for p in e.attachment.conflist.plugins],
                             "runtimeConfig": e.attachment.runtime_config, "result": e.result}
                            for i, e in enumerate(rec.entries)],
            "kernel": kernel_view(rec.netns, as_json),
        })
    return doc


def render(doc: dict[str, Any]) -> str:
    import orjson

    out = [f"Pod:        {doc['pod']}  uid {doc['uid'] or '-'}  (pod source: {doc['source']})"]
    nets = doc["networks"]
    if nets is not None:
        cn = nets.get("clusterNetwork") or {}
        out.append(f"Node:       {nets['nodeName']}")
        if "error" in cn:
            out.append(f"Cluster network: error: {cn['error']}")
        else:
            out.append(f"Cluster network: {cn.get('name')} ({', '.join(cn.get('types') or [])})"
                       + ("  [chosen by the pod's default-network annotation]" if cn.get("fromPodAnnotation") else ""))
        out.append(f"Requested:  {nets['annotation'] or '(no k8s.v1.cni.cncf.io/networks annotation)'}")
        if nets.get("error"):
            out.append(f"  ! {nets['error']}")
        rows = []
        for it in nets["requested"]:
            pol = "; ".join(f"{k}: {v}" for k, v in it["policy"].items()) or "-"
            rows.append([it["network"], it["interface"] or "-", it["from"], str(it.get("nad", "-")),
                         ",".join(it.get("types") or []) or "-",
                         ",".join(f"{k}={v}" for k, v in (it.get("nodeSelector") or {}).items()) or "-", pol])
        if rows:
            out.append("")
            out.append(c.table(["NETWORK", "IF", "FROM", "NAD", "TYPES", "NODE SELECTOR", "POLICY"], rows).rstrip())
    out.append("")
    ns_doc = doc["networkStatus"]
    if isinstance(ns_doc, list) and all(isinstance(e, dict) for e in ns_doc):
        out.append("network-status (as written on the pod):")
        out.append(c.table(["NAME", "IF", "IPS", "MAC", "DEFAULT"],
                           [[str(e.get("name", "")), str(e.get("interface", "")), ",".join(map(str, e.get("ips") or [])),
                             str(e.get("mac", "")), "yes" if e.get("default") else ""] for e in ns_doc]).rstrip())
    else:
        out.append("network-status: " + (orjson.dumps(ns_doc).decode() if ns_doc else "(not written)"))
    for sb in doc["sandboxes"]:
        out.append("")
        out.append(f"Sandbox {sb['containerID']}  netns {sb['netns']}{'' if sb['netnsAlive'] else ' (gone)'}  "
                   f"state {sb['state']}")
        for p in sb["problems"]:
            out.append(f"  ! {p}")
        rows = [[str(a["index"]), a["network"], a["interface"], a["state"], ",".join(a["types"]),
                 ",".join(c.result_ips(a["result"])) or "-"] for a in sb["attachments"]]
        out.append(c.table(["#", "NETWORK", "IF", "STATE", "PLUGINS", "IPS"], rows).rstrip())
        k = sb["kernel"]
        if "error" in k:
            out.append(f"  kernel: {k['error']}")
            continue
        for key, title in (("links", "links"), ("addresses", "addresses"), ("routes", "routes (all tables)"),
                           ("routes6", "IPv6 routes (all tables)"), ("rules", "rules"), ("rules6", "IPv6 rules")):
            text = str(k.get(key, "")).rstrip()
            out.append(f"  -- {title}:")
            out.extend("     " + line for line in text.splitlines())
    if not doc["sandboxes"]:
        out.append("")
        out.append("No sandbox of this pod in the attachment cache on this node.")
    out.append("")
    out.append(f"Last log lines ({len(doc['log'])}):" if doc["log"] else "Last log lines: none")
    out.extend("  " + line for line in doc["log"])
    return "\n".join(out) + "\n"


def _main(argv: list[str], out: IO[str]) -> int:
    p = c.parser("inspect", "Everything multinic knows about one pod on this node.")
    p.add_argument("pod", metavar="NAMESPACE/POD")
    args = p.parse_args(argv)
    ns, name = c.split_pod(args.pod)
    node = c.load(args.conf)
    doc = collect(node, ns, name, args.output == "json")
    out.write(c.dump_json(doc) if args.output == "json" else render(doc))
    return c.EXIT_OK


def main(argv: list[str]) -> int:
    return c.run("inspect", _main, argv)
