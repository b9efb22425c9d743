"""``multinic logs [NAMESPACE/POD]``: the multinic log file (``logFile``), rotated ``.gz`` backups included, oldest first.

With a pod, only the lines about it: Multus' line forms name a pod as ``ns:pod:uid`` (Add/Del/Check
lines) or ``[ns/pod/uid…]`` (errors), and the pod's container IDs from the cache are matched too (a
DEL that found no pod name logs the container ID only).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from typing import IO, Any

from . import common as c


def files(path: str) -> list[str]:
    """The rotated backups of ``path`` (oldest first), then ``path`` itself."""
    from .. import log

    try:
        found = log.backups(path)
    except OSError:
        found = []
    return [*found, path] if os.path.exists(path) else found


def lines(path: str) -> Iterator[str]:
    for f in files(path):
        try:
            if f.endswith(".gz"):
                with gzip.open(f, "rt", encoding="utf-8", errors="replace") as fh:
                    yield from (line.rstrip("\n") for line in fh)
            else:
                with open(f, encoding="utf-8", errors="replace") as fh:
                    yield from (line.rstrip("\n") for line in fh)
        except (OSError, EOFError) as exc:  # a backup being rotated away, a truncated gzip
            yield f"# multinic logs: cannot read {f}: {exc}"


def pod_matcher(namespace: str, name: str, container_ids: list[str]) -> Any:
    needles = [f"{namespace}:{name}:", f"[{namespace}/{name}/", f"{namespace}/{name}:", *container_ids]
    return lambda line: any(n in line for n in needles)


def parse_line(line: str) -> dict[str, str]:
    """``<time> [<level>] <message>`` → its parts (a line in another shape is all message)."""
    head, sep, rest = line.partition(" [")
    level, sep2, msg = rest.partition("] ")
    if sep and sep2 and level in ("panic", "error", "verbose", "debug"):
        return {"time": head, "level": level, "message": msg}
    return {"time": "", "level": "", "message": line}


def pod_lines(log_file: str, namespace: str, name: str, container_ids: list[str]) -> list[str]:
    match = pod_matcher(namespace, name, container_ids)
    return [line for line in lines(log_file) if match(line)]


def cached_ids(cni_dir: str, namespace: str, name: str) -> list[str]:
    return [sb.record.container_id for sb in c.sandboxes(cni_dir)
            if sb.record.pod_namespace == namespace and sb.record.pod_name == name]


def _main(argv: list[str], out: IO[str]) -> int:
    p = c.parser("logs", "The multinic log file (rotated backups included), optionally only one pod's lines.")
    p.add_argument("pod", nargs="?", default="", metavar="NAMESPACE/POD")
    p.add_argument("-n", "--tail", type=int, default=0, metavar="N", help="only the last N lines")
    args = p.parse_args(argv)
    if args.tail < 0:
        raise c.AdminError("--tail must be 0 (all) or more", c.EXIT_USAGE)
    pod = c.split_pod(args.pod) if args.pod else None
    node = c.load(args.conf)
    log_file = node.cfg.log_file
    if not log_file:
        raise c.AdminError(f"{node.path} sets no logFile: multinic logs nowhere (set logFile, e.g. /var/log/multus.log)")
    if not files(log_file):
        raise c.AdminError(f"log file {log_file} does not exist (yet): nothing was logged at logLevel "
                           f"{node.cfg.log_level or 'panic'}", c.EXIT_PROBLEMS)
    if pod is not None:
        ns, name = pod
        got = pod_lines(log_file, ns, name, cached_ids(node.cfg.cni_dir, ns, name))
        if not got:
            raise c.AdminError(f"no line about pod {ns}/{name} in {log_file} or its backups", c.EXIT_NOT_FOUND)
    else:
        got = list(lines(log_file))
    if args.tail:
        got = got[-args.tail:]
    if args.output == "json":
        out.write(c.dump_json([parse_line(line) for line in got]))
    else:
        out.write("".join(line + "\n" for line in got))
    return c.EXIT_OK


def main(argv: list[str]) -> int:
    return c.run("logs", _main, argv)
