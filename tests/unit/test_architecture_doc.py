"""The rules the code cites are in the repository (cni/ARCHITECTURE.md), and no citation points outside it.

A clone of this repository must stand alone: a comment that says "rule 10" or names a document
has to resolve inside the repo or to an upstream URL.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.test_import_layers import LAYERS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "cni" / "ARCHITECTURE.md"
SCANNED = ("cni", "plugins", "ipam", "conformance", "packaging", "tests")

# Documents that lived outside the repository while it was written; a citation of one dangles.
DANGLING = re.compile(r"\bSTYLE\b|shared/|\breference/\w+\.md|\bperformance\.md|\bDESIGN\.md|\bnotes/\w+")
# "rule 10, cni/ARCHITECTURE.md" in code, "(rule 10)" in the document itself; not "ip rule 100".
RULE = re.compile(r"\brule (\d+)(?:, cni/ARCHITECTURE\.md|\))")


def _sources() -> list[Path]:
    out: list[Path] = []
    for base in SCANNED:
        for pattern in ("*.py", "*.md"):
            out.extend(p for p in sorted((ROOT / base).rglob(pattern)) if "results" not in p.parts)
    return out


def _numbered_rules() -> set[int]:
    text = DOC.read_text()
    section = text.split("## Rules", 1)[1].split("\n## ", 1)[0]
    return {int(m) for m in re.findall(r"^(\d+)\. ", section, flags=re.M)}


def test_no_citation_points_outside_the_repository() -> None:
    bad = []
    for f in _sources():
        if f == Path(__file__).resolve():
            continue
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if DANGLING.search(line):
                bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "citations of documents that are not in the repository:\n" + "\n".join(bad)


def test_every_cited_rule_exists() -> None:
    rules = _numbered_rules()
    assert rules == set(range(1, len(rules) + 1)) and len(rules) >= 10
    cited = set()
    for f in _sources():
        cited.update(int(m) for m in RULE.findall(f.read_text(errors="replace")))
    assert cited and cited <= rules, f"cited rules missing from cni/ARCHITECTURE.md: {sorted(cited - rules)}"


def test_the_documented_layers_are_the_enforced_ones() -> None:
    text = DOC.read_text()
    for _, prefixes in LAYERS:
        for p in prefixes:
            if p != "cni":
                assert f"`{p}" in text, f"layer member {p} of tests/unit/test_import_layers.py is not in cni/ARCHITECTURE.md"
