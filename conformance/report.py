"""Render a Report: terminal table, JUnit XML, JSON. PURE (strings in, strings out)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from .model import Report

_MARK = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}


def terminal(report: Report, *, width: int = 100) -> str:
    lines = [
        f"CNI conformance: {report.plugin} (profile {report.profile}, kernel {report.kernel})",
        f"versions requested {', '.join(report.versions)}; plugin supports {', '.join(report.supported) or '?'}",
    ]
    lines += [f"note: {n}" for n in report.notes]
    idw = max([len(r.id) for r in report.results] + [5])
    lines.append("")
    lines.append(f"{'check'.ljust(idw)}  {'level':6}  {'result':6}  {'section':28}  detail")
    lines.append("-" * min(width + idw, 160))
    for r in report.results:
        msg = r.message.replace("\n", " ")
        if len(msg) > width:
            msg = msg[: width - 1] + "…"
        lines.append(f"{r.id.ljust(idw)}  {r.level:6}  {_MARK[r.status]:6}  {r.section[:28]:28}  {msg}")
    lat = report.latency()
    if lat:
        lines.append("")
        lines.append("latency (all calls of the run): " + "; ".join(
            f"{op} p50 {v['p50_ms']} ms p95 {v['p95_ms']} ms n={v['n']}" for op, v in lat.items()))
    musts = report.must_failures
    if musts:
        lines.append("")
        lines.append(f"MUST failures: {', '.join(r.id for r in musts)}")
    lines.append("")
    lines.append(report.summary())
    return "\n".join(lines) + "\n"


def junit(report: Report) -> str:
    suite = ET.Element(
        "testsuite",
        name=f"cni-conformance.{report.plugin}.{report.profile}",
        tests=str(len(report.results)),
        failures=str(report.failed),
        skipped=str(report.skipped),
        errors="0",
        time=f"{sum(r.duration for r in report.results):.3f}",
    )
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"{report.plugin}.{report.profile}", name=r.id, time=f"{r.duration:.3f}")
        ET.SubElement(case, "properties").extend(
            [ET.Element("property", name=k, value=v) for k, v in (("level", r.level), ("section", r.section), ("title", r.title))]
        )
        if r.status == "fail":
            el = ET.SubElement(case, "failure", message=f"[{r.level}] {r.message}", type=r.level)
            el.text = json.dumps(r.evidence, indent=1)[:20000]
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.message)
        else:
            ET.SubElement(case, "system-out").text = r.message
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=1) + "\n"


def markdown(reports: list[Report], title: str, intro: str = "") -> str:
    """Several reports as one Markdown document (the kept reference report)."""
    out = [f"# {title}", ""]
    if intro:
        out += [intro, ""]
    for rep in reports:
        out += [f"## {rep.plugin} — profile `{rep.profile}`", ""]
        out += [f"Supported versions: {', '.join(rep.supported)}. **{rep.summary()}**", ""]
        out += [f"- note: {n}" for n in rep.notes]
        out += ["| check | level | section | result | detail |", "|---|---|---|---|---|"]
        for r in rep.results:
            msg = r.message.replace("|", "\\|").replace("\n", " ")[:300]
            out.append(f"| `{r.id}` | {r.level} | {r.section} | {r.status.upper()} | {msg} |")
        lat = rep.latency()
        if lat:
            out += ["", "Latency: " + "; ".join(f"{op} p50 {v['p50_ms']} ms / p95 {v['p95_ms']} ms (n={v['n']})" for op, v in lat.items())]
        out.append("")
    return "\n".join(out)
