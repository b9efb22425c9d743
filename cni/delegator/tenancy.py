"""Multi-tenant policy: what a pod author or a NAD author may make this node do. PURE.

multinic runs as root; the pod's network annotation and the NADs of the pod's namespace are
written by users who are not. Everything those users ask for that reaches the host is decided
here, the same way on the node (thin and thick mode, via ``cni.delegator.resolve``) and at
admission (``cni.k8s.webhook``), so that both give the same message.

Trust boundary:
- tenant input: the pod's ``k8s.v1.cni.cncf.io/networks`` annotation (its ``portMappings``), and
  the ``spec.config`` of every NAD a pod selects — by annotation, by ``defaultNetworks``, or as its
  ``v1.multus-cni.io/default-network`` — judged by the policy of the namespace that holds it;
- trusted: the multinic config itself (``delegates``, ``clusterNetwork``, this policy), files in
  ``confDir`` (a NAD without ``spec.config``), the whereabouts flat file, and the runtime's own
  ``runtimeConfig`` (kubelet's ``portMappings`` for the cluster network: Pod Security Admission
  governs container ``hostPort``).

Rules (the multinic config keys; each may be overridden per namespace in ``multinicPolicy``):
- ``hostPortPolicy``: the host ports a pod's annotation — or a NAD's embedded ``runtimeConfig`` —
  may claim: ``[{"ports": "30000-32767", "protocols": ["tcp"], "hostIPs": [...]}]``. Default none:
  any host port is refused (102). Without ``hostIPs`` a rule allows any ``hostIP`` but loopback
  (a localhost host port makes portmap set ``route_localnet`` on the host side).
- ``allowedPaths``: roots under which every filesystem path a NAD names must resolve (symlinks and
  ``..`` resolved by the caller with ``realpath``); default ``/var/lib/cni``, ``/run/cni``,
  ``/var/log``. A relative path is 7, a path outside is 102, a path inside multinic's own state
  directory (``cniDir``) is 102. Naming a plugin's own default (or the well-known node file for
  that key, e.g. whereabouts' kubeconfig in ``/etc/cni/net.d/whereabouts.d``) is always allowed:
  it is what the plugin would use without the key.
- ``allowedMasters``: host interfaces a NAD may use as macvlan/ipvlan/vlan master or host-device
  ``device`` (names or shell patterns). Default (unset): any but the node's uplinks (the
  interfaces of its default routes) and ``lo``; a macvlan/ipvlan without ``master`` uses the
  uplink, so it is refused too.
- ``allowedBridges``: bridges a NAD may attach to or create. Default (unset): any but the bridges
  of the node's own networks, its uplinks and ``lo``.
- ``hostNetworkChanges``: host-side changes a NAD may make: ``ipMasq``, ``isGateway`` (also
  ``isDefaultGateway``), ``hairpinMode``, ``promiscMode``, ``forceAddress`` (bridge) and
  ``portmapRules`` (portmap ``conditionsV4/V6``, ``externalSetMarkChain``, ``masqAll``,
  ``markMasqBit``). Default none.
- ``multinicPolicy``: namespace -> the keys it gets instead of the node's, or ``"trusted"`` (no restriction).
  The ``multusNamespace`` (kube-system) is trusted unless listed: the node admin's own NADs live there.
- ``policyProfiles``: profile name -> the keys it gets instead of the node's, or ``"trusted"``; a Namespace
  labelled ``multinic.io/policy: <profile>`` gets that profile (``for_namespace``'s ``labels``). Labels are
  written by whoever may update the Namespace object — cluster admins, unless RBAC lets tenants edit their own
  namespace, in which case profiles must not be more permissive than the node. An explicit ``multinicPolicy``
  entry wins over a label; a label naming no profile, a missing Namespace or an API error gives the node's policy
  (fail closed: the caller logs why). Only read when profiles are configured (``Policies.wants_labels``).
- Only native plugin types are inspected for paths, masters and bridges; an external type runs
  only if ``allowedPluginTypes`` lets it, and that key is its confinement.

Go compatibility: the reference plugins decode with encoding/json, which matches keys
case-insensitively and treats null as absent; our plugins may too. So every check looks at every
spelling of a key (``dataDir``, ``DataDir``, ``datadir``) and a value that cannot be read the way a
plugin would read it is refused (7) rather than guessed.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..spec.errors import InvalidConfig, PolicyDenied

DEFAULT_ALLOWED_PATHS: tuple[str, ...] = ("/var/lib/cni", "/run/cni", "/var/log")
PROTOCOLS: tuple[str, ...] = ("tcp", "udp", "sctp")
HOST_CHANGES: tuple[str, ...] = ("ipMasq", "isGateway", "hairpinMode", "promiscMode", "forceAddress", "portmapRules")
TRUSTED = "trusted"  # a multinicPolicy entry that lifts every restriction for its namespace
PROFILE_LABEL = "multinic.io/policy"  # on a Namespace: the policyProfiles entry its pods and NADs get
POLICY_KEYS: tuple[str, ...] = ("hostPortPolicy", "allowedPaths", "allowedMasters", "allowedBridges",
                                "hostNetworkChanges")
DEFAULT_BRIDGE = "cni0"  # the bridge plugin's default name (reference and ours)

# ---- the path keys of every native plugin and IPAM ----------------------------------------------------------------

WRITE, READ = "write", "read"

# whereabouts' flat file and kubeconfig locations (ipam/whereabouts/config.py FLAT_PATHS; its install DaemonSet
# writes the kubeconfig beside the flat file). tests/unit/delegator/test_tenancy.py keeps these in step.
WHEREABOUTS_FLAT_FILES = ("/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
                          "/etc/cni/net.d/whereabouts.d/whereabouts.conf")
WHEREABOUTS_KUBECONFIGS = ("/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.kubeconfig",
                           "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig")


@dataclass(frozen=True)
class PathKey:
    """A config key that names a file or directory on the node."""

    key: tuple[str, ...]  # nested keys inside the plugin conf (or its ipam section)
    access: str  # WRITE: the plugin creates/writes there; READ: it reads (credentials, config)
    defaults: tuple[str, ...] = ()  # values that are what the plugin uses without the key

    @property
    def name(self) -> str:
        return ".".join(self.key)


# Plugin type -> its path keys. Interface plugins (macvlan, ipvlan, bridge) and static name none;
# their ``ipam`` section is looked up under the IPAM's type.
PATH_KEYS: dict[str, tuple[PathKey, ...]] = {
    "macvlan": (), "ipvlan": (), "bridge": (), "static": (),
    "host-local": (PathKey(("dataDir",), WRITE, ("/var/lib/cni/networks",)),
                   PathKey(("resolvConf",), READ, ("/etc/resolv.conf",))),
    "whereabouts": (PathKey(("log_file",), WRITE, ("/var/log/whereabouts.log",)),
                    PathKey(("data_dir",), WRITE, ("/var/lib/cni/whereabouts",)),
                    PathKey(("configuration_path",), READ, WHEREABOUTS_FLAT_FILES),
                    PathKey(("kubernetes", "kubeconfig"), READ, WHEREABOUTS_KUBECONFIGS),
                    PathKey(("etcd_cert_file",), READ), PathKey(("etcd_key_file",), READ),
                    PathKey(("etcd_ca_cert_file",), READ)),
    "tuning": (PathKey(("dataDir",), WRITE, ("/run/cni/tuning",)),),
    "sbr": (PathKey(("dataDir",), WRITE, ("/run/cni/sbr",)),),
    "portmap": (PathKey(("dataDir",), WRITE, ("/var/lib/cni/portmap",)),),
}

# Plugin type -> the key naming a host interface it takes over or stacks on.
MASTER_KEYS: dict[str, str] = {"macvlan": "master", "ipvlan": "master", "vlan": "master", "host-device": "device"}

# bridge keys -> the hostNetworkChanges name that allows them.
BRIDGE_HOST_KEYS: dict[str, str] = {"ipMasq": "ipMasq", "isGateway": "isGateway", "isDefaultGateway": "isGateway",
                                    "hairpinMode": "hairpinMode", "promiscMode": "promiscMode",
                                    "forceAddress": "forceAddress"}
PORTMAP_HOST_KEYS: tuple[str, ...] = ("conditionsV4", "conditionsV6", "externalSetMarkChain", "masqAll", "markMasqBit")


# ---- Go-style key lookup ------------------------------------------------------------------------------------------


def spellings(obj: Mapping[str, Any], key: str) -> list[tuple[str, Any]]:
    """Every (spelling, value) of ``key`` that Go's encoding/json would decode into it, nulls left out.

    ``casefold`` folds at least what Go's simple folding does (``K`` for the Kelvin sign, ``ſ`` for
    ``s``) and a little more: looking at one key too many is safe, missing one is not.
    """
    want = key.casefold()
    return [(k, v) for k, v in obj.items() if isinstance(k, str) and k.casefold() == want and v is not None]


def _objects(obj: Mapping[str, Any], key: str) -> list[tuple[str, Mapping[str, Any]]]:
    return [(k, v) for k, v in spellings(obj, key) if isinstance(v, Mapping)]


def _set(value: Any) -> bool:
    """A boolean-ish key counts as set unless it is plainly false (a string "false" included)."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false")
    if isinstance(value, (list, dict)):
        return bool(value)
    return True


