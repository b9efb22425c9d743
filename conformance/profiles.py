"""Profiles (what kind of plugin is under test) and the sample configs the harness generates.

A user config may contain placeholders the harness fills in: ``{{master}}`` (an uplink veth in
the harness's host namespace), ``{{bridge}}`` (a bridge name of this run), ``{{dataDir}}`` (a
temp directory; added to the state dirs that the leak diff watches). PURE apart from
``ipaddress`` arithmetic.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

PROFILES = ("interface", "chained", "ipam", "meta")

NET_NAME = "conformance"
POOL_SUBNET = "10.78.0.0/24"
POOL_GATEWAY = "10.78.0.1"
IPAM_CALLER = "macvlan"  # the top-level type of an ipam-profile config (see sample_config)
PORT_MAPPINGS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]


def host_local(dtype: str = "host-local") -> dict[str, Any]:
    return {
        "type": dtype,
        "ranges": [[{"subnet": POOL_SUBNET, "rangeStart": "10.78.0.10", "rangeEnd": "10.78.0.200", "gateway": POOL_GATEWAY}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "{{dataDir}}/ipam",
    }


def whereabouts() -> dict[str, Any]:
    """whereabouts with its single-node file store in the run's temp dir (no cluster needed)."""
    return {
        "type": "whereabouts",
        "range": POOL_SUBNET,
        "range_start": "10.78.0.10",
        "range_end": "10.78.0.200",
        "gateway": POOL_GATEWAY,
        "routes": [{"dst": "0.0.0.0/0"}],
        "datastore": "file",
        "data_dir": "{{dataDir}}/whereabouts",
    }


def ipam_conf(ipam_type: str) -> dict[str, Any]:
    """The IPAM section generated for an interface/meta config using ``ipam_type``."""
    return whereabouts() if ipam_type == "whereabouts" else host_local(ipam_type)


def sample_config(profile: str, ptype: str, ipam_type: str = "host-local") -> dict[str, Any]:
    """A config that a typical plugin of ``ptype`` accepts, for ``profile``."""
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": NET_NAME}
    if profile == "ipam":
        if ptype == "static":
            ipam: dict[str, Any] = {
                "type": "static",
                "addresses": [{"address": "10.78.0.5/24", "gateway": POOL_GATEWAY}],
                "routes": [{"dst": "0.0.0.0/0"}],
            }
        elif ptype == "whereabouts":
            ipam = whereabouts()
        else:
            ipam = host_local(ptype)
        # An IPAM plugin gets its interface plugin's whole config (reference ipam.ExecAdd passes
        # stdin on), so the top-level ``type`` is that plugin's: the spec requires one and
        # plugins may refuse a config without it.
        return {**base, "type": IPAM_CALLER, "ipam": ipam}
    if profile == "chained":
        conf: dict[str, Any] = {**base, "type": ptype}
        if ptype == "tuning":
            conf.update({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}, "dataDir": "{{dataDir}}/tuning"})
        elif ptype == "portmap":
            conf.update({"runtimeConfig": {"portMappings": PORT_MAPPINGS}, "snat": True})
        return conf
    if profile == "meta":
        delegate = {"cniVersion": "1.0.0", "name": NET_NAME, "type": "macvlan", "master": "{{master}}", "ipam": ipam_conf(ipam_type)}
        return {**base, "type": ptype, "cniDir": "{{dataDir}}/meta", "delegates": [delegate]}
    conf = {**base, "type": ptype, "ipam": ipam_conf(ipam_type)}
    if ptype == "bridge":
        conf["bridge"] = "{{bridge}}"
    else:
        conf["master"] = "{{master}}"
    return conf


def substitute(template: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    text = json.dumps(template)
    for key, val in values.items():
        text = text.replace("{{" + key + "}}", val)
    return json.loads(text)  # type: ignore[no-any-return]


def ipam_section(conf: dict[str, Any]) -> dict[str, Any] | None:
    """The IPAM dict of a plugin config, of a conflist's first plugin with one, or of a
    meta-plugin's first delegate with one (mutable view)."""
    for key in ("plugins", "delegates"):
        if isinstance(conf.get(key), list):
            for p in conf[key]:
                if isinstance(p, dict) and isinstance(p.get("ipam"), dict):
                    return p["ipam"]  # type: ignore[no-any-return]
            return None
    ipam = conf.get("ipam")
    return ipam if isinstance(ipam, dict) else None


def with_pool(conf: dict[str, Any], first_offset: int, size: int) -> dict[str, Any] | None:
    """A copy of ``conf`` whose pool IPAM (host-local ``ranges``/``subnet``, whereabouts ``range``)
    hands out exactly ``size`` addresses starting ``first_offset`` into the subnet; None when
    the IPAM is not a pool allocator."""
    conf = copy.deepcopy(conf)
    ipam = ipam_section(conf)
    if ipam is None:
        return None
    if isinstance(ipam.get("ranges"), list) and ipam["ranges"] and ipam["ranges"][0]:
        rng = dict(ipam["ranges"][0][0])
    elif "subnet" in ipam:
        rng = {k: ipam.pop(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}
    elif isinstance(ipam.get("range"), str) and "-" not in ipam["range"]:
        # whereabouts: one CIDR ``range`` with inclusive ``range_start``/``range_end``
        net = ipaddress.ip_network(ipam["range"], strict=False)
        start = net.network_address + first_offset
        ipam["range_start"], ipam["range_end"] = str(start), str(start + size - 1)
        return conf
    else:
        return None
    net = ipaddress.ip_network(rng["subnet"], strict=False)
    start = net.network_address + first_offset
    rng["rangeStart"], rng["rangeEnd"] = str(start), str(start + size - 1)
    ipam["ranges"] = [[rng]]
    return conf


def invalid_variant(profile: str, conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with one field of the wrong type: every plugin must call that an invalid config."""
    conf = copy.deepcopy(conf)
    target = conf["plugins"][0] if isinstance(conf.get("plugins"), list) else conf
    if profile == "ipam":
        ipam = ipam_section(conf) or {}
        if ipam.get("type") == "static":
            ipam["addresses"] = [{"address": "not-a-cidr"}]
        elif isinstance(ipam.get("range"), str):  # whereabouts: corrupt the key it reads
            ipam["range"] = "not-a-cidr"
        else:
            ipam.pop("ranges", None)
            ipam["ranges"] = [[{"subnet": "not-a-cidr"}]]
    elif target.get("type") == "portmap":
        target["runtimeConfig"] = {"portMappings": [{"hostPort": "not-a-port", "containerPort": 80, "protocol": "tcp"}]}
    elif target.get("type") == "sbr":
        target["table"] = "not-a-table"
    elif "delegates" in target:  # a Multus-style meta-plugin: its own key, not a delegate's
        target["delegates"] = {"not": "a list"}
    else:
        target["mtu"] = "not-a-number"
    return conf


def prev_result(version: str, *, ifname: str, mac: str, sandbox: str, cidr: str, gw: str) -> dict[str, Any]:
    """The result an earlier plugin would have returned, in ``version``'s wire shape."""
    ip: dict[str, Any] = {"address": cidr, "gateway": gw, "interface": 0}
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        ip["version"] = "4"
    return {
        "cniVersion": version,
        "interfaces": [{"name": ifname, "mac": mac, "sandbox": sandbox}],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": gw}],
        "dns": {"nameservers": ["10.78.0.53"], "search": ["conformance.example"]},
    }
