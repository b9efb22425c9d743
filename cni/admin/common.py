"""What every admin command shares: finding the multinic conf, reading the attachment cache, output, exit codes.

The conf is found the way the runtime finds it: ``--conf FILE`` (a ``.conf`` with ``type: multinic``
or ``multinic-shim``, or a ``.conflist`` holding such a plugin), or a directory searched in file-name
order (default ``/etc/cni/net.d``) for the first conf that is multinic's. A conflist's plugin gets
the list's ``name`` and ``cniVersion``, as libcni builds it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from ..delegator.cache import Entry, Record
    from ..delegator.config import MultinicConfig

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_CONF = 3
EXIT_NOT_FOUND = 4

EXIT_CODES_HELP = """\
exit status: 0 all well; 1 problems found; 2 bad usage; 3 the multinic conf cannot be found or
read (--conf); 4 the pod is unknown (not in the cache, the API or the log)"""

DEFAULT_CONF_DIR = "/etc/cni/net.d"
MULTINIC_TYPES = ("multinic", "multinic-shim")
CONF_SUFFIXES = (".conf", ".conflist", ".json")


class AdminError(Exception):
    """A problem that ends the command: printed as ``multinic <cmd>: <msg>`` with exit status ``code``."""

    def __init__(self, msg: str, code: int = EXIT_CONF) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ``AdminError(EXIT_USAGE)`` (the caller prints them; no SystemExit)."""

    def error(self, message: str) -> NoReturn:
        raise AdminError(f"{message}\n{self.format_usage().rstrip()}", EXIT_USAGE)


def parser(prog: str, description: str) -> Parser:
    p = Parser(prog=f"multinic {prog}", description=description, epilog=EXIT_CODES_HELP,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conf", default="", metavar="FILE",
                   help=f"multinic's conf or conflist, or a directory to search (default: {DEFAULT_CONF_DIR})")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format (default: table)")
    return p


# ---- the conf --------------------------------------------------------------------------------------------------


@dataclass
class NodeConf:
    """multinic's conf on this node, parsed as the meta-plugin parses it."""

    path: str
    raw: dict[str, Any]  # the multinic plugin's conf (name/cniVersion of the list filled in)
    cfg: MultinicConfig
    conf_dir: str = ""  # the runtime's conf directory (where this file is)

    @property
    def thick(self) -> bool:
        return self.raw.get("type") == "multinic-shim"


