"""How many runs of user code one worker process has going at once, per task queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from shopfloor.jobs import PROGRESS_EVERY_S
from shopfloor.registry import JobKind, kind_slots, queue_for
from shopfloor.settings import Settings
from shopfloor.usercode._handoff import shared_queue


class RunSlots:
    """The queue's slots (`registry.kind_slots`). A run holds its slot from its start until it
    is freed, whichever attempt supervises it meanwhile (local, handed over, adopting), so the
    bound holds however many activity and local-activity slots the queue's Workers have."""

    def __init__(self, settings: Settings, served: Sequence[JobKind]) -> None:
        self._sizes: dict[str, int] = {}
        for kind in served:
            queue = queue_for(kind, settings)
            self._sizes[queue] = max(self._sizes.get(queue, 0), kind_slots(kind, settings))
        self._default = settings.worker_max_concurrent_activities
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def _semaphore(self, task_queue: str) -> asyncio.Semaphore:
        queue = shared_queue(task_queue)
        if queue not in self._semaphores:
            self._semaphores[queue] = asyncio.Semaphore(self._sizes.get(queue, self._default))
        return self._semaphores[queue]

    async def take(
        self, task_queue: str, *, while_waiting: Callable[[], None]
    ) -> Callable[[], None]:
        """Waits for a slot (calling `while_waiting` every PROGRESS_EVERY_S meanwhile: an
        activity heartbeats); returns what gives it back (once)."""
        semaphore = self._semaphore(task_queue)
        taking = asyncio.ensure_future(semaphore.acquire())
        try:
            while not taking.done():
                await asyncio.wait({taking}, timeout=PROGRESS_EVERY_S)
                if not taking.done():
                    while_waiting()
        except BaseException:
            if not taking.cancel() and not taking.cancelled() and taking.exception() is None:
                semaphore.release()  # taken just as we were cancelled
            raise
        given = False

        def give_back() -> None:
            nonlocal given
            if not given:
                given = True
                semaphore.release()

        return give_back
