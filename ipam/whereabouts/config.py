"""whereabouts IPAM configuration: every key of whereabouts v0.9, validated into one frozen ``Conf``.

Rules:
- PURE apart from reading the flat file (``configuration_path``, else the first existing of ``FLAT_PATHS``), whose
  keys are merged UNDER the NAD's ``ipam`` keys (the NAD wins; ``kubernetes`` is merged key by key).
- Hand-validated like the other IPAM plugins (ipam/_common.py: pydantic's import cost is paid on every exec); every
  failure is error 7 naming the field (``ipam.ipRanges[1].range_end``).
- Unlike whereabouts, values outside the range are refused, not silently ignored: ``range_start``/``range_end``
  outside the network, ``range_start > range_end``, ``exclude`` entries of the other family or overlapping each
  other, a ``gateway`` that is in none of the ranges' networks of its family.
- ``gateway`` belongs to the IPs of its own family only (whereabouts puts it on every IP, even IPv6). An
  ``ipRanges`` entry may carry its own ``gateway`` (ours); the top-level one applies to the range containing it.
- The datastore is ``kubernetes`` when a kubeconfig is configured, else ``file`` (ours: the single-node default),
  unless ``datastore`` says otherwise. Secrets (``etcd_password``) are kept out of ``repr`` and of every log line.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from cni.spec import gojson
from cni.spec.errors import InvalidConfig
from cni.spec.request import Request
from cni.spec.result import DNS, IPAddress, IPInterface, IPNetwork, Route

from .._common import ROUTES, bad_field, ipam_section, opt_str, parse_address, parse_cidr, parse_dns, parse_routes
from .allocator import Owner, Range

# whereabouts' flat-file locations (the second is the one its install DaemonSet writes). MULTINIC_WHEREABOUTS_FLATFILE
# (a colon list) overrides them, for tests and for nodes that keep CNI config elsewhere.
FLAT_PATHS: tuple[str, ...] = (
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
)
DEFAULT_LOG_FILE = "/var/log/whereabouts.log"
DEFAULT_DATA_DIR = "/var/lib/cni/whereabouts"
DEFAULT_ETCD_PREFIX = "/whereabouts/"
DATASTORES = ("kubernetes", "etcd", "file")
LOG_LEVELS = ("debug", "verbose", "error", "panic")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")

# whereabouts' Go IPAMConfig (pkg/types) plus our datastore keys: json.Unmarshal folds key case, so
# the keys are matched the same way (cni/spec/gojson.py). A key read below must be listed here.
_S, _N = gojson.SCALAR, gojson.NILABLE
_RANGE_KEYS: gojson.Schema = {"range": _S, "range_start": _S, "range_end": _S, "exclude": _N, "gateway": _S}
IPAM_SCHEMA: gojson.Schema = {
    "Name": _S, "type": _S, "routes": ROUTES, "datastore": _S, "ipRanges": gojson.ListOf(_RANGE_KEYS),
    "node_slice_size": _S, "addresses": gojson.ListOf({"address": _S, "gateway": _S}), "exclude": _N,
    "dns": {"nameservers": _N, "domain": _S, "search": _N, "options": _N}, "range": _S, "range_start": _S,
    "range_end": _S, "gateway": _S, "leader_lease_duration": _S, "leader_renew_deadline": _S,
    "leader_retry_period": _S, "log_file": _S, "log_level": _S, "reconciler_cron_expression": _S,
    "enable_overlapping_ranges": _S, "sleep_for_race": _S, "kubernetes": {"kubeconfig": _S, "k8s_api_root": _S},
    "configuration_path": _S, "network_name": _S, "data_dir": _S, "endpoints": _N, "etcd_host": _S,
    "etcd_username": _S, "etcd_password": _S, "etcd_key_file": _S, "etcd_cert_file": _S, "etcd_ca_cert_file": _S,
    "etcd_prefix": _S,
}


@dataclass(frozen=True)
class EtcdConf:
    endpoints: tuple[str, ...]
    username: str = ""
    password: str = field(default="", repr=False)
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    prefix: str = DEFAULT_ETCD_PREFIX
    namespace: str = "kube-system"


@dataclass(frozen=True)
class Conf:
    """A validated whereabouts configuration for one request."""

    ranges: tuple[Range, ...]
    gateways: tuple[IPAddress | None, ...]  # one per range (its family's gateway, when in its network)
    addresses: tuple[tuple[IPInterface, IPAddress | None], ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)
    overlapping: bool = True
    network_name: str = ""
    datastore: str = "file"
    kubeconfig: str = ""
    etcd: EtcdConf | None = None
    data_dir: str = DEFAULT_DATA_DIR
    log_file: str = ""
    log_level: str = "error"
    owner: Owner = field(default_factory=lambda: Owner("", "", ""))
    static_ips: tuple[IPInterface, ...] = ()  # CNI_ARGS IP=
    node_slice_size: int = 0  # prefix length of a node slice; 0 = no slicing (see slices.py)
    slice_pool: str = ""  # NodeSlicePool name: network_name, else the network's name
    network: str = ""  # the network's "name" (an IPAMClaim's spec.network must match it)
    persistent_ips: bool = False  # top-level allowPersistentIPs (OVN-Kubernetes' key): IPAMClaims are honoured
    node_name: str = ""  # this node, for node slices (NODENAME as whereabouts, else NODE_NAME, else the host name)

    def pool_names(self) -> list[str]:
        from .allocator import pool_name

        return [pool_name(r.network, self.network_name) for r in self.ranges]


# ---- flat file ---------------------------------------------------------------------------------------------------


def flat_paths() -> tuple[str, ...]:
    env = os.environ.get("MULTINIC_WHEREABOUTS_FLATFILE")
    if env is not None:
        return tuple(p for p in env.split(":") if p)
    return FLAT_PATHS


def _read_flat(path: str, explicit: bool) -> dict[str, Any] | None:
    from cni.spec.config import decode

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if explicit:
            raise bad_field("ipam.configuration_path", f"{path} does not exist") from None
        return None
    except OSError as exc:
        raise bad_field("ipam.configuration_path" if explicit else "ipam",
                        f"cannot read the whereabouts flat file {path}: {exc.strerror or exc}") from None
    try:
        doc = decode(raw, f"whereabouts flat file {path}")
    except Exception as exc:  # noqa: BLE001 - a decode failure of a config file is a config error (7)
        raise bad_field("ipam.configuration_path" if explicit else "ipam", str(exc)) from None
    # whereabouts' flat file is either the ipam keys themselves or {"ipam": {...}}.
    inner = gojson.canonical(doc, {"ipam": _N}).get("ipam")
    flat: dict[str, Any] = gojson.canonical(inner if isinstance(inner, dict) else doc, IPAM_SCHEMA)
    return flat


def merged_ipam(config: dict[str, Any]) -> dict[str, Any]:
    """The NAD's ``ipam`` object with the flat file's keys under it."""
    ipam = ipam_section(config, IPAM_SCHEMA)
    path = opt_str(ipam, "configuration_path", "ipam")
    flat: dict[str, Any] | None = None
    if path:
        flat = _read_flat(path, True)
    else:
        for p in flat_paths():
            flat = _read_flat(p, False)
            if flat is not None:
                break
    if not flat:
        return ipam
    out = {k: v for k, v in flat.items() if k != "type"}
    for k, v in ipam.items():
        if k == "kubernetes" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


# ---- ranges -------------------------------------------------------------------------------------------------------


def _range_text(val: Any, path: str) -> tuple[IPNetwork, IPAddress | None, IPAddress | None]:
    """``CIDR`` or whereabouts' ``A-B/prefix`` form; a host address is normalised to its network."""
    if not isinstance(val, str) or not val.strip():
        raise bad_field(path, "must be a non-empty string, a CIDR such as 192.168.1.0/24 or a range "
                              "such as 192.168.1.11-192.168.1.23/24")
    text = val.strip()
    if "/" not in text:
        raise bad_field(path, f"{text!r} is not in CIDR notation", "e.g. 192.168.1.0/24")
    addr_part, _, plen = text.rpartition("/")
    start = end = None
    if "-" in addr_part:
        a, _, b = addr_part.partition("-")
        start = parse_address(a, path)
        end = parse_address(b, path)
        base_text = f"{a.strip()}/{plen}"
    else:
        base_text = text
    try:
        net = ipaddress.ip_network(base_text, strict=False)
    except ValueError as exc:
        raise bad_field(path, f"{text!r} is not a valid range", str(exc)) from None
    for what, ip in (("start", start), ("end", end)):
        if ip is not None and (ip.version != net.version or ip not in net):
            raise bad_field(path, f"the {what} address {ip} of {text!r} is not in {net}")
    if start is not None and end is not None and int(start) > int(end):
        raise bad_field(path, f"{text!r}: the start address is above the end address")
    return net, start, end


