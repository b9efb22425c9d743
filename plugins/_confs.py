"""The pydantic models of the native plugins' configs (macvlan, ipvlan, bridge, tuning, portmap, sbr).

Why a module of its own: a plugin module is imported for every command, and DEL of every native
plugin reads only the few keys it acts on (``Plugin.delete_only``: ``_iface.ipam_type_for_delete``,
``_delconf``); keeping pydantic out of the plugin modules' top level lets a thin DEL run without
importing it (start-up budget: rule 10, cni/ARCHITECTURE.md). Each plugin's ``parse`` imports its
model from here.
"""

# No ``from __future__ import annotations`` in this module (nor in cni/delegator/config.py): pydantic would
# turn every string annotation into a ForwardRef, one compile() per field, at class creation (≈ 1 ms of
# a thin ADD, min of 15 A/B); real annotations cost nothing.

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, StrictBool, StrictInt, field_validator, model_validator

from cni.spec import args as cniargs
from cni.spec.model import Model
from cni.spec.result import DNS

from . import _iface
from . import _portmap_rules as R
from ._chained import SBR_RESERVED_TABLES, absolute_data_dir

# The ``dataDir`` field type of every chained plugin's config model.
DataDir = Annotated[str, AfterValidator(absolute_data_dir)]


class DNSConf(Model):
    """The ``dns`` key of a network config (SPEC "Network configuration": dns)."""

    nameservers: list[str] = Field([])
    domain: str = ""
    search: list[str] = Field([])
    options: list[str] = Field([])

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
    ipam: dict[str, Any] = Field({})
    dns: DNSConf | None = None


class IpvlanConf(Model):
    """The ipvlan network config."""

    master: MasterName = ""
    mode: Annotated[str, mode_of("ipvlan", _iface.IPVLAN_MODES, default="l2")] = "l2"
    mtu: int = Field(0, ge=0, le=65535)
    link_in_container: bool = Field(False, alias="linkInContainer")
    ipam: dict[str, Any] = Field({})
    dns: DNSConf | None = None


# ---- bridge -------------------------------------------------------------------------------------


class VlanTrunk(Model):
    """One ``vlanTrunk`` entry: a single ``id`` and/or a ``minID``..``maxID`` range."""

    id: StrictInt | None = None
    min_id: StrictInt | None = Field(None, alias="minID")
    max_id: StrictInt | None = Field(None, alias="maxID")


class BridgeConf(Model):
    """The bridge network config (unknown keys are kept)."""

    bridge: str = _iface.DEFAULT_BRIDGE
    is_gateway: StrictBool = Field(False, alias="isGateway")
    is_default_gateway: StrictBool = Field(False, alias="isDefaultGateway")
    force_address: StrictBool = Field(False, alias="forceAddress")
    ip_masq: StrictBool = Field(False, alias="ipMasq")
    ip_masq_backend: Literal["iptables", "nftables"] | None = Field(None, alias="ipMasqBackend")
    mtu: StrictInt = Field(0, ge=0, le=65535)
    hairpin_mode: StrictBool = Field(False, alias="hairpinMode")
    promisc_mode: StrictBool = Field(False, alias="promiscMode")
    vlan: StrictInt = Field(0, ge=0, le=4094)
    vlan_trunk: list[VlanTrunk] | None = Field(None, alias="vlanTrunk")
    preserve_default_vlan: StrictBool = Field(True, alias="preserveDefaultVlan")
    macspoofchk: StrictBool = False
    enabledad: StrictBool = False
    disable_container_interface: StrictBool = Field(False, alias="disableContainerInterface")
    port_isolation: StrictBool = Field(False, alias="portIsolation")
    ipam: dict[str, Any] = Field({})
    dns: DNSConf | None = None

    @model_validator(mode="after")
    def _bridge_name(self) -> Self:
        name = self.bridge or _iface.DEFAULT_BRIDGE
        problem = cniargs.ifname_problem(name)
        if problem:
            raise ValueError(f"bridge name {name!r} is not an interface name: {problem}")
        return self


# ---- tuning -------------------------------------------------------------------------------------


class TuningArgs(Model):
    """``args.cni`` overrides."""

    sysctl: dict[str, str] | None = None
    mac: str | None = None
    promisc: bool | None = None
    mtu: int | None = Field(default=None, ge=0)
    allmulti: bool | None = None
    tx_qlen: int | None = Field(default=None, alias="txQLen", ge=0)


class _TuningArgsDoc(Model):
    cni: TuningArgs | None = None


class _TuningRuntimeConfig(Model):
    mac: str | None = None


class TuningConf(Model):
    sysctl: dict[str, str] = Field({})
    mac: str = ""
    promisc: bool | None = None
    mtu: int = Field(default=0, ge=0)
    allmulti: bool | None = None
    tx_qlen: int | None = Field(default=None, alias="txQLen", ge=0)
    data_dir: DataDir = Field(default="/run/cni/tuning", alias="dataDir", min_length=1)
    args: _TuningArgsDoc | None = None
    runtime_config: _TuningRuntimeConfig | None = Field(default=None, alias="runtimeConfig")


# ---- portmap ------------------------------------------------------------------------------------


class PortMapEntry(Model):
    host_port: int = Field(alias="hostPort", ge=1, le=65535)
    container_port: int = Field(alias="containerPort", ge=1, le=65535)
    protocol: str = "tcp"
    host_ip: str = Field(default="", alias="hostIP")

    @field_validator("protocol")
    @classmethod
    def _proto(cls, v: str) -> str:
        v = v.lower()
        if v not in R.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(R.PROTOCOLS)}")
        return v

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, v: str) -> str:
        if v:
            ipaddress.ip_address(v)
        return v


class _PortMapRuntimeConfig(Model):
    port_mappings: list[PortMapEntry] = Field([], alias="portMappings")


class PortMapConf(Model):
    snat: bool = True
    masq_all: bool = Field(default=False, alias="masqAll")
    mark_masq_bit: int | None = Field(default=None, alias="markMasqBit", ge=0, le=31)
    external_set_mark_chain: str | None = Field(default=None, alias="externalSetMarkChain")
    conditions_v4: list[str] = Field([], alias="conditionsV4")
    conditions_v6: list[str] = Field([], alias="conditionsV6")
    backend: Literal["iptables", "nftables"] | None = None
    data_dir: DataDir = Field(default="/var/lib/cni/portmap", alias="dataDir", min_length=1)
    runtime_config: _PortMapRuntimeConfig = Field(default_factory=lambda: _PortMapRuntimeConfig.model_validate({}), alias="runtimeConfig")


# ---- sbr ----------------------------------------------------------------------------------------


class SbrConf(Model):
    table: int | None = Field(default=None, ge=1, le=0xFFFFFFFF)
    gateways: list[str] = Field([])
    data_dir: DataDir = Field(default="/run/cni/sbr", alias="dataDir", min_length=1)

    @field_validator("table")
    @classmethod
    def _table(cls, v: int | None) -> int | None:
        if v is not None and v in SBR_RESERVED_TABLES:
            raise ValueError(f"table {v} is reserved (253 default, 254 main, 255 local)")
        return v

    @field_validator("gateways")
    @classmethod
    def _gateways(cls, v: list[str]) -> list[str]:
        for g in v:
            ipaddress.ip_address(g)  # ValueError → error 7 naming the field
        return v
