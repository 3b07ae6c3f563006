"""Human-readable durations ("90s", "6h", "1d12h", "500ms") to and from float seconds.

Scenario files say `duration: 3d` and `for: 6h`; everything inside the simulator counts float
seconds. Parsing and formatting go through `Decimal` so that
`parse_duration(format_duration(x)) == x` holds exactly for every finite, non-negative float.
"""

from __future__ import annotations

import math
import re
from decimal import Context, Decimal, localcontext

# Enough digits to hold any float's integer part (max ~1.8e308) without rounding.
_EXACT = Context(prec=1000)

_UNIT_S: dict[str, Decimal] = {
    "w": Decimal(604800),
    "d": Decimal(86400),
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
_UNIT_ORDER = tuple(_UNIT_S)  # largest first
_TOKEN = re.compile(r"\s*(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[A-Za-z]*)\s*")
_UNITS_HINT = "ms, s, m, h, d, w"


def parse_duration(text: str | int | float) -> float:
    """Return the number of seconds in `text`: a number of seconds or a string like "1d12h".

    Components go from the largest unit to the smallest, each at most once ("1h30m", not
    "30m1h"). A bare number, as a number or a string, means seconds. Raises ValueError naming
    the bad text for negatives, empty strings, unknown units and anything else.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"invalid duration {text!r}: expected seconds or a string like '6h'")
    if isinstance(text, (int, float)):
        return _checked_seconds(float(text), text)
    with localcontext(_EXACT):
        total = _parse_text(text)
    return _checked_seconds(float(total), text)


def _checked_seconds(seconds: float, text: object) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: not a finite number")
    if seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    return seconds


def _parse_text(text: str) -> Decimal:
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"invalid duration {text!r}: empty")
    if stripped.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    total, pos, last_rank = Decimal(0), 0, -1
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number and a unit ({_UNITS_HINT})"
            )
        unit = match["unit"] or _bare_seconds_unit(text, pos, match.end(), len(stripped))
        if unit not in _UNIT_S:
            raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r} ({_UNITS_HINT})")
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(f"invalid duration {text!r}: units must go from largest to smallest")
        total += Decimal(match["number"]) * _UNIT_S[unit]
        pos, last_rank = match.end(), rank
    return total


def _bare_seconds_unit(text: str, start: int, end: int, length: int) -> str:
    """A number without a unit is only allowed as the whole text ("90" = 90 s)."""
    if start == 0 and end == length:
        return "s"
    raise ValueError(f"invalid duration {text!r}: a number without a unit ({_UNITS_HINT})")


def format_duration(seconds: float) -> str:
    """Return the shortest readable form of `seconds`: 86400 -> "1d", 5400 -> "1h30m".

    Uses days, hours, minutes and seconds (not weeks: "14d" reads better than "2w"), and
    milliseconds for a whole number of ms below one second. The result parses back exactly.
    """
    value = _checked_seconds(float(seconds), seconds)
    with localcontext(_EXACT):
        remainder = Decimal(repr(value))
        parts: list[str] = []
        for unit in ("d", "h", "m"):
            whole, remainder = divmod(remainder, _UNIT_S[unit])
            if whole:
                parts.append(f"{whole:f}{unit}")
        if remainder or not parts:
            parts.append(_format_seconds(remainder))
    return "".join(parts)


def _format_seconds(remainder: Decimal) -> str:
    millis = remainder * 1000
    if remainder < 1 and remainder != 0 and millis == millis.to_integral_value():
        return f"{millis.to_integral_value():f}ms"
    if remainder == remainder.to_integral_value():
        return f"{remainder.to_integral_value():f}s"
    return f"{remainder.normalize():f}s"