def _bound(raw: dict[str, Any], key: str, where: str, net: IPNetwork) -> IPAddress | None:
    if raw.get(key) in (None, ""):
        return None
    path = f"{where}.{key}"
    ip = parse_address(raw[key], path)
    if ip.version != net.version:
        raise bad_field(path, f"{ip} is not of the address family of range {net}")
    if ip not in net:
        raise bad_field(path, f"{ip} is outside range {net}", "whereabouts would ignore it silently; fix the value")
    return ip


def _excludes(raw: Any, path: str, net: IPNetwork) -> list[IPNetwork]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_field(path, f"must be a list of CIDRs or IP addresses, got {type(raw).__name__}")
    out: list[tuple[IPNetwork, str]] = []
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise bad_field(p, "must be a CIDR or an IP address")
        try:
            ex = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError as exc:
            raise bad_field(p, f"{item!r} is not a CIDR or an IP address", str(exc)) from None
        if ex.version != net.version:
            raise bad_field(p, f"{ex} is not of the address family of range {net}")
        for prev, pp in out:
            if ex.overlaps(prev):
                raise bad_field(p, f"{ex} overlaps {prev} ({pp})", "merge the overlapping exclusions into one")
        out.append((ex, p))
    return [ex for ex, _ in out]


def _one_range(raw: dict[str, Any], where: str, range_key_path: str) -> Range:
    net, start, end = _range_text(raw.get("range"), range_key_path)
    rs = _bound(raw, "range_start", where, net)
    re_ = _bound(raw, "range_end", where, net)
    if rs is not None and start is not None and rs != start:
        raise bad_field(f"{where}.range_start", f"{rs} contradicts the start {start} in range {raw.get('range')!r}")
    if re_ is not None and end is not None and re_ != end:
        raise bad_field(f"{where}.range_end", f"{re_} contradicts the end {end} in range {raw.get('range')!r}")
    start = rs or start
    end = re_ or end
    if start is not None and end is not None and int(start) > int(end):
        raise bad_field(f"{where}.range_start", f"{start} is above range_end {end}")
    excludes = _excludes(raw.get("exclude"), f"{where}.exclude", net)
    rng = Range.build(net, start, end, excludes)
    if rng.lo > rng.hi:
        raise bad_field(range_key_path, f"range {net} has no usable address",
                        "the network and all-ones addresses are never allocated; use a larger prefix")
    return rng


