"""Typed plugin configurations on pydantic, with errors turned into CNI error 7. PURE.

Rules: camelCase exists only at the JSON edge (aliases); unknown keys are allowed and kept
(SPEC: plugins must ignore fields they do not know); a validation failure names the field
path the way a node admin reads it (``ipam.ranges[0][1].subnet``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InvalidConfig


class Model(BaseModel):
    """Base of every config model: camelCase aliases, extra keys kept, immutable."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True, defer_build=True)


class Strict(Model):
    """For sub-objects where an unknown key is a likely typo worth refusing."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, defer_build=True)


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
