"""CNI_ARGS and the validation of names that reach the kernel or the file system. PURE.

CNI_ARGS is ``K=V;K=V``. The reference plugins (pkg/types.LoadArgs) reject keys their
args struct does not know unless ``IgnoreUnknown`` is ``1`` or ``true``; we keep that
behaviour so a config that fails on the reference fails here too.
"""

from __future__ import annotations

import re

from .errors import InvalidConfig, InvalidEnvironment

# SPEC "Parameters": CNI_CONTAINERID must start with an alphanumeric, then [A-Za-z0-9_.-].
# \Z, not $: "$" also matches before a trailing newline, which would let "id\n" through.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
# A network name becomes a directory (host-local's dataDir/<name>, caches): same alphabet.
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
IFNAME_MAX = 15  # IFNAMSIZ - 1
# Both become parts of one file name (a chained plugin's ``<network>:<containerID>:<ifname>.json``),
# which must fit NAME_MAX (255): 100 + 128 + 15 + separators and suffix stay below it. Runtimes use
# 64-character IDs; the spec sets no limit, so these are ours, refused with a clear message.
CONTAINER_ID_MAX = 128
NETWORK_NAME_MAX = 100


def parse_cni_args(raw: str) -> dict[str, str]:
    """Parse ``K=V;K=V`` into an ordered dict. Empty segments are ignored; a pair without ``=`` is error 4."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if not pair:
            continue
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise InvalidEnvironment(f"invalid CNI_ARGS pair {pair!r}", "CNI_ARGS must be K=V pairs separated by ';'")
        out[k] = v
    return out


def ignore_unknown(args: dict[str, str]) -> bool:
    return args.get("IgnoreUnknown", "").lower() in ("1", "true")


def check_known(args: dict[str, str], known: frozenset[str]) -> None:
    """Reject CNI_ARGS keys a plugin does not understand unless IgnoreUnknown is set (reference behaviour)."""
    if ignore_unknown(args):
        return
    unknown = [k for k in args if k not in known and k != "IgnoreUnknown"]
    if unknown:
        raise InvalidEnvironment(
            f"unknown CNI_ARGS key(s) {', '.join(unknown)}",
            "set IgnoreUnknown=1 in CNI_ARGS to ignore keys this plugin does not use",
        )


def validate_container_id(cid: str) -> str:
    if not cid or not _CONTAINER_ID.match(cid):
        raise InvalidEnvironment(
            f"invalid CNI_CONTAINERID {cid!r}",
            "it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
        )
    if len(cid) > CONTAINER_ID_MAX:
        raise InvalidEnvironment(
            f"invalid CNI_CONTAINERID {cid[:16]}... ({len(cid)} characters)",
            f"it is longer than {CONTAINER_ID_MAX} characters and could not name a state file",
        )
    return cid


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None when it can."""
    if not name:
        return "it is empty"
    if len(name.encode()) > IFNAME_MAX:
        return f"it is longer than {IFNAME_MAX} bytes"
    if name in (".", ".."):
        return "'.' and '..' are not interface names"
    for ch in name:
        # NUL cannot reach us through the environment, but names also come from annotations.
        if ch in "/:\0" or ch.isspace():
            return f"it contains {ch!r}"
    return None


def validate_ifname(name: str, *, what: str = "CNI_IFNAME") -> str:
    problem = ifname_problem(name)
    if problem:
        raise InvalidEnvironment(f"invalid {what} {name!r}: {problem}")
    return name


def validate_network_name(name: object, *, field: str = "name") -> str:
    """A network name is used as a path component (host-local, caches): no traversal, no separators."""
    if not isinstance(name, str) or not name:
        raise InvalidConfig(f"network config field {field!r} is missing or not a string")
    if not _NETWORK_NAME.match(name):
        raise InvalidConfig(
            f"invalid network name {name!r} in field {field!r}",
            "a network name must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
        )
    if len(name) > NETWORK_NAME_MAX:
        raise InvalidConfig(f"invalid network name {name[:24]}... in field {field!r}",
                            f"it is {len(name)} characters long; at most {NETWORK_NAME_MAX} fit in state file names")
    return name


def safe_path_component(value: str, *, what: str) -> str:
    """Refuse anything that would escape a directory when joined to it (``..``, ``/``, NUL)."""
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise InvalidConfig(f"invalid {what} {value!r}: it cannot be used as a file name")
    return value


_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}\Z")


def normalise_mac(text: str, where: str) -> str:
    """A 48-bit MAC in lower-case colon form; error 7 naming ``where`` otherwise.

    A multicast (group bit set) address cannot be a unicast interface address: the kernel
    refuses it with a bare EADDRNOTAVAIL, so we say why before touching the kernel.
    """
    if not _MAC_RE.match(text):
        raise InvalidConfig(f"invalid MAC address {text!r} in {where}", "expected six hex octets like 0a:58:0a:f4:00:05")
    mac = text.replace("-", ":").lower()
    if int(mac[:2], 16) & 1:
        raise InvalidConfig(f"invalid MAC address {text!r} in {where}",
                            "it is a multicast address (lowest bit of the first octet set)")
    return mac
