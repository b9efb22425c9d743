"""The meta-plugin's verbose log lines about one attachment, in Multus' format (its DelegateAdd/DelegateDel lines).

Shared by the runtime's commands (``core``) and the daemon's hot-plugs (``hotplug``), so both log an attachment
the same way. orjson is imported when a line with JSON is built: a thin DEL below the verbose level never pays it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cache import to_wire_safe

if TYPE_CHECKING:
    from ..spec.result import Result
    from .context import PodRef
    from .plan import Attachment


def log_id(pod: PodRef, att: Attachment) -> str:
    """Multus' ``ns:pod:uid:net(confname):ifname`` (DelegateAdd's verbose line)."""
    return f"{pod.namespace}:{pod.name}:{pod.uid or 'unknownUID'}:{att.name}({att.conflist.name}):{att.ifname}"


def conf_json(att: Attachment) -> str:
    """The attachment's conflist as JSON, as the runtime or the NAD gave it."""
    import orjson

    raw = att.conflist.raw or {"cniVersion": att.conflist.cni_version, "name": att.conflist.name,
                               "plugins": list(att.conflist.plugins)}
    return orjson.dumps(raw).decode()


def result_json(res: Result, att: Attachment) -> str:
    """The attachment's result as JSON, in the form the cache keeps it."""
    import orjson

    return orjson.dumps(to_wire_safe(res, att)).decode()


def add_line(pod: PodRef, att: Attachment, res: Result) -> str:
    return f"Add: {log_id(pod, att)} {result_json(res, att)}"


def del_line(pod: PodRef, att: Attachment) -> str:
    """Multus' DelegateDel line (``ns:pod:uid:confname:ifname`` and the conflist)."""
    return f"Del: {pod.namespace}:{pod.name}:{pod.uid or 'unknownUID'}:{att.conflist.name}:{att.ifname} {conf_json(att)}"
