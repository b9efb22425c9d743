"""Netfilter state of the bridge plugin: ipMasq (iptables or nftables) and the MAC spoof check.

Rules:
- Names, comments and rule texts are computed by PURE functions (unit-tested without root) and
  are the reference plugins' own, so a node running a mix of reference and multinic bridges, or
  switching between them, finds and removes the other's rules:
  * iptables: chain ``CNI-<sha512(network + containerID)>`` cut to 28 characters in table nat,
    a jump ``-s <ip> -j CNI-…`` from POSTROUTING, comment ``name: "<network>" id: "<cid>"``
    (containernetworking/plugins pkg/utils FormatChainName / FormatComment, pkg/ip ipmasq_iptables).
  * nftables: table ``inet cni_plugins_masquerade``, chain ``masq_checks`` with one rule per
    attachment whose comment starts with ``<sha512(network)[:16]>-<sha512(ifname:cid)[:16]>``
    (pkg/ip ipmasq_nftables).
  * spoof check: table ``bridge nat``, base chain ``PREROUTING`` (filter, prerouting, -300), chains
    ``cni-br-iface-<cid>-<ifname>`` and ``…-mac``, comment ``macspoofchk-<cid>-<ifname>`` (pkg/link).
- The only I/O is running ``iptables-save``/``iptables-restore`` (and the ip6 variants) and ``nft``:
  one atomic write per family, instead of one fork per rule; the usual ADD (new attachment) and a
  DEL given the addresses read nothing: their batch asserts what it assumes (``-N``, ``-D``) and
  applies nothing when wrong, and only then the table is read (``iptables-save``). ``run_tool`` is the
  one exec of these tools, shared with portmap; json and shlex are imported where they are
  used, so portmap's start-up (it imports ``run_tool``) does not pay for what only bridge needs.
- Teardown needs no addresses: it finds our rules by chain name / comment, so DEL still cleans up
  when the pod's netns (and with it the addresses) is already gone — the reference cannot (it
  takes the addresses from the deleted link).
- Teardown of an absent table/chain/rule is success (DEL is idempotent).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import select
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cni.spec.errors import CNIError, KernelError

if TYPE_CHECKING:
    from cni.spec.request import Request

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

BACKENDS = ("iptables", "nftables")

CHAIN_PREFIX = "CNI-"
MAX_CHAIN_LEN = 28  # iptables chain names are at most 28 characters (29 with NUL)
NFT_TABLE = "cni_plugins_masquerade"
NFT_CHAIN = "masq_checks"
NFT_COMMENT_MAX = 128  # knftables.CommentLengthMax
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}

SPOOF_TABLE = "nat"
SPOOF_BASE_CHAIN = "PREROUTING"
SPOOF_PRIORITY = -300

_TIMEOUT = 30.0


# ---- names (PURE) --------------------------------------------------------------------------


def _sha512_hex(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()


def hash_with_prefix(length: int, prefix: str, to_hash: str) -> str:
    """pkg/utils MustFormatHashWithPrefix: ``prefix`` + hex sha512 of ``to_hash``, cut to ``length``."""
    if len(prefix) >= length or length > 128:
        raise ValueError("invalid length")
    return (prefix + _sha512_hex(to_hash))[:length]


def chain_name(network: str, container_id: str) -> str:
    """The iptables chain of one container on one network (``CNI-`` + 24 hex characters)."""
    return hash_with_prefix(MAX_CHAIN_LEN, CHAIN_PREFIX, network + container_id)


def _go_quote(text: str) -> str:
    # Go's %q for the ASCII names CNI allows (network names and container IDs are [A-Za-z0-9_.-]).
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def iptables_comment(network: str, container_id: str) -> str:
    return f"name: {_go_quote(network)} id: {_go_quote(container_id)}"


def nft_network_hash(network: str) -> str:
    return hash_with_prefix(16, "", network)


def nft_instance_hash(network: str, ifname: str, container_id: str) -> str:
    return nft_network_hash(network) + "-" + hash_with_prefix(16, "", f"{ifname}:{container_id}")


def nft_comment(network: str, ifname: str, container_id: str) -> str:
    text = (
        f"{nft_instance_hash(network, ifname, container_id)}, net: {network.replace(chr(34), '')}, "
        f"if: {ifname.replace(chr(34), '')}, id: {container_id.replace(chr(34), '')}"
    )
    return text[:NFT_COMMENT_MAX]


def spoof_ref(container_id: str, ifname: str) -> str:
    return f"{container_id}-{ifname}"


def spoof_chains(ref: str) -> tuple[str, str]:
    iface = f"cni-br-iface-{ref}"
    return iface, iface + "-mac"


def spoof_comment(ref: str) -> str:
    return f"macspoofchk-{ref}"


# ---- iptables rules (PURE) -------------------------------------------------------------------


def _restore_quote(text: str) -> str:
    # iptables-save writes comments double-quoted with \" escapes; iptables-restore reads them back.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def iptables_rules(addr: IPInterface, chain: str, comment: str) -> list[str]:
    """The three rules of one address, spelled exactly as ``iptables-save`` prints them.

    Traffic to the pod's own subnet is left alone; anything else except multicast is masqueraded
    (multicast must stay untouched so pods on the secondary network can use it).
    """
    host_len = 32 if addr.version == 4 else 128
    c = _restore_quote(comment)
    return [
        f"-A {chain} -d {addr.network} -m comment --comment {c} -j ACCEPT",
        f"-A {chain} ! -d {MULTICAST[addr.version]} -m comment --comment {c} -j MASQUERADE",
        f"-A POSTROUTING -s {addr.ip}/{host_len} -m comment --comment {c} -j {chain}",
    ]


def _tokens(line: str) -> tuple[str, ...]:
    import shlex

    try:
        return tuple(shlex.split(line))
    except ValueError:
        return (line,)


def parse_nat_save(text: str) -> tuple[set[str], list[str]]:
    """From ``iptables-save -t nat`` output: the chains that exist and the rule lines (``-A …``)."""
    chains: set[str] = set()
    rules: list[str] = []
    in_nat = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat:
            continue
        elif line.startswith(":"):
            chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            rules.append(line)
    return chains, rules


def iptables_setup_script(save_text: str, addrs: Sequence[IPInterface], chain: str, comment: str) -> str | None:
    """The ``iptables-restore --noflush`` input that adds what is missing, or None when all is there.

    Like the reference's AppendUnique: an existing identical rule is not added twice.
    """
    chains, rules = parse_nat_save(save_text)
    have = {_tokens(r) for r in rules}
    lines: list[str] = []
    if chain not in chains:
        lines.append(f":{chain} - [0:0]")
    for addr in addrs:
        for rule in iptables_rules(addr, chain, comment):
            if _tokens(rule) not in have:
                lines.append(rule)
                have.add(_tokens(rule))
    if not lines:
        return None
    return "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"


def iptables_fast_setup_script(addrs: Sequence[IPInterface], chain: str, comment: str) -> str:
    """The setup batch of a new attachment, without reading the table: ``-N`` fails (and with it the
    whole atomic batch) when the chain exists — a repeated ADD — and a jump to a chain cannot exist
    without it, so when the batch applies, nothing was there twice. On failure the caller reads the
    table and uses ``iptables_setup_script``."""
    lines = [f"-N {chain}"]
    for addr in addrs:
        lines += iptables_rules(addr, chain, comment)
    return "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"


def iptables_fast_teardown_script(addrs: Sequence[IPInterface], chain: str, comment: str) -> str:
    """The teardown batch when the attachment's addresses are known (its prevResult): delete the
    exact jumps, flush and delete the chain, without reading the table. Anything already gone fails
    the whole batch (nothing applied); the caller then falls back to ``iptables_teardown_script``,
    for which gone is done (the reference ignores "does not exist" per command)."""
    lines = [r.replace("-A", "-D", 1) for a in addrs for r in iptables_rules(a, chain, comment) if r.startswith("-A POSTROUTING ")]
    lines += [f"-F {chain}", f"-X {chain}"]
    return "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"


def iptables_teardown_script(save_text: str, chain: str) -> str | None:
    """Delete every POSTROUTING jump to ``chain`` (whatever address it names), then the chain."""
    chains, rules = parse_nat_save(save_text)
    lines = []
    for rule in rules:
        toks = _tokens(rule)
        if len(toks) >= 2 and toks[1] == "POSTROUTING" and "-j" in toks and toks[toks.index("-j") + 1 : toks.index("-j") + 2] == (chain,):
            lines.append("-D" + rule[2:])
    if chain in chains:
        lines += [f"-F {chain}", f"-X {chain}"]
    if not lines:
        return None
    return "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"


# ---- nftables scripts (PURE) -------------------------------------------------------------------


def _nft_str(text: str) -> str:
    return '"' + text.replace('"', "") + '"'


def nft_masq_rule(addr: IPInterface) -> str:
    fam = "ip" if addr.version == 4 else "ip6"
    return f"{fam} saddr {addr.ip} {fam} daddr != {addr.network} masquerade"


def nft_setup_script(addrs: Sequence[IPInterface], comment: str, stale_handles: Iterable[int]) -> str:
    """One atomic nft transaction: ensure table/chains, reset postrouting, replace our rules."""
    t = f"inet {NFT_TABLE}"
    lines = [
        f"add table {t} {{ comment {_nft_str('Masquerading for plugins from github.com/containernetworking/plugins')} ; }}",
        f"add chain {t} {NFT_CHAIN} {{ comment {_nft_str('Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet')} ; }}",
        f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f"flush chain {t} postrouting",
        f"add rule {t} postrouting ip daddr 224.0.0.0/4 return",
        f"add rule {t} postrouting ip6 daddr ff00::/8 return",
        f"add rule {t} postrouting goto {NFT_CHAIN}",
    ]
    lines += [f"delete rule {t} {NFT_CHAIN} handle {h}" for h in stale_handles]
    lines += [f"add rule {t} {NFT_CHAIN} {nft_masq_rule(a)} comment {_nft_str(comment)}" for a in addrs]
    return "\n".join(lines) + "\n"


def nft_rules_with_comment(listing: dict[str, Any], prefix: str) -> list[int]:
    """Handles of the rules in an ``nft -j list …`` document whose comment starts with ``prefix``."""
    out = []
    for item in listing.get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict) and str(rule.get("comment", "")).startswith(prefix):
            out.append(int(rule["handle"]))
    return out


def spoof_setup_script(host_ifname: str, mac: str, ref: str) -> tuple[str, str]:
    """Two nft transactions (declare, then fill): a flush only succeeds on an existing chain."""
    iface_chain, mac_chain = spoof_chains(ref)
    t = f"bridge {SPOOF_TABLE}"
    c = _nft_str(spoof_comment(ref))
    declare = "\n".join([
        f"add table {t}",
        f"add chain {t} {SPOOF_BASE_CHAIN} {{ type filter hook prerouting priority {SPOOF_PRIORITY} ; policy accept ; }}",
        f"add chain {t} {iface_chain}",
        f"add chain {t} {mac_chain}",
    ]) + "\n"
    rules = "\n".join([
        f"flush chain {t} {iface_chain}",
        f"flush chain {t} {mac_chain}",
        f"add rule {t} {SPOOF_BASE_CHAIN} iifname {_nft_str(host_ifname)} jump {iface_chain} comment {c}",
        f"add rule {t} {iface_chain} jump {mac_chain} comment {c}",
        f"add rule {t} {mac_chain} ether saddr {mac} return comment {c}",
        f"add rule {t} {mac_chain} drop comment {c}",
    ]) + "\n"
    return declare, rules


# ---- I/O -------------------------------------------------------------------------------------


def run_tool(
    argv: Sequence[str],
    stdin: str | None = None,
    *,
    who: str = "",
    missing: type[CNIError] = KernelError,
    hint: str = "install iptables/nftables, or set ipMasqBackend to the one present",
    timeout: float = _TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a netfilter tool; its exit status is the caller's to judge (an absent table is not always an error).

    ``who`` starts every message (portmap: "portmap: "). A missing binary is ``missing`` with
    ``hint``; a tool that hangs (xtables lock, a wedged nft) is KernelError after ``timeout``
    instead of blocking the runtime for ever.
    """
    try:
        return run_captured(list(argv), stdin, timeout)
    except FileNotFoundError:
        raise missing(f"{who}{argv[0]} is not installed", hint) from None
    except subprocess.TimeoutExpired:
        raise KernelError(f"{who}{argv[0]} did not finish within {timeout:.0f}s") from None


