"""Whole-run leak accounting: what is left after the run's last DEL, and after which check it appeared. PURE.

A per-check diff compares a check's before/after snapshots, so anything that appeared before a check
began (in the warm-up, or in an earlier check whose own diff missed it) is invisible to it: a plugin
that leaks only on its first ADD passes every per-check diff. Here the run's baseline, taken before
its first call, is compared with the state after its last DEL.

Not every leftover is a leak: a plugin may keep state shared by all its attachments (the bridge
device, host-local's ``lock``/``last_reserved_ip``, portmap's top-level chains). The rules:
- the template namespace (a pod namespace made fresh) must come out exactly as it did at the start;
- in the caller's namespace, links, addresses, routes, rules and sysctls are leaks unless they belong
  to an interface an ADD result named as a host-side interface (no ``sandbox``: the bridge);
- firewall lines and state files are kept state unless they are tied to one attachment: a line or
  file that names a container ID or an address the run handed out, or a file named after an address.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Snap = dict[str, dict[str, list[list[str]]]]
FIREWALL = ("iptables", "ip6tables", "nft")


@dataclass
class Leftover:
    where: str  # host | template | files
    category: str
    change: str  # added | removed
    item: str
    first_seen: str = ""  # the first snapshot (check id, or "warm-up") in which it showed


@dataclass
class Verdict:
    leaks: list[Leftover] = field(default_factory=list)
    kept: list[Leftover] = field(default_factory=list)  # allowed shared state


def _items(snap: Snap, where: str, cat: str) -> dict[str, str]:
    return {t: i for t, i in snap.get(where, {}).get(cat, [])}


def _changes(before: Snap, after: Snap) -> list[tuple[Leftover, str]]:
    out = []
    for where in sorted(before.keys() & after.keys()):
        for cat in sorted(before[where].keys() | after[where].keys()):
            b, a = _items(before, where, cat), _items(after, where, cat)
            out += [(Leftover(where, cat, "added", t), a[t]) for t in sorted(a.keys() - b.keys())]
            out += [(Leftover(where, cat, "removed", t), b[t]) for t in sorted(b.keys() - a.keys())]
    return out


def _names_an_address(text: str, addresses: set[str]) -> bool:
    words = text.replace("/", " ").replace('"', " ").replace("=", " ").split()
    return any(w in addresses for w in words)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("_")[0])
    except ValueError:
        return False
    return True


def judge(
    baseline: Snap,
    final: Snap,
    marks: list[tuple[str, Snap]],
    *,
    host_ifaces: set[str],
    cid_prefix: str,
    addresses: set[str],
    read: Callable[[str], str] = lambda p: "",
) -> Verdict:
    """Classify every difference between ``baseline`` and ``final``; ``marks`` are the snapshots
    taken after each check (in order), used to name when a leak first showed."""
    verdict = Verdict()
    for left, iface in _changes(baseline, final):
        leak = True
        if left.where == "host" and left.change == "added":
            if iface and iface in host_ifaces:
                leak = False
            elif left.category in FIREWALL:
                leak = cid_prefix in left.item or _names_an_address(left.item, addresses)
        elif left.where == "files":
            path = left.item.removeprefix("file ")
            if left.change == "removed":
                leak = False  # the plugin tidied up what was there before: not a leftover
            else:
                leak = cid_prefix in path or _is_address(os.path.basename(path)) or cid_prefix in read(path)
        if leak:
            left.first_seen = first_seen(left, baseline, marks)
            verdict.leaks.append(left)
        else:
            verdict.kept.append(left)
    return verdict


def read_head(path: str) -> str:
    """The start of a leftover file (enough to see a container ID in it); "" when unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""


def first_seen(left: Leftover, baseline: Snap, marks: list[tuple[str, Snap]]) -> str:
    """The first mark whose snapshot differs from the baseline the way ``left`` does."""
    was = left.item in _items(baseline, left.where, left.category)
    for label, snap in marks:
        now = left.item in _items(snap, left.where, left.category)
        if now != was:
            return label
    return "after the last check (or between snapshots)"


def summarise(leaks: list[Leftover], limit: int = 8) -> str:
    parts = [f"{'+' if x.change == 'added' else '-'}{x.item} ({x.where}/{x.category}, first after {x.first_seen})"
             for x in leaks[:limit]]
    more = f"; and {len(leaks) - limit} more" if len(leaks) > limit else ""
    return "; ".join(parts) + more


def as_evidence(verdict: Verdict) -> dict[str, Any]:
    return {
        "label": "whole-run leftovers (baseline before the first call vs after the last DEL)",
        "leaks": [vars(x) for x in verdict.leaks],
        "kept_shared_state": [vars(x) for x in verdict.kept],
    }