# ---- the policy -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortRule:
    first: int
    last: int
    protocols: frozenset[str]
    host_ips: frozenset[str] | None = None  # None: any hostIP but loopback


@dataclass(frozen=True)
class Policy:
    """The rules for one namespace. ``namespace`` and ``overridden`` only shape messages."""

    host_ports: tuple[PortRule, ...] = ()
    allowed_paths: tuple[str, ...] = DEFAULT_ALLOWED_PATHS
    allowed_masters: tuple[str, ...] | None = None
    allowed_bridges: tuple[str, ...] | None = None
    host_network_changes: frozenset[str] = frozenset()
    namespace: str = ""
    overridden: frozenset[str] = frozenset()
    trusted: bool = False  # "trusted": no restriction (the multusNamespace by default)
    implicit: bool = False  # the multusNamespace's default trust, not written in the config
    profile: str = ""  # the policyProfiles entry this namespace got through its label

    def key(self, name: str) -> str:
        """The config key that would allow more, as a node admin writes it."""
        if self.profile:
            return (f"'policyProfiles.{self.profile}.{name}' (the profile namespace {self.namespace} selects with "
                    f"its {PROFILE_LABEL} label) or '{name}' (for every namespace)")
        if self.namespace:
            return (f"'multinicPolicy.{self.namespace}.{name}' (for namespace {self.namespace}) or '{name}' "
                    "(for every namespace)")
        return f"'{name}'"


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _bad(where: str, why: str) -> InvalidConfig:
    return InvalidConfig(f"invalid multinic config field {where!r}: {why}")


