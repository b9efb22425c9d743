"""Per-phase wall-clock profile of one multinic process — for ``make bench`` only.

Python imports ``sitecustomize`` at start-up from sys.path; the bench puts this directory on
PYTHONPATH, with ``MULTINIC_PHASES=<file>``, for the profiled runs only (tests/bench/profile.py).
multinic itself has no hook and pays nothing: without this directory on the path nothing here
exists, and with it but without ``MULTINIC_PHASES`` the import returns at once.

What is measured (wall clock, exclusive: a phase nested in another is subtracted from it, so
the phases of a process add up to the time it spent in them):
- ``imports``: every module load (``importlib._bootstrap._load_unlocked``);
- ``netlink kernel <RTM_…>``: time inside send/recv calls on AF_NETLINK sockets, named by the
  message types sent (rtnetlink does a request's work inside the sender's ``sendmsg``, so this
  is the kernel's share); ``netlink library`` is pyroute2's request machinery around it;
- ``exec <tool>``: ``subprocess.run`` and ``plugins._masq.run_captured`` by program name (iptables-restore, nft, conntrack, …);
- ``fsync``; and the named functions of ``TARGETS`` (config parse, manifest/API read, plan,
  cache writes, IPAM, status write, events, sysctl).
Functions are wrapped by module and attribute name right after their module is loaded: a name
that does not exist (the code moved on) is skipped, so the profile degrades to "other" rather
than failing the run.

Output: JSON ``{"t_start": monotonic at this hook, "t_exit": at atexit, "phases": {name: [s, n]}}``
written to ``$MULTINIC_PHASES`` at exit, and on SIGUSR2 (a long-running daemon: the bench
signals it before and after one request and subtracts).
"""

import os

_OUT = os.environ.get("MULTINIC_PHASES", "")

