"""Bench output: the Markdown tables, the latency plot and README's "## Performance" section.

The plot runs in a child process (tests/bench/plot.py as a script): matplotlib imports the PyPI
``packaging`` distribution, which this repository's own top-level ``packaging/`` directory
shadows whenever the checkout root is on sys.path (as it is under ``python -m``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
HERE = os.path.dirname(os.path.abspath(__file__))

STACKS = {
    "go": "Go reference (1 exec per plugin)",
    "thick": "ours thick (shim → daemon)",
    "thin": "ours thin (1 exec of multinic)",
    "dropin": "ours drop-in (`multinic plugin TYPE` per plugin)",
    "inproc": "ours in-process (no exec)",
}


def _f(v: Any, suffix: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}{suffix}" if abs(v) < 100 else f"{v:.0f}{suffix}"
    return f"{v}{suffix}"


def _ratio(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _latency_table(rows: list[dict[str, Any]], cases: list[str], with_meta: bool = False) -> list[str]:
    head = "| case | op | stack | n | p50 ms | p95 ms | us/Go p50 | us/Go p95 |"
    sep = "|---|---|---|---|---|---|---|---|"
    if with_meta:
        head += " us/(Go+meta floor) | daemon's own mean ms |"
        sep += "---|---|"
    head += " failures |"
    sep += "---|"
    out = [head, sep]
    order = list(STACKS)
    picked = [r for r in rows if r.get("case") in cases and "op" in r]
    picked.sort(key=lambda r: (cases.index(r["case"]), r["op"] != "ADD",
                               order.index(r["stack"]) if r["stack"] in order else 99))
    for r in picked:
        line = (f"| {r['case']} | {r['op']} | {STACKS.get(r['stack'], r['stack'])} | {r['n']} | {_f(r['p50_ms'])} | "
                f"{_f(r['p95_ms'])} | {_ratio(r.get('ratio_p50'))} | {_ratio(r.get('ratio_p95'))} |")
        if with_meta:
            line += f" {_ratio(r.get('ratio_p50_vs_go_plus_meta_floor'))} | {_f(r.get('daemon_mean_ms'))} |"
        line += f" {r.get('failures', 0)} |"
        out.append(line)
    return out


def _version_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| what | n | p50 ms | p95 ms | vs Go exec floor |", "|---|---|---|---|---|"]
    for r in rows:
        if r.get("case") == "version" and "op" in r:
            label = r.get("what", r["stack"])
            if label.startswith("context"):
                label = f"context: `{r['stack']}`"
            out.append(f"| {label} | {r['n']} | {_f(r['p50_ms'])} | {_f(r['p95_ms'])} | {_ratio(r.get('ratio_p50'))} |")
    return out


def _concurrent_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| op | stack | pods | failures | wall s | pods/s | us/Go pods/s | p50 ms | p99 ms | daemon peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("case") == "concurrent" and "op" in r:
            out.append(f"| {r['op']} | {STACKS.get(r['stack'], r['stack'])} | {r['pods']} | {r['failures']} | "
                       f"{_f(r['wall_s'])} | {_f(r['throughput_pods_per_s'])} | {_ratio(r.get('ratio_throughput'))} | "
                       f"{_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r.get('daemon_peak_rss_mib'))} |")
    return out


def _ipam_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| bench | measurement | value | unit | n | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("section") != "4":
            continue
        if "name" not in r:
            out.append(f"| {r.get('case')} | – | – | – | – | {r.get('note', '')} |")
            continue
        notes = str(r.get("notes", "") or "").replace("|", "/")
        extra = ", ".join(f"{k} {r[k]}" for k in ("p50", "p90", "ratio") if k in r)
        out.append(f"| {r.get('case')} | {r['name']} | {_f(r.get('value'))} | {r.get('unit', '')} | {r.get('n', '')} | "
                   f"{'; '.join(x for x in (extra, notes) if x)} |")
    return out


def _targets_table(targets: list[dict[str, Any]]) -> list[str]:
    out = ["| target | measured | verdict |", "|---|---|---|"]
    for t in targets:
        val = t["value"]
        shown = "–" if val is None else (f"{val:.2f}×" if t["unit"] == "x" else f"{val:g}{t['unit']}")
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else t["miss"])
        if t.get("why"):
            verdict += f". Why (section 7's profile): {t['why']}"
        out.append(f"| {t['target']} | {shown} | {verdict.replace('|', '/')} |")
    return out


# ---- section 7: the per-phase profile -------------------------------------------------------------


def _prof(rows: list[dict[str, Any]], stack: str, op: str) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("case") == "profile" and r.get("stack") == stack and r.get("op") == op
                 and "phases" in r), None)


def _lat(rows: list[dict[str, Any]], case: str, op: str, stack: str) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("case") == case and r.get("op") == op and r.get("stack") == stack), None)


def _groups_text(prof: dict[str, Any], least: float = 0.5) -> str:
    return ", ".join(f"{g} {ms:.1f}" for g, ms in prof["groups"].items() if ms >= least)


def _top_text(prof: dict[str, Any], k: int = 5) -> str:
    return ", ".join(f"{p} {ms:.1f}" for p, ms in list(prof["phases"].items())[:k])


def why_not(key: str, rows: list[dict[str, Any]]) -> str:
    """Why a target is missed, in the profile's measured figures (ms); "" when there is no profile."""
    if key.startswith(("pod-", "single-")):
        _, op, stack = key.split("-")
        op = op.upper()
        case = "pod-3-attachments" if key.startswith("pod-") else "single-macvlan"
        limit = {"pod-add-thick": 0.5, "pod-del-thick": 0.5, "single-add-thick": 2.0, "pod-add-thin": 3.0, "pod-del-thin": 2.0}[key]
        r, go = _lat(rows, case, op, stack), _lat(rows, case, op, "go")
        prof, floor = _prof(rows, stack, op), _prof(rows, "floor", op)
        if prof is None or r is None or go is None:
            return ""
        need = limit * go["p50_ms"]
        if case == "single-macvlan":
            shim = sum(ms for p, ms in prof["phases"].items() if p.startswith("shim:"))
            return (f"p50 {r['p50_ms']:.1f} ms must be ≤ {need:.1f} ms (Go {go['p50_ms']:.1f} ms); the shim alone "
                    f"(start, Python, transport, exit; measured on the pod ADD) costs {shim:.1f} ms, and the daemon's "
                    f"own mean here is {r.get('daemon_mean_ms', '–')} ms")
        text = (f"p50 {r['p50_ms']:.1f} ms must be ≤ {need:.1f} ms (Go {go['p50_ms']:.1f} ms). One profiled {op} "
                f"(mean of {prof['n']}, {prof['mean_ms']:.1f} ms) by group: {_groups_text(prof)}; largest phases: "
                f"{_top_text(prof)}")
        gop = _prof(rows, "go", op)
        if gop is not None and gop["mean_ms"] > 0:
            text += (f". In the same profiled series Go took {gop['mean_ms']:.1f} ms: "
                     f"{prof['mean_ms'] / gop['mean_ms']:.2f}× there")
        daemon = sum(ms for p, ms in prof["phases"].items() if p.startswith("daemon:"))
        if stack == "thick" and r.get("daemon_mean_ms") is not None and daemon > 0:
            text += (f". The daemon's own handling was {r['daemon_mean_ms']:.1f} ms (mean) in the interleaved series "
                     f"vs {daemon:.1f} ms in the profiled series (section 7 runs later: the load differs)")
        if floor is not None:
            text += (f". The floor — the same kernel work by ip -batch + iptables-restore in one process — is "
                     f"{floor['mean_ms']:.1f} ms ({_top_text(floor, 3)})")
            if floor["mean_ms"] >= need:
                text += "; it alone exceeds the target, so no implementation reaches it on this machine at this load"
        return text
    if key == "burst-thick":
        b, g = _lat(rows, "concurrent", "ADD", "thick"), _lat(rows, "concurrent", "ADD", "go")
        prof = _prof(rows, "thick", "ADD")
        if b is None or g is None:
            return ""
        text = (f"{b['throughput_pods_per_s']} pods/s vs Go {g['throughput_pods_per_s']} pods/s on {os.cpu_count()} CPUs "
                f"(p50 {b['p50_ms']:.0f} ms, p99 {b['p99_ms']:.0f} ms)")
        if prof is not None:
            daemon = sum(ms for p, ms in prof["phases"].items() if p.startswith("daemon:"))
            netlink = sum(ms for p, ms in prof["phases"].items() if p.startswith("daemon:") and "netlink" in p)
            text += (f"; one pod ADD costs the daemon {daemon:.1f} ms in the profiled series, {netlink:.1f} ms of it netlink "
                     f"(kernel work under the rtnl lock, serialised across pods)")
        return text
    if key.startswith("cri-"):
        stack = key.removeprefix("cri-")
        r, go = _lat(rows, "cri", "RunPodSandbox", stack + "+2"), _lat(rows, "cri", "RunPodSandbox", "go")
        one = _lat(rows, "cri", "RunPodSandbox", stack)
        prof = _prof(rows, stack, "ADD")
        if r is None or go is None:
            return ""
        text = (f"RunPodSandbox p50 {r['p50_ms']:.0f} ms with 3 interfaces vs Go {go['p50_ms']:.0f} ms with 1"
                + (f" (ours with 1 interface: {one['p50_ms']:.0f} ms)" if one else ""))
        if prof is not None:
            text += f"; our CNI ADD of the 3-interface pod, profiled: {prof['mean_ms']:.0f} ms ({_groups_text(prof, 2.0)})"
        return text
    if key == "rss":
        return "see section 3 (daemon_peak_rss_mib)"
    return ""