def _str_list(val: Any, where: str) -> tuple[str, ...]:
    if not isinstance(val, list) or not all(isinstance(v, str) and v for v in val):
        raise _bad(where, "must be a list of non-empty strings")
    return tuple(val)


def _port(val: Any, where: str) -> int:
    if isinstance(val, bool) or not isinstance(val, int) or not 1 <= val <= 65535:
        raise _bad(where, f"{val!r} is not a port (1-65535)")
    return val


def _port_rule(raw: Any, where: str) -> PortRule:
    if not isinstance(raw, Mapping):
        raise _bad(where, 'must be an object {"ports": "N" or "N-M", "protocols": [...], "hostIPs": [...]}')
    unknown = set(raw) - {"ports", "protocols", "hostIPs"}
    if unknown:
        raise _bad(_where(where, sorted(unknown)[0]), "unknown key (expected ports, protocols, hostIPs)")
    ports = raw.get("ports")
    if isinstance(ports, str):
        lo, sep, hi = ports.partition("-")
        try:
            first = _port(int(lo), _where(where, "ports"))
            last = _port(int(hi), _where(where, "ports")) if sep else first
        except ValueError:
            raise _bad(_where(where, "ports"), f"{ports!r} is not a port or a range such as 30000-32767") from None
    else:
        first = last = _port(ports, _where(where, "ports"))
    if first > last:
        raise _bad(_where(where, "ports"), f"{ports!r}: the first port is above the last")
    protos = raw.get("protocols")
    if protos is None:
        protocols = frozenset(PROTOCOLS)
    else:
        items = _str_list(protos, _where(where, "protocols"))
        bad = [p for p in items if p.lower() not in PROTOCOLS]
        if bad:
            raise _bad(_where(where, "protocols"), f"{bad[0]!r} is not one of {', '.join(PROTOCOLS)}")
        protocols = frozenset(p.lower() for p in items)
    host_ips: frozenset[str] | None = None
    if raw.get("hostIPs") is not None:
        ips = _str_list(raw["hostIPs"], _where(where, "hostIPs"))
        try:
            host_ips = frozenset(str(ipaddress.ip_address(ip)) for ip in ips)
        except ValueError as exc:
            raise _bad(_where(where, "hostIPs"), str(exc)) from None
    return PortRule(first, last, protocols, host_ips)


def _norm_root(p: str, where: str) -> str:
    if not p.startswith("/"):
        raise _bad(where, f"{p!r} is not an absolute path")
    return _normpath(p)


def _normpath(p: str) -> str:
    n = posixpath.normpath(p)
    return "/" + n.lstrip("/") if n.startswith("//") else n  # POSIX keeps a leading '//'; the kernel does not


