"""portmap: forward host ports to a pod's ports (chained; host network namespace).

Rules:
- Capability ``portMappings``: ``[{hostPort, containerPort, protocol, hostIP}]``; ports are
  1-65535 and protocol tcp/udp/sctp (error 7 naming the entry otherwise, nothing applied).
  ``hostIP`` limits a mapping to one host address (and to its family); unset or unspecified
  means every local address.
- Requires ``prevResult`` on ADD and CHECK (error 7). The pod addresses are the first IPv4 and
  the first IPv6 of ``CNI_IFNAME`` in a sandbox (reference rule).
- ``snat`` (default true) masquerades hairpin and IPv4 localhost traffic; ``masqAll``
  masquerades all forwarded traffic; ``markMasqBit`` (0-31, default 13) or
  ``externalSetMarkChain`` (not both); ``conditionsV4/V6`` are extra match arguments for the
  DNAT entry rules (iptables arguments, or nft expressions with the nftables backend).
- ``backend``: ``iptables`` or ``nftables``; unset = iptables when ``iptables-restore`` is
  installed, else nftables. Every ADD/DEL is one atomic batch per family for iptables
  (``iptables-restore --noflush -w``), one for all families for nftables (``nft -f -``),
  computed by the pure ``plugins/_portmap_rules.py``. iptables: the usual ADD (shared chains in
  place, new attachment) and DEL (state file present) do not read the table: their batch asserts
  its assumptions and, when one fails (nothing applied), one ``iptables-save`` and a computed
  batch follow. nftables: from one ``nft list`` (rules are found by handle).
  Concurrent invocations are serialised by a lock file in ``dataDir`` (the read-compute-apply
  of the shared chains must not interleave).
- IPv4 localhost host ports: with snat, ``route_localnet=1`` is set on the host interface that
  routes to the pod (as the reference does). The state file records the interface and the
  value it had before any attachment turned it on; DEL puts that value back once no other
  attachment's state file (same ``dataDir``) names the interface, so pods behind one bridge
  keep it while any of them exists, and no 127/8 routing is left enabled after the last one
  (the reference never resets it; the conformance harness's leak check found that).
- UDP conntrack entries for the mapped host ports are flushed after ADD (``conntrack -D``) when the
  kernel tracks such a flow (read from ``/proc/net/nf_conntrack``; blindly when unreadable),
  best effort, so a stale flow does not keep black-holing a restarted pod's port.
- ``dataDir`` (default ``/var/lib/cni/portmap``) keeps a 0600 state file per attachment with
  the backend, families and mappings applied; DEL uses it and does not need ``portMappings``
  resent. Without a state file, DEL still finds this attachment's rules: the iptables chain
  name and the nft rule comments are derived from (network name, container ID).
- DEL removes only this attachment's chain/rules; the shared chains stay (reference too).
- CHECK verifies only the families the pod has addresses in (reference bug plugins#819).
"""

from __future__ import annotations

import errno
import glob
import ipaddress
import os
import re
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cni import log
from cni.plugin import Plugin
from cni.spec.errors import CheckFailed, CNIError, InvalidConfig, KernelError, PluginNotAvailable
from cni.spec.request import Request
from cni.spec.result import IPInterface, Result

from . import _delconf
from . import _portmap_rules as R
from ._chained import ips_of, locked, prev_result, read_state, remove_state, state_path, write_state
from ._masq import run_tool

if TYPE_CHECKING:
    from ._confs import PortMapConf  # pydantic: imported by ``parse`` only, never on DEL

TYPE = "portmap"
DEFAULT_DATA_DIR = "/var/lib/cni/portmap"  # the model's default too (plugins/_confs.py)
BACKENDS = ("iptables", "nftables")
TIMEOUT = 30.0


@dataclass(frozen=True)
class Conf:
    """What ``parse`` hands to the commands."""

    net: PortMapConf
    settings: R.Settings
    mappings: tuple[R.PortMapping, ...]
    prev: Result | None
    backend: str  # resolved


# ---- pure -----------------------------------------------------------------------------------


def resolve_backend(configured: str | None, have_iptables: bool) -> str:
    if configured:
        return configured
    return "iptables" if have_iptables else "nftables"


