"""How long an HTTP answer (a 429, a 503) asks us to wait: read the same way by every kind."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# When a 429 names no wait, back off this long (a durable timer, so it costs nothing).
DEFAULT_RETRY_AFTER_S = 30.0
MAX_RETRY_AFTER_S = 24 * 3600.0


def retry_after_s(headers: Mapping[str, str], *, now: datetime | None = None) -> float:
    """`retry-after-ms`, else `retry-after` as seconds or as an HTTP date."""
    found: float | None = None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            found = float(ms) / 1000
        except ValueError:
            found = None
    value = headers.get("retry-after")
    if found is None and value:
        try:
            found = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
                found = (when - (now or datetime.now(UTC))).total_seconds()
            except (TypeError, ValueError):
                found = None
    if found is None:
        return DEFAULT_RETRY_AFTER_S
    return min(max(found, 0.0), MAX_RETRY_AFTER_S)