def parse_policy(doc: Mapping[str, Any], where: str = "", base: Policy | None = None, namespace: str = "") -> Policy:
    """The policy in ``doc`` (the multinic config, or one ``multinicPolicy`` entry over ``base``). Error 7 names the key."""
    out = base or Policy()
    kw: dict[str, Any] = {}
    set_keys = {k for k in POLICY_KEYS if k in doc}
    if "hostPortPolicy" in doc:
        raw = doc["hostPortPolicy"]
        if raw is None:
            kw["host_ports"] = ()
        elif not isinstance(raw, list):
            raise _bad(_where(where, "hostPortPolicy"), "must be a list of port rules")
        else:
            kw["host_ports"] = tuple(_port_rule(r, f"{_where(where, 'hostPortPolicy')}[{i}]")
                                     for i, r in enumerate(raw))
    if "allowedPaths" in doc:
        w = _where(where, "allowedPaths")
        raw = doc["allowedPaths"]
        kw["allowed_paths"] = DEFAULT_ALLOWED_PATHS if raw is None else tuple(
            _norm_root(p, w) for p in _str_list(raw, w))
    for key, attr in (("allowedMasters", "allowed_masters"), ("allowedBridges", "allowed_bridges")):
        if key in doc:
            raw = doc[key]
            kw[attr] = None if raw is None else _str_list(raw, _where(where, key))
    if "hostNetworkChanges" in doc:
        w = _where(where, "hostNetworkChanges")
        raw = doc["hostNetworkChanges"]
        items = () if raw is None else _str_list(raw, w)
        bad = [c for c in items if c not in HOST_CHANGES]
        if bad:
            raise _bad(w, f"{bad[0]!r} is not one of {', '.join(HOST_CHANGES)}")
        kw["host_network_changes"] = frozenset(items)
    return Policy(**{**out.__dict__, **kw, "namespace": namespace,
                     "overridden": (out.overridden | set_keys) if namespace else frozenset()})


def with_extra_paths(policy: Policy, extra: Iterable[str]) -> Policy:
    """``policy`` with more allowed roots (the runtime environment's, see tenancy_io.EXTRA_PATHS_ENV)."""
    more = tuple(_normpath(p) for p in extra if p.startswith("/") and _normpath(p) not in policy.allowed_paths)
    return Policy(**{**policy.__dict__, "allowed_paths": policy.allowed_paths + more})


def parse_overrides(raw: Any, base: Policy, key: str = "multinicPolicy") -> dict[str, Policy]:
    """``multinicPolicy``: namespace -> the keys that namespace gets instead of the node's (``policyProfiles``:
    the same, keyed by profile name)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _bad(key, f"must be an object keyed by {'namespace' if key == 'multinicPolicy' else 'profile name'}")
    out: dict[str, Policy] = {}
    for ns, doc in raw.items():
        where = f"{key}.{ns}"
        if doc == TRUSTED:
            out[str(ns)] = Policy(namespace=str(ns), trusted=True)
            continue
        if not isinstance(doc, Mapping):
            raise _bad(where, f'must be an object with policy keys, or "{TRUSTED}"')
        unknown = set(doc) - set(POLICY_KEYS)
        if unknown:
            raise _bad(_where(where, sorted(unknown)[0]), f"unknown key (expected {', '.join(POLICY_KEYS)})")
        out[str(ns)] = parse_policy(doc, where, base, namespace=str(ns))
    return out


@dataclass(frozen=True)
class Policies:
    """The node's policy and its per-namespace overrides (parsed once per config)."""

    node: Policy = field(default_factory=Policy)
    namespaces: Mapping[str, Policy] = field(default_factory=dict)
    profiles: Mapping[str, Policy] = field(default_factory=dict)  # policyProfiles, selected by Namespace label

    def wants_labels(self, namespace: str) -> bool:
        """Whether the Namespace's labels can change this namespace's policy (else no API read is needed)."""
        return bool(self.profiles) and namespace not in self.namespaces

    def for_namespace(self, namespace: str, labels: Mapping[str, Any] | None = None) -> Policy:
        """The policy of ``namespace``: its ``multinicPolicy`` entry, else the profile its ``labels`` select, else
        the node's. ``labels`` None: not known (not read, or the read failed) — the node's, fail closed."""
        got = self.namespaces.get(namespace)
        if got is not None:
            return got
        profile = profile_of(labels)
        if profile and profile in self.profiles:
            return Policy(**{**self.profiles[profile].__dict__, "namespace": namespace, "profile": profile})
        # Messages then name the namespace key that would allow more.
        return Policy(**{**self.node.__dict__, "namespace": namespace})

    def label_problem(self, namespace: str, labels: Mapping[str, Any] | None) -> str:
        """Why a label did not select a profile (for the log line), or "" when it did or there is none."""
        profile = profile_of(labels)
        if labels is None or not profile or profile in self.profiles or namespace in self.namespaces:
            return ""
        return (f"namespace {namespace} has label {PROFILE_LABEL}={profile}, but policyProfiles has no such profile "
                f"(known: {', '.join(sorted(self.profiles)) or 'none'}); using the node's policy")


def profile_of(labels: Mapping[str, Any] | None) -> str:
    value = (labels or {}).get(PROFILE_LABEL)
    return value if isinstance(value, str) else ""


