"""A small synchronous rtnetlink socket over pyroute2's message layer (the start-up budget, rule 10).

``pyroute2.IPRoute`` costs ≈ 150–200 ms to import on this project's machines (the package's
``__init__`` pulls asyncio, NDB, IPDB, conntrack, …) and starts an asyncio event loop per socket.
A CNI exec needs none of that: it sends a handful of RTM_* requests and reads their answers.
``Rtnl`` keeps pyroute2 as the netlink library — every message is built by pyroute2's request
filters (``pyroute2.requests.*``, the same ones ``IPRoute`` runs) and encoded/decoded by its
message classes (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``, ``fibmsg``) and its ``Marshal`` — and
owns only the socket: send, then read until the kernel's ACK/DONE for that sequence number.

Rules:
- The method names and keyword arguments are ``IPRoute``'s (``link``, ``addr``, ``route``,
  ``rule``, ``brport``, ``vlan_filter``, ``get_links``, ``get_addr``, ``get_routes``,
  ``get_rules``, ``get_vlans``, ``link_lookup``), so callers read as pyroute2 documentation;
  answers are lists of pyroute2 messages. Kernel errors are pyroute2's ``NetlinkError``.
- The socket joins no multicast group (``IPRoute`` joins the default ones and then has to
  skip events); it is bound to the namespace of the thread that creates it.
- Link get/dump requests carry ``RTEXT_FILTER_SKIP_STATS`` (IFLA_EXT_MASK): nobody here reads
  counters, so the kernel may leave out the ones it can (per-VF statistics).
- ``send`` + ``collect`` let a caller put several requests on the wire before one receive
  loop (``get_links(*indices)`` does). rtnetlink does a request's work inside ``sendmsg``, so this
  saves reads and Python round trips, not kernel time; requests that depend on each other's
  success (address, then link up, then routes) stay one at a time so the first error stops them.
- ``link_lookup(ifname=)`` and ``link_name`` answer by the interface ioctls (SIOCGIFINDEX,
  SIOCGIFNAME: what if_nametoindex(3)/if_indextoname(3) do) issued on this socket, so they act in
  the socket's namespace like its requests. No netlink message is involved (nothing bypasses
  pyroute2's codec); they cost ≈ 2 µs where an RTM_GETLINK costs ≈ 0.35 ms, nearly all of it
  pyroute2 decoding a ~40-attribute link message for one integer.
- One socket per step rather than one per pod: opening one costs ≈ 30–50 µs (no event loop, no
  multicast groups), less than threading a shared socket through the plugins' steps would save.

Importing pyroute2's submodules without its package ``__init__``: ``_load`` puts a module object
for the ``pyroute2`` package into ``sys.modules`` (only when pyroute2 is not imported yet) that
has the real package's spec and ``__path__`` but has not run its body. Submodule imports then
work through the normal import system. Why this is robust:
- any other attribute of the package (``from pyroute2 import IPRoute`` by a test, a tool or a
  later caller in the same process) runs the real ``__init__`` in place on first access
  (``_DeferredPackage.__getattr__``), so code that wants the whole library gets it unchanged;
- ``from pyroute2 import config`` inside pyroute2 (a submodule) is answered by importing the
  submodule, never by running the body;
- if pyroute2 is already imported, nothing is replaced.
``pyroute2-minimal`` (the official small distribution) was measured at ≈ 130 ms for ``IPRoute``:
its ``__init__`` still starts from ``pyroute2.iproute`` (asyncio), so it does not help here.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import importlib
import importlib.util
import socket
import struct
import sys
import types
from collections.abc import Callable
from typing import Any, cast

RTEXT_FILTER_SKIP_STATS = 1 << 3  # include/uapi/linux/rtnetlink.h (pyroute2 has no name for it)
_RCVBUF = 1 << 20
# One datagram per read. A dump skb is ≤ 32 KiB unless one message is bigger (a link with many VFs:
# RTEXT_FILTER_SKIP_STATS keeps their statistics out); a truncated read is an error, never a misparse.
_RECV_SIZE = 1 << 18
# include/uapi/linux/sockios.h and if.h: struct ifreq is ifr_name[IFNAMSIZ] then a 24-byte union whose
# first member is ifr_ifindex.
_SIOCGIFNAME, _SIOCGIFINDEX = 0x8910, 0x8933
_IFNAMSIZ = 16
_IFREQ = struct.Struct("16si20x")


class _DeferredPackage(types.ModuleType):
    """The ``pyroute2`` package before its ``__init__`` ran (see the module docstring)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            return importlib.import_module(f"{self.__name__}.{name}")
        # Someone wants the library's public API: become the real package (once), then answer.
        self.__class__ = types.ModuleType  # type: ignore[assignment]
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(self)
        return getattr(self, name)


