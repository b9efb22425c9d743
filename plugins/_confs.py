"""The pydantic models of the interface plugins' configs (macvlan, ipvlan) and the pieces bridge shares.

Why a module of its own: a plugin module is imported for every command, and DEL of macvlan/ipvlan
reads only ``ipam.type`` (``_iface.ipam_type_for_delete``); keeping pydantic out of the plugin
modules' top level lets a thin DEL run without importing it (start-up budget: rule 10,
cni/ARCHITECTURE.md). Each plugin's ``parse`` imports its model from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from cni.spec import args as cniargs
from cni.spec.model import Model
from cni.spec.result import DNS

from . import _iface


class DNSConf(Model):
    """The ``dns`` key of a network config (SPEC "Network configuration": dns)."""

    nameservers: list[str] = Field(default_factory=list)
    domain: str = ""
    search: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)

    def to_dns(self) -> DNS:
        return DNS(tuple(self.nameservers), self.domain, tuple(self.search), tuple(self.options))


def _master_name(v: str) -> str:
    problem = cniargs.ifname_problem(v) if v else None
    if problem:
        raise ValueError(f"{v!r} is not an interface name: {problem}")
    return v


MasterName = Annotated[str, AfterValidator(_master_name)]
"""The ``master`` key: "" (the default-route interface, looked up at ADD) or an interface name."""


def mode_of(kind: str, modes: Mapping[str, int], default: str) -> AfterValidator:
    """The validator of a ``mode`` key: one of ``modes``; "" is ``default``, as in the reference."""

    def known(v: str) -> str:
        v = v or default
        if v not in modes:
            raise ValueError(f"unknown {kind} mode {v!r}, expected one of {', '.join(modes)}")
        return v

    return AfterValidator(known)


class MacvlanConf(Model):
    """The macvlan network config (unknown keys are kept: other plugins/runtimes add their own)."""

    master: MasterName = ""
    mode: Annotated[str, mode_of("macvlan", _iface.MACVLAN_MODES, default="bridge")] = "bridge"
    mtu: int = Field(0, ge=0, le=65535)
    mac: str = ""
    link_in_container: bool = Field(False, alias="linkInContainer")
    bcqueuelen: int = Field(0, ge=0, le=0xFFFFFFFF)
    ipam: dict[str, Any] = Field(default_factory=dict)
    dns: DNSConf | None = None


class IpvlanConf(Model):
    """The ipvlan network config."""

    master: MasterName = ""
    mode: Annotated[str, mode_of("ipvlan", _iface.IPVLAN_MODES, default="l2")] = "l2"
    mtu: int = Field(0, ge=0, le=65535)
    link_in_container: bool = Field(False, alias="linkInContainer")
    ipam: dict[str, Any] = Field(default_factory=dict)
    dns: DNSConf | None = None
