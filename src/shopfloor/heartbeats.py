"""The one heartbeat-while-waiting helper for activities.

An activity that waits (on an LLM call, a gateway, a service becoming healthy) heartbeats
while it does: a worker that dies meanwhile is noticed after the heartbeat timeout, not after
the much longer start-to-close one, and the activity is retried elsewhere. Heartbeat details
are what `shopfloor status` and GET /jobs/<id> show as its progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from temporalio import activity

from shopfloor.jobs import PROGRESS_EVERY_S


@asynccontextmanager
async def heartbeating(details: Any, *, every_s: float = PROGRESS_EVERY_S) -> AsyncIterator[None]:
    """Heartbeats `details` at once and then every `every_s` while the block runs. A callable
    `details` is called with the seconds waited so far, for each beat."""
    started = time.monotonic()

    def now() -> Any:
        return details(round(time.monotonic() - started)) if callable(details) else details

    async def beat() -> None:
        while True:
            activity.heartbeat(now())
            await asyncio.sleep(every_s)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})  # a beat that failed (no activity context) fails nothing
        if not task.cancelled():
            task.exception()


def waiting_for(what: str) -> Callable[[int], dict[str, Any]]:
    """Details that say what the activity waits for and how long it has."""
    return lambda elapsed: {"waiting_for": what, "elapsed_s": elapsed}