def namespace_labels(obj: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The labels of a Namespace object as read (None when there is no object: fail closed)."""
    if obj is None:
        return None
    raw = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def policies(doc: Mapping[str, Any], multus_namespace: str = "") -> Policies:
    """All policies of a multinic config document (its JSON keys). The ``multusNamespace`` — where the node admin's
    own NADs live (``clusterNetwork``, ``defaultNetworks``, alternative default networks), writable by cluster admins
    only — is trusted unless ``multinicPolicy`` says otherwise for it."""
    node = parse_policy(doc)
    per_ns = parse_overrides(doc.get("multinicPolicy"), node)
    if multus_namespace and multus_namespace not in per_ns:
        per_ns[multus_namespace] = Policy(namespace=multus_namespace, trusted=True, implicit=True)
    profiles = {name: Policy(**{**p.__dict__, "namespace": "", "overridden": frozenset()}) for name, p in
                parse_overrides(doc.get("policyProfiles"), node, "policyProfiles").items()}
    return Policies(node, per_ns, profiles)


# ---- what the node told us ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """Node state the decisions need, gathered by the caller (``cni.delegator.tenancy_io``)."""

    uplinks: frozenset[str] = frozenset()  # interfaces of the node's default routes
    cluster_bridges: frozenset[str] = frozenset()  # bridges of the node's own networks
    reserved_dirs: tuple[str, ...] = ()  # multinic's own state (cniDir), realpath'd
    node_networks: frozenset[str] = frozenset()  # the config names of the node's own networks (delegates)


def uplinks_from_proc(route_v4: str, route_v6: str) -> frozenset[str]:
    """The interfaces of the main table's default routes, from ``/proc/net/route`` and ``/proc/net/ipv6_route``
    (read by the caller: a text read costs nothing next to importing pyroute2 on every exec)."""
    out: set[str] = set()
    for line in route_v4.splitlines()[1:]:
        f = line.split()
        # Iface Destination Gateway Flags RefCnt Use Metric Mask ...; RTF_UP = 0x1
        if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000" and int(f[3], 16) & 0x1:
            out.add(f[0])
    for line in route_v6.splitlines():
        f = line.split()
        # dst dst_len src src_len next_hop metric refcnt use flags iface; RTF_REJECT = 0x200 (unreachable on lo)
        if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and not int(f[8], 16) & 0x200 and f[9] != "lo":
            out.add(f[9])
    return frozenset(out)


def bridges_of(plugins: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The bridges the node's own networks use (a bridge plugin without ``bridge`` uses cni0)."""
    out: set[str] = set()
    for p in plugins:
        if p.get("type") == "bridge":
            names = [v for _, v in spellings(p, "bridge") if isinstance(v, str) and v]
            out.update(names or [DEFAULT_BRIDGE])
    return frozenset(out)


# ---- host ports ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPort:
    port: int
    protocol: str
    host_ip: str  # "" = every local address

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}" + (f" on {self.host_ip}" if self.host_ip else "")


def _one(obj: Mapping[str, Any], key: str) -> list[Any]:
    return [v for _, v in spellings(obj, key)]


def host_ports(mappings: Any, where: str) -> list[HostPort]:
    """The host ports a ``portMappings`` list claims; anything a plugin might read differently is 7."""
    if mappings is None:
        return []
    if not isinstance(mappings, list):
        raise InvalidConfig(f"{where} must be a list of port mappings")
    out: list[HostPort] = []
    for i, m in enumerate(mappings):
        w = f"{where}[{i}]"
        if not isinstance(m, Mapping):
            raise InvalidConfig(f"{w} must be an object {{hostPort, containerPort, protocol, hostIP}}")
        ports = _one(m, "hostPort")
        if not ports:
            raise InvalidConfig(f"{w} has no hostPort")
        protos = _one(m, "protocol") or ["tcp"]
        ips = _one(m, "hostIP") or [""]
        for port in ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidConfig(f"{w}.hostPort {port!r} is not a port number (1-65535)")
            for proto in protos:
                if not isinstance(proto, str) or proto.lower() not in PROTOCOLS:
                    raise InvalidConfig(f"{w}.protocol {proto!r} is not one of {', '.join(PROTOCOLS)}")
                for ip in ips:
                    if not isinstance(ip, str):
                        raise InvalidConfig(f"{w}.hostIP {ip!r} is not an IP address")
                    if ip:
                        try:
                            ip = str(ipaddress.ip_address(ip))
                        except ValueError:
                            raise InvalidConfig(f"{w}.hostIP {ip!r} is not an IP address") from None
                    out.append(HostPort(port, proto.lower(), ip))
    return out


