"""Typed plugin configurations on pydantic, decoded by Go's rules, errors as CNI error 7. PURE.

Rules:
- Every model decodes the way the reference's Go struct does (``cni/spec/gojson.py``): keys
  match fields case-insensitively with an exact match winning, the last key for a field wins,
  ``null`` leaves the default, unknown keys are kept (SPEC: plugins ignore fields they do not
  know; the reference's decoder drops them, we keep them for pass-through), and values are
  never coerced (strict mode: ``"1"``, ``1.0`` and ``true`` are not ints, ``0``/``1`` are not
  bools, numbers are not strings — exactly what ``json.Unmarshal`` refuses).
- A field's only spelling at the JSON edge is its alias (camelCase); the Python name is not
  accepted as a key (Go would ignore ``host_port``; so do we).
- A validation failure names the field path the way a node admin reads it
  (``ipam.ranges[0][1].subnet``).
- A field whose value is parsed from a string (addresses, …) must say ``strict=False`` or
  use a validator: strict mode would ask for a Python object.
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from . import gojson
from .errors import InvalidConfig


def _nilable(annotation: Any) -> bool:
    """Go pointer/slice/map/interface: ``null`` resets it (anything else: ``null`` has no effect)."""
    if annotation is Any or annotation in (list, dict):
        return True
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return True
    if origin in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return False


class Model(BaseModel):
    """Base of every config model: Go key matching, no coercion, extra keys kept, immutable."""

    model_config = ConfigDict(extra="allow", populate_by_name=False, strict=True, frozen=True, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _go_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic reports the wrong type with the field path
        return gojson.match_keys(data, _go_fields(cls))


_FIELDS: dict[type[BaseModel], dict[str, bool]] = {}


def _go_fields(cls: type[BaseModel]) -> dict[str, bool]:
    """JSON name → nilable, in declaration order (Go's first-fold-match order)."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = {(f.alias or name): _nilable(f.annotation) for name, f in cls.model_fields.items()}
        _FIELDS[cls] = fields
    return fields


M = TypeVar("M", bound=BaseModel)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validate(cls: type[M], data: Any, *, where: str = "") -> M:
    """Validate ``data`` as ``cls``; a failure is error 7 naming every bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors(include_url=False):
            path = _loc(tuple(e.get("loc", ())))
            full = f"{where}.{path}" if where and path else (where or path or "<config>")
            msg = str(e.get("msg", "invalid"))
            problems.append(f"{full}: {msg}")
        first, _, why = problems[0].partition(": ")
        # The first problem's reason goes into msg too: it is what kubectl describe shows.
        why = why.removeprefix("Value error, ")
        raise InvalidConfig(f"invalid network config field {first!r}: {why}", "; ".join(problems)) from None