def _profile_table(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    profs = [r for r in rows if r.get("case") == "profile" and "phases" in r]
    if not profs:
        return out
    order = {"go": 0, "thin": 1, "thick": 2, "floor": 3}
    profs.sort(key=lambda r: (r["op"] != "ADD", order.get(r["stack"], 9)))
    out += ["| stack | op | n | mean ms | × floor | by group (ms) |", "|---|---|---|---|---|---|"]
    for r in profs:
        out.append(f"| {r['stack']} | {r['op']} | {r['n']} | {r['mean_ms']:.1f} | {_ratio(r.get('vs_floor'))} | "
                   f"{_groups_text(r, 0.05)} |")
    out += ["", "Every phase (mean ms; `netlink kernel X` = time inside send/recv of a netlink request of type X, "
            "where rtnetlink does the work; `netlink library` = pyroute2 around it):", ""]
    for r in profs:
        out.append(f"- {r['stack']} {r['op']} ({r['mean_ms']:.1f} ms): "
                   + ", ".join(f"{p} {ms:.2f}" for p, ms in r["phases"].items() if abs(ms) >= 0.01))
    return out


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    return [f"- section {r['section']} {r.get('case', '')}: {r['note']}" for r in rows
            if "note" in r and "op" not in r and r.get("section") != "4" and r.get("case") != "daemon"]


def markdown(doc: dict[str, Any]) -> str:
    m, rows = doc["meta"], doc["rows"]
    lines = [f"# multinic bench — {m['started']}", "",
             f"Command: `{m['command']}` — n={m['n']} measured iterations per case after {m['warmup']} warm-up(s); "
             f"{m['cpus']} CPUs, kernel {m['kernel']}, Python {m['python']} ({m['interpreter']}); reference "
             f"containernetworking-plugins {m['reference']}. {m['duration_s']} s.", ""]
    lines += [f"- {x}" for x in m["notes"]] + [""]
    if doc["targets"]:
        lines += ["## Targets", ""] + _targets_table(doc["targets"]) + [""]
    sec = {r.get("section") for r in rows}
    if "0" in sec:
        lines += ["## 0. Exec floors (VERSION)", ""] + _version_table(rows) + [""]
    if "1" in sec or "2" in sec:
        lines += ["## 1–2. Pod operations", "",
                  "Pod = eth0 bridge+host-local→tuning→portmap (one port mapping), net1 macvlan+host-local→sbr, "
                  "net2 macvlan+static. Go side: 9 execs per ADD/DEL.", ""]
        lines += _latency_table(rows, ["pod-3-attachments", "single-macvlan"], with_meta=True) + [""]
        d = next((r for r in rows if r.get("case") == "daemon"), None)
        if d:
            lines += [f"Daemon after sections 1–2: RSS {d['daemon_rss_mib']} MiB, peak {d['daemon_peak_rss_mib']} MiB.", ""]
    if "3" in sec:
        lines += [f"## 3. {m['concurrent']} concurrent pods (section-1 pod), ADD burst then DEL burst", ""]
        lines += _concurrent_table(rows) + [""]
    if "4" in sec:
        lines += ["## 4. IPAM", ""] + _ipam_table(rows) + [""]
    if "5" in sec:
        cases = list(dict.fromkeys(r["case"] for r in rows if r.get("section") == "5" and "op" in r))
        lines += ["## 5. Plugin chains: in-process and drop-in vs reference", ""] + _latency_table(rows, cases) + [""]
    if "6" in sec:  # tests/bench/cri.py
        from tests.bench import cri

        lines += ["## 6. RunPodSandbox / StopPodSandbox through containerd (CRI)", "", cri.markdown(rows), ""]
    if "7" in sec:
        lines += ["## 7. Where one pod ADD/DEL spends its time, and the floor", "", _PROFILE_INTRO, ""]
        lines += _profile_table(rows) + [""]
    notes = _notes(rows)
    if notes:
        lines += ["## Notes and failures", ""] + notes + [""]
    return "\n".join(lines)


_PROFILE_INTRO = ("Section 1's pod, one operation at a time, measured per phase (tests/bench/profile.py: thin with a "
                  "sitecustomize hook on PYTHONPATH, thick with the hook in the daemon and the shim's socket calls timed). "
                  "Floor = the same kernel work by `ip -batch` (host and pod namespace), one `iptables-restore` and "
                  "in-process file/sysctl writes: how close to the limit each mode is.")


def plot(json_path: str, png_path: str) -> bool:
    """Render the latency plot in a child process; False (with a message) if that is not possible."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), json_path, png_path], cwd="/",
                          capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        print(f"plot not written: {proc.stderr.strip()[-800:]}", flush=True)
        return False
    return True


def _why(doc: dict[str, Any]) -> list[str]:
    """Where a target is missed: the measured start-up costs that explain it."""
    rows = doc["rows"]

    def p50(stack: str) -> float | None:
        r = next((x for x in rows if x.get("case") == "version" and x.get("stack") == stack), None)
        return r.get("p50_ms") if r else None

    bare, imports, shim, go = (p50("python -I -S -c pass"), p50("python: import pyroute2, pydantic, orjson"),
                               p50("thick"), p50("go"))
    out: list[str] = []
    missed = [t for t in doc["targets"] if t["met"] is False]
    if not missed:
        return out
    out.append("Why targets are missed (figures from section 0 of the same run):")
    bd = {(r["case"], r["breakdown"]): r for r in rows if "breakdown" in r}
    pod_add = bd.get(("pod-3-attachments", "ADD"))
    if any("thin" in t["target"] for t in missed) and pod_add is not None:
        out.append(f"- thin, measured: one thin pod ADD (with PYTHONPROFILEIMPORTTIME) took {pod_add['total_ms']:.0f} ms, "
                   f"{pod_add['imports_ms']:.0f} ms of it imports; largest: {', '.join(pod_add['top_imports'][:4])}.")
    if any("thin" in t["target"] for t in missed) and imports is not None:
        out.append(f"- thin: every pod operation starts a Python process that imports pydantic (the config models) and "
                   f"pyroute2's message layer (never its package `__init__`: cni/netlink/rtnl.py), as the line above "
                   f"measures, vs {go:.1f} ms for a whole Go exec; for scale, the three whole packages "
                   f"(`python -c 'import pyroute2, pydantic, orjson'`) take ≈ {imports:.0f} ms here. The in-process "
                   f"delegation saves the 8 extra execs of the Go stack but not this start-up; thick mode exists for "
                   f"that reason.")
    if any("thick" in t["target"] for t in missed) and shim is not None:
        out.append(f"- thick: the shim's start (`python -I -S`, ≈ {shim:.0f} ms p50 vs {bare:.0f} ms for an empty "
                   f"`python -I -S` and {go:.1f} ms for a whole Go exec) is paid on every call; the rest is the "
                   f"daemon's own work (column \"daemon's own mean ms\": netlink, host-local files, iptables-restore "
                   f"for portmap, the manifest read and the cache/status writes).")
    slow = [r for r in rows if r.get("section") == "5" and r.get("stack") == "inproc" and (r.get("ratio_p50") or 0) > 1]
    if any("thick" in t["target"] for t in missed) and slow:
        out.append("- thick, the daemon's share: the native plugins' own work is slower than the Go binaries' whole "
                   "exec for some chains (section 5, in-process vs reference, p50): "
                   + "; ".join(f"{r['case'].removeprefix('chain ')} {r['op']} {r['ratio_p50']:.2f}×" for r in slow)
                   + ". Those are the places where in-process delegation does not yet pay for the shim.")
    if any("RSS" in t["target"] or "failures" in t["target"] for t in missed):
        notes = [r["note"] for r in rows if r.get("case") == "concurrent" and "note" in r]
        out.append("- section 3 failures, as reported by the failing calls:")
        out += [f"  - {n[:400]}" for n in notes]
        if any("Resource temporarily unavailable" in n for n in notes):
            out.append("  - EAGAIN on connect() to a unix socket means its listen backlog was full (the daemon "
                       "listens with a backlog of 1024, capped by net.core.somaxconn); the shim retries for ≈ 3 s and "
                       "then maps it to code 11 (the runtime would retry).")
    return out


def readme_section(doc: dict[str, Any], plotted: bool) -> str:
    m, rows = doc["meta"], doc["rows"]
    load = m.get("load_1m")
    load_text = f"; 1-min load average during the run {min(load):.1f}–{max(load):.1f}" if load else ""
    lines = ["## Performance", "",
             f"Measured by `{m['command']}` on {m['started']} ({m['cpus']} CPUs{load_text}, kernel {m['kernel']}, Python "
             f"{m['python']}, reference containernetworking-plugins {m['reference']}; n={m['n']} per case after "
             f"{m['warmup']} warm-up(s); {m['duration_s']:.0f} s). Ratios are ours/Go at p50 from one run, stacks "
             "interleaved; absolute times vary between runs on these machines. Full tables: "
             "[tests/bench/results/latest.md](tests/bench/results/latest.md), raw samples: "
             "[latest.json](tests/bench/results/latest.json).", ""]
    lines += [f"- {x}" for x in m["notes"]] + [""]
    if doc["targets"]:
        lines += ["Targets:", ""] + _targets_table(doc["targets"]) + [""]
    lines += _why(doc)
    if lines[-1] != "":
        lines.append("")
    lines += ["Pod operations (pod = eth0 bridge+host-local→tuning→portmap, net1 macvlan+host-local→sbr, "
              "net2 macvlan+static; single = one macvlan+host-local):", ""]
    lines += _latency_table(rows, ["pod-3-attachments", "single-macvlan"], with_meta=True) + [""]
    if any(r.get("case") == "concurrent" for r in rows):
        lines += [f"{m['concurrent']} concurrent pods:", ""] + _concurrent_table(rows) + [""]
    lines += ["Exec floors:", ""] + _version_table(rows) + [""]
    cases = list(dict.fromkeys(r["case"] for r in rows if r.get("section") == "5" and "op" in r))
    if cases:
        lines += ["Plugin chains (in-process = the plugins' own work inside one process):", ""]
        lines += _latency_table(rows, cases) + [""]
    if any(r.get("section") == "4" for r in rows):
        lines += ["IPAM:", ""] + _ipam_table(rows) + [""]
    if any(r.get("case") == "profile" for r in rows):
        lines += ["Where one pod ADD/DEL spends its time, and the floor:", "", _PROFILE_INTRO, ""]
        lines += _profile_table(rows) + [""]
    if any(r.get("case") == "cri" for r in rows):
        from tests.bench import cri

        lines += ["RunPodSandbox / StopPodSandbox through containerd:", "", cri.markdown(rows), ""]
    if plotted:
        lines += ["![latency distributions](tests/bench/results/latency.png)", ""]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """``text`` with its "## Performance" section (up to the next "## " heading) replaced."""
    start = text.find("\n## Performance\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    start += 1
    nxt = text.find("\n## ", start + len("## Performance"))
    tail = text[nxt + 1:] if nxt >= 0 else ""
    return text[:start] + section.rstrip("\n") + "\n\n" + tail


def update_readme(doc: dict[str, Any], plotted: bool, path: str = README) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = replace_section(text, readme_section(doc, plotted))
    tmp = path + ".bench-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)
