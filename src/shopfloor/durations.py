"""Durations as people write them in definitions and inputs: "30s", "5m", "2h", "1d", "1h30m"."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float | int | timedelta) -> timedelta:
    """Seconds as a number, or units: "90s", "5m", "2h", "1h30m". Anything else is an error
    that says what is accepted."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError("a duration is a number of seconds or text like '30s', '5m', '2h'")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        compact = text.strip().replace(" ", "")
        parts = _PART.findall(compact)
        if not compact or "".join(n + u for n, u in parts) != compact:
            raise ValueError(
                f"invalid duration {text!r}: use a number of seconds or units s, m, h, d "
                "(e.g. '30s', '5m', '2h', '1h30m')"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0 or seconds != seconds or seconds > 366 * 86400:
        raise ValueError(f"duration out of range (0 to 366 days): {text!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# A pydantic field type: accepts "2h" or seconds, is a timedelta in code, "2h" in JSON.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