def _settings(snat: bool, masq_all: bool, mark_bit: int | None, ext_chain: str | None,
              conds_v4: list[str] | tuple[str, ...], conds_v6: list[str] | tuple[str, ...], backend: str) -> R.Settings:
    """The rule settings of a config's values (one place for ``parse`` and ``read_for_delete``)."""
    if mark_bit is not None and ext_chain is not None:
        raise InvalidConfig("portmap: markMasqBit and externalSetMarkChain cannot both be set",
                            "externalSetMarkChain replaces the mark chain markMasqBit configures")
    return R.Settings(
        snat=snat,
        masq_all=masq_all,
        mark_bit=13 if mark_bit is None else mark_bit,
        external_setmark=R.check_chain_name(ext_chain, "externalSetMarkChain") if ext_chain else None,
        conditions_v4=R.check_conditions(conds_v4, "conditionsV4", backend),
        conditions_v6=R.check_conditions(conds_v6, "conditionsV6", backend),
    )


def parse(req: Request) -> Conf:
    from cni.spec.model import validate

    from ._confs import PortMapConf

    net = validate(PortMapConf, req.config)
    backend = resolve_backend(net.backend, shutil.which("iptables-restore") is not None)
    settings = _settings(net.snat, net.masq_all, net.mark_masq_bit, net.external_set_mark_chain,
                         net.conditions_v4, net.conditions_v6, backend)
    mappings = tuple(
        R.PortMapping(e.host_port, e.container_port, e.protocol, ipaddress.ip_address(e.host_ip) if e.host_ip else None)
        for e in net.runtime_config.port_mappings
    )
    prev = prev_result(req, TYPE, required=req.command in ("ADD", "CHECK"))
    return Conf(net, settings, mappings, prev, backend)


def pod_ips(prev: Result, ifname: str) -> list[IPInterface]:
    """First IPv4 and first IPv6 of the pod's interface (reference parseConfig)."""
    out: dict[int, IPInterface] = {}
    for ip in ips_of(prev, ifname, sandbox_only=True):
        out.setdefault(ip.version, ip.address)
    return [out[v] for v in (4, 6) if v in out]


# ---- I/O ------------------------------------------------------------------------------------


def _run(argv: list[str], data: str | None = None) -> str:
    proc = run_tool(argv, data, who="portmap: ", missing=PluginNotAvailable, hint="install iptables or nftables, or set 'backend'",
                    timeout=TIMEOUT)
    if proc.returncode != 0:
        raise KernelError(f"portmap: {' '.join(argv)} failed", (proc.stderr.strip() + ("\nbatch:\n" + data if data else ""))[-3000:])
    return proc.stdout


def _save(family: int) -> R.NatTable:
    return R.parse_iptables_save(_run(["iptables-save" if family == 4 else "ip6tables-save", "-t", "nat"]))


def _restore(family: int, batch: str) -> None:
    _run(["iptables-restore" if family == 4 else "ip6tables-restore", "--noflush", "-w", "10"], batch)


def _try_restore(family: int, batch: str) -> bool:
    """Apply a batch that asserts its own assumptions (``R.ipt_fast_*``); False when one did not
    hold, in which case nothing was applied (the batch is one transaction)."""
    argv = ["iptables-restore" if family == 4 else "ip6tables-restore", "--noflush", "-w", "10"]
    proc = run_tool(argv, batch, who="portmap: ", missing=PluginNotAvailable, hint="install iptables or nftables, or set 'backend'",
                    timeout=TIMEOUT)
    return proc.returncode == 0


def _ipt_add(name: str, cid: str, pod: IPInterface, mappings: list[R.PortMapping], s: R.Settings) -> None:
    """One ``iptables-restore`` when the shared chains are in place and the attachment is new (the
    usual ADD); otherwise read the table and apply what it lacks."""
    if not _try_restore(pod.version, R.ipt_fast_add_batch(name, cid, pod, mappings, s)):
        _restore(pod.version, R.ipt_add_batch(name, cid, pod, mappings, s, _save(pod.version)))


def _state_mappings(state: dict[str, Any]) -> list[R.PortMapping] | None:
    """The mappings an ADD recorded; None when the record is not usable (then DEL reads the table)."""
    try:
        return [R.PortMapping(int(m["hostPort"]), int(m["containerPort"]), str(m["protocol"]),
                              ipaddress.ip_address(m["hostIP"]) if m.get("hostIP") else None)
                for m in state["portMappings"]]
    except (KeyError, TypeError, ValueError, AttributeError, CNIError):
        return None


def _nft_list(families: list[int]) -> list[R.NftRule]:
    out: list[R.NftRule] = []
    for fam in families:
        ipx = R.nft_family(fam)
        proc = run_tool(["nft", "-a", "list", "table", ipx, R.NFT_TABLE], who="portmap: ", missing=PluginNotAvailable,
                        hint="install nftables or use backend iptables", timeout=TIMEOUT)
        if proc.returncode != 0:
            if "No such file or directory" in proc.stderr:
                continue  # no table yet: nothing of ours in it
            raise KernelError(f"portmap: nft list table {ipx} {R.NFT_TABLE} failed", proc.stderr.strip())
        out += R.parse_nft_table(ipx, proc.stdout)
    return out


