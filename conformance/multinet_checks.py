"""The multinet checks: the NPWG "Kubernetes Network Custom Resource Definition De-facto Standard"
(v1.2/v1.3; section numbers as there) judged from what the delegates received and what the pod got.

Each check names its section and level: MUST where the spec says must/shall (or, for the
annotation's JSON keys, where the key "requires" the implementation to do something), SHOULD where it
says should. A check function gets the ``MnCtx`` (conformance/multinet.py); it returns a pass
message or raises ``Fail``/``Skip``. The recorder's calls are attached to every result as evidence.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from .lab import sh
from .model import Check, Fail, Skip
from .multinet import BRIEF, CLUSTER_NET, GLOBAL_NS, OTHER_NS, POD_NS, MnCtx, recorder, recorder_list
from .recorder import HOST_SIDE, network_prefix

MULTINET_CHECKS: dict[str, Check] = {}
PROFILE = frozenset({"multinet"})
SPEC = "NPWG"


def check(cid: str, section: str, level: str, title: str) -> Callable[[Callable[[MnCtx, str], str]], Callable[[MnCtx, str], str]]:
    def deco(fn: Callable[[MnCtx, str], str]) -> Callable[[MnCtx, str], str]:
        MULTINET_CHECKS[cid] = Check(cid, f"{SPEC} {section}", level, PROFILE, title, fn)  # type: ignore[arg-type]
        return fn

    return deco


def _adds(ctx: MnCtx, network: str | None = None) -> list[dict[str, Any]]:
    return [c for c in ctx.calls("ADD") if network is None or (c.get("conf") or {}).get("name") == network]


def _first_plugin_adds(ctx: MnCtx, network: str) -> list[dict[str, Any]]:
    """ADDs of a network's first plugin (later plugins of a list get a prevResult)."""
    return [c for c in _adds(ctx, network) if "prevResult" not in (c.get("conf") or {})]


def _nets(ctx: MnCtx, command: str) -> list[str]:
    """Networks a command reached, in order (for ADD, once per list: its first plugin has no prevResult;
    a DEL carries the cached result as prevResult to every plugin)."""
    return [str((c.get("conf") or {}).get("name")) for c in ctx.calls(command)
            if command != "ADD" or "prevResult" not in (c.get("conf") or {})]


# ---- §3.4 NAD → delegate configuration ------------------------------------------------------


@check("nad-resolution-order", "§3.4.1", "MUST", "spec.config, else an on-disk conflist, else a conf named like the NAD, else fail")
def nad_resolution_order(ctx: MnCtx, _v: str) -> str:
    def on_disk(name: str, conflist: bool, conf: bool) -> None:
        # the .conf sorts first: a plugin that only reads files in order would pick it over the list
        if conf:
            ctx.conf_file(f"05-{name}.conf", recorder(name=name, **{"conformance.source": "conf"}))
        if conflist:
            ctx.conf_file(f"10-{name}.conflist", recorder_list(name, recorder(**{"conformance.source": "conflist"})))

    cases = [("res-spec", "spec"), ("res-list", "conflist"), ("res-conf", "conf")]
    ctx.nad("res-spec", recorder_list("res-spec", recorder(**{"conformance.source": "spec"})))
    on_disk("res-spec", True, True)
    ctx.nad("res-list", None)
    on_disk("res-list", True, True)
    ctx.nad("res-conf", None)
    on_disk("res-conf", False, True)
    for net, want in cases:
        pod = ctx.pod(net)
        ctx.require_add(pod, f"ADD with {net} (expects its {want})")
        got = [(c.get("conf") or {}).get("conformance.source") for c in _first_plugin_adds(ctx, net)]
        if got != [want]:
            raise Fail(f"NAD {net}: the delegate ran the {got or 'no'} config, §3.4.1 picks the {want}")
        ctx.delete(pod)
    ctx.nad("res-none", None)
    pod = ctx.pod("res-none")
    out = ctx.expect_add_fails(pod, "a NAD with no spec.config and no file named like it")
    return f"spec → conflist → conf order kept; nothing to run fails (exit {out.exit_code})"