class _Popen(subprocess.Popen[str]):
    """``Popen`` whose wait with a timeout blocks on a pidfd instead of polling.

    ``communicate(timeout=)`` ends with ``wait(timeout=)``, which CPython implements as WNOHANG
    polls with sleeps of 1, 2, 4… ms. The tool closes its pipes a moment before it becomes a
    zombie, so the first poll nearly always misses and the caller sleeps ≥ 1 ms per exec (more
    in a busy daemon: the sleeper then waits for the GIL too) — measured in the daemon's pod ADD
    (cProfile: 8 sleeps in 9 iptables-restore runs). A pidfd becomes readable when the process
    exits: one poll(2) with the same timeout, then the blocking reap. Without pidfds (Linux <
    5.3, or an interpreter without ``os.pidfd_open``) CPython's loop runs as before.
    """

    def _wait(self, timeout: float | None) -> int:
        if timeout is not None and self.returncode is None:
            try:
                fd = os.pidfd_open(self.pid)
            except (AttributeError, OSError):
                return int(super()._wait(timeout))  # type: ignore[misc]  # CPython private, not in typeshed
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if not poller.poll(max(0, math.ceil(timeout * 1000))):
                    raise subprocess.TimeoutExpired(self.args, timeout)
            finally:
                os.close(fd)
            timeout = None  # exited: the reap below does not block
        return int(super()._wait(timeout))  # type: ignore[misc]  # CPython private, not in typeshed


