"""portmap's rule computation: iptables-restore and ``nft -f`` batches from plain data. PURE.

No subprocess, no files, no sockets: the plugin (``plugins/portmap.py``) feeds in what
``iptables-save``/``nft list`` printed and runs the batches these functions return, one atomic
batch per ADD/DEL (per family for iptables, one for all families for nft).

Layout (names kept from the reference so operators recognise them):
- iptables, table ``nat``: ``PREROUTING``/``OUTPUT -m addrtype --dst-type LOCAL -j
  CNI-HOSTPORT-DNAT``; in ``CNI-HOSTPORT-DNAT`` one multiport jump per protocol (15 ports per
  rule) to the per-attachment chain ``CNI-DN-<sha512(name+containerID) hex>`` (28 chars, the
  reference's ``utils.MustFormatChainNameWithPrefix``), inserted first so the newest container
  using a host port wins (upstream's later fix; 1.1.1 appended); the per-attachment chain marks
  hairpin (pod subnet) and v4 localhost traffic via ``CNI-HOSTPORT-SETMARK`` (or
  ``externalSetMarkChain``) and DNATs; ``POSTROUTING -j CNI-HOSTPORT-MASQ`` masquerades marked
  packets.
- nftables: tables ``ip``/``ip6 cni_hostport`` with chains ``hostports``, ``hostip_hostports``,
  ``prerouting``, ``output``, ``masquerading`` (upstream's nftables backend). Each rule of an
  attachment carries the comment ``"<CNI-DN chain name> <network> <containerID>"`` (cut to
  127 bytes); DEL matches the first word, so two attachments of one pod (same container ID,
  different networks) never delete each other's rules — upstream's comment is the bare
  container ID, which collides there. Unlike upstream, ``prerouting`` also requires
  ``fib daddr type local`` before ``hostports``, as iptables' ``--dst-type LOCAL`` does:
  without it a forwarded packet to another host's port would be hijacked.

Invariants:
- Shared chains are declared in a batch only when absent: ``iptables-restore --noflush``
  flushes every chain it sees declared, which would drop other containers' jumps. The
  per-attachment chain is always declared, which makes a repeated ADD idempotent.
- The usual ADD and DEL are one ``iptables-restore`` per family and no ``iptables-save``
  (``ipt_fast_add_batch``/``ipt_fast_del_batch``): the batch asserts what it assumes (``-C``,
  ``-N``, ``-D`` fail when the table differs) and a failed batch applies nothing, so the caller
  can fall back to read-compute-apply from ``iptables-save``.
- Nothing user-controlled reaches a batch unchecked: names/IDs are validated alphabets,
  conditions and chain names are refused when they contain line breaks (or, for nft, ``;``
  and ``#``), iptables arguments are quoted.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cni.spec.errors import InvalidConfig
from cni.spec.result import IPAddress, IPInterface

DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK"
MASQ_CHAIN = "CNI-HOSTPORT-MASQ"
NFT_TABLE = "cni_hostport"
MULTIPORT_MAX = 15
COMMENT_MAX = 255  # iptables comment match limit (reference trimComment)
NFT_COMMENT_MAX = 127
PROTOCOLS = ("tcp", "udp", "sctp")
_CHAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,28}\Z")


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: IPAddress | None = None

    def __post_init__(self) -> None:
        for what, port in (("hostPort", self.host_port), ("containerPort", self.container_port)):
            if not 1 <= port <= 65535:
                raise InvalidConfig(f"portmap: invalid {what} {port}", "a port is 1-65535")
        if self.protocol not in PROTOCOLS:
            raise InvalidConfig(f"portmap: invalid protocol {self.protocol!r}", f"expected one of {', '.join(PROTOCOLS)}")

    def applies_to(self, family: int) -> bool:
        return self.host_ip is None or self.host_ip.version == family

    @property
    def dst(self) -> IPAddress | None:
        """The host address to match, None for "any local address" (unset or unspecified)."""
        if self.host_ip is None or self.host_ip.is_unspecified:
            return None
        return self.host_ip


@dataclass(frozen=True)
class Settings:
    snat: bool = True
    masq_all: bool = False
    mark_bit: int = 13
    external_setmark: str | None = None
    conditions_v4: tuple[str, ...] = ()
    conditions_v6: tuple[str, ...] = ()

    def conditions(self, family: int) -> tuple[str, ...]:
        return self.conditions_v4 if family == 4 else self.conditions_v6

    @property
    def mark(self) -> str:
        v = 1 << self.mark_bit
        return f"{v:#x}/{v:#x}"


def dn_chain(network: str, container_id: str) -> str:
    """``CNI-DN-`` + sha512(name+id) hex, 28 characters (reference naming)."""
    return ("CNI-DN-" + hashlib.sha512((network + container_id).encode()).hexdigest())[:28]


def dnat_comment(network: str, container_id: str) -> str:
    c = f'dnat name: "{network}" id: "{container_id}"'
    # The reference keeps 253 + "..." = 256 characters, one more than iptables accepts.
    return c if len(c) <= COMMENT_MAX else c[: COMMENT_MAX - 3] + "..."


def nft_comment(network: str, container_id: str) -> str:
    return f"{dn_chain(network, container_id)} {network} {container_id}"[:NFT_COMMENT_MAX]


def check_chain_name(name: str, what: str) -> str:
    if not _CHAIN_NAME.match(name):
        raise InvalidConfig(f"portmap: invalid {what} {name!r}", "an iptables chain name is 1-28 characters of letters, digits, '_', '.', '-'")
    return name


def check_conditions(conds: Iterable[str], what: str, backend: str) -> tuple[str, ...]:
    out = tuple(conds)
    bad = "\n\r" + (";#" if backend == "nftables" else "")
    for c in out:
        if any(ch in c for ch in bad) or "\0" in c:
            raise InvalidConfig(f"portmap: {what} entry {c!r} contains a forbidden character", "line breaks (and for nftables ';' and '#') are not allowed")
    return out


def for_family(mappings: Iterable[PortMapping], family: int) -> list[PortMapping]:
    return [m for m in mappings if m.applies_to(family)]


# ---- iptables -------------------------------------------------------------------------------

_SAFE_ARG = re.compile(r"[A-Za-z0-9_./:,\-\[\]!=+@%]+\Z")


def quote(arg: str) -> str:
    """One argument as iptables-restore (and iptables-save) writes it."""
    if "\n" in arg or "\r" in arg or "\0" in arg:
        raise InvalidConfig(f"portmap: iptables argument {arg!r} contains a line break")
    if _SAFE_ARG.match(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rule_line(op: str, chain: str, args: Iterable[str]) -> str:
    return " ".join([op, chain, *(quote(a) for a in args)])


@dataclass
class NatTable:
    """What ``iptables-save -t nat`` printed: chains and their rules (``-A ...`` lines)."""

    chains: set[str] = field(default_factory=set)
    rules: list[str] = field(default_factory=list)

    def chain_rules(self, chain: str) -> list[str]:
        return [r for r in self.rules if r.split(" ", 2)[1] == chain]

    def jumps_to(self, chain: str) -> list[str]:
        return [r for r in self.rules if r.endswith(f" -j {chain}") or f" -j {chain} " in r]


def parse_iptables_save(text: str) -> NatTable:
    out = NatTable()
    in_nat = False
    for line in text.splitlines():
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat:
            continue
        elif line.startswith(":"):
            out.chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            out.rules.append(line)
    return out


def _ip_port(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _host_net(ip: IPAddress) -> str:
    return f"{ip}/{ip.max_prefixlen}"


def ipt_dn_rules(chain: str, pod: IPInterface, mappings: list[PortMapping], s: Settings) -> list[str]:
    """The per-attachment chain's rules, exactly as iptables-save prints them."""
    setmark = s.external_setmark or SETMARK_CHAIN
    out = []
    for m in mappings:
        dst = ["-d", _host_net(m.dst)] if m.dst is not None else []
        match = ["-p", m.protocol, "-m", m.protocol, "--dport", str(m.host_port)]
        if s.snat:
            # Hairpin: a pod of this subnet reaching itself through the host port must be
            # masqueraded or the reply bypasses the DNAT. masqAll: everything (iptables-save
            # omits "-s 0.0.0.0/0").
            src = [] if s.masq_all else ["-s", str(pod.network)]
            out.append(rule_line("-A", chain, [*src, *dst, *match, "-j", setmark]))
            if pod.version == 4 and not s.masq_all:
                out.append(rule_line("-A", chain, ["-s", "127.0.0.1/32", *dst, *match, "-j", setmark]))
        out.append(rule_line("-A", chain, [*dst, *match, "-j", "DNAT", "--to-destination", _ip_port(pod.ip, m.container_port)]))
    return out


