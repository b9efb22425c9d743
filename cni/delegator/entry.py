"""Meta-plugin entry point (foundation version: runs the configured ``delegates``).

The full delegator (annotations, NADs, cache, network-status) replaces the body of
``handle``; the signature stays: one ``Request`` in, a ``Result`` (ADD) or None out.
"""

from __future__ import annotations

from typing import Any

from ..spec.config import conflist_from
from ..spec.errors import InvalidConfig
from ..spec.request import Request
from ..spec.result import Result, from_wire


def handle(req: Request) -> Result | None:
    from .. import invoke

    delegates = req.config.get("delegates")
    if not isinstance(delegates, list) or not delegates:
        raise InvalidConfig("network config field 'delegates' must be a non-empty list")
    lists = []
    for i, d in enumerate(delegates):
        if not isinstance(d, dict):
            raise InvalidConfig(f"network config field 'delegates[{i}]' must be an object")
        lists.append(conflist_from(d))
    primary = lists[0]
    rc: dict[str, Any] = req.runtime_config()
    if req.command == "ADD":
        return invoke.add_list(req, primary, rc)
    prev_raw = req.config.get("prevResult")
    prev = from_wire(prev_raw, err_cls=InvalidConfig) if isinstance(prev_raw, dict) else None
    if req.command == "DEL":
        invoke.del_list(req, primary, prev, rc)
    elif req.command == "CHECK":
        invoke.check_list(req, primary, prev, rc)
    elif req.command == "STATUS":
        invoke.status_list(req, primary)
    elif req.command == "GC":
        from ..plugin import valid_attachments

        valid = valid_attachments(req.config) or []
        invoke.gc_list(req, primary, [{"containerID": c, "ifname": i} for c, i in valid])
    return None