def run_captured(argv: list[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)``, with
    ``_Popen``'s wait: same pipes, same kill-and-reap on timeout or any other exception."""
    with _Popen(argv, stdin=subprocess.PIPE if stdin is not None else None, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except BaseException:  # the timeout included: killed, then reaped by the with block
            proc.kill()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode if proc.returncode is not None else -1, out, err)


def _checked(proc: subprocess.CompletedProcess[str], doing: str) -> str:
    if proc.returncode != 0:
        raise KernelError(doing, (proc.stderr or proc.stdout).strip()[-2000:])
    return proc.stdout


def _ipt(version: int, tool: str) -> str:
    return ("ip6" if version == 6 else "ip") + tool[2:]  # iptables-save → ip6tables-save


def _iptables_save(version: int) -> str:
    return _checked(run_tool([_ipt(version, "iptables-save"), "-t", "nat"]), f"failed to read {_ipt(version, 'iptables')} nat table")


def _iptables_restore(version: int, script: str, doing: str) -> None:
    _checked(run_tool([_ipt(version, "iptables-restore"), "--noflush", "-w", "5"], script), doing)


def _iptables_try_restore(version: int, script: str) -> bool:
    """Apply a batch that asserts its own assumptions; False (nothing applied) when one did not hold."""
    return run_tool([_ipt(version, "iptables-restore"), "--noflush", "-w", "5"], script).returncode == 0


def default_backend() -> str:
    """The reference's default: iptables unless only nftables is usable."""
    if shutil.which("iptables") is None and shutil.which("nft") is not None:
        return "nftables"
    return "iptables"


def setup(backend: str | None, addrs: Sequence[IPInterface], network: str, ifname: str, container_id: str) -> None:
    """Masquerade traffic from ``addrs`` leaving their subnets (reference SetupIPMasqForNetworks)."""
    if not addrs:
        return
    backend = backend or default_backend()
    if backend == "nftables":
        listing = _nft_list_chain("inet", NFT_TABLE, NFT_CHAIN)
        stale = nft_rules_with_comment(listing, nft_instance_hash(network, ifname, container_id))
        script = nft_setup_script(addrs, nft_comment(network, ifname, container_id), stale)
        _checked(run_tool(["nft", "-f", "-"], script), f"failed to add nftables masquerade rules for {network}")
        return
    chain = chain_name(network, container_id)
    comment = iptables_comment(network, container_id)
    for version in (4, 6):
        fam = [a for a in addrs if a.version == version]
        if not fam:
            continue
        if _iptables_try_restore(version, iptables_fast_setup_script(fam, chain, comment)):
            continue  # the usual ADD: one exec, no iptables-save
        restore = iptables_setup_script(_iptables_save(version), fam, chain, comment)
        if restore:
            _iptables_restore(version, restore, f"failed to add {_ipt(version, 'iptables')} masquerade chain {chain}")


def teardown(network: str, ifname: str, container_id: str, addrs: Sequence[IPInterface] | None = None) -> None:
    """Remove this attachment's masquerade rules from both backends (the pod may predate a backend switch).

    ``addrs`` (the attachment's addresses, from prevResult: ``prev_addrs``) lets a family cost one
    ``iptables-restore`` and no ``iptables-save``, and a family without addresses none (ADD made
    no rule there — the reference tears down by the addresses too); without them both tables are read.
    """
    errors: list[CNIError] = []
    chain = chain_name(network, container_id)
    comment = iptables_comment(network, container_id)
    for version in (4, 6):
        tool = _ipt(version, "iptables")
        if shutil.which(tool) is None:
            continue
        fam = [a for a in addrs or () if a.version == version]
        if addrs is not None and not fam:
            continue
        try:
            if fam and _iptables_try_restore(version, iptables_fast_teardown_script(fam, chain, comment)):
                continue
            script = iptables_teardown_script(_iptables_save(version), chain)
            if script:
                _iptables_restore(version, script, f"failed to remove {tool} masquerade chain {chain}")
        except CNIError as exc:
            errors.append(exc)
    if shutil.which("nft") is not None:
        try:
            listing = _nft_list_chain("inet", NFT_TABLE, NFT_CHAIN)
            handles = nft_rules_with_comment(listing, nft_instance_hash(network, ifname, container_id))
            if handles:
                script = "".join(f"delete rule inet {NFT_TABLE} {NFT_CHAIN} handle {h}\n" for h in handles)
                _checked(run_tool(["nft", "-f", "-"], script), f"failed to remove nftables masquerade rules for {network}")
        except CNIError as exc:
            errors.append(exc)
    if errors:
        raise errors[0] if len(errors) == 1 else KernelError(errors[0].msg, "; ".join(str(e) for e in errors))


def prev_addrs(req: Request) -> list[IPInterface] | None:
    """The addresses an ADD masqueraded (every IP of its result), from DEL's prevResult; None when
    there is none or it cannot be read (teardown then reads the tables: DEL must not fail on it)."""
    from cni.plugin import prev_result

    try:
        prev = prev_result(req)
    except CNIError:
        return None
    return [ip.address for ip in prev.ips] if prev is not None and prev.ips else None


def gc(network: str, valid: Iterable[tuple[str, str]]) -> None:
    """Drop nftables masquerade rules of ``network`` whose attachment is not in ``valid`` ((cid, ifname) pairs).

    iptables chains carry no network marker, so they cannot be collected (same limit as the reference).
    """
    if shutil.which("nft") is None:
        return
    keep = {nft_comment(network, ifname, cid) for cid, ifname in valid}
    listing = _nft_list_chain("inet", NFT_TABLE, NFT_CHAIN)
    prefix = nft_network_hash(network) + "-"
    handles = [
        int(item["rule"]["handle"])
        for item in listing.get("nftables", [])
        if isinstance(item, dict) and isinstance(item.get("rule"), dict)
        and str(item["rule"].get("comment", "")).startswith(prefix)
        and item["rule"].get("comment") not in keep
    ]
    if handles:
        script = "".join(f"delete rule inet {NFT_TABLE} {NFT_CHAIN} handle {h}\n" for h in handles)
        _checked(run_tool(["nft", "-f", "-"], script), f"failed to collect nftables masquerade rules for {network}")


def _nft_list_chain(family: str, table: str, chain: str) -> dict[str, Any]:
    """``nft -j list chain``; an absent table or chain is an empty listing."""
    import json

    proc = run_tool(["nft", "-j", "list", "chain", family, table, chain])
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr or "does not exist" in proc.stderr:
            return {}
        raise KernelError(f"failed to list nftables chain {family} {table} {chain}", proc.stderr.strip())
    try:
        doc = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise KernelError("nft printed a listing that is not JSON", str(exc)) from None
    return doc if isinstance(doc, dict) else {}


def spoofcheck_setup(host_ifname: str, mac: str, container_id: str, ifname: str) -> None:
    """Drop frames entering the bridge from ``host_ifname`` whose source MAC is not ``mac``."""
    declare, rules = spoof_setup_script(host_ifname, mac, spoof_ref(container_id, ifname))
    _checked(run_tool(["nft", "-f", "-"], declare), "failed to setup spoof-check")
    _checked(run_tool(["nft", "-f", "-"], rules), "failed to setup spoof-check")


def spoofcheck_teardown(container_id: str, ifname: str) -> None:
    """Remove the spoof-check jump and chains of one attachment; absent ones are fine."""
    if shutil.which("nft") is None:
        return
    ref = spoof_ref(container_id, ifname)
    script = spoof_teardown_script(_nft_list_table("bridge", SPOOF_TABLE), ref)
    if script:
        _checked(run_tool(["nft", "-f", "-"], script), "failed to teardown spoof-check")


def spoof_teardown_script(listing: dict[str, Any], ref: str) -> str:
    """From one ``nft -j list table bridge nat``: delete the base chain's jump(s) of ``ref``, then
    flush and delete its two chains (flush first: a chain holding rules or jumps cannot be deleted).
    Empty when nothing of ``ref`` is there. PURE."""
    iface_chain, mac_chain = spoof_chains(ref)
    t = f"bridge {SPOOF_TABLE}"
    comment = spoof_comment(ref)
    items = [i for i in listing.get("nftables", []) if isinstance(i, dict)]
    lines = [f"delete rule {t} {SPOOF_BASE_CHAIN} handle {int(i['rule']['handle'])}" for i in items
             if isinstance(i.get("rule"), dict) and i["rule"].get("chain") == SPOOF_BASE_CHAIN
             and str(i["rule"].get("comment", "")).startswith(comment)]
    chains = {str(i["chain"].get("name")) for i in items if isinstance(i.get("chain"), dict)}
    present = [c for c in (iface_chain, mac_chain) if c in chains]
    lines += [f"flush chain {t} {c}" for c in present]
    lines += [f"delete chain {t} {c}" for c in present]
    return "\n".join(lines) + "\n" if lines else ""


def _nft_list_table(family: str, table: str) -> dict[str, Any]:
    """``nft -j list table``, chains and rules in one exec; an absent table is an empty listing."""
    import json

    proc = run_tool(["nft", "-j", "list", "table", family, table])
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr or "does not exist" in proc.stderr:
            return {}
        raise KernelError(f"failed to list nftables table {family} {table}", proc.stderr.strip())
    try:
        doc = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise KernelError("nft printed a listing that is not JSON", str(exc)) from None
    return doc if isinstance(doc, dict) else {}
