"""Run the checks against one plugin (or conflist): the library entry point ``run()``.

Rules:
- One ``Lab`` per run (own host + pod namespaces, uplink, temp dirs), always closed.
- A warm-up ADD+DEL runs first so state a plugin legitimately keeps across attachments
  (the bridge device, host-local's ``lock``/``last_reserved_ip``, portmap's top chains) is
  part of every later "before" snapshot and the leak diff shows only real leaks.
- Each check gets fresh pods and container IDs, DELs what it added and drops its pods, so a
  broken plugin's leak in one check cannot fail another. An unexpected harness error is a
  check failure with the traceback as evidence, never a crash of the run.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

from . import profiles
from .checks import CHECKS
from .context import Ctx, Options, vkey
from .execplug import Call, Conflist, Plugin
from .lab import Lab
from .model import Check, CheckResult, Fail, Report, Skip
from .multinet import VERSION as MULTINET_VERSION
from .multinet import MnCtx, MnOptions, MultinetLab, multinic_conflist
from .multinet_checks import MULTINET_CHECKS

__all__ = ["ALL_VERSIONS", "MnOptions", "Options", "run", "run_multinet"]  # Options lives in .context; callers import it from here

ALL_VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_CNI_PATH = ("/usr/lib/cni", "/opt/cni/bin")
#: Checks that diff state snapshots: only they need the warm-up cycle.
STATEFUL = frozenset({"leak-add-del", "leak-failed-add", "del-without-prevresult", "del-deleted-netns", "caller-namespace"})


def load_template(profile: str, target: Plugin | Conflist, config: dict[str, Any] | None, ipam_type: str) -> dict[str, Any]:
    if config is not None:
        return config
    if isinstance(target, Conflist):
        raise ValueError("a conflist target needs its conflist (--conflist FILE)")
    return profiles.sample_config(profile, target.name, ipam_type)


def run(
    plugin_binary: str | None = None,
    profile: str = "interface",
    config: dict[str, Any] | None = None,
    versions: list[str] | tuple[str, ...] = ALL_VERSIONS,
    *,
    conflist: dict[str, Any] | None = None,
    cni_path: list[str] | tuple[str, ...] | None = None,
    state_dirs: list[str] | tuple[str, ...] = (),
    only: list[str] | tuple[str, ...] = (),
    options: Options | None = None,
    kernel: str = "host",
) -> Report:
    """Run every applicable check (or ``only`` these ids) and return the report.

    ``plugin_binary`` or ``conflist`` (+ ``cni_path``) names what is tested; ``config`` is the
    plugin config (placeholders ``{{master}}``, ``{{bridge}}``, ``{{dataDir}}``) or None to
    generate one for the profile.
    """
    if profile not in profiles.PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {', '.join(profiles.PROFILES)}")
    options = options or Options()
    unknown = [c for c in [*only, *options.waive] if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check id(s) {unknown}; known: {', '.join(CHECKS)}")
    path_dirs: list[str] = list(cni_path or [])
    target: Plugin | Conflist
    if conflist is not None:
        target = Conflist(tuple(path_dirs or DEFAULT_CNI_PATH))
        config = conflist
    else:
        if not plugin_binary:
            raise ValueError("give a plugin binary or a conflist")
        plugin_binary = os.path.abspath(plugin_binary)
        target = Plugin(plugin_binary)
        if not path_dirs:
            path_dirs = [os.path.dirname(plugin_binary), *DEFAULT_CNI_PATH]
    opts = options
    report = Report(target.name if conflist is None else f"conflist {conflist.get('name', '')}", profile, list(versions), [], kernel)
    with Lab() as lab:
        template = load_template(profile, target, config, opts.ipam_type)
        ctx = Ctx(target, profile, lab, template, list(versions), ":".join(path_dirs), list(state_dirs), opts, kernel)
        if not only or "run-leaks" in only:
            ctx.run_baseline = ctx.whole()  # before the first call of the run, VERSION included
        _discover_versions(ctx, report)
        report.supported = ctx.supported
        selected = [c for c in CHECKS.values() if (not only or c.id in only)]
        if any(c.id in STATEFUL for c in selected):
            _warm_up(ctx, report)
        for check in selected:
            report.results.extend(_run_check(ctx, check))
        report.timings = ctx.timings
    return report


def _discover_versions(ctx: Ctx, report: Report) -> None:
    out = ctx.target.invoke(Call("VERSION", path=ctx.cni_path), {"cniVersion": ctx.versions[-1]}, host_netns=ctx.lab.host)
    ctx.version_evidence = [out.evidence()]
    doc = out.doc
    if out.ok and isinstance(doc, dict) and isinstance(doc.get("supportedVersions"), list):
        ctx.supported = [str(v) for v in doc["supportedVersions"]]
    else:
        report.notes.append("VERSION gave no usable supportedVersions; testing every requested version")


def _warm_up(ctx: Ctx, report: Report) -> None:
    try:
        version = ctx.primary()
    except Skip:
        return
    pod = ctx.pod()
    cid = ctx.cid()
    try:
        add = ctx.add(pod, version, cid)
        ctx.delete(pod, version, cid, add.doc if add.ok else None)
        if not add.ok:
            report.notes.append(f"warm-up ADD failed (exit {add.exit_code}): {add.brief()}")
    finally:
        ctx.cleanup()
        ctx.evidence.clear()
        ctx.timings.clear()
        ctx.mark("warm-up (the run's first ADD+DEL)")


def _run_check(ctx: Ctx, check: Check) -> list[CheckResult]:
    if ctx.profile not in check.profiles:
        return []
    if check.per_version:
        versions = [v for v in ctx.versions if check.min_version is None or vkey(v) >= vkey(check.min_version)]
    else:
        versions = [""]
    results = []
    for version in versions:
        rid = f"{check.id}[{version}]" if version else check.id
        res = CheckResult(rid, check.id, version, check.title, check.section, check.level, "pass")
        ctx.evidence = res.evidence
        start = time.monotonic()
        try:
            if check.id in ctx.options.waive:
                raise Skip(f"waived: {ctx.options.waive[check.id]}")
            if version and version not in ctx.supported:
                raise Skip(f"the plugin does not support CNI {version} (VERSION says {ctx.supported})")
            res.message = check.fn(ctx, version) or ""
        except Fail as exc:
            res.status, res.message = "fail", str(exc)
        except Skip as exc:
            res.status, res.message = "skip", str(exc)
        except Exception as exc:  # a harness problem: report it on this check, keep going
            res.status, res.message = "fail", f"harness error: {exc!r}"
            res.evidence.append({"label": "traceback", "stderr": traceback.format_exc()})
        finally:
            ctx.cleanup()
        if check.id != "run-leaks":
            ctx.mark(rid)
        res.duration = round(time.monotonic() - start, 3)
        results.append(res)
    return results


# ---- the multinet profile (conformance/multinet.py) ----------------------------------------


def run_multinet(
    conflist: dict[str, Any] | None = None,
    cni_path: list[str] | tuple[str, ...] = (),
    *,
    only: list[str] | tuple[str, ...] = (),
    options: MnOptions | None = None,
) -> Report:
    """Run the multinet checks against the meta-plugin of ``conflist`` (default: multinic's)."""
    options = options or MnOptions()
    unknown = [c for c in [*only, *options.waive] if c not in MULTINET_CHECKS]
    if unknown:
        raise ValueError(f"unknown multinet check id(s) {unknown}; known: {', '.join(MULTINET_CHECKS)}")
    conflist = conflist if conflist is not None else multinic_conflist()
    meta = next((p.get("type", "?") for p in conflist.get("plugins") or [] if isinstance(p, dict)), "?")
    report = Report(f"meta-plugin {meta}", "multinet", [MULTINET_VERSION], [MULTINET_VERSION])
    with MultinetLab(list(cni_path)) as mlab:
        ctx = MnCtx(mlab, conflist, options)
        if not only or "run-leaks" in only:
            ctx.run_baseline = ctx.whole()  # before the meta-plugin's first call
        for check in MULTINET_CHECKS.values():
            if only and check.id not in only:
                continue
            report.results.append(_run_multinet_check(ctx, check))
            if check.id != "run-leaks":
                ctx.mark(check.id)
        report.timings = ctx.timings
    return report


def _run_multinet_check(ctx: MnCtx, check: Check) -> CheckResult:
    res = CheckResult(check.id, check.id, "", check.title, check.section, check.level, "pass")
    ctx.begin()
    start = time.monotonic()
    try:
        if check.id in ctx.options.waive:
            raise Skip(f"waived: {ctx.options.waive[check.id]}")
        res.message = check.fn(ctx, "") or ""
    except Fail as exc:
        res.status, res.message = "fail", str(exc)
    except Skip as exc:
        res.status, res.message = "skip", str(exc)
    except Exception as exc:  # a harness problem: this check fails with the traceback, the run goes on
        res.status, res.message = "fail", f"harness error: {exc!r}"
        ctx.evidence.append({"label": "traceback", "stderr": traceback.format_exc()})
    finally:
        try:
            ctx.show_calls()
        finally:
            ctx.cleanup()
    res.evidence = ctx.evidence
    res.duration = round(time.monotonic() - start, 3)
    return res
