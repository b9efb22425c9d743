"""Go ``encoding/json`` decoding rules, for inputs the reference decodes into a Go struct. PURE.

The callers (containerd's go-cni, libcni, Multus) and the reference plugins are Go programs;
what ``json.Unmarshal`` into their structs accepts is the compatibility contract, not pydantic's
defaults. containerd 1.6's go-cni ``PortMapping`` has no json tags, so it sends
``{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}`` and every Go plugin
takes it. The rules, as Go's ``decode.go`` (``object``/``literalStore``) applies them:

- Key → field: an exact match of the field's JSON name wins; otherwise the first field (in
  declaration order) whose name equals the key under Unicode simple case folding
  (``bytes.EqualFold``). That fold equates ASCII letters across case and also the Kelvin sign
  U+212A with ``k`` and the long s U+017F with ``s`` (``"ſnat"`` sets ``snat``); no other
  non-ASCII rune folds to an ASCII letter, and every field name we declare is ASCII, so
  ``fold`` below is exact for our fields. Keys matching no field are ignored (kept aside
  here, as the SPEC lets plugins pass unknown keys on).
- Keys are applied in document order, so of two keys naming one field the LAST wins
  (``{"hostPort": 1, "HostPort": 2}`` → 2). ``decode_object_pairs`` keeps that order for a key
  repeated verbatim too (a plain dict would keep its first position). "Wins" is Go's: the later
  value is decoded INTO the earlier one (``merge``) — a struct keeps the fields the later object
  does not set, a slice's elements are decoded into the existing ones and the slice cut to the
  later length. The reference shows it: host-local given ``"ipam"`` twice uses the ranges of
  both. Not modelled (documented gaps, adversarial input only): a Go map value or interface{}
  is replaced rather than merged, and a verbatim repeat whose later value is null loses the
  earlier one even for a scalar field; a key repeated verbatim with another spelling of it in
  between is applied at its last position (the parse merges verbatim repeats before fields are
  known, and it must not fold: map keys are data).
- ``null``: into a pointer, slice, map or interface sets nil; into anything else it has no
  effect. Both read as "absent" here (the field keeps its default) — the difference shows only
  when a later null follows an earlier value for the same field: a nilable field is reset,
  a scalar keeps the earlier value.
- Values: an int field takes only an integral JSON number without fraction or exponent
  (``1.0`` and ``1e3`` are refused: ``strconv.ParseInt`` of the literal fails); a float field
  any number; a bool only ``true``/``false`` (not 0/1, not ``"true"``); a string only a string.
  Nothing is coerced. The pydantic models get this from strict mode (cni/spec/model.py); the
  hand-written IPAM parsers, which avoid pydantic for start-up, use ``go_int``/``go_bool``.

A schema describes a Go struct: ``{json name: spec}`` in declaration order, where a spec is
``SCALAR`` (non-nilable leaf), ``NILABLE`` (pointer/slice/map/interface leaf, or a leaf whose
inside is decoded elsewhere), a nested schema (an object field), or ``ListOf(spec)``. No
pydantic, no I/O: host-local/static/whereabouts import this on their start-up path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Union

from .errors import InvalidConfig

SCALAR: Final = "scalar"
NILABLE: Final = "nilable"


@dataclass(frozen=True)
class ListOf:
    """A JSON array field whose items are decoded by ``item`` (a schema or a leaf)."""

    item: Spec


Spec = Union[str, ListOf, "Schema"]
Schema = Mapping[str, Spec]

# The two non-ASCII runes whose simple fold orbit holds an ASCII letter (unicode.SimpleFold:
# k → K → U+212A KELVIN SIGN → k; s → S → U+017F LATIN SMALL LETTER LONG S → s).
_NON_ASCII_FOLDS: Final = str.maketrans({"\u212a": "k", "\u017f": "s"})


def fold(key: str) -> str:
    """``key`` under Go's case folding, exact for comparing with an ASCII field name."""
    if key.isascii():
        return key.lower()
    # Only ASCII upper case may be lowered here: str.lower() would also fold runes Go does not
    # equate with an ASCII letter (U+0130 'İ' lowers to "i̇").
    return "".join(c.lower() if c.isascii() else c for c in key.translate(_NON_ASCII_FOLDS))


class _Index:
    """The lookup table Go builds per struct type: exact names, then folded names (first wins)."""

    __slots__ = ("exact", "folded")

    def __init__(self, names: Any) -> None:
        self.exact: dict[str, str] = {}
        self.folded: dict[str, str] = {}
        for name in names:
            self.exact.setdefault(name, name)
            self.folded.setdefault(fold(name), name)

    def field(self, key: str) -> str | None:
        return self.exact.get(key) or self.folded.get(fold(key))


_INDEXES: dict[int, tuple[Any, _Index]] = {}


def _index(names: Any) -> _Index:
    # Keyed by identity: schemas and models are module-level constants, built once per process.
    hit = _INDEXES.get(id(names))
    if hit is None or hit[0] is not names:
        hit = (names, _Index(names))
        _INDEXES[id(names)] = hit
    return hit[1]