def _port_allowed(hp: HostPort, rules: Iterable[PortRule]) -> bool:
    for r in rules:
        if not (r.first <= hp.port <= r.last and hp.protocol in r.protocols):
            continue
        if r.host_ips is not None:
            if hp.host_ip in r.host_ips:
                return True
        elif not hp.host_ip or not _loopback(hp.host_ip):
            return True
    return False


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 reaches the IPv4 loopback
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def check_host_ports(mappings: Any, policy: Policy, who: str, where: str) -> None:
    """Refuse (102) any host port ``policy`` does not allow; ``who`` asks for it through ``where``."""
    if policy.trusted:
        return
    for hp in host_ports(mappings, where):
        if _port_allowed(hp, policy.host_ports):
            continue
        scope = f"namespace {policy.namespace}" if policy.namespace else "this node"
        raise PolicyDenied(
            f"{who} asks for host port {hp} ({where}), which is not allowed for {scope}",
            f"a node admin may allow it with the multinic config key {policy.key('hostPortPolicy')}, e.g. "
            f'[{{"ports": "{hp.port}", "protocols": ["{hp.protocol}"]}}]',
        )


# ---- the NAD's config ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathUse:
    where: str  # "plugins[0].ipam.dataDir"
    value: str  # as written (absolute)
    key: PathKey


def _plugins(conflist: Any) -> list[Mapping[str, Any]]:
    plugins = getattr(conflist, "plugins", conflist)
    return [p for p in plugins if isinstance(p, Mapping)]


