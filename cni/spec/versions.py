"""CNI specification versions and their capabilities. PURE.

SPEC "Version considerations": a plugin lists the versions it supports in its
VERSION answer; a runtime must not send a version the plugin does not list.
"""

from __future__ import annotations

from .errors import IncompatibleVersion

ALL: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
# The keys of the versions we speak, computed once (``key`` is called ≈ 100 times per pod ADD in the daemon).
_KEYS: dict[str, tuple[int, int, int]] = {v: (int(v[0]), int(v[2]), int(v[4])) for v in ALL}


def key(version: str) -> tuple[int, int, int]:
    """A sortable key for a semantic version string; raises IncompatibleVersion when malformed."""
    known = _KEYS.get(version)
    if known is not None:
        return known
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise IncompatibleVersion(f"invalid cniVersion {version!r}", "expected MAJOR.MINOR.PATCH, e.g. 1.0.0")
    major, minor, patch = (int(p) for p in parts)
    return (major, minor, patch)


def at_least(version: str, floor: str) -> bool:
    return key(version) >= key(floor)


def require_supported(version: str, supported: tuple[str, ...] = ALL) -> str:
    """Return ``version`` when it is one we speak, else raise error 1 naming what we do speak."""
    key(version)
    if version not in supported:
        raise IncompatibleVersion(
            f"incompatible CNI versions: config is {version!r}, plugin supports {list(supported)}",
        )
    return version


# Which commands exist at which version (SPEC: CHECK since 0.4.0, STATUS and GC since 1.1.0).
COMMAND_FLOOR: dict[str, str] = {
    "ADD": "0.1.0",
    "DEL": "0.1.0",
    "CHECK": "0.4.0",
    "STATUS": "1.1.0",
    "GC": "1.1.0",
    "VERSION": "0.1.0",
}
