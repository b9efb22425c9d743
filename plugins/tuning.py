"""tuning: change sysctls and link attributes of an interface an earlier plugin made (chained).

Rules:
- Requires ``prevResult`` (error 7 without one) and passes it on; when ``mac`` changes, the
  MAC of the ``CNI_IFNAME`` interface(s) in the result is updated.
- ``sysctl``: keys use ``.`` or ``/`` as separator (with a ``/`` in the key, dots are kept so
  interface names such as ``eth0.100`` work); ``IFNAME`` is replaced by ``CNI_IFNAME``. A key
  must be relative, have no empty/``.``/``..`` component, start with ``net/``, and (checked in
  the pod namespace before anything is written) resolve to an existing file under
  ``/proc/sys/net/``. Anything else is error 7 and nothing is applied.
- Allowlist: when ``/etc/cni/tuning/allowlist.conf`` exists, every sysctl key (as written in
  the config) must match one of its regexes (unanchored search, like the reference's
  ``regexp.MatchString``), else error 102 (policy). The path can be moved with the environment
  variable ``MULTINIC_TUNING_ALLOWLIST`` (for tests and packaging) but deliberately not with a
  config key: a network config must not be able to choose the file that polices it.
- Precedence for ``mac`` (reference): config < CNI_ARGS ``MAC`` < runtimeConfig ``mac``
  (capability) < ``args.cni.mac``. ``args.cni`` also overrides ``sysctl`` (merged),
  ``promisc``, ``mtu``, ``allmulti``, ``txQLen``.
- ``dataDir`` (default ``/run/cni/tuning``): before changing anything, the original value of
  everything about to change (link attributes AND sysctls) is written to
  ``<dataDir>/<containerID>_<ifname>.json`` (0600). DEL restores all of it, sysctls included
  (the reference does not restore sysctls, plugins#493), then removes the file. A repeated
  ADD keeps the values recorded by the first one (the true originals).
- ADD undoes its own changes when a later step fails. DEL is best effort: a value that
  cannot be restored (the link is already gone) is logged, not an error.
- A missing netns is error 8 (InvalidNetns, via ``cni.netns``) on ADD and CHECK, as in every
  plugin; DEL then only removes the state file (the values went with the namespace).
- CHECK compares every configured value with the kernel (sysctl keys after the ``IFNAME``
  substitution, which the reference once forgot).
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cni import log, netns
from cni.netlink import in_netns, link_attrs, link_index, translated
from cni.plugin import Plugin
from cni.spec import args as cniargs
from cni.spec.errors import CheckFailed, CNIError, InvalidConfig, InvalidNetns, IOFailure, NotFound, PolicyDenied
from cni.spec.request import Request
from cni.spec.result import Result

from . import _delconf
from ._chained import prev_result, read_state, remove_state, state_path, write_state

if TYPE_CHECKING:
    from cni.netlink.rtnl import Rtnl

    from ._confs import TuningConf  # pydantic: imported by ``parse`` only, never on DEL

TYPE = "tuning"
DEFAULT_DATA_DIR = "/run/cni/tuning"  # the model's default too (plugins/_confs.py)
DEFAULT_ALLOWLIST = "/etc/cni/tuning/allowlist.conf"
ALLOWLIST_ENV = "MULTINIC_TUNING_ALLOWLIST"
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200
MIN_MTU = 68  # RFC 791: every IPv4 link must carry 68 octets; the kernel refuses less


@dataclass(frozen=True)
class Sysctl:
    key: str  # as written in the config (what the allowlist matches)
    rel: str  # path relative to /proc/sys, IFNAME substituted
    value: str


@dataclass(frozen=True)
class Conf:
    """The effective settings after all overrides; None = leave alone."""

    sysctls: tuple[Sysctl, ...] = ()
    mac: str | None = None
    mtu: int | None = None
    promisc: bool | None = None
    allmulti: bool | None = None
    txqlen: int | None = None
    data_dir: str = DEFAULT_DATA_DIR
    prev: Result | None = field(default=None, compare=False)

    def touches_link(self) -> bool:
        return any(v is not None for v in (self.mac, self.mtu, self.promisc, self.allmulti, self.txqlen))


# ---- pure -----------------------------------------------------------------------------------


def sysctl_path(key: str, ifname: str) -> str:
    """The /proc/sys-relative path of a sysctl key; error 7 when it could leave /proc/sys/net."""
    if not key or "\0" in key:
        raise InvalidConfig(f"tuning: invalid sysctl key {key!r}", "a sysctl key cannot be empty")
    rel = key if "/" in key else key.replace(".", "/")
    rel = rel.replace("IFNAME", ifname)
    if rel.startswith("/"):
        raise InvalidConfig(f"tuning: sysctl key {key!r} is an absolute path", "write it relative to /proc/sys, e.g. net.ipv4.conf.IFNAME.rp_filter")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidConfig(f"tuning: sysctl key {key!r} has an empty, '.' or '..' component", "path traversal is not allowed")
    if parts[0] != "net" or len(parts) < 2:
        raise InvalidConfig(f"tuning: sysctl key {key!r} is not a network sysctl", "only keys under /proc/sys/net/ may be set")
    return rel


normalise_mac = cniargs.normalise_mac


def resolve(net: TuningConf, cni_args: dict[str, str], ifname: str) -> Conf:
    """Apply the override order of the module rules and validate every value."""
    sysctl = dict(net.sysctl)
    mac, mac_where = net.mac, "mac"
    promisc, mtu, allmulti, txqlen = net.promisc, net.mtu or None, net.allmulti, net.tx_qlen
    cniargs.check_known(cni_args, frozenset({"MAC"}))
    if cni_args.get("MAC"):
        mac, mac_where = cni_args["MAC"], "CNI_ARGS MAC"
    if net.runtime_config is not None and net.runtime_config.mac:
        mac, mac_where = net.runtime_config.mac, "runtimeConfig.mac"
    a = net.args.cni if net.args is not None else None
    if a is not None:
        if a.sysctl is not None:
            sysctl.update(a.sysctl)
        if a.mac is not None:
            mac, mac_where = a.mac, "args.cni.mac"
        if a.promisc is not None:
            promisc = a.promisc
        if a.mtu is not None:
            mtu = a.mtu or None
        if a.allmulti is not None:
            allmulti = a.allmulti
        if a.tx_qlen is not None:
            txqlen = a.tx_qlen
    if mtu is not None and mtu < MIN_MTU:
        raise InvalidConfig(f"tuning: mtu {mtu} is below the minimum of {MIN_MTU}")
    sysctls = tuple(Sysctl(k, sysctl_path(k, ifname), v) for k, v in sysctl.items())
    return Conf(
        sysctls=sysctls,
        mac=normalise_mac(mac, mac_where) if mac else None,
        mtu=mtu,
        promisc=promisc,
        allmulti=allmulti,
        txqlen=txqlen,
        data_dir=net.data_dir,
    )


def parse_allowlist(text: str, path: str) -> list[re.Pattern[str]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            out.append(re.compile(line))
        except re.error as exc:
            raise InvalidConfig(f"tuning: line {n} of the sysctl allowlist {path} is not a valid regex", str(exc)) from None
    return out


def refused(keys: list[str], allow: list[re.Pattern[str]]) -> list[str]:
    """Keys that match no allowlist pattern."""
    return [k for k in keys if not any(p.search(k) for p in allow)]


def with_mac(result: Result, ifname: str, mac: str) -> Result:
    ifaces = tuple(replace(i, mac=mac) if i.name == ifname else i for i in result.interfaces)
    return result.with_(interfaces=ifaces)


def parse(req: Request) -> Conf:
    from cni.spec.model import validate

    from ._confs import TuningConf

    net = validate(TuningConf, req.config)
    prev = prev_result(req, TYPE, required=req.command in ("ADD", "CHECK"))
    # Only ADD and CHECK act on an attachment: DEL works from the saved state, and STATUS/GC
    # have no CNI_IFNAME to substitute into "IFNAME" sysctl keys (that is not a config error).
    conf = resolve(net, req.cni_args, req.ifname) if req.command in ("ADD", "CHECK") else Conf(data_dir=net.data_dir)
    return replace(conf, prev=prev)


# ---- I/O ------------------------------------------------------------------------------------


def _check_allowlist(conf: Conf) -> None:
    path = os.environ.get(ALLOWLIST_ENV) or DEFAULT_ALLOWLIST
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return  # no allowlist: every network sysctl is allowed (reference behaviour)
    except OSError as exc:
        raise IOFailure(f"tuning: cannot read the sysctl allowlist {path}", exc.strerror or str(exc)) from None
    bad = refused([s.key for s in conf.sysctls], parse_allowlist(text, path))
    if bad:
        raise PolicyDenied(
            f"tuning: sysctl(s) {', '.join(bad)} not allowed by {path}",
            "ask the node admin to add a matching regex to the allowlist",
        )


def _proc(rel: str) -> str:
    """The file of a sysctl, after checking it resolves to an existing file under /proc/sys/net/."""
    path = "/proc/sys/" + rel
    real = os.path.realpath(path)
    if not real.startswith("/proc/sys/net/"):
        raise InvalidConfig(f"tuning: sysctl {rel} resolves outside /proc/sys/net ({real})")
    if not os.path.isfile(real):
        raise InvalidConfig(
            f"tuning: unknown sysctl {rel.replace('/', '.')}",
            f"{path} does not exist in the pod's network namespace",
        )
    return real


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().rstrip("\n")


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _link_state(sock: Rtnl, idx: int) -> dict[str, Any]:
    a = link_attrs(sock, idx)
    return {
        "mac": str(a.get("address", "")).lower(),
        "mtu": int(a.get("mtu", 0)),
        "promisc": bool(a["flags"] & IFF_PROMISC),
        "allmulti": bool(a["flags"] & IFF_ALLMULTI),
        "txqlen": int(a.get("txqlen", 0)),
    }


def _set_link(sock: Rtnl, idx: int, ifname: str, what: str, value: Any) -> None:
    with translated(f"tuning: failed to set {what} of {ifname} to {value}"):
        if what == "mac":
            sock.link("set", index=idx, address=value)
        elif what == "mtu":
            sock.link("set", index=idx, mtu=value)
        elif what == "txqlen":
            sock.link("set", index=idx, txqlen=value)
        else:
            bit = IFF_PROMISC if what == "promisc" else IFF_ALLMULTI
            sock.link("set", index=idx, flags=bit if value else 0, change=bit)


_LINK_ORDER = ("mac", "promisc", "mtu", "allmulti", "txqlen")  # the reference's order


def _require_netns(req: Request) -> None:
    """Error 8 (InvalidNetns) when CNI_NETNS is empty, missing or cannot be opened (cni.netns.open_fd)."""
    os.close(netns.open_fd(req.netns))


def add(req: Request, conf: Conf) -> Result:
    prev = conf.prev
    assert prev is not None
    _check_allowlist(conf)
    # Before the state file is read: a missing netns is error 8 (libcni ErrInvalidNetNS), as in every plugin.
    _require_netns(req)
    path = state_path(conf.data_dir, req.container_id, req.ifname)
    earlier = read_state(path)
    with in_netns(req.netns) as sock, netns.entered(req.netns), ExitStack() as undo:
        # Validate everything before the first write: nothing is applied on bad input.
        files = [(s, _proc(s.rel)) for s in conf.sysctls]
        idx = link_index(sock, req.ifname)
        if idx is None and conf.touches_link():
            raise NotFound(f"tuning: interface {req.ifname} not found in {req.netns}")
        backup: dict[str, Any] = {"ifname": req.ifname, "sysctl": {}, "link": {}}
        for s, f in files:
            try:
                backup["sysctl"][s.rel] = _read(f)
            except OSError as exc:
                raise InvalidConfig(f"tuning: cannot read sysctl {s.rel}", exc.strerror or str(exc)) from None
        wanted = {k: getattr(conf, k) for k in _LINK_ORDER if getattr(conf, k) is not None}
        if idx is not None and wanted:
            cur = _link_state(sock, idx)
            backup["link"] = {k: cur[k] for k in wanted}
        if earlier is not None:  # a repeated ADD: the first backup holds the true originals
            backup["sysctl"] = {**backup["sysctl"], **dict(earlier.get("sysctl") or {})}
            backup["link"] = {**backup["link"], **dict(earlier.get("link") or {})}
        write_state(path, backup)
        if earlier is None:
            undo.callback(remove_state, path)
        for s, f in files:
            old = backup["sysctl"][s.rel]
            try:
                _write(f, s.value)
            except OSError as exc:
                raise InvalidConfig(f"tuning: cannot set sysctl {s.rel} to {s.value!r}", exc.strerror or str(exc)) from None
            undo.callback(_restore_sysctl, f, old)
        for k, v in wanted.items():
            assert idx is not None
            _set_link(sock, idx, req.ifname, k, v)
            undo.callback(_restore_link, sock, idx, req.ifname, k, backup["link"][k])
        undo.pop_all()
    return with_mac(prev, req.ifname, conf.mac) if conf.mac else prev


def _restore_sysctl(path: str, value: str) -> None:
    try:
        _write(path, value)
    except OSError as exc:
        log.warning(f"tuning: cannot restore {path} to {value!r}: {exc}")


def _restore_link(sock: Rtnl, idx: int, ifname: str, what: str, value: Any) -> None:
    try:
        _set_link(sock, idx, ifname, what, value)
    except CNIError as exc:
        log.warning(str(exc))


# JSON field → Go nilable, of the keys DEL reads (_delconf).
_DEL_FIELDS = {"dataDir": False}


def read_for_delete(req: Request) -> Conf:
    """What DEL acts on (the state's ``dataDir``), read without the pydantic model; ``_delconf.Malformed``."""
    return Conf(data_dir=_delconf.get_data_dir(_delconf.fields(req.config, _DEL_FIELDS), DEFAULT_DATA_DIR))


def delete_only(req: Request) -> None:
    """DEL without ``parse``: it needs only ``dataDir`` (the backup lives there)."""
    delete(req, _delconf.read_or_parse(req, read_for_delete, parse))


def delete(req: Request, conf: Conf) -> None:
    path = state_path(conf.data_dir, req.container_id, req.ifname)
    backup = read_state(path)
    if backup is None:
        return
    if netns.exists(req.netns):
        try:
            _restore_all(req, backup)
        except CNIError as exc:
            if not isinstance(exc, InvalidNetns):  # the namespace vanished: nothing left to restore
                raise
    remove_state(path)


def _restore_all(req: Request, backup: dict[str, Any]) -> None:
    with in_netns(req.netns) as sock, netns.entered(req.netns):
        for rel, old in dict(backup.get("sysctl") or {}).items():
            try:
                rel_ok = sysctl_path(str(rel), req.ifname)  # never trust a path from disk blindly
            except InvalidConfig:
                continue
            f = "/proc/sys/" + rel_ok
            if os.path.isfile(f) and os.path.realpath(f).startswith("/proc/sys/net/"):
                _restore_sysctl(f, str(old))
        idx = link_index(sock, req.ifname)
        if idx is None:
            return  # the interface is gone, and its attributes with it
        link = dict(backup.get("link") or {})
        for k in _LINK_ORDER:
            if k in link:
                _restore_link(sock, idx, req.ifname, k, link[k])


def check(req: Request, conf: Conf) -> None:
    _require_netns(req)
    with in_netns(req.netns) as sock, netns.entered(req.netns):
        for s in conf.sysctls:
            f = _proc(s.rel)
            cur = _read(f)
            if cur.split() != s.value.split():
                raise CheckFailed(f"tuning: sysctl {s.rel} is {cur!r}, configured {s.value!r}")
        idx = link_index(sock, req.ifname)
        if idx is None:
            raise CheckFailed(f"tuning: interface {req.ifname} not found in {req.netns}")
        cur_link = _link_state(sock, idx)
        for k in _LINK_ORDER:
            want = getattr(conf, k)
            if want is not None and cur_link[k] != want:
                raise CheckFailed(f"tuning: {k} of {req.ifname} is {cur_link[k]}, configured {want}")


PLUGIN = Plugin(TYPE, parse, add, delete, check, capabilities=frozenset({"mac"}), delete_only=delete_only)