def _sections(plugins: list[Mapping[str, Any]]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(where, type, section): every plugin and every ipam section spelling, with its type."""
    out: list[tuple[str, str, Mapping[str, Any]]] = []
    for i, p in enumerate(plugins):
        out.append((f"plugins[{i}]", str(p.get("type", "")), p))
        for k, ipam in _objects(p, "ipam"):
            out.append((f"plugins[{i}].{k}", str(ipam.get("type", "")), ipam))
    return out


def path_uses(conflist: Any) -> list[PathUse]:
    """Every filesystem path the config names in a native plugin's path key. Relative paths and values that are not
    strings are refused here (7): a plugin would resolve them against the runtime's working directory, or read
    them in a way this check cannot follow."""
    out: list[PathUse] = []
    for where, ptype, section in _sections(_plugins(conflist)):
        for pk in PATH_KEYS.get(ptype, ()):
            holders: list[tuple[str, Mapping[str, Any]]] = [(where, section)]
            for part in pk.key[:-1]:
                holders = [(f"{w}.{k}", sub) for w, obj in holders for k, sub in _objects(obj, part)]
            for w, obj in holders:
                for k, v in spellings(obj, pk.key[-1]):
                    at = f"{w}.{k}"
                    if not isinstance(v, str):
                        raise InvalidConfig(f"{at} must be a string (a path), got {type(v).__name__}")
                    if not v:
                        continue  # "" = the plugin's default
                    if not v.startswith("/"):
                        raise InvalidConfig(f"{at} {v!r} is not an absolute path",
                                            "a relative path would be resolved against the runtime's working "
                                            "directory")
                    out.append(PathUse(at, v, pk))
    return out


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def check_paths(uses: Iterable[PathUse], resolved: Mapping[str, str], policy: Policy, facts: Facts,
                network: str) -> None:
    """Refuse (102) a path that resolves outside the allowed roots or into multinic's own state.

    ``resolved`` maps each value, and each allowed root, to its ``realpath`` (symlinks and ``..`` resolved by the
    caller, as the kernel will resolve them); one missing from it is judged by its lexical normal form (the
    webhook, which cannot see the node).
    """
    roots = [resolved.get(r, r) for r in policy.allowed_paths]
    for use in uses:
        lexical = _normpath(use.value)
        if lexical in use.key.defaults:
            continue
        real = resolved.get(use.value, lexical)
        shown = f"{use.value!r}" + (f" (resolves to {real})" if real != use.value else "")
        for d in facts.reserved_dirs:
            if _under(real, d):
                raise PolicyDenied(f"network {network}: {use.where} {shown} is inside multinic's own state directory "
                                   f"{d}", "a NAD may not name it; remove the key to use the plugin's default")
        if not any(_under(real, r) for r in roots):
            raise PolicyDenied(
                f"network {network}: {use.where} {shown} is outside the paths NADs may name "
                f"({', '.join(policy.allowed_paths)})",
                f"remove the key to use the plugin's default ({', '.join(use.key.defaults) or 'none'}), or a node "
                f"admin may allow the path with the multinic config key {policy.key('allowedPaths')}",
            )


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_interfaces(conflist: Any, policy: Policy, facts: Facts, network: str) -> None:
    """Masters (macvlan/ipvlan/vlan, host-device) and bridges a NAD may use on the host (102)."""
    for i, p in enumerate(_plugins(conflist)):
        ptype = str(p.get("type", ""))
        at = f"plugins[{i}]"
        if ptype in MASTER_KEYS:
            key = MASTER_KEYS[ptype]
            if any(_set(v) for _, v in spellings(p, "linkInContainer")):
                continue  # the master is in the pod's namespace, not the host's
            names = [(f"{at}.{k}", v) for k, v in spellings(p, key) if v != ""]
            if not names:
                if ptype == "ipvlan" and i > 0:
                    continue  # chained: the master is the previous plugin's interface in the pod
                # The plugin takes the node's default-route interface.
                names = [(f"{at}.{key} (unset: the default-route interface)", u) for u in sorted(facts.uplinks)]
                if not names and ptype == "host-device":
                    names = [(f"{at}.{key} (unset)", "")]
            for where, name in names:
                if not isinstance(name, str):
                    raise InvalidConfig(f"network {network}: {where} must be an interface name")
                if policy.allowed_masters is not None:
                    if _allowed(name, policy.allowed_masters):
                        continue
                    why = f"it is not in allowedMasters ({', '.join(policy.allowed_masters) or 'empty'})"
                elif name and name not in facts.uplinks and name != "lo":
                    continue
                elif not name:
                    why = "host-device without 'device' names no interface that policy could check"
                else:
                    why = "it is this node's uplink (it carries the default route)" if name != "lo" else \
                        "it is the loopback interface"
                raise PolicyDenied(
                    f"network {network}: {where} uses host interface {name or '?'} as {ptype} {key}; {why}",
                    f"use a dedicated interface, or a node admin may allow it with the multinic config key "
                    f"{policy.key('allowedMasters')}",
                )
        if ptype == "bridge":
            names = [(f"{at}.{k}", v) for k, v in spellings(p, "bridge") if v != ""] or \
                [(f"{at}.bridge (unset: {DEFAULT_BRIDGE})", DEFAULT_BRIDGE)]
            for where, name in names:
                if not isinstance(name, str):
                    raise InvalidConfig(f"network {network}: {where} must be a bridge name")
                if policy.allowed_bridges is not None:
                    if _allowed(name, policy.allowed_bridges):
                        continue
                    why = f"it is not in allowedBridges ({', '.join(policy.allowed_bridges) or 'empty'})"
                elif name in facts.cluster_bridges:
                    why = "it is the bridge of this node's cluster network"
                elif name in facts.uplinks or name == "lo":
                    why = "it is this node's uplink" if name != "lo" else "it is the loopback interface"
                else:
                    continue
                raise PolicyDenied(
                    f"network {network}: {where} attaches pods to host bridge {name}; {why}",
                    f"use a bridge of its own, or a node admin may allow it with the multinic config key "
                    f"{policy.key('allowedBridges')}",
                )


def check_host_changes(conflist: Any, policy: Policy, network: str) -> None:
    """Host-side changes (bridge ipMasq/isGateway/hairpin/promisc/forceAddress, portmap's rule knobs) (102)."""
    for i, p in enumerate(_plugins(conflist)):
        ptype = str(p.get("type", ""))
        keys: list[tuple[str, str]] = []
        if ptype == "bridge":
            keys = list(BRIDGE_HOST_KEYS.items())
        elif ptype == "portmap":
            keys = [(k, "portmapRules") for k in PORTMAP_HOST_KEYS]
        for key, change in keys:
            if change in policy.host_network_changes:
                continue
            for k, v in spellings(p, key):
                if key == "markMasqBit" or _set(v):
                    raise PolicyDenied(
                        f"network {network}: plugins[{i}].{k} changes the host's network ({ptype} on the host side), "
                        "which NADs may not do here",
                        f"remove the key, or a node admin may allow it by adding {change!r} to the multinic config "
                        f"key {policy.key('hostNetworkChanges')}",
                    )


def network_names(delegates: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The config ``name`` of each of the node's own networks (a conf or a conflist)."""
    return frozenset(str(d["name"]) for d in delegates if isinstance(d.get("name"), str) and d["name"])


def check_network_name(conflist: Any, facts: Facts, network: str) -> None:
    """A tenant NAD may not take the config name of one of the node's own networks (102). The name keys the
    plugins' node state: host-local's reservations live in ``/var/lib/cni/networks/<name>``, the chained
    plugins' state under ``<name>``, the result cache under ``<name>-<container>``. A NAD that reuses the
    cluster network's name would share its address store: reserving addresses the cluster network needs,
    or having its own addresses counted against the cluster's range."""
    name = conflist.get("name") if isinstance(conflist, Mapping) else getattr(conflist, "name", None)
    if isinstance(name, str) and name in facts.node_networks:
        raise PolicyDenied(
            f"network {network}: its config is named {name!r}, the name of one of this node's own networks; "
            "it would share that network's IPAM store and plugin state",
            "give the NAD's config another \"name\" (it only has to be unique on the node)",
        )


def embedded_port_mappings(conflist: Any) -> list[tuple[str, Any]]:
    """``runtimeConfig.portMappings`` a NAD wrote into its own plugin configs (they reach portmap when the
    annotation asks for none: libcni only replaces ``runtimeConfig`` when it has capability args)."""
    out: list[tuple[str, Any]] = []
    for i, p in enumerate(_plugins(conflist)):
        for k, rc in _objects(p, "runtimeConfig"):
            for kk, v in spellings(rc, "portMappings"):
                out.append((f"plugins[{i}].{k}.{kk}", v))
    return out


def check_nad(conflist: Any, policy: Policy, facts: Facts, resolved: Mapping[str, str], network: str) -> None:
    """Every rule about a tenant NAD's config, in the order a node admin would fix them."""
    if policy.trusted:
        return
    check_network_name(conflist, facts, network)
    for where, mappings in embedded_port_mappings(conflist):
        check_host_ports(mappings, policy, f"network {network}", where)
    check_host_changes(conflist, policy, network)
    check_interfaces(conflist, policy, facts, network)
    check_paths(path_uses(conflist), resolved, policy, facts, network)


def check_attachment(network: str, *, pod_policy: Policy, annotation_ports: Any, nad_policy: Policy | None,
                     conflist: Any, facts: Facts, resolved: Mapping[str, str]) -> None:
    """The one decision per attachment: the annotation's host ports under the pod's namespace policy, then (for a
    tenant NAD, ``nad_policy`` set) its config under the policy of the NAD's namespace."""
    check_host_ports(annotation_ports, pod_policy, f"the pod's network annotation (item {network})", "portMappings")
    if nad_policy is not None:
        check_nad(conflist, nad_policy, facts, resolved, network)


def tenant_config(nad: Mapping[str, Any] | None) -> bool:
    """A NAD's config is tenant input when it carries ``spec.config``; without it, the config is a confDir file
    the node admin wrote (multi-net spec §3.4)."""
    spec = (nad or {}).get("spec")
    return isinstance(spec, Mapping) and bool(spec.get("config"))


def namespace_of(key: str, fallback: str) -> str:
    """The namespace in a network key ``ns/name`` (a confDir conf name has none)."""
    ns, sep, _ = key.partition("/")
    return ns if sep else fallback


# ---- what a doctor should warn about ------------------------------------------------------------------------------

SENSITIVE_PORTS: tuple[int, ...] = (22, 53, 2379, 2380, 6443, 10250, 10255, 10256, 10257, 10259)
SENSITIVE_ROOTS: tuple[str, ...] = ("/", "/etc", "/root", "/usr", "/bin", "/sbin", "/lib", "/boot", "/proc", "/sys",
                                    "/dev", "/var/lib/kubelet", "/etc/kubernetes", "/run/containerd", "/var/run")


def permissive(ps: Policies) -> list[str]:
    """Settings a node admin should know are wide open (for ``multinic doctor`` and the daemon's start-up log)."""
    out: list[str] = []
    entries = [("the node", "", ps.node), *((f"multinicPolicy.{p.namespace}", f"namespace {p.namespace}", p)
                                            for p in ps.namespaces.values()),
               *((f"policyProfiles.{name}", f"every namespace labelled {PROFILE_LABEL}={name}", p)
                 for name, p in ps.profiles.items())]
    for where, who, p in entries:
        if p.trusted and p.implicit:
            continue
        if p.trusted:
            out.append(f"{where}: {who} is trusted: its pods and NADs are not restricted")
            continue
        for r in p.host_ports:
            hit = [port for port in SENSITIVE_PORTS if r.first <= port <= r.last]
            if hit or r.first < 1024:
                out.append(f"{where}: hostPortPolicy allows {r.first}-{r.last}, which includes "
                           f"{'node service ports ' + ', '.join(map(str, hit)) if hit else 'privileged ports'}")
        for root in p.allowed_paths:
            if any(root == s or _under(s, root) or (s != "/" and _under(root, s)) for s in SENSITIVE_ROOTS):
                out.append(f"{where}: allowedPaths includes {root}: NADs may write or read node files there")
        if p.allowed_masters is not None and any(m in ("*", "?*") for m in p.allowed_masters):
            out.append(f"{where}: allowedMasters allows every interface, the node's uplink included")
        if p.allowed_bridges is not None and any(b in ("*", "?*") for b in p.allowed_bridges):
            out.append(f"{where}: allowedBridges allows every bridge, the cluster network's included")
        if p.host_network_changes:
            out.append(f"{where}: hostNetworkChanges allows {', '.join(sorted(p.host_network_changes))} on the host")
    return out