def ipt_entry_rules(chain: str, comment: str, pod: IPInterface, mappings: list[PortMapping], s: Settings) -> list[list[str]]:
    """The jumps from CNI-HOSTPORT-DNAT: per protocol (sorted), at most 15 ports per rule."""
    return _entry_rules(chain, comment, pod.version, mappings, s)


def _entry_rules(chain: str, comment: str, family: int, mappings: list[PortMapping], s: Settings) -> list[list[str]]:
    by_proto: dict[str, list[int]] = {}
    for m in mappings:
        ports = by_proto.setdefault(m.protocol, [])
        if m.host_port not in ports:
            ports.append(m.host_port)
    out = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for i in range(0, len(ports), MULTIPORT_MAX):
            spec = ",".join(str(p) for p in ports[i : i + MULTIPORT_MAX])
            out.append(["-p", proto, "-m", "comment", "--comment", comment, "-m", "multiport", "--dports", spec,
                        *s.conditions(family), "-j", chain])
    return out


def _shared_rules(s: Settings) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    if s.snat and s.external_setmark is None:
        out.append((SETMARK_CHAIN, ["-m", "comment", "--comment", "CNI portfwd masquerade mark", "-j", "MARK", "--set-xmark", s.mark]))
        out.append((MASQ_CHAIN, ["-m", "mark", "--mark", s.mark, "-j", "MASQUERADE"]))
    for entry in ("PREROUTING", "OUTPUT"):
        out.append((entry, ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN]))
    return out


