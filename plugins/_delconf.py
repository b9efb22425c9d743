"""What a native plugin's DEL reads of its config, without pydantic (``Plugin.delete_only``). PURE.

Why: a thin pod DEL runs bridge, tuning, portmap and sbr once per attachment in one exec; importing
pydantic and building their models costs more than the DEL's own work, and DEL needs a few keys.

Rules (as cni/delegator/settings.py reads the multinic config):
- Keys are read as the pydantic model reads them (cni/spec/gojson.py: Go's case folding, the last
  key wins, ``null`` resets a nilable field and has no effect on another), with the same types and
  checks and no coercion. A malformed key raises ``Malformed``: the plugin then runs its full
  ``parse``, which reports it as error 7 with the full parser's message, exactly as before.
- Other keys are not looked at: a DEL whose config went bad in a key DEL does not use still cleans
  up (SPEC: DEL should tolerate a missing or partial config); ADD validated it all.
- Each plugin's unit tests compare what it reads here with what ``parse`` gives over their valid configs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cni.spec import gojson
from cni.spec.request import Request

T = TypeVar("T")


class Malformed(Exception):
    """A key DEL needs is malformed: the caller parses the full config to report it."""


def read_or_parse(req: Request, read: Callable[[Request], T], full: Callable[[Request], T]) -> T:
    """What DEL acts on: ``read`` (no pydantic), or, when a key it needs is malformed, ``full`` (the plugin's
    ``parse``), which reports that key as error 7 with the full parser's message."""
    try:
        return read(req)
    except Malformed:
        return full(req)


def fields(config: Mapping[str, Any], nilable: Mapping[str, bool]) -> dict[str, Any]:
    """``config``'s keys renamed to the JSON field names in ``nilable`` (field → Go nilable)."""
    return gojson.match_keys(config, nilable)


def get_bool(doc: Mapping[str, Any], key: str, default: bool) -> bool:
    val = doc.get(key, default)
    if not isinstance(val, bool):
        raise Malformed(key)
    return val


def get_int(doc: Mapping[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    val = doc.get(key, default)
    if val is None:
        return None
    if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
        raise Malformed(key)
    return val


def get_str(doc: Mapping[str, Any], key: str, default: str | None, choices: tuple[str, ...] = ()) -> str | None:
    val = doc.get(key, default)
    if val is None:
        return None
    if not isinstance(val, str) or (choices and val not in choices):
        raise Malformed(key)
    return val


def get_strs(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """A ``list[str]`` field (null or absent: empty)."""
    val = doc.get(key)
    if val is None:
        return ()
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise Malformed(key)
    return tuple(val)


def get_data_dir(doc: Mapping[str, Any], default: str) -> str:
    """``dataDir``: a non-empty absolute path (the chained models' ``DataDir``, min_length=1)."""
    val = doc.get("dataDir", default)
    if not isinstance(val, str) or not val.startswith("/"):
        raise Malformed("dataDir")
    return val
