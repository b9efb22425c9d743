"""The checks. Each names the spec section it enforces, its level and the profiles it applies to.

A check function gets the context and a version ("" unless the check runs per version); it
returns a pass message, or raises ``Fail``/``Skip``. Every plugin call it makes is recorded as
evidence automatically; state diffs are recorded by ``ctx.diff``.

Levels: MUST where the spec (or libcni's contract that runtimes rely on) says must; SHOULD
where it says should, or where the harness encodes a best practice (leaving nothing behind
after a failed ADD: the spec lets the runtime's DEL clean up, but leftovers leak when it does
not come).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import profiles
from .context import Ctx, Pod, vkey
from .lab import sh
from .model import Check, Fail, Skip

CHECKS: dict[str, Check] = {}

IFACE = frozenset({"interface", "meta"})
POOL = frozenset({"interface", "meta", "ipam"})
ALL = frozenset(profiles.PROFILES)
RICH = ("0.3.0", "0.3.1", "0.4.0")


def check(
    cid: str, section: str, level: str, profiles_: frozenset[str], title: str, *, per_version: bool = False,
    min_version: str | None = None,
) -> Callable[[Callable[[Ctx, str], str | None]], Callable[[Ctx, str], str | None]]:
    def deco(fn: Callable[[Ctx, str], str | None]) -> Callable[[Ctx, str], str | None]:
        CHECKS[cid] = Check(cid, section, level, profiles_, title, fn, per_version, min_version)  # type: ignore[arg-type]
        return fn

    return deco


def expect_ok(out: Any, what: str) -> None:
    """``what`` (e.g. "DEL without ADD") must have exited 0; else Fail with its exit code and output."""
    if not out.ok:
        raise Fail(f"{what} failed (exit {out.exit_code}): {out.brief()}")


def expect_error(out: Any, code: int | None, what: str) -> str:
    if out.ok:
        raise Fail(f"{what}: succeeded (exit 0), expected an error{'' if code is None else f' with code {code}'}")
    problem = out.envelope_problem()
    if problem:
        raise Fail(f"{what}: not a CNI error: {problem}")
    if code is not None and out.code != code:
        raise Fail(f"{what}: error code {out.code}, want {code} ({out.doc.get('msg')!r})")
    return f"{what}: error {out.code} ({out.doc.get('msg')!r})"


def _result_ips(result: dict[str, Any]) -> list[str]:
    return [str(ip.get("address", "")).split("/")[0] for ip in result.get("ips") or []]


def _sandbox_iface(ctx: Ctx, pod: Pod, result: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    for i, itf in enumerate(result.get("interfaces") or []):
        if itf.get("sandbox") == pod.path and itf.get("name") == pod.ifname:
            return i, itf
    raise Fail(f"result has no interface {pod.ifname!r} with sandbox {pod.path!r}: {result.get('interfaces')}")


def _host_exempt(ctx: Ctx, pods: list[Pod], results: list[Any]) -> tuple[set[str], set[str]]:
    """Interfaces and categories a profile may change in the caller's namespace."""
    names: set[str] = set()
    for pod in pods:
        names |= pod.exempt
    for res in results:
        if not isinstance(res, dict):
            continue
        for itf in res.get("interfaces") or []:
            if isinstance(itf, dict) and not itf.get("sandbox"):
                names.add(str(itf.get("name", "")))
    cats = set() if ctx.profile == "ipam" else {"iptables", "ip6tables", "nft"}
    return names, cats


# ---- VERSION and errors ------------------------------------------------------------------


@check("version-shape", "SPEC §VERSION", "MUST", ALL, "VERSION prints one {cniVersion, supportedVersions} document")
def version_shape(ctx: Ctx, _v: str) -> str:
    out = ctx.call("VERSION", {"cniVersion": ctx.versions[-1]})
    if not out.ok:
        raise Fail(f"VERSION exited {out.exit_code}: {out.brief()}")
    doc = out.doc
    if not isinstance(doc, dict):
        raise Fail(f"stdout is not exactly one JSON object: {out.brief()}")
    if not isinstance(doc.get("cniVersion"), str):
        raise Fail(f"no string cniVersion in {doc}")
    sv = doc.get("supportedVersions")
    if not isinstance(sv, list) or not sv or not all(isinstance(v, str) for v in sv):
        raise Fail(f"supportedVersions is not a non-empty list of strings: {sv!r}")
    bad = [v for v in sv if len(v.split(".")) != 3 or not all(p.isdigit() for p in v.split("."))]
    if bad:
        raise Fail(f"supportedVersions holds non-semver entries {bad}")
    return f"supports {sv}"