def parse_ranges(ipam: dict[str, Any]) -> tuple[Range, ...]:
    ranges: list[Range] = []
    if ipam.get("range") not in (None, ""):
        ranges.append(_one_range(ipam, "ipam", "ipam.range"))
    elif ipam.get("range_start") not in (None, "") or ipam.get("range_end") not in (None, ""):
        key = "range_start" if ipam.get("range_start") not in (None, "") else "range_end"
        raise bad_field(f"ipam.{key}", "is set but 'range' is missing")
    raw_list = ipam.get("ipRanges")
    if raw_list is not None:
        if not isinstance(raw_list, list):
            raise bad_field("ipam.ipRanges", f"must be a list of ranges, got {type(raw_list).__name__}")
        for i, item in enumerate(raw_list):
            where = f"ipam.ipRanges[{i}]"
            if not isinstance(item, dict):
                raise bad_field(where, "must be an object {range, range_start, range_end, exclude}")
            ranges.append(_one_range(item, where, f"{where}.range"))
    if not ranges:
        raise bad_field("ipam.range", "is missing", "set 'range' (e.g. 192.168.1.0/24) or 'ipRanges'")
    return tuple(ranges)


def _gateways(ipam: dict[str, Any], ranges: tuple[Range, ...]) -> tuple[IPAddress | None, ...]:
    out: list[IPAddress | None] = [None] * len(ranges)
    raw = ipam.get("ipRanges")
    raw_list: list[Any] = raw if isinstance(raw, list) else []
    first_listed = 1 if ipam.get("range") not in (None, "") else 0
    for i, item in enumerate(raw_list):
        if isinstance(item, dict) and item.get("gateway") not in (None, ""):
            path = f"ipam.ipRanges[{i}].gateway"
            gw = parse_address(item["gateway"], path)
            rng = ranges[first_listed + i]
            if gw.version != rng.network.version or gw not in rng.network:
                raise bad_field(path, f"{gw} is not in range {rng.network}")
            out[first_listed + i] = gw
    if ipam.get("gateway") not in (None, ""):
        gw = parse_address(ipam["gateway"], "ipam.gateway")
        hits = [i for i, r in enumerate(ranges) if r.network.version == gw.version and gw in r.network]
        if not hits:
            raise bad_field("ipam.gateway", f"{gw} is in none of the configured ranges",
                            f"ranges: {', '.join(str(r.network) for r in ranges)}")
        for i in hits:
            if out[i] is None:
                out[i] = gw
    return tuple(out)


