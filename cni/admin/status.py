"""``multinic status [--check]``: every pod sandbox in this node's attachment cache, one row per attachment.

Columns: namespace/pod, container ID (short), netns, network, interface, IPs, state, age; ``--check``
runs CNI CHECK for each added attachment (its cached result as prevResult, as the runtime would) and
shows the outcome. A sandbox whose netns is gone is flagged: the runtime's DEL (or ``leaks --fix``)
should remove it. Exit 1 when anything is flagged or a CHECK fails.
"""

from __future__ import annotations

import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..delegator.cache import Entry

from . import common as c


def check_attachment(node: c.NodeConf, sb: c.Sandbox, entry: Entry) -> str:
    """CNI CHECK of one attachment: "ok", "skipped: …" or "failed: <error>"."""
    from ..delegator.context import Context, Runner
    from ..spec import versions
    from ..spec.errors import CNIError
    from ..spec.request import Request
    from ..spec.result import from_wire

    att = entry.attachment
    if not sb.netns_alive:
        return "skipped: netns gone"
    if entry.state != "added":
        return f"skipped: {entry.state}"
    if not versions.at_least(att.conflist.cni_version, "0.4.0"):
        return f"skipped: cniVersion {att.conflist.cni_version} has no CHECK"
    rec = sb.record
    req = Request("CHECK", rec.container_id, rec.netns, att.ifname,
                  {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": rec.pod_namespace, "K8S_POD_NAME": rec.pod_name,
                   "K8S_POD_UID": rec.pod_uid, "K8S_POD_INFRA_CONTAINER_ID": rec.container_id},
                  c.cni_path(node), {})
    ctx = Context(req, node.cfg, None, Runner())
    try:
        prev = from_wire(entry.result) if entry.result else None
        ctx.runner.check(ctx.base_for(att), att.plugin_list(), prev, att.runtime_config)
    except CNIError as exc:
        return f"failed: {exc}"
    return "ok"


def collect(node: c.NodeConf, run_check: bool) -> list[dict[str, Any]]:
    out = []
    now = time.time()
    for sb in c.sandboxes(node.cfg.cni_dir):
        rec = sb.record
        atts = []
        for i, e in enumerate(rec.entries):
            a: dict[str, Any] = {
                "network": e.attachment.name, "interface": e.attachment.ifname,
                "ips": c.result_ips(e.result), "state": c.attachment_state(rec.entries, i),
                "primary": e.attachment.primary,
            }
            if run_check:
                a["check"] = check_attachment(node, sb, e)
            atts.append(a)
        out.append({
            "namespace": rec.pod_namespace, "pod": rec.pod_name, "podUID": rec.pod_uid,
            "containerID": rec.container_id, "netns": rec.netns, "netnsAlive": sb.netns_alive,
            "state": c.sandbox_state(rec.entries), "ageSeconds": int(now - sb.mtime) if sb.mtime else None,
            "problems": sb.problems, "attachments": atts,
        })
    return out


def flagged(doc: list[dict[str, Any]]) -> bool:
    # A pending attachment is an ADD still running, not a problem.
    return any(s["problems"] or s["state"] in ("failed", "partially removed", "removed", "empty") or
               any(str(a.get("check", "ok")).startswith("failed") for a in s["attachments"]) for s in doc)


def render(doc: list[dict[str, Any]], run_check: bool) -> str:
    if not doc:
        return "no pod sandboxes in the attachment cache\n"
    headers = ["POD", "CONTAINER", "NETNS", "NETWORK", "IF", "IPS", "STATE", "AGE"] + (["CHECK"] if run_check else [])
    rows = []
    for s in doc:
        netns = s["netns"] + ("" if s["netnsAlive"] else " (gone)")
        pod = f"{s['namespace']}/{s['pod']}" if s["pod"] else "-"
        first = True
        for a in s["attachments"] or [{"network": "-", "interface": "-", "ips": [], "state": s["state"]}]:
            row = [pod if first else "", s["containerID"][:12] if first else "", netns if first else "",
                   a["network"], a["interface"], ",".join(a["ips"]) or "-", a["state"],
                   c.age(s["ageSeconds"]) if first and s["ageSeconds"] is not None else ("" if not first else "-")]
            if run_check:
                row.append(a.get("check", "-"))
            rows.append(row)
            first = False
    text = c.table(headers, rows)
    notes = [f"{s['namespace']}/{s['pod']} ({s['containerID'][:12]}): {p}" for s in doc for p in s["problems"]]
    if notes:
        text += "\n" + "".join(f"! {n}\n" for n in notes)
        if any(not s["netnsAlive"] for s in doc):
            text += "  sandboxes whose netns is gone are removed by the runtime's DEL, or by `multinic leaks --fix`\n"
    return text


def _main(argv: list[str], out: IO[str]) -> int:
    p = c.parser("status", "Every pod sandbox in this node's attachment cache.")
    p.add_argument("--check", action="store_true", help="run CNI CHECK for every attachment and show the outcome")
    args = p.parse_args(argv)
    node = c.load(args.conf)
    doc = collect(node, args.check)
    out.write(c.dump_json(doc) if args.output == "json" else render(doc, args.check))
    return c.EXIT_PROBLEMS if flagged(doc) else c.EXIT_OK


def main(argv: list[str]) -> int:
    return c.run("status", _main, argv)