def _ipt_remove(network: str, cid: str, families: list[int], *, known: bool = True,
                mappings: list[R.PortMapping] | None = None, settings: R.Settings | None = None) -> None:
    """Remove the attachment's chain in each family. ``known=False`` (no state file: we are
    guessing the families) tolerates a family whose iptables cannot even list its nat table.
    With the ADD's ``mappings`` (its state file) a family costs one ``iptables-restore`` and no
    ``iptables-save``, unless something is already gone (then the table is read)."""
    for fam in families:
        try:
            if (mappings is not None and settings is not None and R.for_family(mappings, fam)
                    and _try_restore(fam, R.ipt_fast_del_batch(network, cid, fam, mappings, settings))):
                continue
            batch = R.ipt_del_batch(network, cid, _save(fam))
        except PluginNotAvailable:
            continue
        except KernelError as exc:
            if known:
                raise
            log.warning(f"portmap: skipping IPv{fam} cleanup: {exc}")
            continue
        if batch:
            _restore(fam, batch)


def _nft_remove(network: str, cid: str, families: list[int]) -> None:
    if shutil.which("nft") is None:
        return
    batch = R.nft_del_batch(network, cid, _nft_list(families))
    if batch:
        _run(["nft", "-f", "-"], batch)


_IFNAME_OK = re.compile(r"[^/\0\s]{1,15}")
LOCALNET_KEY = "routeLocalnet"


def _localnet_sysctl(dev: str) -> str:
    return f"net/ipv4/conf/{dev}/route_localnet"


def _localnet_holders(data_dir: str, dev: str, *, exclude: str = "") -> list[dict[str, Any]]:
    """``routeLocalnet`` records of the other attachments' state files that name ``dev``."""
    out = []
    for path in sorted(glob.glob(os.path.join(glob.escape(data_dir), "*.json"))):
        if path == exclude:
            continue
        rec = (read_state(path) or {}).get(LOCALNET_KEY)
        if isinstance(rec, dict) and rec.get("dev") == dev:
            out.append(rec)
    return out


def _route_localnet(pod: IPInterface, data_dir: str, own: str) -> dict[str, str] | None:
    """Let 127/8-sourced (localhost host port) packets cross to the pod: route_localnet on the
    host interface that routes to it. Returns the record for the state file: the interface and
    the value before any attachment turned it on (inherited from another holder when it is
    already 1 because of one)."""
    from cni.netlink import read_sysctl, write_sysctl

    try:
        name = _route_dev(pod.ip)
    except CNIError as exc:
        log.warning(f"portmap: cannot find the host interface towards {pod.ip}: {exc}")  # advisory, as in the reference
        return None
    if not _IFNAME_OK.fullmatch(name) or name in (".", ".."):
        log.warning(f"portmap: unexpected interface name {name!r} towards {pod.ip}")
        return None
    try:
        current = read_sysctl(_localnet_sysctl(name))
        if current != "1":
            write_sysctl(_localnet_sysctl(name), "1")
    except OSError as exc:
        raise KernelError(f"portmap: cannot enable route_localnet on {name}", str(exc)) from None
    was = current
    if current == "1":
        earlier = [str(h.get("was")) for h in _localnet_holders(data_dir, name, exclude=own)]
        was = "0" if "0" in earlier else "1"
    return {"dev": name, "was": was, "changed": "1" if current != "1" else "0"}


