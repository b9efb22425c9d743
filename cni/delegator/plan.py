"""The attachment plan of one pod. PURE.

Multi-net spec §6/§4.1 and Multus naming: the cluster network comes first and gets
CNI_IFNAME (eth0); every other attachment is ``net<i>`` by its position in the whole list
(primary = 0) unless the annotation asked for a name; a name used twice fails the pod;
Kubernetes' own runtimeConfig goes only to the cluster network (§7.5); an annotation's
capability arguments go only to its own attachment, and its ``mac``/``ips`` also as CNI_ARGS
``MAC``/``IP`` (as Multus passes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..k8s.annotations import AnnotationError, Selection
from ..spec.config import ConfList, conflist_from


@dataclass(frozen=True)
class Attachment:
    index: int
    ifname: str
    name: str  # network-status name: "<ns>/<nad>", or the conf name of the cluster network
    conflist: ConfList
    runtime_config: dict[str, Any] = field(default_factory=dict)
    primary: bool = False
    cni_args: dict[str, Any] | None = None
    default_route: tuple[str, ...] = ()

    def plugin_list(self) -> ConfList:
        """The conflist with the annotation's ``cni-args`` merged into every plugin's ``args.cni``."""
        if not self.cni_args:
            return self.conflist
        plugins = []
        for p in self.conflist.plugins:
            p = dict(p)
            args = dict(p.get("args") or {})
            cni = dict(args.get("cni") or {})
            cni.update(self.cni_args)
            args["cni"] = cni
            p["args"] = args
            plugins.append(p)
        return ConfList(self.conflist.cni_version, self.conflist.name, tuple(plugins),
                        self.conflist.disable_check, self.conflist.disable_gc, self.conflist.raw)

    def env_args(self) -> dict[str, str]:
        """CNI_ARGS this attachment's plugins get besides the runtime's: the annotation's ``mac`` and ``ips``
        as ``MAC=`` / ``IP=a,b`` (Multus' deprecated but still used copies: static IPAM and tuning read them
        without a capability), with ``IgnoreUnknown`` so plugins that use neither do not refuse them."""
        if self.primary:
            return {}
        out: dict[str, str] = {}
        mac = self.runtime_config.get("mac")
        ips = self.runtime_config.get("ips")
        if isinstance(mac, str) and mac:
            out["MAC"] = mac
        if isinstance(ips, list) and ips:
            out["IP"] = ",".join(str(ip) for ip in ips)
        if out:
            out = {"IgnoreUnknown": "true", **out}
        return out

    def to_json(self) -> dict[str, Any]:
        raw = self.conflist.raw or {"cniVersion": self.conflist.cni_version, "name": self.conflist.name,
                                    "plugins": list(self.conflist.plugins)}
        return {
            "index": self.index, "ifname": self.ifname, "name": self.name, "conflist": raw,
            "runtimeConfig": self.runtime_config, "primary": self.primary,
            "cniArgs": self.cni_args, "defaultRoute": list(self.default_route),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Attachment:
        return cls(
            index=int(obj["index"]), ifname=str(obj["ifname"]), name=str(obj["name"]),
            conflist=conflist_from(obj["conflist"]), runtime_config=dict(obj.get("runtimeConfig") or {}),
            primary=bool(obj.get("primary")), cni_args=obj.get("cniArgs"),
            default_route=tuple(obj.get("defaultRoute") or ()),
        )


def build(
    primary_name: str,
    primary: ConfList,
    primary_ifname: str,
    primary_runtime_config: dict[str, Any],
    secondaries: list[tuple[Selection, str, ConfList]],
) -> list[Attachment]:
    """Order and name the attachments; ``secondaries`` = (selection, network key, conflist) in request order."""
    plan = [Attachment(0, primary_ifname, primary_name, primary, dict(primary_runtime_config), primary=True)]
    used = {primary_ifname: primary_name}
    for i, (sel, key, cl) in enumerate(secondaries, start=1):
        ifname = sel.interface or f"net{i}"
        if ifname in used:
            raise AnnotationError(
                f"interface name {ifname} is requested twice (by {used[ifname]} and {key})",
                "give each attachment a distinct interface name (multi-net spec §4.1)",
            )
        used[ifname] = key
        plan.append(Attachment(i, ifname, key, cl, sel.runtime_config(), cni_args=sel.cni_args,
                               default_route=sel.default_route))
    return plan