def multinic_plugin(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The multinic plugin conf in ``doc`` (a conf or a conflist), or None when ``doc`` is not multinic's."""
    if doc.get("type") in MULTINIC_TYPES:
        return doc
    plugins = doc.get("plugins")
    if isinstance(plugins, list):
        for p in plugins:
            if isinstance(p, dict) and p.get("type") in MULTINIC_TYPES:
                out = dict(p)
                out.setdefault("name", doc.get("name"))
                out.setdefault("cniVersion", doc.get("cniVersion"))
                return out
    return None


def conf_files(conf_dir: str) -> list[str]:
    """The runtime's candidates in ``conf_dir``, in the order it tries them (file name order)."""
    try:
        names = sorted(os.listdir(conf_dir))
    except OSError as exc:
        raise AdminError(f"cannot list the CNI conf directory {conf_dir}: {exc.strerror or exc}") from None
    return [os.path.join(conf_dir, n) for n in names if n.endswith(CONF_SUFFIXES)
            and os.path.isfile(os.path.join(conf_dir, n))]


def read_json(path: str) -> dict[str, Any]:
    from ..spec.config import decode
    from ..spec.errors import CNIError

    try:
        with open(path, "rb") as f:
            return decode(f.read(), path)
    except OSError as exc:
        raise AdminError(f"cannot read {path}: {exc.strerror or exc}") from None
    except CNIError as exc:
        raise AdminError(f"{path} is not valid JSON: {exc.msg}{': ' + exc.details if exc.details else ''}") from None


def find_conf(conf_dir: str) -> str:
    """The first conf in ``conf_dir`` that is multinic's."""
    for path in conf_files(conf_dir):
        try:
            doc = read_json(path)
        except AdminError:
            continue
        if multinic_plugin(doc) is not None:
            return path
    raise AdminError(f"no multinic conf in {conf_dir} (a .conf/.conflist whose type is multinic or multinic-shim); "
                     "point --conf at it")


def load(conf: str = "") -> NodeConf:
    """multinic's conf from ``--conf`` (a file or a directory; default ``/etc/cni/net.d``), validated."""
    from ..delegator import config as cfgmod
    from ..spec.errors import CNIError

    path = conf or DEFAULT_CONF_DIR
    if os.path.isdir(path):
        path = find_conf(path)
    elif not os.path.exists(path):
        raise AdminError(f"--conf {path}: no such file or directory")
    doc = read_json(path)
    raw = multinic_plugin(doc)
    if raw is None:
        raise AdminError(f"{path} is not a multinic conf (no plugin of type multinic or multinic-shim in it)")
    try:
        cfg = cfgmod.parse(raw)
    except CNIError as exc:
        raise AdminError(f"{path}: invalid multinic conf: {exc.msg}{' (' + exc.details + ')' if exc.details else ''}") from None
    return NodeConf(path=path, raw=raw, cfg=cfg, conf_dir=os.path.dirname(os.path.abspath(path)))


def cni_path(node: NodeConf) -> tuple[str, ...]:
    """Where non-native plugins are found: binDir, then ``$CNI_PATH`` (as the runtime passes it)."""
    extra = [d for d in os.environ.get("CNI_PATH", "").split(":") if d]
    return tuple(dict.fromkeys([node.cfg.bin_dir, *extra]))


# ---- the attachment cache ----------------------------------------------------------------------------------------

NS_GET_NSTYPE = 0xB703  # ioctl on a namespace fd (linux/nsfs.h): its CLONE_NEW* type
CLONE_NEWNET = 0x40000000


def netns_alive(path: str) -> bool:
    """True when ``path`` is a live network namespace (a file left on a plain directory after a reboot is not)."""
    import fcntl

    if not path:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass
class Sandbox:
    """One cached pod sandbox: its record, whether its netns is still there, and when the record was written."""

    record: Record
    netns_alive: bool
    mtime: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def pod(self) -> str:
        r = self.record
        return f"{r.pod_namespace}/{r.pod_name}" if r.pod_name else "-"


def sandboxes(cni_dir: str) -> list[Sandbox]:
    """Every record in the attachment cache, oldest first; an unreadable one is listed with its problem."""
    from ..delegator import cache
    from ..spec.errors import CNIError

    out = []
    for cid in cache.list_ids(cni_dir):
        path = os.path.join(cni_dir, cid)
        if not os.path.isfile(path):
            continue
        try:
            rec = cache.load(cni_dir, cid)
        except (CNIError, OSError) as exc:
            rec = cache.Record(container_id=cid)
            out.append(Sandbox(rec, False, _mtime(path), [f"cannot read the cache record: {exc}"]))
            continue
        if rec is None:
            continue
        sb = Sandbox(rec, netns_alive(rec.netns), _mtime(path))
        if rec.damaged:
            sb.problems.append("cache record damaged (DEL still removes everything it names)")
        if not sb.netns_alive:
            sb.problems.append(f"netns {rec.netns or '(none)'} is gone")
        out.append(sb)
    out.sort(key=lambda s: s.mtime)
    return out


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def attachment_state(entries: list[Entry], i: int) -> str:
    """added / failed / removed (rolled back or DEL'd) / pending (ADD not done yet), from the cache's states.

    The cache marks an attachment ``planned`` before it is made and again after a rollback removed it:
    a planned one before a failed or added one was therefore removed; one after them is still pending.
    """
    state = str(entries[i].state)
    if state in ("added", "failed"):
        return state
    later = [str(e.state) for e in entries[i + 1:]]
    if any(s in ("added", "failed") for s in later) or any(str(e.state) == "failed" for e in entries):
        return "removed"
    return "pending"


def sandbox_state(entries: list[Entry]) -> str:
    states = [attachment_state(entries, i) for i in range(len(entries))]
    if not states:
        return "empty"
    if all(s == "added" for s in states):
        return "added"
    if "added" in states and "removed" in states:
        return "partially removed"
    if "failed" in states:
        return "failed"
    if all(s == "removed" for s in states):
        return "removed"
    return "pending"


def result_ips(result: dict[str, Any] | None) -> list[str]:
    """Addresses of a cached wire result (any CNI version)."""
    if not result:
        return []
    from ..spec.errors import CNIError
    from ..spec.result import from_wire

    try:
        return [str(ip.address) for ip in from_wire(result).ips]
    except CNIError:
        return [str(ip.get("address")) for ip in result.get("ips") or [] if isinstance(ip, dict)]


def age(seconds: float) -> str:
    """kubectl's AGE: 45s, 12m, 5h, 3d."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def since(mtime: float) -> str:
    return age(time.time() - mtime) if mtime else "-"


def split_pod(text: str) -> tuple[str, str]:
    """``NAMESPACE/POD`` (or ``POD``, namespace default) validated as Kubernetes names."""
    import re

    ns, sep, name = text.partition("/")
    if not sep:
        ns, name = "default", text
    ok = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
    if not ok.match(ns) or not ok.match(name):
        raise AdminError(f"{text!r} is not NAMESPACE/POD (lower-case Kubernetes names)", EXIT_USAGE)
    return ns, name


# ---- output ------------------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    """kubectl-style columns: upper-case headers, two spaces between columns, no trailing blanks."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    lines = []
    for r in [headers, *rows]:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return "\n".join(lines) + "\n"


def dump_json(doc: Any) -> str:
    import orjson

    return orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode() + "\n"


def run(prog: str, body: Any, argv: list[str], out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run ``body(argv, out)``; an ``AdminError`` becomes a message on stderr and its exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return int(body(argv, out))
    except AdminError as exc:
        err.write(f"multinic {prog}: {exc.msg}\n")
        return exc.code
    except OSError as exc:  # a store or file that cannot be read: say which, no traceback
        err.write(f"multinic {prog}: {exc}\n")
        return EXIT_PROBLEMS
    except Exception as exc:
        from ..spec.errors import CNIError

        if not isinstance(exc, CNIError):
            raise
        err.write(f"multinic {prog}: {exc}\n")
        return EXIT_PROBLEMS
    except BrokenPipeError:  # `multinic logs | head`
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
