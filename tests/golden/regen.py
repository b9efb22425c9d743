"""Regenerate (or check) the result-conversion golden files.

For every source result in ``sources/`` (hand-written, 1.1.0 shape) and every pair of CNI
versions (from, to) — 7 × 7 = 49 pairs — we render the source in the ``from`` wire shape,
convert that document to ``to`` with ``cni.spec.result.convert`` and store
``{"from", "to", "input", "output"}`` (or ``"error": {"class", "code"}`` when the
conversion is refused) in ``results/<source>/<from>_to_<to>.json``.

    .venv/bin/python tests/golden/regen.py          # rewrite the files
    .venv/bin/python tests/golden/regen.py --check  # exit 1 when any file differs

A change in a golden file is a change of wire behaviour: review the diff against the spec
(libcni convert semantics) before committing it. The unit test
tests/unit/spec/test_spec_golden.py fails when the generated output differs from the files.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCES = os.path.join(HERE, "sources")
RESULTS = os.path.join(HERE, "results")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from cni.spec import versions  # noqa: E402
from cni.spec.errors import CNIError  # noqa: E402
from cni.spec.result import convert, from_wire, to_wire  # noqa: E402


def _render(doc: dict[str, Any]) -> str:
    # Key order is part of the wire format (tools diff results): keep it, never sort.
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _error(exc: CNIError) -> dict[str, Any]:
    return {"class": type(exc).__name__, "code": exc.code}


def generate() -> dict[str, str]:
    """Relative path under results/ → file text, for every source and version pair."""
    out: dict[str, str] = {}
    for fname in sorted(os.listdir(SOURCES)):
        if not fname.endswith(".json"):
            continue
        source_name = fname[: -len(".json")]
        with open(os.path.join(SOURCES, fname), encoding="utf-8") as f:
            canonical = from_wire(json.load(f))
        for frm in versions.ALL:
            for to in versions.ALL:
                doc: dict[str, Any] = {"from": frm, "to": to}
                try:
                    src = to_wire(canonical, frm)
                except CNIError as exc:
                    doc["input_error"] = _error(exc)
                else:
                    doc["input"] = src
                    try:
                        doc["output"] = convert(src, to)
                    except CNIError as exc:
                        doc["error"] = _error(exc)
                out[os.path.join(source_name, f"{frm}_to_{to}.json")] = _render(doc)
    return out


def differences(generated: dict[str, str]) -> list[str]:
    """Paths whose file is missing, different or no longer generated."""
    bad = []
    for rel, text in generated.items():
        p = os.path.join(RESULTS, rel)
        try:
            with open(p, encoding="utf-8") as f:
                if f.read() != text:
                    bad.append(rel)
        except FileNotFoundError:
            bad.append(rel)
    if os.path.isdir(RESULTS):
        for d, _, files in os.walk(RESULTS):
            for name in files:
                rel = os.path.relpath(os.path.join(d, name), RESULTS)
                if rel not in generated:
                    bad.append(rel)
    return sorted(bad)


def main(argv: list[str]) -> int:
    generated = generate()
    if "--check" in argv:
        bad = differences(generated)
        for rel in bad:
            print(f"differs: results/{rel}")
        return 1 if bad else 0
    for rel, text in generated.items():
        p = os.path.join(RESULTS, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
    for rel in differences(generated):  # stale files of a removed source
        os.unlink(os.path.join(RESULTS, rel))
    print(f"wrote {len(generated)} golden files under {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