_MISSING: Final = object()


def merge(old: Any, new: Any) -> Any:
    """``new`` decoded by Go into the value ``old`` already holds (struct/slice semantics)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for key, value in new.items():
            prev = out.pop(key, _MISSING)
            out[key] = value if prev is _MISSING or value is None else merge(prev, value)
        return out
    if isinstance(old, list) and isinstance(new, list):
        return [merge(old[i], v) if i < len(old) and v is not None else v for i, v in enumerate(new)]
    return new


def match_keys(obj: Mapping[str, Any], fields: Mapping[str, bool]) -> dict[str, Any]:
    """One object level: keys renamed to the field they set, Go's null and last-wins rules.

    ``fields`` maps each JSON field name to whether it is nilable. Unknown keys are kept
    as they are (after the fields, so they can never shadow one).
    """
    index = _index(fields)
    out: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    for key, value in obj.items():
        name = index.field(key)
        if name is None:
            unknown[key] = value
        elif value is None:
            if fields[name]:
                out.pop(name, None)  # nil: back to the default
            # else: no effect, an earlier value for the field stays
        else:
            prev = out.pop(name, _MISSING)  # re-insert: position follows the last key that set it
            out[name] = value if prev is _MISSING else merge(prev, value)
    for key, value in unknown.items():
        out.setdefault(key, value)
    return out


_NILABILITY: dict[int, tuple[Schema, dict[str, bool]]] = {}


def _nilability(schema: Schema) -> dict[str, bool]:
    hit = _NILABILITY.get(id(schema))
    if hit is None or hit[0] is not schema:
        hit = (schema, {name: spec != SCALAR for name, spec in schema.items()})
        _NILABILITY[id(schema)] = hit
    return hit[1]


def canonical(obj: Any, spec: Spec) -> Any:
    """``obj`` with every object key, at every depth ``spec`` describes, in its field's spelling.

    Values of the wrong JSON type are returned unchanged: the parser that reads the field
    reports them with its path. Subtrees the schema does not describe are left untouched.
    """
    if isinstance(spec, ListOf):
        if isinstance(obj, list):
            return [canonical(v, spec.item) for v in obj]
        return obj
    if isinstance(spec, str) or not isinstance(obj, dict):
        return obj
    out = match_keys(obj, _nilability(spec))
    for name, sub in spec.items():
        if not isinstance(sub, str) and name in out:
            out[name] = canonical(out[name], sub)
    return out


def decode_object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for the stdlib decoder: a repeated key moves to its last position.

    A dict keeps a re-assigned key where it was first inserted; Go applies keys in document
    order, so ``{"hostPort":1,"HostPort":2,"hostPort":3}`` must decode to 3, which
    ``match_keys`` gets right only if "hostPort" sits after "HostPort".
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        prev = out.pop(key, _MISSING)
        out[key] = value if prev is _MISSING or value is None else merge(prev, value)
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Go's scanner refuses NaN/Infinity; stdlib json would not


def loads(raw: bytes | str) -> Any:
    """Parse JSON keeping Go's key order semantics (``decode_object_pairs``).

    The stdlib decoder, not orjson: only it exposes key pairs in document order, and it is
    already loaded on the exec path (orjson's import costs more than the parse of a config).
    Raises ``ValueError`` (``json.JSONDecodeError``) on malformed input.
    """
    import json

    return json.loads(raw, object_pairs_hook=decode_object_pairs, parse_constant=_no_constant)


# ---- values, as literalStore refuses them ---------------------------------------------------


def _type_name(val: Any) -> str:
    if val is None:
        return "null"
    if isinstance(val, bool):
        return "a boolean"
    if isinstance(val, (int, float)):
        return f"the number {val!r}"
    if isinstance(val, str):
        return "a string"
    if isinstance(val, list):
        return "an array"
    return "an object"


def _bad(path: str, want: str, val: Any) -> InvalidConfig:
    return InvalidConfig(f"invalid network config field {path!r}: must be {want}, got {_type_name(val)}",
                         "the reference plugins decode this field with Go's encoding/json, which does not convert types")


def go_int(val: Any, path: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """An int field: an integral JSON number (``1.0``, ``1e3``, ``"1"`` and ``true`` refused)."""
    if isinstance(val, bool) or not isinstance(val, int):
        raise _bad(path, "an integer", val)
    if (lo is not None and val < lo) or (hi is not None and val > hi):
        raise InvalidConfig(f"invalid network config field {path!r}: {val} is out of range "
                            f"{lo if lo is not None else ''}..{hi if hi is not None else ''}")
    return val


def go_bool(val: Any, path: str) -> bool:
    """A bool field: JSON ``true``/``false`` only."""
    if not isinstance(val, bool):
        raise _bad(path, "true or false", val)
    return val


def go_str(val: Any, path: str) -> str:
    """A string field: a JSON string only."""
    if not isinstance(val, str):
        raise _bad(path, "a string", val)
    return val