_MASQ_JUMP = ["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", MASQ_CHAIN]


def ipt_add_batch(network: str, container_id: str, pod: IPInterface, mappings: list[PortMapping], s: Settings, nat: NatTable) -> str:
    """One iptables-restore --noflush batch setting up (or refreshing) one attachment."""
    chain = dn_chain(network, container_id)
    lines = ["*nat"]
    shared = [DNAT_CHAIN] + ([SETMARK_CHAIN, MASQ_CHAIN] if s.snat and s.external_setmark is None else [])
    lines += [f":{c} - [0:0]" for c in shared if c not in nat.chains]
    lines.append(f":{chain} - [0:0]")  # declared → flushed: a repeated ADD replaces its rules
    existing = set(nat.rules)
    for c, args in _shared_rules(s):
        line = rule_line("-A", c, args)
        if line not in existing:
            lines.append(line)
    if s.snat and s.external_setmark is None:
        line = rule_line("-A", "POSTROUTING", _MASQ_JUMP)
        if line not in existing:
            # First in POSTROUTING: bridge/ptp ipMasq rules would otherwise masquerade first.
            lines.append(rule_line("-I", "POSTROUTING", ["1", *_MASQ_JUMP]))
    lines += ipt_dn_rules(chain, pod, mappings, s)
    lines += ["-D" + old[2:] for old in nat.jumps_to(chain)]
    entries = ipt_entry_rules(chain, dnat_comment(network, container_id), pod, mappings, s)
    for args in reversed(entries):
        lines.append(rule_line("-I", DNAT_CHAIN, ["1", *args]))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipt_fast_add_batch(network: str, container_id: str, pod: IPInterface, mappings: list[PortMapping], s: Settings) -> str:
    """The ADD batch for the usual case, computed without reading the table (no ``iptables-save``).

    It asserts the state it assumes, inside the same atomic transaction: ``-C`` of every shared
    rule (so the shared chains exist too) and ``-N`` of the attachment's chain (fails when it
    exists, and a jump to a chain cannot exist without the chain). When any assumption is wrong
    ``iptables-restore`` applies nothing and fails; the caller then reads the table and uses
    ``ipt_add_batch`` (the first pod on a node, a repeated ADD).
    """
    chain = dn_chain(network, container_id)
    lines = ["*nat"]
    lines += [rule_line("-C", c, args) for c, args in _shared_rules(s)]
    if s.snat and s.external_setmark is None:
        lines.append(rule_line("-C", "POSTROUTING", _MASQ_JUMP))
    lines.append(f"-N {chain}")
    lines += ipt_dn_rules(chain, pod, mappings, s)
    for args in reversed(ipt_entry_rules(chain, dnat_comment(network, container_id), pod, mappings, s)):
        lines.append(rule_line("-I", DNAT_CHAIN, ["1", *args]))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipt_fast_del_batch(network: str, container_id: str, family: int, mappings: list[PortMapping], s: Settings) -> str:
    """The DEL batch when the ADD's mappings are known (its state file): delete the exact jumps, then
    the chain — without reading the table. Any rule or chain already gone fails the whole (atomic)
    batch and the caller falls back to ``ipt_del_batch`` over what ``iptables-save`` shows, which
    treats "already gone" as done (the reference ignores "does not exist" per command)."""
    chain = dn_chain(network, container_id)
    lines = ["*nat"]
    comment = dnat_comment(network, container_id)
    lines += [rule_line("-D", DNAT_CHAIN, args) for args in _entry_rules(chain, comment, family, for_family(mappings, family), s)]
    lines += [f"-F {chain}", f"-X {chain}", "COMMIT"]
    return "\n".join(lines) + "\n"