@check("versions-supported", "SPEC §VERSION", "SHOULD", ALL, "the plugin supports every requested CNI version")
def versions_supported(ctx: Ctx, _v: str) -> str:
    ctx.evidence.extend(ctx.version_evidence)
    missing = [v for v in ctx.versions if v not in ctx.supported]
    if missing:
        extra = " (no STATUS/GC)" if "1.1.0" in missing else ""
        raise Fail(f"requested {missing} not supported{extra}; plugin supports {ctx.supported}")
    return f"all of {ctx.versions}"


@check("error-envelope", "SPEC §Error", "MUST", ALL, "errors are one JSON {code, msg, details} document with non-zero exit")
def error_envelope(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    notes = []
    for label, conf in (("bad JSON", b'{"cniVersion": "%s", "name": ' % version.encode()),
                        ("unsupported version", {**ctx.conf(version, pod), "cniVersion": "99.0.0"})):
        out = ctx.call("ADD", conf, pod, cid=ctx.cid(), label=f"ADD ({label})")
        problem = out.envelope_problem()
        if problem:
            raise Fail(f"{label}: {problem}")
        notes.append(f"{label} → code {out.code}")
    return "; ".join(notes)


@check("error-missing-env", "SPEC §Error codes", "MUST", ALL, "missing CNI_CONTAINERID is error 4")
def error_missing_env(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    out = ctx.call("ADD", ctx.conf(version, pod), pod, cid="unused", omit=("CNI_CONTAINERID",), label="ADD without CNI_CONTAINERID")
    return expect_error(out, 4, "ADD without CNI_CONTAINERID")


@check("error-bad-json", "SPEC §Error codes", "MUST", ALL, "undecodable config on stdin is error 6")
def error_bad_json(ctx: Ctx, _v: str) -> str:
    pod = ctx.pod()
    out = ctx.call("ADD", b'{"cniVersion": "1.0.0", "name": "x", "type":', pod, cid=ctx.cid(), label="ADD (truncated JSON)")
    return expect_error(out, 6, "truncated JSON")


@check("error-unsupported-version", "SPEC §Error codes", "MUST", ALL, "an unsupported cniVersion is error 1")
def error_unsupported_version(ctx: Ctx, _v: str) -> str:
    pod = ctx.pod()
    conf = {**ctx.conf(ctx.primary(), pod), "cniVersion": "99.0.0"}
    out = ctx.add(pod, "99.0.0", ctx.cid(), conf)
    return expect_error(out, 1, "cniVersion 99.0.0")


@check("error-invalid-config", "SPEC §Error codes", "SHOULD", ALL, "a config field of the wrong type is error 7")
def error_invalid_config(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    conf = profiles.invalid_variant(ctx.profile, ctx.conf(version, pod))
    out = ctx.add(pod, version, ctx.cid(), conf)
    return expect_error(out, 7, "invalid config")


# ---- results -----------------------------------------------------------------------------


def validate_result(ctx: Ctx, version: str, pod: Pod, out: Any) -> dict[str, Any]:
    """Raise Fail unless ``out`` is a well-formed ``version`` result for ``pod``."""
    from cni.spec.result import from_wire  # schema validation shared with multinic (pure)

    expect_ok(out, "ADD")
    docs = out.docs
    if len(docs) != 1 or out.doc is None:
        raise Fail(f"stdout holds {len(docs)} JSON document(s) (plus junk?), want exactly one result")
    doc = out.doc
    if not isinstance(doc, dict):
        raise Fail("result is not a JSON object")
    if doc.get("cniVersion") != version:
        raise Fail(f"result cniVersion {doc.get('cniVersion')!r}, requested {version}")
    try:
        from_wire(doc, version)
    except Exception as exc:
        raise Fail(f"result does not parse as CNI {version}: {exc}") from None
    for i, ip in enumerate(doc.get("ips") or []):
        if version in RICH and ip.get("version") not in ("4", "6"):
            raise Fail(f"ips[{i}].version missing or wrong ({ip.get('version')!r}); CNI {version} requires it")
        if vkey(version) >= (1, 0, 0) and "version" in ip:
            raise Fail(f"ips[{i}].version present; CNI {version} removed it")
    if ctx.profile == "ipam":
        if doc.get("interfaces"):
            raise Fail(f"IPAM result has interfaces: {doc['interfaces']}")
        if any("interface" in ip for ip in doc.get("ips") or []):
            raise Fail("IPAM result ips[] carry 'interface' indexes")
    elif ctx.profile in IFACE:
        idx, _ = _sandbox_iface(ctx, pod, doc)
        for i, ip in enumerate(doc.get("ips") or []):
            if ip.get("interface") is None:
                raise Fail(f"ips[{i}] does not say which interface it is on")
        for i, itf in enumerate(doc.get("interfaces") or []):
            if itf.get("sandbox") and itf["sandbox"] != pod.path:
                raise Fail(f"interfaces[{i}].sandbox {itf['sandbox']!r} is not CNI_NETNS {pod.path!r}")
    return doc


@check("result-schema", "SPEC §Result", "MUST", ALL, "ADD prints one valid result in the requested version", per_version=True)
def result_schema(ctx: Ctx, version: str) -> str:
    pod = ctx.pod()
    cid = ctx.cid()
    out = ctx.add(pod, version, cid)
    doc = validate_result(ctx, version, pod, out)
    ctx.delete(pod, version, cid, doc)
    return f"{len(doc.get('interfaces') or [])} interface(s), ips {_result_ips(doc)}"


def _norm_dst(dst: str) -> str:
    if dst == "default":
        return "0.0.0.0/0"
    return str(ipaddress.ip_network(dst, strict=False))


@check("add-side-effects", "SPEC §ADD", "MUST", IFACE, "the interface, MAC, addresses and routes in the result exist in the netns")
def add_side_effects(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    idx, itf = _sandbox_iface(ctx, pod, doc)
    links = json.loads(sh("ip", "-j", "addr", "show", ns=pod.ns) or "[]")
    link = next((ln for ln in links if ln["ifname"] == pod.ifname), None)
    ctx.evidence.append({"label": "pod links", "stdout": json.dumps(links)[:4000]})
    if link is None:
        raise Fail(f"{pod.ifname} does not exist in {pod.path}")
    if "UP" not in link.get("flags", []):
        raise Fail(f"{pod.ifname} is not up (flags {link.get('flags')})")
    if itf.get("mac") and itf["mac"].lower() != link.get("address", "").lower():
        raise Fail(f"result MAC {itf['mac']} but {pod.ifname} has {link.get('address')}")
    have = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
    for ip in doc.get("ips") or []:
        if ip.get("interface") == idx and str(ipaddress.ip_interface(ip["address"])) not in {str(ipaddress.ip_interface(h)) for h in have}:
            raise Fail(f"{ip['address']} is in the result but not on {pod.ifname} (has {sorted(have)})")
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all", ns=pod.ns) or "[]")
    routes += json.loads(sh("ip", "-j", "-6", "route", "show", "table", "all", ns=pod.ns) or "[]")
    for r in doc.get("routes") or []:
        dst = _norm_dst(r["dst"])
        match = [x for x in routes if _norm_dst(x.get("dst", "")) == dst and (not r.get("gw") or x.get("gateway") == r["gw"])]
        if not match:
            raise Fail(f"route {r} is in the result but not in the netns")
    ctx.delete(pod, version, cid, doc)
    return f"{pod.ifname} up, MAC, {len(have)} address(es), {len(doc.get('routes') or [])} route(s) verified"


@check("add-twice-fails", "SPEC §ADD", "MUST", IFACE, "a second ADD for an existing CNI_IFNAME fails")
def add_twice_fails(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    again = ctx.call("ADD", ctx.conf(version, pod), pod, cid=ctx.cid(), label="ADD (same ifname)")
    if again.ok:
        raise Fail(f"second ADD on existing {pod.ifname} succeeded")
    msg = expect_error(again, None, "second ADD")
    ctx.delete(pod, version, cid, doc)
    return msg


# ---- DEL ---------------------------------------------------------------------------------


@check("del-idempotent", "SPEC §DEL", "MUST", ALL, "DEL twice succeeds both times")
def del_idempotent(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    for n in (1, 2):
        out = ctx.delete(pod, version, cid, doc, label=f"DEL #{n}")
        expect_ok(out, f"DEL #{n}")
    return "both DELs exit 0"


@check("del-without-add", "SPEC §DEL", "MUST", ALL, "DEL of a container never added succeeds")
def del_without_add(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    out = ctx.delete(pod, version, ctx.cid())
    expect_ok(out, "DEL without ADD")
    return "exit 0"


@check("del-without-prevresult", "SPEC §DEL", "MUST", ALL, "DEL without prevResult succeeds and releases everything",
       min_version="0.4.0")
def del_without_prevresult(ctx: Ctx, _v: str) -> str:
    version = ctx.primary("0.4.0")
    pod = ctx.pod()
    cid = ctx.cid()
    before = ctx.snapshot(pod)
    ctx.require_add(ctx.add(pod, version, cid))
    out = ctx.delete(pod, version, cid, None, label="DEL (no prevResult)")
    expect_ok(out, "DEL without prevResult")
    d = ctx.diff(before, ctx.snapshot(pod))
    if d:
        raise Fail(f"state left behind: {_summarise(d)}")
    return "exit 0, nothing left"


@check("del-empty-netns", "SPEC §DEL", "SHOULD", ALL, "DEL with an empty CNI_NETNS succeeds")
def del_empty_netns(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    out = ctx.delete(pod, version, cid, doc, netns="", label="DEL (CNI_NETNS='')")
    expect_ok(out, "DEL with empty CNI_NETNS")
    ctx.delete(pod, version, cid, doc, label="DEL (cleanup)")
    return "exit 0"


@check("del-deleted-netns", "SPEC §DEL", "SHOULD", ALL, "DEL after the netns is gone succeeds and releases IPAM")
def del_deleted_netns(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    before = ctx.snapshot()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    ctx.lab.drop(pod.ns)
    out = ctx.delete(pod, version, cid, doc, label="DEL (netns deleted)")
    expect_ok(out, "DEL with a deleted netns")
    d = ctx.diff(before, ctx.snapshot(), exempt=pod.exempt)
    if d:
        raise Fail(f"state left behind after DEL with the netns gone: {_summarise(d)}")
    return "exit 0, host and state dirs clean"


def _summarise(d: dict[str, Any]) -> str:
    parts = []
    for where, cats in d.items():
        for cat, ch in cats.items():
            items = [f"+{x}" for x in ch["added"][:3]] + [f"-{x}" for x in ch["removed"][:3]]
            parts.append(f"{where}/{cat}: {', '.join(items)}")
    return "; ".join(parts)[:800]


@check("leak-add-del", "SPEC §DEL", "MUST", ALL, "ADD then DEL leaves host, pod and state dirs as they were")
def leak_add_del(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    before = ctx.snapshot(pod)
    doc = ctx.require_add(ctx.add(pod, version, cid))
    out = ctx.delete(pod, version, cid, doc)
    expect_ok(out, "DEL")
    d = ctx.diff(before, ctx.snapshot(pod))
    if d:
        raise Fail(f"left behind after ADD+DEL: {_summarise(d)}")
    return "no difference in links, addresses, routes, rules, sysctls, firewall, files"


@check("leak-failed-add", "SPEC §ADD", "SHOULD", ALL, "a failed ADD leaves nothing behind")
def leak_failed_add(ctx: Ctx, _v: str) -> str:
    """Failure modes: a full one-address pool (interface/meta/ipam), an interface that does not
    exist (chained). A plugin without such a failure mode is skipped, not passed."""
    version = ctx.primary()
    if ctx.profile == "chained":
        pod = ctx.pod()
        conf = ctx.conf(version, pod)
        # CNI_IFNAME and prevResult both name an interface that does not exist: a chained plugin
        # acts on CNI_IFNAME (tuning, sbr), so renaming only prevResult's would still succeed.
        conf["prevResult"]["interfaces"][0]["name"] = "missing0"
        ghost = Pod(pod.ns, pod.path, "missing0", pod.prev, pod.exempt)
        before = ctx.snapshot(pod)
        out = ctx.add(ghost, version, ctx.cid(), conf, label="ADD (CNI_IFNAME and prevResult name a missing interface)")
        if out.ok:
            raise Skip("ADD for a missing interface succeeded (the plugin does not touch the pod's interface, "
                       "e.g. portmap works in the host namespace): no failure mode known for this plugin")
    else:
        pooled = profiles.with_pool(ctx.template, 120, 1)
        if pooled is None:
            raise Skip("config has no pool IPAM to exhaust (host-local ranges/subnet, whereabouts range): not a pool allocator")
        conf = pooled
        first, pod = ctx.pod(), ctx.pod()
        ctx.require_add(ctx.add(first, version, ctx.cid(), ctx.conf(version, first, conf)), "ADD taking the only address")
        before = ctx.snapshot(pod)
        out = ctx.add(pod, version, ctx.cid(), ctx.conf(version, pod, conf))
        if out.ok:
            raise Fail("ADD succeeded although the IPAM pool (one address) was used up")
    d = ctx.diff(before, ctx.snapshot(pod))
    if d:
        raise Fail(f"failed ADD (code {out.code}) left behind: {_summarise(d)}")
    return f"ADD failed with code {out.code} and left nothing"


# ---- CHECK -------------------------------------------------------------------------------


def plumb_ipam_result(ctx: Ctx, pod: Pod, result: dict[str, Any]) -> None:
    """Do what the interface plugin does with an IPAM result: ``CNI_IFNAME`` in the pod, up,
    with the result's addresses (a veth whose peer stays in the pod)."""
    peer = f"{pod.ifname}h"[:15]
    sh("ip", "link", "add", pod.ifname, "type", "veth", "peer", "name", peer, ns=pod.ns)
    for dev in (pod.ifname, peer):
        sh("ip", "link", "set", dev, "up", ns=pod.ns)
    for ip in result.get("ips") or []:
        sh("ip", "addr", "add", str(ip["address"]), "dev", pod.ifname, ns=pod.ns)
    ctx.evidence.append({"label": "harness plays the interface plugin",
                         "stdout": f"{pod.ifname} up in {pod.path} with {_result_ips(result)}"})


@check("check-after-add", "SPEC §CHECK", "MUST", ALL, "CHECK right after ADD succeeds", min_version="0.4.0")
def check_after_add(ctx: Ctx, _v: str) -> str:
    """For the ``ipam`` profile the harness first configures ``CNI_IFNAME`` with the ADD result's
    addresses: a runtime never CHECKs an IPAM plugin directly, the interface plugin calls the
    IPAM CHECK after it has made the interface (reference macvlan/bridge cmdCheck), so an IPAM
    plugin may legitimately verify the addresses on the interface (our static does)."""
    version = ctx.primary("0.4.0")
    pod = ctx.pod()
    cid = ctx.cid()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    if ctx.profile == "ipam":
        plumb_ipam_result(ctx, pod, doc)
    out = ctx.call("CHECK", ctx.with_prev(ctx.conf(version, pod), doc), pod, cid=cid)
    expect_ok(out, "CHECK after ADD")
    if out.stdout.strip():
        raise Fail(f"CHECK printed output on success: {out.brief()}")
    ctx.delete(pod, version, cid, doc)
    return "exit 0, no output"


@check("check-detects-perturbation", "SPEC §CHECK", "MUST", IFACE, "CHECK fails once the result's address is removed",
       min_version="0.4.0")
def check_detects_perturbation(ctx: Ctx, _v: str) -> str:
    version = ctx.primary("0.4.0")
    pod = ctx.pod()
    cid = ctx.cid()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    ips = [ip["address"] for ip in doc.get("ips") or []]
    if not ips:
        raise Skip("the result has no address to remove")
    sh("ip", "addr", "del", ips[0], "dev", pod.ifname, ns=pod.ns)
    ctx.evidence.append({"label": "perturbation", "stdout": f"ip addr del {ips[0]} dev {pod.ifname}"})
    out = ctx.call("CHECK", ctx.with_prev(ctx.conf(version, pod), doc), pod, cid=cid, label="CHECK (address removed)")
    if out.ok:
        raise Fail(f"CHECK passed although {ips[0]} was removed from {pod.ifname}")
    msg = expect_error(out, None, "CHECK after perturbation")
    ctx.delete(pod, version, cid, doc)
    return msg


@check("check-below-040", "SPEC §CHECK", "MUST", ALL, "CHECK with cniVersion < 0.4.0 is error 1")
def check_below_040(ctx: Ctx, _v: str) -> str:
    pod = ctx.pod()
    conf = ctx.conf("0.3.1", pod)
    if ctx.profile != "chained":
        conf["prevResult"] = {"cniVersion": "0.3.1", "interfaces": [], "ips": [], "dns": {}}
    out = ctx.call("CHECK", conf, pod, cid=ctx.cid(), label="CHECK (cniVersion 0.3.1)")
    return expect_error(out, 1, "CHECK at 0.3.1")


# ---- chaining ----------------------------------------------------------------------------


@check("chained-keeps-prevresult", "SPEC §Chained plugins", "MUST", frozenset({"chained"}),
       "a chained plugin returns prevResult's interfaces, IPs, routes and DNS", per_version=True)
def chained_keeps_prevresult(ctx: Ctx, version: str) -> str:
    pod = ctx.pod()
    cid = ctx.cid()
    conf = ctx.conf(version, pod)
    prev = conf["prevResult"]
    out = ctx.add(pod, version, cid, conf)
    doc = validate_result(ctx, version, pod, out)
    for key, sub in (("interfaces", "name"), ("ips", "address"), ("routes", "dst")):
        have = {json.dumps(x.get(sub)) for x in doc.get(key) or []}
        lost = [x for x in prev.get(key) or [] if json.dumps(x.get(sub)) not in have]
        if lost:
            raise Fail(f"prevResult {key} dropped: {lost}")
    if prev["dns"].get("nameservers") and (doc.get("dns") or {}).get("nameservers") != prev["dns"]["nameservers"]:
        raise Fail(f"prevResult dns {prev['dns']} not passed on: {doc.get('dns')}")
    ctx.delete(pod, version, cid, doc)
    return "prevResult kept"


@check("chained-older-prevresult", "SPEC §Chained plugins", "SHOULD", frozenset({"chained"}),
       "a chained plugin accepts a 0.3.1 prevResult and answers in the config's version")
def chained_older_prevresult(ctx: Ctx, _v: str) -> str:
    version = ctx.primary("0.4.0")
    pod = ctx.pod()
    cid = ctx.cid()
    conf = ctx.conf(version, pod)
    conf["prevResult"] = ctx.generated_prev("0.3.1", pod)
    out = ctx.add(pod, version, cid, conf)
    doc = validate_result(ctx, version, pod, out)
    ctx.delete(pod, version, cid, doc)
    return f"0.3.1 prevResult → {version} result"


@check("unknown-config-keys", "SPEC §Network configuration", "SHOULD", ALL,
       "unknown 'args' and runtimeConfig keys are ignored")
def unknown_config_keys(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    conf = ctx.conf(version, pod)
    conf.setdefault("args", {})["conformance.example/unknown"] = {"answer": 42}
    rc = conf.setdefault("runtimeConfig", {})
    rc["conformanceUnknownCapability"] = {"enabled": True}
    doc = ctx.require_add(ctx.add(pod, version, cid, conf), "ADD with unknown args/runtimeConfig keys")
    ctx.delete(pod, version, cid, doc, conf=conf)
    return "accepted"


@check("ignore-unknown-args", "CONVENTIONS §CNI_ARGS", "MUST", ALL, "IgnoreUnknown=1 makes unknown CNI_ARGS keys acceptable")
def ignore_unknown_args(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=conformance;ConformanceUnknownArg=yes"
    doc = ctx.require_add(ctx.add(pod, version, cid, args=args), f"ADD with CNI_ARGS {args}")
    out = ctx.delete(pod, version, cid, doc, args=args)
    if not out.ok:
        raise Fail(f"DEL with CNI_ARGS {args} failed: {out.brief()}")
    return "accepted"


@check("caller-namespace", "SPEC §ADD (container namespace)", "MUST", ALL,
       "ADD changes nothing in the caller's namespace beyond what the profile allows")
def caller_namespace(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    pod = ctx.pod()
    cid = ctx.cid()
    before = ctx.snapshot()
    doc = ctx.require_add(ctx.add(pod, version, cid))
    names, cats = _host_exempt(ctx, [pod], [doc])
    d = ctx.diff(before, ctx.snapshot(), exempt=names, exempt_categories=cats, label=f"host diff (exempt {sorted(names)} {sorted(cats)})")
    d.pop("files", None)  # the plugin's own state (IPAM reservations) is expected to change
    ctx.delete(pod, version, cid, doc)
    if d:
        raise Fail(f"ADD changed the caller's namespace: {_summarise(d)}")
    allowed = f" (allowed: host-side links {sorted(names)}{', firewall' if cats else ''})" if names or cats else ""
    return f"unchanged{allowed}"


# ---- IPAM pools ----------------------------------------------------------------------------


def _pool(ctx: Ctx, offset: int, size: int) -> dict[str, Any]:
    pooled = profiles.with_pool(ctx.template, offset, size)
    if pooled is None:
        raise Skip("config has no pool IPAM (host-local ranges/subnet, whereabouts range): not a pool allocator")
    return pooled


@check("ipam-unique-parallel", "CONVENTIONS (locking)", "MUST", POOL, "parallel ADDs get distinct addresses")
def ipam_unique_parallel(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    n = ctx.options.parallel
    base = _pool(ctx, 20, 4 * n)
    pods = [ctx.pod() for _ in range(n)]
    cids = [ctx.cid() for _ in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        outs = list(pool.map(lambda i: ctx.add(pods[i], version, cids[i], ctx.conf(version, pods[i], base)), range(n)))
    failed = [o for o in outs if not o.ok]
    if failed:
        raise Fail(f"{len(failed)} of {n} parallel ADDs failed: {failed[0].brief()}")
    ips = [ip for o in outs for ip in _result_ips(o.doc or {})]
    dups = sorted({ip for ip in ips if ips.count(ip) > 1})
    if dups:
        raise Fail(f"duplicate addresses under {n} parallel ADDs: {dups}")
    return f"{n} parallel ADDs, {len(ips)} distinct addresses"


@check("ipam-exhaustion", "SPEC §Error", "MUST", POOL, "ADD in a full pool fails with a CNI error")
def ipam_exhaustion(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    base = _pool(ctx, 100, 2)
    for n in (1, 2):
        pod = ctx.pod()
        ctx.require_add(ctx.add(pod, version, ctx.cid(), ctx.conf(version, pod, base)), f"ADD #{n} into a pool of 2")
    pod = ctx.pod()
    out = ctx.add(pod, version, ctx.cid(), ctx.conf(version, pod, base))
    if out.ok:
        raise Fail(f"third ADD into a pool of two addresses succeeded: {_result_ips(out.doc or {})}")
    return expect_error(out, None, "ADD into a full pool")


@check("ipam-release-on-del", "SPEC §DEL", "MUST", POOL, "DEL frees the address for the next ADD")
def ipam_release_on_del(ctx: Ctx, _v: str) -> str:
    version = ctx.primary()
    base = _pool(ctx, 110, 1)
    a, b = ctx.pod(), ctx.pod()
    cid = ctx.cid()
    doc = ctx.require_add(ctx.add(a, version, cid, ctx.conf(version, a, base)), "ADD into a pool of 1")
    out = ctx.delete(a, version, cid, doc, conf=ctx.conf(version, a, base))
    if not out.ok:
        raise Fail(f"DEL failed: {out.brief()}")
    ctx.require_add(ctx.add(b, version, ctx.cid(), ctx.conf(version, b, base)), "ADD after DEL freed the only address")
    return "address reused after DEL"


def _gc(ctx: Ctx, key: str, offset: int) -> str:
    """The collected attachment's container is gone (its netns deleted) before GC, as when a
    runtime collects for real: GC has no CNI_NETNS, so it cannot remove an interface that still
    exists, and one left in place can keep the address busy (ipvlan refuses a second slave of
    the same master with an address already on one: EADDRINUSE on the next ADD)."""
    version = ctx.primary("1.1.0")
    base = _pool(ctx, offset, 2)
    a, b, c = ctx.pod(), ctx.pod(), ctx.pod()
    keep, drop = ctx.cid(), ctx.cid()
    kept = ctx.require_add(ctx.add(a, version, keep, ctx.conf(version, a, base)), "ADD (kept)")
    ctx.require_add(ctx.add(b, version, drop, ctx.conf(version, b, base)), "ADD (to be collected)")
    ctx.lab.drop(b.ns)
    gc_conf = ctx.conf(version, None, base)
    gc_conf.pop("prevResult", None)
    gc_conf[key] = [{"containerID": keep, "ifname": a.ifname}]
    out = ctx.call("GC", gc_conf, label=f"GC ({key} = [{keep}])")
    expect_ok(out, "GC")
    third = ctx.add(c, version, ctx.cid(), ctx.conf(version, c, base))
    if not third.ok:
        raise Fail(f"GC with {key} did not release the unlisted attachment: next ADD failed: {third.brief()}")
    if set(_result_ips(third.doc or {})) & set(_result_ips(kept)):
        raise Fail(f"GC released the listed attachment too: {_result_ips(third.doc or {})} handed out again")
    return f"GC via {key} released the unlisted attachment only"


@check("gc-valid-attachments", "SPEC §GC", "MUST", POOL, "GC with cni.dev/valid-attachments releases what is not listed",
       min_version="1.1.0")
def gc_valid_attachments(ctx: Ctx, _v: str) -> str:
    return _gc(ctx, "cni.dev/valid-attachments", 130)


@check("gc-attachments", "SPEC §GC (spec-v1.1.0 key)", "SHOULD", POOL, "GC with cni.dev/attachments releases what is not listed",
       min_version="1.1.0")
def gc_attachments(ctx: Ctx, _v: str) -> str:
    return _gc(ctx, "cni.dev/attachments", 140)


@check("status", "SPEC §STATUS", "MUST", ALL, "STATUS exits 0 or reports error 50/51", min_version="1.1.0")
def status(ctx: Ctx, _v: str) -> str:
    version = ctx.primary("1.1.0")
    conf = ctx.conf(version)
    conf.pop("prevResult", None)
    out = ctx.call("STATUS", conf)
    if out.ok:
        return "ready (exit 0)"
    return expect_error(out, None, "STATUS") if out.code in (50, 51) else _status_fail(out)


def _status_fail(out: Any) -> str:
    problem = out.envelope_problem()
    raise Fail(f"STATUS failed with {'code ' + str(out.code) if not problem else problem}; only 50/51 mean 'not ready'")


# ---- latency (last: it reads every call's timing) -------------------------------------------


@check("latency", "harness (performance)", "SHOULD", ALL, "p50/p95 per operation within the budget")
def latency(ctx: Ctx, _v: str) -> str:
    """Serial ADD/CHECK/DEL cycles; the budget applies to these (parallel ADDs elsewhere contend)."""
    from .model import percentile

    version = ctx.primary()
    with_check = vkey(version) >= (0, 4, 0)
    mark = {op: len(v) for op, v in ctx.timings.items()}
    for _ in range(ctx.options.runs):
        pod = ctx.pod()
        cid = ctx.cid()
        out = ctx.add(pod, version, cid)
        if out.ok and with_check:
            ctx.call("CHECK", ctx.with_prev(ctx.conf(version, pod), out.doc), pod, cid=cid)
        ctx.delete(pod, version, cid, out.doc if out.ok else None)
        ctx.lab.drop(pod.ns)
    mine = {op: v[mark.get(op, 0):] for op, v in ctx.timings.items()}
    parts = []
    for op in ("ADD", "CHECK", "DEL"):
        vals = mine.get(op, [])
        if vals:
            parts.append(f"{op} p50 {percentile(vals, 50) * 1000:.0f} ms p95 {percentile(vals, 95) * 1000:.0f} ms (n={len(vals)})")
    add95 = percentile(mine.get("ADD", []), 95) * 1000
    # The timings are the evidence (each call's own record is in the other checks).
    ctx.evidence[:] = [{"label": "latency", "timings_ms": {op: [round(t * 1000, 1) for t in v] for op, v in mine.items()}}]
    if ctx.kernel == "uml":
        # UML emulates every syscall of every exec: the numbers measure UML, not the plugin.
        raise Skip("no budget inside User-Mode Linux (timings measure the emulator): " + "; ".join(parts))
    if add95 > ctx.options.latency_budget_ms:
        raise Fail(f"ADD p95 {add95:.0f} ms exceeds the budget {ctx.options.latency_budget_ms:.0f} ms; " + "; ".join(parts))
    return "; ".join(parts)


# ---- the whole run (last: it compares the run's baseline with the state after the last DEL) ----


@check("run-leaks", "SPEC §DEL (whole run)", "MUST", ALL,
       "after the run's last DEL, the caller's namespace, a fresh pod namespace and the state dirs are as before its first call")
def run_leaks(ctx: Ctx, _v: str) -> str:
    """Catches what each check's own diff cannot see: a leftover that appeared before the check began
    (a plugin that leaks only on its first ADD, in the warm-up). Shared state the plugin keeps for all
    its attachments is allowed and listed as evidence (rules in conformance/leaks.py)."""
    from . import leaks

    if ctx.run_baseline is None:
        raise Skip("no whole-run baseline (run with every check, or include run-leaks in --only)")

    verdict = leaks.judge(ctx.run_baseline, ctx.whole(), ctx.run_marks, host_ifaces=ctx.host_ifaces,
                          cid_prefix=ctx.cid_prefix, addresses=ctx.addresses, read=leaks.read_head)
    ctx.evidence.append(leaks.as_evidence(verdict))
    if verdict.leaks:
        raise Fail(f"left behind by the run: {leaks.summarise(verdict.leaks)}")
    kept = f"; shared state kept: {len(verdict.kept)} item(s)" if verdict.kept else ""
    return f"nothing left after {len(ctx.run_marks)} snapshot(s){kept}"