# ---- the rest ----------------------------------------------------------------------------------------------------


def _bool(ipam: dict[str, Any], key: str, default: bool) -> bool:
    # A JSON boolean only: whereabouts' field is a Go bool, and encoding/json refuses a string for it ("cannot
    # unmarshal string into Go struct field"), so "true" in quotes fails there and must fail here too. null = absent.
    val = ipam.get(key)
    if val is None:
        return default
    if isinstance(val, bool):
        return val
    if isinstance(val, str):
        raise bad_field(f"ipam.{key}", f'must be true or false (a JSON boolean, not a string: drop the quotes), '
                        f'got "{val}"')
    raise bad_field(f"ipam.{key}", f"must be true or false, got {val!r}")


def _addresses(raw: Any) -> tuple[tuple[IPInterface, IPAddress | None], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_field("ipam.addresses", f"must be a list of {{address, gateway}}, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        p = f"ipam.addresses[{i}]"
        if not isinstance(item, dict):
            raise bad_field(p, "must be an object {address, gateway}")
        addr = parse_cidr(item.get("address"), f"{p}.address")
        gw = parse_address(item["gateway"], f"{p}.gateway") if item.get("gateway") not in (None, "") else None
        if gw is not None and (gw.version != addr.version or gw not in addr.network):
            raise bad_field(f"{p}.gateway", f"{gw} is not in {addr.network}")
        out.append((addr, gw))
    return tuple(out)


def _etcd(ipam: dict[str, Any]) -> EtcdConf:
    endpoints: list[str] = []
    raw = ipam.get("endpoints")
    if raw is not None:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(e, str) for e in items):
            raise bad_field("ipam.endpoints", "must be a list of etcd client URLs")
        endpoints.extend(e.strip() for e in items if e.strip())
    host = opt_str(ipam, "etcd_host", "ipam")
    if host:
        endpoints.extend(h.strip() for h in host.split(",") if h.strip())
    if not endpoints:
        raise bad_field("ipam.etcd_host", "is missing", "datastore etcd needs 'etcd_host' or 'endpoints'")
    tls = any(opt_str(ipam, k, "ipam") for k in ("etcd_cert_file", "etcd_ca_cert_file"))
    norm = []
    for e in endpoints:
        url = e if "://" in e else f"{'https' if tls else 'http'}://{e}"
        if not url.startswith(("http://", "https://")):
            raise bad_field("ipam.endpoints" if raw is not None else "ipam.etcd_host",
                            f"{e!r} is not an http(s) URL or host:port")
        norm.append(url.rstrip("/"))
    key_file = opt_str(ipam, "etcd_key_file", "ipam")
    cert_file = opt_str(ipam, "etcd_cert_file", "ipam")
    if bool(key_file) != bool(cert_file):
        raise bad_field("ipam.etcd_cert_file" if key_file else "ipam.etcd_key_file", "is missing",
                        "a client certificate needs both etcd_cert_file and etcd_key_file")
    prefix = opt_str(ipam, "etcd_prefix", "ipam") or DEFAULT_ETCD_PREFIX
    if not prefix.endswith("/"):
        prefix += "/"
    return EtcdConf(
        endpoints=tuple(norm),
        username=opt_str(ipam, "etcd_username", "ipam"),
        password=opt_str(ipam, "etcd_password", "ipam"),
        cert_file=cert_file,
        key_file=key_file,
        ca_file=opt_str(ipam, "etcd_ca_cert_file", "ipam"),
        prefix=prefix,
    )


def _static_ips(req: Request) -> tuple[IPInterface, ...]:
    from cni.spec.errors import InvalidEnvironment

    raw = req.cni_args.get("IP", "")
    out = []
    for item in (p.strip() for p in raw.split(",") if p.strip()):
        try:
            out.append(ipaddress.ip_interface(item) if "/" in item else None)
        except ValueError:
            out.append(None)
        if out[-1] is None:
            raise InvalidEnvironment(f"invalid CNI_ARGS IP={raw!r}: {item!r} is not an address in CIDR notation")
    return tuple(x for x in out if x is not None)


def parse(req: Request) -> Conf:
    """Validate the request's whereabouts config (error 7 naming the field)."""
    ipam = merged_ipam(req.config)
    ranges = parse_ranges(ipam)
    gateways = _gateways(ipam, ranges)
    routes = parse_routes(ipam.get("routes"), "ipam.routes")
    dns = parse_dns(ipam.get("dns"), "ipam.dns")

    network_name = opt_str(ipam, "network_name", "ipam")
    if network_name:
        from .allocator import pool_name

        name = pool_name(ranges[0].network, network_name)
        # A Kubernetes object name: lowercase alphanumerics, '-' and '.', at most 253 characters.
        if len(name) > 253 or not set(name) <= _NAME_CHARS or network_name[0] in "-.":
            raise bad_field("ipam.network_name", f"{network_name!r} cannot prefix an object name",
                            "use lowercase letters, digits, '-' and '.'")

    kube = ipam.get("kubernetes")
    if kube is not None and not isinstance(kube, dict):
        raise bad_field("ipam.kubernetes", "must be an object {kubeconfig}")
    kubeconfig = opt_str(kube or {}, "kubeconfig", "ipam.kubernetes")
    datastore = opt_str(ipam, "datastore", "ipam") or ("kubernetes" if kubeconfig else "file")
    if datastore not in DATASTORES:
        raise bad_field("ipam.datastore", f"{datastore!r} is not one of {', '.join(DATASTORES)}")
    etcd = _etcd(ipam) if datastore == "etcd" else None

    log_level = (opt_str(ipam, "log_level", "ipam") or "error").lower()
    if log_level not in LOG_LEVELS:
        raise bad_field("ipam.log_level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    log_file = opt_str(ipam, "log_file", "ipam")
    if log_file and not os.path.isabs(log_file):
        # Relative to what? The runtime's working directory: a log file wherever kubelet happens to run.
        raise bad_field("ipam.log_file", f"{log_file!r} is not an absolute path")
    data_dir = opt_str(ipam, "data_dir", "ipam") or DEFAULT_DATA_DIR
    if not os.path.isabs(data_dir):
        raise bad_field("ipam.data_dir", f"{data_dir!r} is not an absolute path")

    slice_size, slice_pool, node = _node_slices(ipam, req, ranges, network_name, datastore)

    ns = req.cni_args.get("K8S_POD_NAMESPACE", "")
    pod = req.cni_args.get("K8S_POD_NAME", "")
    podref = f"{ns}/{pod}" if ns and pod else ""

    return Conf(
        ranges=ranges,
        gateways=gateways,
        addresses=_addresses(ipam.get("addresses")),
        routes=routes,
        dns=dns,
        overlapping=_bool(ipam, "enable_overlapping_ranges", True),
        network_name=network_name,
        datastore=datastore,
        kubeconfig=kubeconfig,
        etcd=etcd,
        data_dir=data_dir,
        log_file=log_file,
        log_level=log_level,
        owner=Owner(req.container_id, podref, req.ifname, req.cni_args.get("K8S_POD_UID", "") if podref else ""),
        static_ips=_static_ips(req),
        node_slice_size=slice_size,
        slice_pool=slice_pool,
        node_name=node,
        network=str(req.config.get("name") or ""),
        persistent_ips=_persistent_ips(req.config),
    )


def _persistent_ips(config: dict[str, Any]) -> bool:
    """``allowPersistentIPs`` at the network config's top level, as OVN-Kubernetes spells it: without it the
    plugin never reads the pod (one API call per ADD saved) and ``ipam-claim-reference`` is ignored."""
    val = config.get("allowPersistentIPs")
    if val is None or isinstance(val, bool):
        return bool(val)
    raise bad_field("allowPersistentIPs", f"must be true or false, got {val!r}")


def _node_slices(ipam: dict[str, Any], req: Request, ranges: tuple[Range, ...], network_name: str,
                 datastore: str) -> tuple[int, str, str]:
    """(slice prefix length, NodeSlicePool name, node name) — (0, "", "") without ``node_slice_size``."""
    raw = ipam.get("node_slice_size")
    if raw in (None, ""):
        return 0, "", ""
    from .slices import parse_size

    if len(ranges) != 1:
        raise bad_field("ipam.node_slice_size", "node slices need exactly one range",
                        "whereabouts' fast IPAM slices one range; use one network per range")
    try:
        plen = parse_size(raw, ranges[0].network)
    except ValueError as exc:
        raise bad_field("ipam.node_slice_size", str(exc)) from None
    if datastore == "file":
        return 0, "", ""  # one node owns the whole range: nothing to slice
    pool = network_name or str(req.config.get("name") or "")
    if not pool or len(pool) > 253 or not set(pool) <= _NAME_CHARS or pool[0] in "-.":
        raise bad_field("ipam.network_name", f"node slices need an object name for the NodeSlicePool, "
                        f"and {pool!r} is not one", "set network_name (lowercase letters, digits, '-' and '.')")
    import socket

    node = os.environ.get("NODENAME") or os.environ.get("NODE_NAME") or socket.gethostname()
    node = node.strip().lower()
    if not node or not set(node) <= _NAME_CHARS:
        from cni.spec.errors import InvalidEnvironment

        raise InvalidEnvironment(f"node name {node!r} cannot name a node slice pool",
                                 "set NODENAME (or NODE_NAME) in the runtime's environment to the Node's name")
    return plen, pool, node


__all__ = ["Conf", "EtcdConf", "FLAT_PATHS", "InvalidConfig", "merged_ipam", "parse", "parse_ranges"]