@check("nad-name-injection", "§3.4.2", "MUST", "a spec.config without 'name' reaches the delegate named after the NAD")
def nad_name_injection(ctx: MnCtx, _v: str) -> str:
    ctx.nad("nameless", recorder(**{"conformance.marker": "nameless"}))
    pod = ctx.pod("nameless")
    ctx.require_add(pod)
    got = [c["conf"].get("name") for c in ctx.calls("ADD") if (c.get("conf") or {}).get("conformance.marker") == "nameless"]
    if got != ["nameless"]:
        raise Fail(f"the delegate got name {got}, want the NAD's name 'nameless'")
    return "name 'nameless' injected"


# ---- §4 the selection annotation ----------------------------------------------------------


def _attached(ctx: MnCtx, nets: list[str]) -> None:
    got = _nets(ctx, "ADD")
    missing = [n for n in nets if n not in got]
    if missing:
        raise Fail(f"networks {missing} were not attached (delegate ADDs: {got})")


@check("annotation-comma-form", "§4.1.1", "MUST", "the comma-delimited form attaches each name and namespace/name")
def annotation_comma_form(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("comma-a")
    ctx.simple_nad("comma-b", GLOBAL_NS)
    pod = ctx.pod(f" comma-a , {GLOBAL_NS}/comma-b")
    ctx.require_add(pod)
    _attached(ctx, ["comma-a", "comma-b"])
    return f"comma-a and {GLOBAL_NS}/comma-b attached"


@check("annotation-json-form", "§4.1.2", "MUST", "the JSON list form attaches each {name, namespace}")
def annotation_json_form(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("json-a")
    ctx.simple_nad("json-b", GLOBAL_NS)
    pod = ctx.pod([{"name": "json-a"}, {"name": "json-b", "namespace": GLOBAL_NS}])
    ctx.require_add(pod)
    _attached(ctx, ["json-a", "json-b"])
    return f"json-a and {GLOBAL_NS}/json-b attached"


@check("annotation-invalid", "§4.1.2.1", "MUST", "an invalid selection annotation fails the pod instead of being dropped")
def annotation_invalid(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("inv-a")
    notes = []
    for label, value in (("truncated JSON", '[{"name": "inv-a"'), ("an 'ips' item that is no address", [{"name": "inv-a", "ips": ["not-an-ip"]}]),
                         ("an item without 'name'", [{"namespace": POD_NS}])):
        pod = ctx.pod(value)
        out = ctx.add(pod)
        if out.ok:
            raise Fail(f"{label}: ADD succeeded (delegates run: {_nets(ctx, 'ADD')}); the pod silently lost its networks")
        notes.append(f"{label} → exit {out.exit_code}")
        ctx.delete(pod)
    return "; ".join(notes)


SELECTION = {
    "ips": ["10.201.0.9/24"],
    "mac": "02:23:45:67:89:01",
    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 1000, "egressBurst": 2000},
    "infiniband-guid": "c2:11:22:33:44:55:66:77",
}
RC_KEY = {"ips": "ips", "mac": "mac", "portMappings": "portMappings", "bandwidth": "bandwidth", "infiniband-guid": "infinibandGUID"}


@check("selection-capabilities", "§4.1.2.1.3-4, .6-7, .10", "MUST",
       "ips, mac, portMappings, bandwidth, infiniband-guid reach only the plugins that declare the capability")
def selection_capabilities(ctx: MnCtx, _v: str) -> str:
    caps = {v: True for v in RC_KEY.values()}
    ctx.nad("caps", recorder_list("caps", recorder(capabilities=caps, **{"conformance.role": "declares"}),
                                  recorder(**{"conformance.role": "declares-none"})))
    pod = ctx.pod([{"name": "caps", **SELECTION}])
    ctx.require_add(pod)
    by_role = {(c.get("conf") or {}).get("conformance.role"): c["conf"] for c in _adds(ctx, "caps")}
    if set(by_role) != {"declares", "declares-none"}:
        raise Fail(f"the network's two plugins were not both run: {sorted(map(str, by_role))}")
    rc = by_role["declares"].get("runtimeConfig") or {}
    wrong = [k for k, rk in RC_KEY.items() if not _same(k, rc.get(rk), SELECTION[k])]
    if wrong:
        raise Fail(f"the declaring plugin's runtimeConfig lacks or alters {wrong}: {rc}")
    leaked = sorted(set(by_role["declares-none"].get("runtimeConfig") or {}) & set(RC_KEY.values()))
    if leaked:
        raise Fail(f"a plugin declaring no capability got runtimeConfig {leaked}")
    return "all five reached the declaring plugin and only it"


def _same(key: str, got: Any, want: Any) -> bool:
    if key == "ips":
        try:
            return [str(ipaddress.ip_interface(x)) for x in got] == [str(ipaddress.ip_interface(x)) for x in want]
        except (TypeError, ValueError):
            return False
    if key in ("mac", "infiniband-guid"):
        return isinstance(got, str) and got.lower() == want.lower()
    return bool(got == want)


@check("selection-interface", "§4.1.2.1.5", "MUST", "'interface' is the CNI_IFNAME of that attachment's ADD and DEL")
def selection_interface(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("ifreq")
    pod = ctx.pod([{"name": "ifreq", "interface": "mncif7"}])
    ctx.require_add(pod)
    ctx.delete(pod)
    got = {(c["command"], c["env"].get("CNI_IFNAME")) for c in ctx.calls() if (c.get("conf") or {}).get("name") == "ifreq"}
    if got != {("ADD", "mncif7"), ("DEL", "mncif7")}:
        raise Fail(f"ifreq was called as {sorted(got)}, want ADD and DEL with CNI_IFNAME=mncif7")
    return "ADD and DEL with CNI_IFNAME=mncif7"


@check("selection-interface-duplicate", "§4.1.2.1.5", "MUST", "an interface name used by an earlier attachment fails the pod")
def selection_interface_duplicate(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("dup-a")
    ctx.simple_nad("dup-b")
    pod = ctx.pod([{"name": "dup-a", "interface": "dup0"}, {"name": "dup-b", "interface": "dup0"}])
    ctx.expect_add_fails(pod, "two attachments asking for interface dup0")
    second = [c for c in _adds(ctx, "dup-b") if c["env"].get("CNI_IFNAME") == "dup0"]
    if second:
        raise Fail("the second attachment was ADDed with CNI_IFNAME=dup0 anyway (only the kernel refused it)")
    return "refused before the second delegate ran"


@check("selection-cni-args", "§4.1.2.1.8", "MUST", "'cni-args' reach the delegate's args.cni, over the NAD's own values")
def selection_cni_args(ctx: MnCtx, _v: str) -> str:
    ctx.nad("cargs", recorder_list("cargs", recorder(args={"cni": {"over": "nad", "keep": "nad"}})))
    pod = ctx.pod([{"name": "cargs", "cni-args": {"over": "pod", "extra": "x"}}])
    ctx.require_add(pod)
    got = [((c["conf"].get("args") or {}).get("cni") or {}) for c in _first_plugin_adds(ctx, "cargs")]
    if not got or got[0].get("over") != "pod" or got[0].get("extra") != "x":
        raise Fail(f"args.cni the delegate got: {got}; want over=pod, extra=x")
    return f"args.cni {got[0]}"


def _defaults(ctx: MnCtx, netns: str) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = json.loads(sh("ip", "-j", "-4", "route", "show", "default", ns=netns) or "[]")
    ctx.evidence.append({"label": "pod default routes", "stdout": json.dumps(routes)})
    return routes


@check("selection-default-route", "§4.1.2.1.9", "MUST",
       "'default-route' moves the pod's default route to that attachment; two such attachments fail the pod")
def selection_default_route(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("dr-a")
    ctx.simple_nad("dr-b")
    gw = f"{network_prefix('dr-a')}.0.1"
    pod = ctx.pod([{"name": "dr-a", "interface": "dra0", "default-route": [gw]}, {"name": "dr-b"}])
    ctx.require_add(pod)
    routes = _defaults(ctx, pod.netns)
    if [(r.get("gateway"), r.get("dev")) for r in routes] != [(gw, "dra0")]:
        raise Fail(f"pod default routes {[(r.get('gateway'), r.get('dev')) for r in routes]}, want only via {gw} dev dra0 "
                   "(the cluster network's default route must go)")
    ctx.delete(pod)
    two = ctx.pod([{"name": "dr-a", "default-route": [gw]}, {"name": "dr-b", "default-route": [f"{network_prefix('dr-b')}.0.1"]}])
    ctx.expect_add_fails(two, "two attachments with default-route")
    return f"default via {gw} dev dra0 only; two default-route attachments refused"


@check("same-network-twice", "§4.2", "MUST",
       "one network twice = two attachments with distinct ifnames, the same (containerID, network, ifname) on ADD and DEL")
def same_network_twice(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("twice")
    pod = ctx.pod("twice,twice")
    ctx.require_add(pod)
    status = ctx.status(pod)
    ctx.delete(pod)
    tuples = {cmd: sorted((c["env"].get("CNI_CONTAINERID"), c["conf"].get("name"), c["env"].get("CNI_IFNAME"))
                          for c in ctx.calls(cmd) if (c.get("conf") or {}).get("name") == "twice")
              for cmd in ("ADD", "DEL")}
    adds = tuples["ADD"]
    if len(adds) != 2 or len(set(adds)) != 2:
        raise Fail(f"ADD tuples {adds}: want two distinct attachments")
    if tuples["DEL"] != adds:
        raise Fail(f"DEL tuples {tuples['DEL']} differ from ADD tuples {adds}")
    entries = [e for e in status if isinstance(e, dict) and str(e.get("name", "")).endswith("/twice")]
    if len(entries) != 2:
        raise Fail(f"network-status has {len(entries)} entries for twice, want 2")
    return f"attachments {[t[2] for t in adds]}, stable on DEL, two status entries"


# ---- §5 network-status ---------------------------------------------------------------------


@check("status-entries", "§5", "MUST",
       "network-status: one entry per attachment, cluster first and the only default, names namespace-qualified, "
       "interface/ips/mac/dns of the sandbox interface")
def status_entries(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("st-a")
    ctx.simple_nad("st-b", GLOBAL_NS)
    pod = ctx.pod(f"st-a,{GLOBAL_NS}/st-b")
    ctx.require_add(pod)
    status = ctx.status(pod)
    if not isinstance(status, list) or len(status) != 3:
        raise Fail(f"{len(status) if isinstance(status, list) else 'not a list:'} entries, want 3 (cluster + 2)")
    defaults = [e for e in status if e.get("default") is True]
    if len(defaults) != 1 or status[0] is not defaults[0]:
        raise Fail(f"default: true on {[e.get('name') for e in defaults]}; want exactly one, the first entry (cluster)")
    want_names = [f"{POD_NS}/st-a", f"{GLOBAL_NS}/st-b"]
    if [e.get("name") for e in status[1:]] != want_names:
        raise Fail(f"secondary names {[e.get('name') for e in status[1:]]}, want {want_names}")
    results = {str((c.get("conf") or {}).get("name")): c["result"] for c in _first_plugin_adds(ctx, "st-a") + _first_plugin_adds(ctx, "st-b")}
    for entry, net in zip(status[1:], ("st-a", "st-b"), strict=True):
        res = results.get(net) or {}
        sandbox: dict[str, Any] = next((i for i in res.get("interfaces") or [] if i.get("sandbox")), {})
        if entry.get("interface") != sandbox.get("name") or entry.get("interface") == HOST_SIDE:
            raise Fail(f"{net}: interface {entry.get('interface')!r}, the sandbox interface is {sandbox.get('name')!r}")
        if str(entry.get("mac", "")).lower() != str(sandbox.get("mac", "")).lower():
            raise Fail(f"{net}: mac {entry.get('mac')!r}, the sandbox interface has {sandbox.get('mac')!r}")
        want_ips = [str(ipaddress.ip_interface(i["address"]).ip) for i in res.get("ips") or []]
        got_ips = [str(x).split("/")[0] for x in entry.get("ips") or []]
        if got_ips != want_ips:
            raise Fail(f"{net}: ips {entry.get('ips')}, the result has {want_ips}")
        dns = entry.get("dns") or {}
        if dns.get("nameservers") != (res.get("dns") or {}).get("nameservers"):
            raise Fail(f"{net}: dns {dns}, the result has {res.get('dns')}")
    return f"{[e.get('name') for e in status]}, default first, sandbox interface fields"


DEVICE_TYPES = {"pci": "pci", "vdpa": "vdpa", "vhost-user": "vhost-user", "memif": "memif"}


@check("status-device-info", "§5 (Device Info Spec v1.1)", "MUST",
       "a 'device-info' in network-status has a known type, a version and that type's fields")
def status_device_info(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("dev-a")
    pod = ctx.pod("dev-a")
    ctx.require_add(pod)
    infos = [(e.get("name"), e["device-info"]) for e in ctx.status(pod) if isinstance(e, dict) and "device-info" in e]
    if not infos:
        raise Skip("no entry carries device-info (the recording delegate is no device plugin): nothing to judge")
    for name, info in infos:
        if not isinstance(info, dict) or info.get("type") not in DEVICE_TYPES:
            raise Fail(f"{name}: device-info type {info.get('type') if isinstance(info, dict) else info!r} is not one of {sorted(DEVICE_TYPES)}")
        if not isinstance(info.get("version"), str) or not re.fullmatch(r"\d+\.\d+\.\d+", info["version"]):
            raise Fail(f"{name}: device-info version {info.get('version')!r} is not a semantic version string")
        if not isinstance(info.get(DEVICE_TYPES[info["type"]]), dict):
            raise Fail(f"{name}: device-info of type {info['type']} has no {DEVICE_TYPES[info['type']]!r} object")
    return f"{len(infos)} device-info entr(ies) well-formed"


# ---- §6 the cluster network ----------------------------------------------------------------


@check("cluster-network-first", "§6 / §6.2", "MUST", "the cluster network is attached first, as CNI_IFNAME, before any selected network")
def cluster_network_first(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("after-a")
    ctx.simple_nad("after-b")
    pod = ctx.pod("after-a,after-b")
    ctx.require_add(pod)
    adds = sorted(_adds(ctx), key=lambda c: c["t0"])
    first = adds[0] if adds else {}
    if (first.get("conf") or {}).get("name") != CLUSTER_NET:
        raise Fail(f"first delegate ADD was {(first.get('conf') or {}).get('name')!r}, want the cluster network {CLUSTER_NET}")
    if first["env"].get("CNI_IFNAME") != pod.ifname:
        raise Fail(f"the cluster network got CNI_IFNAME {first['env'].get('CNI_IFNAME')!r}, the runtime asked for {pod.ifname!r}")
    return f"order {[str((c.get('conf') or {}).get('name')) for c in adds]}"


@check("readiness-gating", "§6.1.2", "MUST", "while the cluster network is not ready, ADD fails without attaching anything")
def readiness_gating(ctx: MnCtx, _v: str) -> str:
    import os

    if ctx.mlab.readiness not in json.dumps(ctx.conflist):
        raise Skip("the conflist has no {{readinessFile}}: the meta-plugin's readiness signal is unknown to the harness")
    os.unlink(ctx.mlab.readiness)
    pod = ctx.pod()
    out = ctx.add(pod)
    if out.ok:
        raise Fail("ADD succeeded although the cluster network's readiness indicator is missing")
    if _adds(ctx):
        raise Fail(f"delegates were ADDed while not ready: {_nets(ctx, 'ADD')}")
    ctx.delete(pod)
    open(ctx.mlab.readiness, "w").close()
    ready = ctx.pod()
    ctx.require_add(ready, "ADD once ready")
    return f"not ready → exit {out.exit_code}, no delegate called; ready → attached"


# ---- §7 runtime considerations -------------------------------------------------------------


def _three_with(ctx: MnCtx, prefix: str) -> tuple[list[str], Any]:
    nets = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    for n in nets:
        ctx.simple_nad(n)
    return nets, ctx.pod(",".join(nets))


@check("fail-fast", "§7.2", "MUST", "an attachment that fails fails ADD at once: later attachments are not attempted")
def fail_fast(ctx: MnCtx, _v: str) -> str:
    nets, pod = _three_with(ctx, "ff")
    ctx.behave({nets[1]: {"fail": {"ADD": 11}}})
    out = ctx.expect_add_fails(pod, f"{nets[1]} fails its ADD")
    if _first_plugin_adds(ctx, nets[2]):
        raise Fail(f"{nets[2]} was attempted after {nets[1]} failed")
    return f"exit {out.exit_code}: {out.brief(120)}"


@check("rollback-on-failure", "§7.2", "SHOULD", "a failed ADD removes the attachments it already made before returning")
def rollback_on_failure(ctx: MnCtx, _v: str) -> str:
    nets, pod = _three_with(ctx, "rb")
    ctx.behave({nets[1]: {"fail": {"ADD": 11}}})
    ctx.expect_add_fails(pod, f"{nets[1]} fails its ADD")
    undone = set(_nets(ctx, "DEL"))
    missing = [n for n in (CLUSTER_NET, nets[0]) if n not in undone]
    if missing:
        raise Fail(f"after the failed ADD (before any runtime DEL) {missing} were left attached")
    links = [ln["ifname"] for ln in json.loads(sh("ip", "-j", "link", "show", ns=pod.netns) or "[]") if ln["ifname"] != "lo"]
    if links:
        raise Fail(f"interfaces left in the pod after the failed ADD: {links}")
    return f"{sorted(undone)} DEL'd, pod empty"


@check("del-every-attachment", "§7.2", "MUST", "DEL tears down every attachment although some fail, and reports each failure")
def del_every_attachment(ctx: MnCtx, _v: str) -> str:
    nets, pod = _three_with(ctx, "da")
    ctx.require_add(pod)
    failing = [nets[0], nets[2]]
    ctx.behave({n: {"fail": {"DEL": 11}} for n in failing})
    out = ctx.call("DEL", pod, label=f"DEL ({' and '.join(failing)} fail their DEL)")
    dels = set(_nets(ctx, "DEL"))
    missing = [n for n in (CLUSTER_NET, *nets) if n not in dels]
    if missing:
        raise Fail(f"DEL did not try {missing} once {nets[2]}'s DEL had failed")
    if out.ok:
        raise Fail(f"DEL exited 0 although {failing} failed: the runtime must learn that teardown failed")
    text = out.stdout.decode("utf-8", "replace")
    unnamed = [n for n in failing if n not in text]
    if unnamed:
        raise Fail(f"the DEL error does not report the failure of {unnamed}: {out.brief(BRIEF)}")
    ctx.behave({})
    return f"every attachment DEL'd, both failures reported (exit {out.exit_code})"


def _overlaps(calls: list[dict[str, Any]]) -> list[tuple[str, str]]:
    spans = sorted((c["t0"], c["t1"], f"{c['command']} {(c.get('conf') or {}).get('name')}") for c in calls)
    return [(a[2], b[2]) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]


@check("serial-attachments", "§7.3", "MUST", "the attachments of one pod are never ADDed or DELed in parallel")
def serial_attachments(ctx: MnCtx, _v: str) -> str:
    nets, pod = _three_with(ctx, "se")
    ctx.behave({n: {"sleep": 0.3} for n in (CLUSTER_NET, *nets)})
    ctx.require_add(pod)
    ctx.delete(pod)
    for cmd in ("ADD", "DEL"):
        both = _overlaps(ctx.calls(cmd))
        if both:
            raise Fail(f"{cmd}s overlapped in time: {both}")
    return f"{len(ctx.calls('ADD'))} ADDs and {len(ctx.calls('DEL'))} DELs, one at a time"


@check("disallowed-nad", "§7.4", "MUST", "a NAD the implementation does not allow for the pod fails the pod")
def disallowed_nad(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("forbidden", OTHER_NS)
    pod = ctx.pod(f"{OTHER_NS}/forbidden")
    out = ctx.expect_add_fails(pod, f"a NAD in {OTHER_NS} (neither the pod's namespace nor global) under namespace isolation")
    if _adds(ctx, "forbidden"):
        raise Fail("the disallowed network's delegate was ADDed before the failure")
    return f"refused (exit {out.exit_code})"


KUBELET_RC = {"portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}],
              "bandwidth": {"ingressRate": 777, "ingressBurst": 777, "egressRate": 777, "egressBurst": 777}}


@check("runtimeconfig-cluster-only", "§7.5", "MUST", "kubelet's runtimeConfig never reaches a selected network's plugins")
def runtimeconfig_cluster_only(ctx: MnCtx, _v: str) -> str:
    ctx.simple_nad("rc-a")
    pod = ctx.pod("rc-a")
    ctx.require_add(pod, runtime_config=KUBELET_RC)
    leaked = [((c.get("conf") or {}).get("name"), k) for c in ctx.calls() if (c.get("conf") or {}).get("name") != CLUSTER_NET
              for k, v in ((c.get("conf") or {}).get("runtimeConfig") or {}).items() if KUBELET_RC.get(k) == v]
    if leaked:
        raise Fail(f"kubelet's runtimeConfig reached selected networks: {leaked}")
    cluster = [c for c in _first_plugin_adds(ctx, CLUSTER_NET) if (c["conf"].get("runtimeConfig") or {}).get("portMappings")]
    return "secondaries got none of it" + ("; the cluster network got it" if cluster else "")


# ---- the whole run (last) -------------------------------------------------------------------


@check("run-leaks", "§7.2 + CNI SPEC §DEL (whole run)", "MUST",
       "after the run's last DEL, the caller's namespace, a fresh pod namespace and the data dir are as before its first call")
def run_leaks(ctx: MnCtx, _v: str) -> str:
    """The meta-plugin's cache, state files and host-side changes must all go with the pods they were for
    (rules: conformance/leaks.py; the recorder's own log lives outside the compared dirs)."""
    from . import leaks

    if ctx.run_baseline is None:
        raise Skip("no whole-run baseline (run every check, or include run-leaks in --only)")
    verdict = leaks.judge(ctx.run_baseline, ctx.whole(), ctx.run_marks, host_ifaces=set(), cid_prefix=ctx.cid_prefix,
                          addresses=ctx.addresses(), read=leaks.read_head)
    ctx.evidence.append(leaks.as_evidence(verdict))
    if verdict.leaks:
        raise Fail(f"left behind by the run: {leaks.summarise(verdict.leaks)}")
    kept = f"; shared state kept: {len(verdict.kept)} item(s)" if verdict.kept else ""
    return f"nothing left after {len(ctx.run_marks)} check(s){kept}"
