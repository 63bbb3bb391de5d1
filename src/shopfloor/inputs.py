"""What every job input shares: strictness, and errors that name the field.

Light (pydantic only): models, the controller, the CLI and workflows all use it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictInput(BaseModel):
    """Base of job inputs: an unknown field is an error (`timeout_sec` must not silently run
    with the default timeout), and NaN or Infinity are not numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def describe_errors(err: ValidationError, *, limit: int = 5) -> str:
    """`timeout_sec: Extra inputs are not permitted; memory_mb: …` — field and reason, never
    the (possibly huge) input itself."""
    parts = []
    for error in err.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "input"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"… and {more} more")
    return "; ".join(parts)
