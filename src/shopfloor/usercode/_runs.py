"""The runs a worker keeps between attempts: each run's execution (its job dir, uid, slot and
supervising task, with its `Handoff` custody) and the results of finished runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shopfloor.sandbox import Progress, SandboxOutcome, UidLease, remove_run_dir
from shopfloor.sandbox.adoption import Adoptions
from shopfloor.usercode._containment import Containment
from shopfloor.usercode._handoff import Custody, Handoff


class Execution:
    """One start of user code and what it holds until it is freed: its job dir, its uid lease,
    its run slot and the task that supervises it (the cgroups are that task's). Shared by the
    attempts of one activity on this worker: the one that started it, then any that adopt it;
    `custody` says which, if any, has it now."""

    def __init__(
        self, attempt: int, contain: Containment | None, path: Path, lease: UidLease | None
    ) -> None:
        self.custody = Handoff.prepared_by(attempt)
        self.attempt = attempt  # of the activity that started it
        # A local attempt's count of the runs its lost workflow-task attempts took with them
        # (`lost_workflow_tasks`), asked of the server while the run goes on.
        self.lost_before: asyncio.Task[int] | None = None
        self.contain, self.path, self.lease = contain, path, lease
        self.task: asyncio.Task[SandboxOutcome] | None = None
        self.warm = False  # its program was forked from the warm zygote
        self.give_back_slot: Callable[[], None] = lambda: None
        self.heartbeat: Callable[[Progress], None] | None = None  # its owner's, if any
        self.last_progress: Progress | None = None
        self.waiter: asyncio.Task[Any] | None = None  # the owner's activity task, while it waits

    async def run_number(self) -> int:
        """Which run of the job's user code this is: the attempt that started it, after the
        runs that lost workflow-task attempts took with them."""
        lost = self.lost_before
        if lost is None:
            return self.attempt
        try:
            # Shielded: an attempt that stops waiting must not cancel the count for another.
            return self.attempt + await asyncio.shield(lost)
        except asyncio.CancelledError:
            if lost.cancelled():  # the run was closed first: nothing more is known
                return self.attempt
            raise

    def run_number_now(self) -> int:
        """`run_number` without waiting: the lost runs count once the server has said."""
        lost = self.lost_before
        known = lost is not None and lost.done() and not lost.cancelled()
        return self.attempt + (lost.result() if known and lost is not None else 0)

    @property
    def started(self) -> bool:
        return self.custody.state is not Custody.PREPARING

    def report(self, progress: Progress) -> None:
        self.last_progress = progress
        if self.heartbeat is not None:
            self.heartbeat(progress)

    def report_to(self, heartbeat: Callable[[Progress], None] | None) -> None:
        """Progress goes to `heartbeat` from now on, starting with the latest: a run taken
        over from a local attempt (which cannot heartbeat) shows where it is at once."""
        self.heartbeat = heartbeat
        if heartbeat is not None and self.last_progress is not None:
            heartbeat(self.last_progress)

    def unwatched(self) -> asyncio.Task[Any] | None:
        """No attempt waits on it or sees its progress any more; returns the one that waited."""
        waiter, self.waiter, self.heartbeat = self.waiter, None, None
        return waiter

    async def close(self) -> None:
        """Kills what still runs, waits for it, then frees the job dir, what the run left in
        the zygotes' private /tmp, the slot and the uid. Once."""
        if not self.custody.close():
            return
        self.heartbeat = None
        if self.lost_before is not None:
            self.lost_before.cancel()  # a no-op once it is done
        if self.task is not None:
            self.task.cancel()  # a no-op once it is done
            await asyncio.wait({self.task})
            if not self.task.cancelled():
                self.task.exception()  # seen: it was this run's, and it is over
        remove_run_dir(self.path)
        self.give_back_slot()
        lease, self.lease = self.lease, None
        if self.contain is not None:
            # What the run left in its /tmp and /dev/shm went with its own tmpfs.
            self.contain.release_uid(lease)


async def _nothing_to_free(_: object) -> None:
    return None


class Runs:
    """A worker's runs whose activity attempt Temporal lost while they went on (kept for the
    adoption window), and the results of finished runs (kept as long, in case Temporal never
    got them): a later attempt of the same activity on this worker takes either over."""

    def __init__(self, window_s: float) -> None:
        self.executions: Adoptions[Execution] = Adoptions(window_s, Execution.close)
        self.results: Adoptions[Any] = Adoptions(
            window_s, _nothing_to_free, max_detached=256, what=""
        )

    async def close(self) -> None:
        """The worker stops: kept runs are killed and freed (their jobs run again elsewhere)."""
        await self.executions.close()
        await self.results.close()
