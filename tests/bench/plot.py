"""Latency distributions from a bench results file: ``python tests/bench/plot.py latest.json latency.png``.

Run as a script (not ``-m``) so that the PyPI ``packaging`` module matplotlib needs is not
shadowed by the repository's own ``packaging/`` directory.
"""

from __future__ import annotations

import json
import math
import sys

COLORS = {"go": "#4c72b0", "thick": "#55a868", "thin": "#c44e52", "dropin": "#dd8452", "inproc": "#8172b3"}
ORDER = ["go", "thick", "thin", "dropin", "inproc"]


def main(src: str, dst: str) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with open(src) as f:
        doc = json.load(f)
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for key, samples in doc["samples"].items():
        case, op, stack = key.split("|")
        if samples:
            groups.setdefault((case, op), {})[stack] = samples
    if not groups:
        return 0
    cols = 3
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.6 * rows), squeeze=False)
    for ax, ((case, op), by_stack) in zip(axes.flat, groups.items(), strict=False):
        stacks = sorted(by_stack, key=lambda s: (ORDER.index(s) if s in ORDER else 99, s))
        data = [by_stack[s] for s in stacks]
        bp = ax.boxplot(data, vert=False, whis=(5, 95), showfliers=True, patch_artist=True,
                        flierprops={"markersize": 2})
        for patch, s in zip(bp["boxes"], stacks, strict=True):
            patch.set_facecolor(COLORS.get(s, "#bbbbbb"))
        ax.set_yticks(range(1, len(stacks) + 1), [s if len(s) < 22 else s[:20] + "…" for s in stacks], fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ms (log)", fontsize=8)
        ax.set_title(f"{case} — {op}", fontsize=9)
        ax.grid(axis="x", alpha=0.3, which="both")
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    m = doc["meta"]
    fig.suptitle(f"multinic vs reference CNI plugins — {m['started']} — n={m['n']} (boxes p25–p75, whiskers p5–p95)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