class _Parts:
    """pyroute2's message layer, imported once."""

    def __init__(self) -> None:
        if "pyroute2" not in sys.modules:
            spec = importlib.util.find_spec("pyroute2")
            if spec is None or spec.submodule_search_locations is None or spec.loader is None:
                raise ImportError("pyroute2 is not installed (the netlink library multinic needs)")
            pkg = _DeferredPackage("pyroute2")
            pkg.__spec__ = spec
            pkg.__loader__ = spec.loader
            pkg.__file__ = spec.origin
            pkg.__path__ = list(spec.submodule_search_locations)
            pkg.__package__ = "pyroute2"
            sys.modules["pyroute2"] = pkg
        from pyroute2.config import AF_BRIDGE
        from pyroute2.netlink import (
            NETLINK_ROUTE,
            NLM_F_ACK,
            NLM_F_APPEND,
            NLM_F_ATOMIC,
            NLM_F_CREATE,
            NLM_F_DUMP,
            NLM_F_EXCL,
            NLM_F_REPLACE,
            NLM_F_REQUEST,
            NLM_F_ROOT,
            NLMSG_DONE,
            NLMSG_ERROR,
        )
        from pyroute2.netlink import rtnl as r
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.marshal import Marshal
        from pyroute2.netlink.rtnl.fibmsg import fibmsg
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.rtmsg import rtmsg
        from pyroute2.requests.address import AddressFieldFilter, AddressIPRouteFilter
        from pyroute2.requests.bridge import BridgeFieldFilter, BridgeIPRouteFilter, BridgePortFieldFilter
        from pyroute2.requests.link import LinkFieldFilter, LinkIPRouteFilter
        from pyroute2.requests.main import RequestProcessor
        from pyroute2.requests.route import RouteFieldFilter, RouteIPRouteFilter
        from pyroute2.requests.rule import RuleFieldFilter, RuleIPRouteFilter

        self.NetlinkError = NetlinkError
        self.RequestProcessor = RequestProcessor
        self.ifinfmsg, self.ifaddrmsg, self.rtmsg, self.fibmsg = ifinfmsg, ifaddrmsg, rtmsg, fibmsg

        class MarshalRtnl(Marshal):  # type: ignore[misc]
            msg_map = {
                r.RTM_NEWLINK: ifinfmsg, r.RTM_DELLINK: ifinfmsg, r.RTM_GETLINK: ifinfmsg, r.RTM_SETLINK: ifinfmsg,
                r.RTM_NEWADDR: ifaddrmsg, r.RTM_DELADDR: ifaddrmsg, r.RTM_GETADDR: ifaddrmsg,
                r.RTM_NEWROUTE: rtmsg, r.RTM_DELROUTE: rtmsg, r.RTM_GETROUTE: rtmsg,
                r.RTM_NEWRULE: fibmsg, r.RTM_DELRULE: fibmsg, r.RTM_GETRULE: fibmsg,
            }

        self.Marshal = MarshalRtnl
        self.NETLINK_ROUTE, self.NLMSG_ERROR, self.NLMSG_DONE = NETLINK_ROUTE, NLMSG_ERROR, NLMSG_DONE
        # pyroute2.netlink.nlsocket.NetlinkRequest.flags, by request mode.
        req, ack = NLM_F_REQUEST, NLM_F_REQUEST | NLM_F_ACK
        self.flags = {"dump": req | NLM_F_DUMP, "root": req | NLM_F_ROOT | NLM_F_ATOMIC, "get": ack, "req": ack,
                      "create": ack | NLM_F_CREATE | NLM_F_EXCL, "append": ack | NLM_F_CREATE | NLM_F_APPEND,
                      "change": ack | NLM_F_REPLACE, "replace": ack | NLM_F_REPLACE | NLM_F_CREATE}
        # The command maps of pyroute2.iproute.linux.RTNL_API (link, addr, route, rule, vlan_filter).
        Cmds = dict[str, tuple[int, str]]
        self.link_cmds: Cmds = {
            "set": (r.RTM_NEWLINK, "req"), "update": (r.RTM_SETLINK, "create"), "add": (r.RTM_NEWLINK, "create"),
            "del": (r.RTM_DELLINK, "req"), "delete": (r.RTM_DELLINK, "req"), "remove": (r.RTM_DELLINK, "req"),
            "dump": (r.RTM_GETLINK, "dump"), "get": (r.RTM_GETLINK, "get")}
        self.addr_cmds: Cmds = {
            "add": (r.RTM_NEWADDR, "create"), "del": (r.RTM_DELADDR, "req"), "delete": (r.RTM_DELADDR, "req"),
            "remove": (r.RTM_DELADDR, "req"), "replace": (r.RTM_NEWADDR, "replace"), "dump": (r.RTM_GETADDR, "dump")}
        self.route_cmds: Cmds = {
            "add": (r.RTM_NEWROUTE, "create"), "set": (r.RTM_NEWROUTE, "replace"), "replace": (r.RTM_NEWROUTE, "replace"),
            "change": (r.RTM_NEWROUTE, "change"), "append": (r.RTM_NEWROUTE, "append"), "del": (r.RTM_DELROUTE, "req"),
            "delete": (r.RTM_DELROUTE, "req"), "remove": (r.RTM_DELROUTE, "req"), "get": (r.RTM_GETROUTE, "get"),
            "dump": (r.RTM_GETROUTE, "dump"), "show": (r.RTM_GETROUTE, "dump")}
        self.rule_cmds: Cmds = {
            "add": (r.RTM_NEWRULE, "create"), "del": (r.RTM_DELRULE, "req"), "delete": (r.RTM_DELRULE, "req"),
            "remove": (r.RTM_DELRULE, "req"), "dump": (r.RTM_GETRULE, "root")}
        self.vlan_filter_cmds: Cmds = {"add": (r.RTM_SETLINK, "req"), "del": (r.RTM_DELLINK, "req")}
        self.AF_BRIDGE: int = AF_BRIDGE
        self.RTEXT_FILTER_BRVLAN: int = 1 << 1
        # pyroute2.iproute.linux.get_default_request_filters, for the modes used here.
        self.filters: dict[str, Callable[[str], list[Any]]] = {
            "link": lambda c: [LinkFieldFilter(), LinkIPRouteFilter(c)],
            "addr": lambda c: [AddressFieldFilter(), AddressIPRouteFilter(c)],
            "route": lambda c: [RouteFieldFilter(add_defaults=(c not in ("dump", "show"))), RouteIPRouteFilter(c)],
            "rule": lambda c: [RuleFieldFilter(), RuleIPRouteFilter(c)],
            "brport": lambda c: [BridgePortFieldFilter(c)],
            "vlan_filter": lambda c: [BridgeFieldFilter(), BridgeIPRouteFilter(c)],
        }


