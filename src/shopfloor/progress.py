"""Job state vocabulary: the statuses a job never leaves, and what a running job says about
itself through the standard `progress` query.

Light (pydantic only): the controller and the CLI read it, workflows report it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

# The statuses a job never leaves, by name (as the API and the CLI show them).
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELED", "TERMINATED", "TIMED_OUT"})


def is_terminal(status: str) -> bool:
    return status in TERMINAL


class WorkflowProgress(BaseModel):
    """Where a job is, in its own words, even while no activity runs: asleep on a durable
    timer, waiting for a signal, running a child workflow."""

    status: str = Field(description='one line, e.g. "waiting until 06:00 UTC for phase 2"')
    step: str | None = Field(None, description="the step or phase the job is in")
    wake_at: datetime | None = Field(None, description="when a durable timer wakes the job")
    details: dict[str, Any] = Field(default_factory=dict)
