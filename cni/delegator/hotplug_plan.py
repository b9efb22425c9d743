"""What a running pod's secondary attachments must become when its networks annotation changes. PURE.

Rules (multi-net spec §4.2: an attachment is unique by network and interface):
- desired = the pod's selections now (defaultNetworks included, so they always match themselves);
  actual = the attachment cache, never network-status (others may edit that annotation).
- A selection naming an interface matches the cached attachment of the same network on that interface;
  a selection without ``@ifname`` matches any still unmatched attachment of the same network, lowest index
  first, so it keeps the name it already has (multus-dynamic-networks-controller #63 needs the name to
  unplug; we do not).
- The cluster network (the primary attachment) is never touched, and neither is anything the runtime's
  own ADD has not finished (the runtime owns a sandbox until its ADD has made every attachment).
- A rename (same network, another ``@ifname``) is two changes: the old attachment goes, the new one comes.
- A new attachment without a requested name gets the lowest free ``net<N>``; a requested name in use by an
  attachment that stays is refused, as at pod creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..k8s.annotations import AnnotationError, Selection
from .plan import Attachment


@dataclass(frozen=True)
class NewAttachment:
    """A selection to attach: its position for the cache (``index``) and its interface name."""

    selection: Selection
    index: int
    ifname: str


@dataclass(frozen=True)
class Changes:
    add: tuple[NewAttachment, ...] = ()
    remove: tuple[Attachment, ...] = ()  # newest first, the order DEL takes
    refused: tuple[tuple[Selection, str], ...] = field(default=())  # (selection, why)

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove)


def _free_name(used: set[str]) -> str:
    n = 1
    while f"net{n}" in used:
        n += 1
    return f"net{n}"


def changes(attached: list[Attachment], wanted: list[Selection]) -> Changes:
    """Match ``wanted`` against the ``attached`` (cached, made) attachments of one sandbox."""
    secondary = [a for a in attached if not a.primary]
    unmatched = sorted(secondary, key=lambda a: a.index)
    pending: list[Selection] = []
    # Named selections first: they must win their interface even when an unnamed selection of the same
    # network comes earlier in the annotation.
    for sel in wanted:
        if not sel.interface:
            continue
        hit = next((a for a in unmatched if a.name == sel.key and a.ifname == sel.interface), None)
        if hit is not None:
            unmatched.remove(hit)
        else:
            pending.append(sel)
    for sel in wanted:
        if sel.interface:
            continue
        hit = next((a for a in unmatched if a.name == sel.key), None)
        if hit is not None:
            unmatched.remove(hit)
        else:
            pending.append(sel)
    remove = tuple(sorted(unmatched, key=lambda a: a.index, reverse=True))
    staying = {a.ifname for a in attached if a not in remove}
    used = set(staying)
    next_index = max((a.index for a in attached), default=0) + 1
    add: list[NewAttachment] = []
    refused: list[tuple[Selection, str]] = []
    # Requested names are placed before generated ones so that a generated net<N> never takes a name a
    # selection asked for explicitly.
    for sel in sorted(pending, key=lambda s: not s.interface):
        if sel.interface:
            if sel.interface in used:
                refused.append((sel, f"interface name {sel.interface} is already in use in the pod"))
                continue
            ifname = sel.interface
        else:
            ifname = _free_name(used)
        used.add(ifname)
        add.append(NewAttachment(sel, next_index, ifname))
        next_index += 1
    add.sort(key=lambda n: n.index)
    return Changes(tuple(add), remove, tuple(refused))


def check_refusals(ch: Changes) -> None:
    """Raise the first refusal as the annotation error it is (code 7, like a bad annotation at creation)."""
    if ch.refused:
        sel, why = ch.refused[0]
        raise AnnotationError(f"cannot attach {sel.key}: {why}",
                              "give each attachment a distinct interface name (multi-net spec §4.1)")