_parts: _Parts | None = None
_loading = _thread.allocate_lock()  # the daemon's request threads may be first together


def _load() -> _Parts:
    global _parts
    if _parts is None:
        with _loading:
            if _parts is None:
                _parts = _Parts()
    return _parts


class NetlinkErrorShape(Exception):
    """What the type checker knows of pyroute2's (untyped) ``NetlinkError``: ``code`` is the errno."""

    code: int


def netlink_error() -> type[NetlinkErrorShape]:
    """pyroute2's ``NetlinkError`` class (without importing the package body)."""
    return cast("type[NetlinkErrorShape]", _load().NetlinkError)


def pyroute2_module(name: str) -> Any:
    """A pyroute2 submodule (e.g. to extend a message class), imported without the package body."""
    _load()
    return importlib.import_module(name)


def _arguments(p: _Parts, mode: str, command: str, query: dict[str, Any], parameters: dict[str, Any] | None = None) -> Any:
    """pyroute2.iproute.linux.get_arguments_processor: the request's fields and NLAs from keywords."""
    proc = p.RequestProcessor(context=query, prime=query)
    for name, value in (parameters or {}).items():
        proc.set_parameter(name, value)
    for rf in p.filters[mode](command):
        proc.add_filter(rf)
    proc.finalize()
    return proc