def _route_dev(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The interface the host routes ``ip`` through: one RTM_GETROUTE over netlink (the reference's
    netlink.RouteGet) and the name of its RTA_OIF (``Rtnl.link_name``), instead of an ``ip route get`` exec. In a pod ADD
    the socket layer is already loaded by the plugin before portmap (bridge, ptp) or by the daemon."""
    from cni.netlink import ipr, translated

    with translated(f"portmap: route get {ip}"):
        sock = ipr()
        try:
            routes = sock.route("get", dst=str(ip))
            oif = routes[0].get_attr("RTA_OIF") if routes else None
            if not oif:
                raise KernelError(f"portmap: no route towards {ip} names an interface")
            name = sock.link_name(oif)
            if name is None:
                raise KernelError(f"portmap: the interface towards {ip} (index {oif}) vanished")
            return name
        finally:
            sock.close()


def _release_localnet(data_dir: str, rec: Any, own: str) -> None:
    """Put route_localnet back when this was the last attachment relying on it (best effort:
    the interface may be gone with the pod)."""
    from cni.netlink import write_sysctl

    if not isinstance(rec, dict):
        return
    dev, was = str(rec.get("dev", "")), str(rec.get("was", ""))
    if was != "0" or not _IFNAME_OK.fullmatch(dev) or dev in (".", ".."):
        return  # it was on before us (the admin's setting), or the record is not ours to trust
    if _localnet_holders(data_dir, dev, exclude=own):
        return  # another pod behind the same interface still needs it
    try:
        write_sysctl(_localnet_sysctl(dev), "0")
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning(f"portmap: cannot reset route_localnet on {dev}: {exc}")


def _udp_flows_present() -> set[tuple[int, int]] | None:
    """(family, original destination port) of the UDP flows the kernel tracks in this thread's
    namespace; None when it cannot tell (no procfs view of the table), so the caller flushes blindly."""
    try:
        with open("/proc/thread-self/net/nf_conntrack", encoding="ascii", errors="replace") as f:
            return R.conntrack_udp_flows(f.read())
    except FileNotFoundError:
        # No conntrack module in this namespace's kernel: nothing is tracked, nothing to flush.
        return set() if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_count") else None
    except OSError:
        return None


def _flush_udp_conntrack(mappings: tuple[R.PortMapping, ...], families: list[int]) -> None:
    """Delete the tracked UDP flows to the mapped host ports. One ``conntrack -D`` per host port
    and family that has such a flow right now — usually none, so usually no exec at all."""
    wanted = [(fam, m.host_port) for m in mappings if m.protocol == "udp" for fam in families if m.applies_to(fam)]
    if not wanted:
        return
    present = _udp_flows_present()
    if present is not None:
        wanted = [w for w in wanted if w in present]
    if not wanted or shutil.which("conntrack") is None:
        return
    for fam, port in dict.fromkeys(wanted):
        # Best effort (the reference ignores its result too). Exit status 1 with "0 flow entries" is the
        # normal nothing-to-do case; a conntrack that hangs must not turn a made ADD into a 999.
        try:
            subprocess.run(["conntrack", "-D", "-f", "ipv4" if fam == 4 else "ipv6", "-p", "udp",
                            "--orig-port-dst", str(port)], capture_output=True, timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning(f"portmap: flushing UDP conntrack entries of host port {port} failed: {exc}")


def _state_file(data_dir: str, req: Request) -> str:
    return state_path(data_dir, req.network_name or "cni", req.container_id, req.ifname)


# ---- commands ---------------------------------------------------------------------------------


def add(req: Request, conf: Conf) -> Result:
    prev = conf.prev
    assert prev is not None
    pods = pod_ips(prev, req.ifname)
    if not conf.mappings or not pods:
        return prev
    name, cid = req.network_name, req.container_id
    applied = [pod for pod in pods if R.for_family(conf.mappings, pod.version)]
    families: list[int] = [pod.version for pod in applied]
    path = _state_file(conf.net.data_dir, req)
    with locked(conf.net.data_dir), ExitStack() as undo:
        if conf.backend == "iptables":
            for pod in applied:
                _ipt_add(name, cid, pod, R.for_family(conf.mappings, pod.version), conf.settings)
                undo.callback(_quietly, _ipt_remove, name, cid, [pod.version])
        else:
            # Rules of this attachment can only exist when its state file does (a repeated ADD, or one
            # killed after applying: the state is written before the batch), so only then is the table
            # listed to replace them — the usual ADD is one `nft -f`.
            old = read_state(path)
            existing = _nft_list(families) if old is not None else []
            carried = {LOCALNET_KEY: old[LOCALNET_KEY]} if old is not None and LOCALNET_KEY in old else {}
            write_state(path, {**_state_doc(conf, name, cid, families), **carried})
            undo.callback(remove_state, path)
            batch = R.nft_add_batch(name, cid, applied, list(conf.mappings), conf.settings, existing)
            if batch:
                _run(["nft", "-f", "-"], batch)
                undo.callback(_quietly, _nft_remove, name, cid, families)
        localnet = None
        if conf.settings.snat:
            for pod in applied:
                if pod.version == 4:
                    localnet = _route_localnet(pod, conf.net.data_dir, path)
                    if localnet is not None and localnet["changed"] == "1":
                        undo.callback(_release_localnet, conf.net.data_dir, localnet, path)
        write_state(path, {**_state_doc(conf, name, cid, families),
                           **({LOCALNET_KEY: {"dev": localnet["dev"], "was": localnet["was"]}} if localnet is not None else {})})
        undo.pop_all()
    _flush_udp_conntrack(conf.mappings, families)
    return prev


def _state_doc(conf: Conf, name: str, cid: str, families: list[int]) -> dict[str, Any]:
    return {
        "backend": conf.backend,
        "network": name,
        "containerID": cid,
        "families": families,
        "portMappings": [
            {"hostPort": m.host_port, "containerPort": m.container_port, "protocol": m.protocol,
             **({"hostIP": str(m.host_ip)} if m.host_ip is not None else {})}
            for m in conf.mappings
        ],
    }


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - undo must not replace the error on its way out
        log.warning(f"portmap: undo failed: {exc}")


@dataclass(frozen=True)
class DelConf:
    """What DEL acts on: where the state is, the backend when the state does not say, the rule settings."""

    data_dir: str
    backend: str
    settings: R.Settings


# JSON field → Go nilable, of the keys DEL reads (_delconf), as PortMapConf declares them.
_DEL_FIELDS = {"snat": False, "masqAll": False, "markMasqBit": True, "externalSetMarkChain": True,
               "conditionsV4": True, "conditionsV6": True, "backend": True, "dataDir": False}


def read_for_delete(req: Request) -> DelConf:
    """``DelConf`` read without the pydantic model; ``_delconf.Malformed`` when a key is bad."""
    doc = _delconf.fields(req.config, _DEL_FIELDS)
    backend = resolve_backend(_delconf.get_str(doc, "backend", None, BACKENDS), shutil.which("iptables-restore") is not None)
    try:
        settings = _settings(_delconf.get_bool(doc, "snat", True), _delconf.get_bool(doc, "masqAll", False),
                             _delconf.get_int(doc, "markMasqBit", None, 0, 31), _delconf.get_str(doc, "externalSetMarkChain", None),
                             _delconf.get_strs(doc, "conditionsV4"), _delconf.get_strs(doc, "conditionsV6"), backend)
    except InvalidConfig as exc:
        raise _delconf.Malformed(str(exc)) from None
    return DelConf(_delconf.get_data_dir(doc, DEFAULT_DATA_DIR), backend, settings)


def del_conf(conf: Conf) -> DelConf:
    """The same values taken from the full parse."""
    return DelConf(conf.net.data_dir, conf.backend, conf.settings)


def delete_only(req: Request) -> None:
    """DEL without ``parse``: it needs the backend, the rule settings and ``dataDir``, not the mappings."""
    _delete(req, _delconf.read_or_parse(req, read_for_delete, lambda r: del_conf(parse(r))))


def delete(req: Request, conf: Conf) -> None:
    _delete(req, del_conf(conf))


def _delete(req: Request, conf: DelConf) -> None:
    path = _state_file(conf.data_dir, req)
    state = read_state(path)
    name, cid = req.network_name, req.container_id
    mappings = None
    if state is not None:
        backend = state.get("backend") if state.get("backend") in ("iptables", "nftables") else conf.backend
        fams = [f for f in state.get("families", []) if f in (4, 6)] or [4, 6]
        mappings = _state_mappings(state)
    else:
        backend, fams = conf.backend, [4, 6]
    with locked(conf.data_dir, create=False):
        if backend == "iptables":
            _ipt_remove(name, cid, fams, known=state is not None, mappings=mappings, settings=conf.settings)
        else:
            _nft_remove(name, cid, fams)
        remove_state(path)
        if state is not None:
            _release_localnet(conf.data_dir, state.get(LOCALNET_KEY), path)


def check(req: Request, conf: Conf) -> None:
    prev = conf.prev
    assert prev is not None
    if not conf.mappings:
        return
    problems: list[str] = []
    # Only the families the pod has (plugins#819: the reference checks IPv6 on IPv4-only pods).
    pods = [pod for pod in pod_ips(prev, req.ifname) if R.for_family(conf.mappings, pod.version)]
    if conf.backend == "iptables":
        for pod in pods:
            problems += R.ipt_problems(req.network_name, req.container_id, pod, R.for_family(conf.mappings, pod.version), conf.settings, _save(pod.version))
    else:
        existing = _nft_list([pod.version for pod in pods])
        for pod in pods:
            problems += R.nft_problems(req.network_name, req.container_id, pod, list(conf.mappings), conf.settings, existing)
    if problems:
        raise CheckFailed(f"portmap: host port rules of {req.container_id}/{req.ifname} are not in place", "; ".join(problems))


def status(req: Request, conf: Conf) -> None:
    tool = "iptables-restore" if conf.backend == "iptables" else "nft"
    if shutil.which(tool) is None:
        raise PluginNotAvailable(f"portmap: {tool} is not installed")


PLUGIN = Plugin(TYPE, parse, add, delete, check, status=status, capabilities=frozenset({"portMappings"}),
                delete_only=delete_only)

