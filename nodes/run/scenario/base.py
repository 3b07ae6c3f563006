"""What every part of a scenario file is built from: the frozen model base, the field types
(durations, IDs, counts), and errors at a path below the object that found them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from simulator import parse_duration

Loc = tuple[str | int, ...]

_DURATION_PATTERN = r"^\s*((\d+(\.\d+)?|\.\d+)\s*(ms|s|m|h|d|w)\s*)+$|^\d+(\.\d+)?$"
_DURATION_JSON = {
    "anyOf": [
        {"type": "number", "minimum": 0, "description": "seconds"},
        {"type": "string", "pattern": _DURATION_PATTERN},
    ],
    "examples": ["90s", "15m", "6h", "1d12h", "500ms"],
}
Seconds = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_JSON)]
PositiveSeconds = Annotated[Seconds, Field(gt=0)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
Count = Annotated[int, Field(ge=0, strict=True)]
PositiveCount = Annotated[int, Field(gt=0, strict=True)]


class PathErrors(ValueError):
    """Problems found by one validator, each at a path below the object it validated."""

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(error_line("here", loc, msg) for loc, msg in errors))
        self.errors = errors


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def error_line(source: str, loc: Loc, message: str) -> str:
    path = ".".join(str(part) for part in loc) or source
    return f"{path}: {message}"