def _dump_filter(p: _Parts, mode: str, command: str, query: dict[str, Any],
                 parameters: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """pyroute2.iproute.linux.get_dump_filter: split a dump's keywords into request and match."""
    if "dump_filter" in query:
        return query.pop("dump_filter"), query
    if command not in ("dump", "show"):
        return None, query
    new_query: dict[str, Any] = {k: query.pop(k) for k in ("family", "ext_mask", "dump_flags") if k in query}
    if "match" in query:
        query = query["match"]
    if callable(query):
        return query, new_query
    match = p.RequestProcessor(context=query, prime=query, parameters=parameters)
    for rf in p.filters[mode](command):
        match.add_filter(rf)
    match.finalize()
    return match, new_query


def _matches(match: Any, msg: Any) -> bool:
    """pyroute2 NetlinkRequest.match_one_message."""
    if match is None:
        return True
    if callable(match):
        return bool(match(msg))
    for key in match:
        if not isinstance(key, (str, tuple)):
            continue
        value = msg.get(key)
        want = match[key]
        if value is not None and callable(want):
            if not want(value):
                return False
        elif want != value:
            return False
    return True


class Rtnl:
    """One NETLINK_ROUTE socket in the namespace of the thread that creates it."""

    def __init__(self) -> None:
        self._p = _load()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, self._p.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise
        self._marshal = self._p.Marshal()
        self._seq = 0
        # Answers read while waiting for another sequence number (pipelined requests).
        self._pending: dict[int, list[Any]] = {}
        self._done: dict[int, BaseException | None] = {}
        self._match: dict[int, Any] = {}

    # ---- the socket ------------------------------------------------------------------------

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, msg: Any, command: str, commands: dict[str, tuple[int, str]], arguments: Any,
             match: Any = None) -> int:
        """Build ``msg`` from ``arguments`` as pyroute2's NetlinkRequest does, send it; its sequence number."""
        mtype, mode = commands[command]
        self._seq += 1
        seq = self._seq
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = self._p.flags[mode]
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0  # the kernel answers to the socket, whatever this says
        msg.reset()
        if arguments is not None:
            for name, *_ in msg.fields:
                msg[name] = arguments.get_value(name, default=0, mode="field")
            for key, value in arguments.items():
                nla = type(msg).name2nla(key)
                if msg.valid_nla(nla) and value is not None:
                    msg["attrs"].append([nla, value])
            if "attrs" in arguments:
                msg["attrs"].extend(arguments["attrs"])
        msg.encode()
        self._pending[seq] = []
        self._match[seq] = match
        self._sock.send(msg.data)
        return seq

    def collect(self, seq: int) -> list[Any]:
        """The answers to request ``seq``; raises its ``NetlinkError`` (after reading the whole answer)."""
        while seq not in self._done:
            data, _, flags, _ = self._sock.recvmsg(_RECV_SIZE)
            if flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, f"a netlink answer was longer than {_RECV_SIZE} bytes")
            for msg in self._marshal.parse(data):
                got = msg["header"]["sequence_number"]
                if got not in self._pending or got in self._done:
                    continue  # an answer to nobody (a request whose reader gave up)
                error = msg["header"].get("error")
                mtype = msg["header"]["type"]
                if error is not None:
                    self._done[got] = error
                elif mtype == self._p.NLMSG_ERROR or mtype == self._p.NLMSG_DONE:
                    self._done[got] = None  # the ACK of a request, the end of a dump
                elif _matches(self._match[got], msg):
                    self._pending[got].append(msg)
        error = self._done.pop(seq)
        out = self._pending.pop(seq)
        self._match.pop(seq, None)
        if error is not None:
            raise error
        return out

    def request(self, msg: Any, command: str, commands: dict[str, tuple[int, str]], arguments: Any,
                match: Any = None) -> list[Any]:
        return self.collect(self.send(msg, command, commands, arguments, match))

    # ---- IPRoute's API, the parts multinic uses ----------------------------------------------

    def _prepare(self, mode: str, command: str, kwarg: dict[str, Any],
                 parameters: dict[str, Any] | None = None) -> tuple[Any, Any]:
        match, kwarg = _dump_filter(self._p, mode, command, kwarg, parameters)
        return _arguments(self._p, mode, command, kwarg, parameters), match

    def _link_send(self, command: str, kwarg: dict[str, Any]) -> int:
        if isinstance(kwarg.get("match"), str):
            kwarg["match"] = {"ifname": kwarg["match"]}
        if command in ("get", "dump"):
            kwarg["ext_mask"] = kwarg.get("ext_mask", 0) | RTEXT_FILTER_SKIP_STATS
        if command == "get" and set(kwarg) <= {"index", "ifname", "ext_mask"}:
            return self._link_get_send(kwarg)
        arguments, match = self._prepare("link", command, kwarg)
        return self.send(self._p.ifinfmsg(), command, self._p.link_cmds, arguments, match)

    def _link_get_send(self, kwarg: dict[str, Any]) -> int:
        """RTM_GETLINK by index and/or name: pyroute2's ``ifinfmsg`` filled and encoded without its request filters,
        which have nothing to translate here and cost ≈ 100 µs of the ≈ 140 µs of building this request."""
        msg = self._p.ifinfmsg()
        msg["index"] = int(kwarg.get("index") or 0)
        name = kwarg.get("ifname")
        if name is not None:
            msg["attrs"].append(["IFLA_IFNAME", name])
        msg["attrs"].append(["IFLA_EXT_MASK", kwarg["ext_mask"]])
        return self.send(msg, "get", self._p.link_cmds, None)

    def link(self, command: str, **kwarg: Any) -> list[Any]:
        return self.collect(self._link_send(command, kwarg))

    def link_send(self, command: str, **kwarg: Any) -> int:
        """``link`` without waiting: its sequence number for ``collect``."""
        return self._link_send(command, kwarg)

    def addr(self, command: str, **kwarg: Any) -> list[Any]:
        return self.collect(self.addr_send(command, **kwarg))

    def addr_send(self, command: str, **kwarg: Any) -> int:
        arguments, match = self._prepare("addr", command, kwarg)
        return self.send(self._p.ifaddrmsg(), command, self._p.addr_cmds, arguments, match)

    def route(self, command: str, **kwarg: Any) -> list[Any]:
        return self.collect(self.route_send(command, **kwarg))

    def route_send(self, command: str, **kwarg: Any) -> int:
        if command in ("add", "set", "replace", "change", "append"):
            kwarg["proto"] = kwarg.get("proto", "static") or "static"
            kwarg["type"] = kwarg.get("type", "unicast") or "unicast"
        arguments, match = self._prepare("route", command, kwarg, {"strict_check": False})
        return self.send(self._p.rtmsg(), command, self._p.route_cmds, arguments, match)

    def rule(self, command: str, **kwarg: Any) -> list[Any]:
        if command == "set":
            return []
        arguments, match = self._prepare("rule", command, kwarg)
        return self.request(self._p.fibmsg(), command, self._p.rule_cmds, arguments, match)

    def brport(self, command: str, **kwarg: Any) -> list[Any]:
        """Bridge port settings (``set`` only): an RTM_NEWLINK with IFLA_INFO_SLAVE_KIND bridge."""
        if command != "set":
            raise TypeError(f"brport {command!r} is not supported here")
        return self.link("set", index=kwarg.pop("index", 0), kind="bridge_slave", **kwarg)

    def vlan_filter(self, command: str, **kwarg: Any) -> list[Any]:
        kwarg["family"] = self._p.AF_BRIDGE
        arguments = _arguments(self._p, "vlan_filter", command, kwarg)
        return self.request(self._p.ifinfmsg(), command, self._p.vlan_filter_cmds, arguments)

    def get_links(self, *indices: int, **kwarg: Any) -> list[Any]:
        """Links by index (all requests sent before the answers are read), or every link."""
        if not indices or indices[0] == 0:
            return self.link("dump", **kwarg)
        seqs = [self._link_send("get", {"index": i, **kwarg}) for i in indices]
        return [m for s in seqs for m in self.collect(s)]

    def get_vlans(self, **kwarg: Any) -> list[Any]:
        return self.link("dump", family=self._p.AF_BRIDGE, ext_mask=self._p.RTEXT_FILTER_BRVLAN, match=kwarg)

    def get_addr(self, family: int = socket.AF_UNSPEC, match: Any = None, **kwarg: Any) -> list[Any]:
        return self.addr("dump", family=family, match=match or kwarg)

    def get_routes(self, family: int = 255, match: Any = None, **kwarg: Any) -> list[Any]:
        # 255: the kernel answers an AF_UNSPEC route dump with IPv4 only, an unknown family with all.
        if isinstance(kwarg.get("dst"), str):
            return self.route("get", dst=kwarg["dst"])
        return self.route("dump", family=family, match=match or kwarg)

    def get_rules(self, family: int = socket.AF_UNSPEC, match: Any = None, **kwarg: Any) -> list[Any]:
        return self.rule("dump", family=family, match=match or kwarg)

    def link_lookup(self, **kwarg: Any) -> list[int]:
        """[index] of the link named/indexed so; [] when there is none. By name: SIOCGIFINDEX on this socket
        (the module docstring); else one RTM_GETLINK, not a dump."""
        if not kwarg or not set(kwarg) <= {"index", "ifname", "altname"}:
            raise TypeError("link_lookup takes ifname=, index= or altname= here")
        name = kwarg.get("ifname")
        raw = name.encode() if isinstance(name, str) and len(kwarg) == 1 else b""
        if 0 < len(raw) < _IFNAMSIZ and b"\0" not in raw:  # else the kernel's netlink answer (EINVAL …) decides
            try:
                buf = fcntl.ioctl(self._sock.fileno(), _SIOCGIFINDEX, _IFREQ.pack(raw, 0))
                return [int(_IFREQ.unpack(buf)[1])]
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    return []
                # anything else (a kernel without the ioctl on netlink sockets): ask by netlink
        try:
            return [int(m["index"]) for m in self.link("get", **kwarg)][:1]
        except (self._p.NetlinkError, KeyError):
            return []

    def link_name(self, index: int) -> str | None:
        """The name of link ``index`` in this socket's namespace (SIOCGIFNAME); None when there is none."""
        try:
            buf = fcntl.ioctl(self._sock.fileno(), _SIOCGIFNAME, _IFREQ.pack(b"", index))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            msgs = self.get_links(index)  # no such ioctl here: the link message has the name too
            return str(msgs[0].get_attr("IFLA_IFNAME")) if msgs else None
        name: bytes = _IFREQ.unpack(buf)[0]
        return name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def open_socket() -> Rtnl:
    """A socket in the current thread's namespace."""
    return Rtnl()


__all__ = ["RTEXT_FILTER_SKIP_STATS", "NetlinkErrorShape", "Rtnl", "netlink_error", "open_socket", "pyroute2_module"]
