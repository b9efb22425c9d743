"""``multinic conformance``: run the CNI conformance harness against a plugin binary or conflist.

Exit status: 0 when no MUST check failed, 1 when one did, 2 on usage/harness errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

GUEST_PRIVATE = ("/tmp", "/run", "/var/tmp", "/dev")


def parser() -> argparse.ArgumentParser:
    from .profiles import PROFILES
    from .runner import ALL_VERSIONS

    p = argparse.ArgumentParser(prog="multinic conformance", description="Black-box CNI spec checks against any plugin.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--plugin", metavar="PATH", help="the plugin binary under test")
    what.add_argument("--conflist", metavar="FILE", help="a network configuration list run as libcni would")
    p.add_argument("--cni-path", metavar="DIRS", help="colon-separated plugin dirs (CNI_PATH; default: the plugin's dir, /usr/lib/cni, /opt/cni/bin)")
    p.add_argument("--profile", choices=(*PROFILES, "multinet"), default=None,
                   help="kind of plugin (default: interface, meta for --conflist); multinet: judge a meta-plugin's "
                        "conflist against the NPWG multi-network spec (default: multinic's)")
    p.add_argument("--config", metavar="FILE", help="plugin config; placeholders {{master}} {{bridge}} {{dataDir}} (default: generated)")
    p.add_argument("--config-json", help=argparse.SUPPRESS)  # the UML re-run passes file contents inline
    p.add_argument("--versions", default=",".join(ALL_VERSIONS), help="comma-separated CNI versions to test")
    p.add_argument("--state-dir", action="append", default=[], metavar="DIR", help="plugin state dir to include in the leak diff (repeatable)")
    p.add_argument("--kernel", choices=("host", "uml"), default="host", help="uml: run the whole harness inside User-Mode Linux")
    p.add_argument("--uml-timeout", type=float, default=1800.0, metavar="S",
                   help="with --kernel uml: seconds for boot + the whole run (a UML exec is slow)")
    p.add_argument("--only", action="append", default=[], metavar="CHECK_ID", help="run only these checks (repeatable or comma-separated)")
    p.add_argument("--ipam-type", default="host-local", help="IPAM type for generated interface configs")
    p.add_argument("--runs", type=int, default=5, help="ADD/CHECK/DEL cycles for the latency check")
    p.add_argument("--parallel", type=int, default=8, help="concurrent ADDs for the IPAM uniqueness check")
    p.add_argument("--latency-budget-ms", type=float, default=2000.0, help="ADD p95 budget (SHOULD)")
    p.add_argument("--waive", action="append", default=[], metavar="CHECK_ID=REASON",
                   help="report this check as skipped with REASON: it cannot apply to the plugin (repeatable)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML")
    p.add_argument("--json", metavar="FILE", help="write the JSON report")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    return p


def main(argv: list[str]) -> int:
    ns = parser().parse_args(argv)
    from . import report as render

    if ns.list:
        from .checks import CHECKS
        from .multinet_checks import MULTINET_CHECKS

        for c in [*CHECKS.values(), *MULTINET_CHECKS.values()]:
            print(f"{c.id:30} {c.level:6} {c.section:30} {','.join(sorted(c.profiles)):28} {c.title}")
        return 0
    if not ns.plugin and not ns.conflist and ns.profile != "multinet":
        print("multinic conformance: give --plugin PATH or --conflist FILE", file=sys.stderr)
        return 2
    only = [c for item in ns.only for c in item.split(",") if c]
    versions = [v.strip() for v in ns.versions.split(",") if v.strip()]
    try:
        config = _load(ns.config, ns.config_json)
        conflist = _load(ns.conflist, None) if ns.conflist else None
        if ns.kernel == "uml" and ns.profile == "multinet":
            raise ValueError("--profile multinet runs on the host kernel only")
        if ns.kernel == "uml":
            rep = _run_uml(ns, argv, config, conflist)
        else:
            rep = _run_host(ns, config, conflist, versions, only)
    except (ValueError, OSError) as exc:
        print(f"multinic conformance: {exc}", file=sys.stderr)
        return 2
    if ns.junit:
        _write(ns.junit, render.junit(rep))
    if ns.json:
        _write(ns.json, render.to_json(rep))
    sys.stdout.write(rep.summary() + "\n" if ns.quiet else render.terminal(rep))
    return 1 if rep.must_failures else 0


def parse_waivers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        cid, sep, reason = item.partition("=")
        if not sep or not cid.strip() or not reason.strip():
            raise ValueError(f"--waive {item!r}: want CHECK_ID=REASON (say why the check cannot apply)")
        out[cid.strip()] = reason.strip()
    return out


def _load(path: str | None, inline: str | None) -> dict[str, Any] | None:
    if inline is not None:
        return json.loads(inline)  # type: ignore[no-any-return]
    if path is None:
        return None
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _run_host(ns: argparse.Namespace, config: Any, conflist: Any, versions: list[str], only: list[str]) -> Any:
    from .lab import LabError
    from .runner import Options, run

    if os.geteuid() != 0:
        raise ValueError("needs root to create network namespaces (or use --kernel uml)")
    if ns.profile == "multinet":
        return _run_multinet(ns, conflist, only)
    opts = Options(runs=ns.runs, parallel=ns.parallel, latency_budget_ms=ns.latency_budget_ms, ipam_type=ns.ipam_type,
                   waive=parse_waivers(ns.waive))
    try:
        return run(
            ns.plugin,
            ns.profile or ("meta" if conflist else "interface"),
            config,
            versions,
            conflist=conflist,
            cni_path=ns.cni_path.split(":") if ns.cni_path else None,
            state_dirs=ns.state_dir,
            only=only,
            options=opts,
            kernel="uml" if os.environ.get("MULTINIC_IN_UML") == "1" else "host",
        )
    except LabError as exc:
        raise ValueError(f"cannot build the test namespaces: {exc}") from None


def _run_multinet(ns: argparse.Namespace, conflist: Any, only: list[str]) -> Any:
    """The NPWG profile: the meta-plugin is named by its conflist (multinic's when none is given) and
    found in --cni-path (default: this Python's bin dir, where `multinic` is installed, and /opt/cni/bin)."""
    from .lab import LabError
    from .runner import MnOptions, run_multinet

    if ns.plugin:
        raise ValueError("--profile multinet runs a meta-plugin through its conflist: give --conflist FILE, not --plugin")
    path = ns.cni_path.split(":") if ns.cni_path else [os.path.dirname(sys.executable), "/opt/cni/bin"]
    try:
        return run_multinet(conflist, path, only=only, options=MnOptions(waive=parse_waivers(ns.waive)))
    except LabError as exc:
        raise ValueError(f"cannot build the test namespaces: {exc}") from None


def _run_uml(ns: argparse.Namespace, argv: list[str], config: Any, conflist: Any) -> Any:
    """Re-run this command inside UML; the guest writes its JSON report to the scratch dir."""
    from .model import Report
    from .uml import SCRATCH_ENV, UMLError, run_in_uml, visible_in_guest

    for path in filter(None, [ns.plugin, *(ns.cni_path or "").split(":")]):
        # Both the path as given and what it resolves to: a symlink under /tmp pointing into the
        # venv is still invisible in the guest (and its name is what argv[0] dispatch needs).
        for p in {os.path.abspath(path), os.path.realpath(path)}:
            if not visible_in_guest(p):
                raise ValueError(
                    f"{path} is under a guest-private directory ({', '.join(GUEST_PRIVATE)}): UML cannot see it; "
                    "put it under the checkout (e.g. .scratch/) or another host directory"
                )
    args = _strip(argv, {"--kernel", "--junit", "--json", "--config", "--conflist", "--uml-timeout"})
    if config is not None:
        args += ["--config-json", json.dumps(config)]
    if conflist is not None:
        # the guest reads it from its scratch dir: write nothing on the host but the env var
        args += ["--conflist", "/dev/stdin"]
        raise ValueError("--conflist with --kernel uml is not supported yet; use --plugin")
    script = f'exec "$0" -m conformance.cli "$@" --json "${SCRATCH_ENV}/report.json"'
    try:
        res = run_in_uml(["sh", "-c", script, sys.executable, *args], timeout=ns.uml_timeout, collect=["report.json"],
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except UMLError as exc:
        raise ValueError(f"UML run failed: {exc}") from None
    data = res.files.get("report.json")
    if data is None:
        raise ValueError(f"the guest produced no report (exit {res.exit_code}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    rep = Report.from_dict(json.loads(data))
    rep.kernel = "uml"
    return rep


def _strip(argv: list[str], drop: set[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in drop:
            skip = "=" not in a
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