def ipt_del_batch(network: str, container_id: str, nat: NatTable) -> str | None:
    """The batch removing one attachment's chain and every jump to it; None when there is none."""
    chain = dn_chain(network, container_id)
    jumps = nat.jumps_to(chain)
    if chain not in nat.chains and not jumps:
        return None
    lines = ["*nat", *("-D" + j[2:] for j in jumps)]
    if chain in nat.chains:
        lines += [f"-F {chain}", f"-X {chain}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipt_problems(network: str, container_id: str, pod: IPInterface, mappings: list[PortMapping], s: Settings, nat: NatTable) -> list[str]:
    """What CHECK finds missing for one family (empty when everything is in place)."""
    chain = dn_chain(network, container_id)
    if chain not in nat.chains:
        return [f"chain {chain} does not exist in table nat"]
    have = set(nat.chain_rules(chain))
    out = [f"rule missing: {r}" for r in ipt_dn_rules(chain, pod, mappings, s) if r not in have]
    jumps = nat.jumps_to(chain)
    for args in ipt_entry_rules(chain, "", pod, mappings, s):
        ports = args[args.index("--dports") + 1]
        if not any(f"--dports {ports} " in j and f"-p {args[1]} " in j for j in jumps):
            out.append(f"no jump from {DNAT_CHAIN} to {chain} for {args[1]} ports {ports}")
    for c, a in _shared_rules(s):
        if rule_line("-A", c, a) not in set(nat.rules):
            out.append(f"rule missing: {rule_line('-A', c, a)}")
    return out


# ---- conntrack ------------------------------------------------------------------------------


def conntrack_udp_flows(text: str) -> set[tuple[int, int]]:
    """(family, original destination port) of the UDP entries of ``/proc/net/nf_conntrack``.

    A line is ``ipv4 2 udp 17 <ttl> src=… dst=… sport=… dport=… [UNREPLIED] src=… dport=…``;
    the first ``dport=`` is the original direction (the one ``--orig-port-dst`` matches).
    """
    out: set[tuple[int, int]] = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[2] != "udp" or words[0] not in ("ipv4", "ipv6"):
            continue
        port = next((w[6:] for w in words if w.startswith("dport=")), "")
        if port.isdigit():
            out.add((4 if words[0] == "ipv4" else 6, int(port)))
    return out


# ---- nftables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NftRule:
    family: str  # "ip" | "ip6"
    chain: str
    handle: int
    text: str  # the rule as listed, without "# handle N"
    comment: str


_NFT_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_NFT_HANDLE = re.compile(r"\s*# handle (\d+)\s*$")
_NFT_COMMENT = re.compile(r'comment "([^"]*)"')


def parse_nft_table(family: str, text: str) -> list[NftRule]:
    """The rules of ``nft -a list table <family> cni_hostport`` output."""
    out = []
    chain = ""
    for line in text.splitlines():
        m = _NFT_CHAIN.match(line)
        if m:
            chain = m.group(1)
            continue
        h = _NFT_HANDLE.search(line)
        if not h or not chain or line.strip().startswith(("chain", "table", "type")):
            continue
        body = line[: h.start()].strip()
        if not body or body.startswith(("type ", "comment ")):
            continue
        c = _NFT_COMMENT.search(body)
        out.append(NftRule(family, chain, int(h.group(1)), body, c.group(1) if c else ""))
    return out


def nft_family(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def nft_rules(comment: str, pod: IPInterface, mappings: list[PortMapping], s: Settings) -> list[tuple[str, str]]:
    """(chain, rule text) of one attachment in one family, as ``nft list`` prints them."""
    ipx = nft_family(pod.version)
    out = []
    for m in mappings:
        dnat = f"{m.protocol} dport {m.host_port} dnat to {_ip_port(pod.ip, m.container_port)} comment \"{comment}\""
        if m.dst is not None:
            out.append(("hostip_hostports", f"{ipx} daddr {m.dst} {dnat}"))
        else:
            out.append(("hostports", dnat))
    if s.snat and mappings:
        if s.masq_all:
            out.append(("masquerading", f'{ipx} daddr {pod.ip} ct status dnat masquerade comment "{comment}"'))
        else:
            out.append(("masquerading", f'{ipx} saddr {pod.ip} {ipx} daddr {pod.ip} masquerade comment "{comment}"'))
            if pod.version == 4:
                out.append(("masquerading", f'{ipx} saddr 127.0.0.1 {ipx} daddr {pod.ip} masquerade comment "{comment}"'))
    return out


def _nft_skeleton(ipx: str, conds: tuple[str, ...], snat: bool) -> list[str]:
    t = f"{ipx} {NFT_TABLE}"
    pre = " ".join(conds) + " " if conds else ""
    lines = [
        f'add table {t} {{ comment "CNI portmap plugin" ; }}',
        f"add chain {t} hostports",
        f"add chain {t} hostip_hostports",
        # -100 = dstnat; nft 1.0.6 does not accept the name on the output hook.
        f"add chain {t} prerouting {{ type nat hook prerouting priority -100 ; }}",
        f"flush chain {t} prerouting",
        f"add rule {t} prerouting {pre}jump hostip_hostports",
        f"add rule {t} prerouting {pre}fib daddr type local jump hostports",
        f"add chain {t} output {{ type nat hook output priority -100 ; }}",
        f"flush chain {t} output",
        f"add rule {t} output {pre}jump hostip_hostports",
        f"add rule {t} output {pre}fib daddr type local jump hostports",
    ]
    if snat:
        lines.append(f"add chain {t} masquerading {{ type nat hook postrouting priority 100 ; }}")
    return lines


def nft_add_batch(network: str, container_id: str, pods: list[IPInterface], mappings: list[PortMapping], s: Settings,
                  existing: list[NftRule]) -> str:
    """One ``nft -f -`` transaction for every family of the attachment (old rules replaced)."""
    comment = nft_comment(network, container_id)
    token = comment.split(" ", 1)[0]
    lines: list[str] = []
    for pod in pods:
        fam_maps = for_family(mappings, pod.version)
        if not fam_maps:
            continue
        ipx = nft_family(pod.version)
        lines += _nft_skeleton(ipx, s.conditions(pod.version), s.snat)
        lines += [f"delete rule {ipx} {NFT_TABLE} {r.chain} handle {r.handle}"
                  for r in existing if r.family == ipx and r.comment.split(" ", 1)[0] == token]
        lines += [f"add rule {ipx} {NFT_TABLE} {chain} {text}" for chain, text in nft_rules(comment, pod, fam_maps, s)]
    return "\n".join(lines) + "\n" if lines else ""


def nft_del_batch(network: str, container_id: str, existing: list[NftRule]) -> str:
    token = dn_chain(network, container_id)
    lines = [f"delete rule {r.family} {NFT_TABLE} {r.chain} handle {r.handle}"
             for r in existing if r.comment.split(" ", 1)[0] == token]
    return "\n".join(lines) + "\n" if lines else ""


def nft_problems(network: str, container_id: str, pod: IPInterface, mappings: list[PortMapping], s: Settings,
                 existing: list[NftRule]) -> list[str]:
    comment = nft_comment(network, container_id)
    ipx = nft_family(pod.version)
    have = {(r.chain, r.text) for r in existing if r.family == ipx}
    return [f"rule missing in {ipx} {NFT_TABLE} {chain}: {text}"
            for chain, text in nft_rules(comment, pod, for_family(mappings, pod.version), s) if (chain, text) not in have]