if _OUT:
    import time

    T_START = time.monotonic()

    import atexit
    import functools
    import json
    import signal
    import sys
    import threading

    _clock = time.perf_counter
    _local = threading.local()
    _lock = threading.RLock()  # the SIGUSR2 dump runs in the main thread, maybe inside _pop
    TOTALS: dict = {}

    def _push(phase):
        stack = _local.__dict__.get("stack")
        if stack is None:
            stack = _local.stack = []
        stack.append([phase, _clock(), 0.0])

    def _pop():
        stack = _local.stack
        phase, t0, child = stack.pop()
        dt = _clock() - t0
        with _lock:
            cur = TOTALS.get(phase)
            if cur is None:
                TOTALS[phase] = [dt - child, 1]
            else:
                cur[0] += dt - child
                cur[1] += 1
        if stack:
            stack[-1][2] += dt

    def _timed(phase, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            _push(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                _pop()

        wrapper.__phase__ = phase
        return wrapper

    # module → [(attribute path, phase)]
    TARGETS = {
        "cni.delegator.config": [("parse", "config parse")],
        "cni.k8s.source": [(f"{cls}.{m}", "API/manifest read") for cls in ("LocalSource", "ApiSource")
                           for m in ("get_pod", "get_pod_live", "get_nad", "get_node")],
        "cni.delegator.resolve": [("plan_for", "plan"), ("plan_for_delete", "plan"), ("conf_dir_configs", "API/manifest read")],
        "cni.delegator.plan": [("build", "plan")],
        "cni.delegator.cache": [("save", "cache write"), ("remove", "cache write"), ("load", "cache read")],
        "cni.delegator.core": [("write_status", "status write"), ("_clear_status", "status write")],
        "cni.delegator.events": [("record", "events"), ("keep", "events")],
        "cni.invoke": [("add_list", "plugins (Python)"), ("del_list", "plugins (Python)"), ("ipam", "IPAM (host-local/static, incl. files)")],
        "cni.netlink": [("write_sysctl", "sysctl"), ("read_sysctl", "sysctl"), ("ipr", "netlink socket open/close")],
        "cni.netlink.rtnl": [("Rtnl.__init__", "netlink socket open/close"), ("Rtnl.close", "netlink socket open/close")],
        "cni.fslock": [("acquire", "file locks")],
        "pyroute2.iproute.linux": [("IPRoute.__init__", "netlink socket open/close"), ("IPRoute._run_generic_rtnl", "netlink library"),
                                   ("IPRoute._run_force_sync", "netlink library")],
        "pyroute2.netlink.core": [("SyncAPI._run_with_cleanup", "netlink library"), ("SyncAPI.close", "netlink socket open/close")],
        "cni.daemon.server": [],
    }
    # Modules whose every public function (and public class method) is one phase (a new netlink
    # layer: whatever its function names, its time is the netlink library's).
    WHOLE = {"cni.netlink.rtnl": "netlink library"}

    def _wrap_attr(mod, path, phase):
        owner = mod
        parts = path.split(".")
        for p in parts[:-1]:
            owner = getattr(owner, p, None)
            if owner is None:
                return
        fn = owner.__dict__.get(parts[-1]) if isinstance(owner, type) else getattr(owner, parts[-1], None)
        if fn is None or getattr(fn, "__phase__", None) or not callable(fn) or isinstance(fn, (staticmethod, classmethod)):
            return
        try:
            setattr(owner, parts[-1], _timed(phase, fn))
        except (AttributeError, TypeError):
            pass

    def _patch_module(name, mod):
        for path, phase in TARGETS.get(name, ()):
            _wrap_attr(mod, path, phase)
        phase = WHOLE.get(name)
        if phase:
            for attr, val in list(vars(mod).items()):
                if attr.startswith("_") or getattr(val, "__module__", None) != name:
                    continue
                if isinstance(val, type):
                    for m, f in list(vars(val).items()):
                        if not m.startswith("_") and callable(f):
                            _wrap_attr(val, m, phase)
                elif callable(val):
                    _wrap_attr(mod, attr, phase)
        if name == "subprocess":
            _patch_subprocess(mod)
        elif name == "plugins._masq":  # the netfilter tools' exec (its own Popen: see run_captured)
            _patch_subprocess(mod, "run_captured")
        elif name == "socket":
            _patch_socket(mod)

    # ---- subprocess ------------------------------------------------------------------------

    def _patch_subprocess(mod, attr="run"):
        run = getattr(mod, attr)

        @functools.wraps(run)
        def timed_run(*args, **kwargs):
            argv = args[0] if args else kwargs.get("args")
            prog = os.path.basename(str(argv[0] if isinstance(argv, (list, tuple)) else str(argv).split()[0]))
            _push(f"exec {prog}")
            try:
                return run(*args, **kwargs)
            finally:
                _pop()

        setattr(mod, attr, timed_run)

    # ---- netlink sockets -----------------------------------------------------------------------

    RTM = {16: "NEWLINK", 17: "DELLINK", 18: "GETLINK", 19: "SETLINK", 20: "NEWADDR", 21: "DELADDR", 22: "GETADDR",
           24: "NEWROUTE", 25: "DELROUTE", 26: "GETROUTE", 28: "NEWNEIGH", 29: "DELNEIGH", 30: "GETNEIGH",
           32: "NEWRULE", 33: "DELRULE", 34: "GETRULE", 88: "NEWNSID", 90: "GETNSID"}
    _last_kind: dict = {}

    def _kinds(data):
        out = []
        try:
            mv = memoryview(data)
            off = 0
            while off + 16 <= len(mv):
                length = int.from_bytes(mv[off:off + 4], "little")
                typ = int.from_bytes(mv[off + 4:off + 6], "little")
                flags = int.from_bytes(mv[off + 6:off + 8], "little")
                name = RTM.get(typ, f"type {typ}")
                if flags & 0x300 == 0x300 and name.startswith("GET"):
                    name += " dump"
                if name not in out:
                    out.append(name)
                if length < 16:
                    break
                off += (length + 3) & ~3
        except (TypeError, ValueError):
            pass
        return "+".join(out) or "?"

    def _patch_socket(mod):
        base = mod.socket
        if getattr(base, "__phased__", False):
            return
        netlink = getattr(mod, "AF_NETLINK", 16)

        def sender(meth):
            orig = getattr(base, meth)

            def send(self, data, *args):
                if self.family != netlink:
                    return orig(self, data, *args)
                kind = _kinds(data) if self.proto == 0 else f"proto {self.proto}"
                _last_kind[id(self)] = kind
                _push(f"netlink kernel {kind}")
                try:
                    return orig(self, data, *args)
                finally:
                    _pop()

            return send

        def sendmsg(self, buffers, *args):
            if self.family != netlink:
                return base.sendmsg(self, buffers, *args)
            data = b"".join(bytes(b) for b in buffers)
            kind = _kinds(data) if self.proto == 0 else f"proto {self.proto}"
            _last_kind[id(self)] = kind
            _push(f"netlink kernel {kind}")
            try:
                return base.sendmsg(self, buffers, *args)
            finally:
                _pop()

        def receiver(meth):
            orig = getattr(base, meth)

            def recv(self, *args, **kwargs):
                if self.family != netlink:
                    return orig(self, *args, **kwargs)
                _push(f"netlink kernel {_last_kind.get(id(self), '?')}")
                try:
                    return orig(self, *args, **kwargs)
                finally:
                    _pop()

            return recv

        ns = {"__slots__": (), "__phased__": True, "sendmsg": sendmsg}
        for m in ("send", "sendto", "sendall"):
            ns[m] = sender(m)
        for m in ("recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg"):
            ns[m] = receiver(m)
        mod.socket = type("socket", (base,), ns)

    # ---- imports ---------------------------------------------------------------------------

    import _frozen_importlib as _bootstrap

    _load_unlocked = _bootstrap._load_unlocked

    def _timed_load(spec):
        _push("imports")
        try:
            mod = _load_unlocked(spec)
        finally:
            _pop()
        try:
            _patch_module(spec.name, mod)
        except Exception:  # noqa: BLE001 - a profile must never break the program it measures
            pass
        return mod

    _bootstrap._load_unlocked = _timed_load

    _fsync = os.fsync

    def _timed_fsync(fd):
        _push("fsync")
        try:
            return _fsync(fd)
        finally:
            _pop()

    os.fsync = _timed_fsync
    for _name in ("subprocess", "socket"):
        if _name in sys.modules:
            _patch_module(_name, sys.modules[_name])

    def dump(*_args):
        with _lock:
            doc = {"t_start": T_START, "t_exit": time.monotonic(), "pid": os.getpid(),
                   "phases": {k: [round(v[0], 6), v[1]] for k, v in TOTALS.items()}}
        tmp = f"{_OUT}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, _OUT)

    atexit.register(dump)
    try:
        signal.signal(signal.SIGUSR2, dump)
    except ValueError:  # not the main thread: no signal dump, atexit still works
        pass
