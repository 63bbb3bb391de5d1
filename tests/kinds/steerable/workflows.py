"""SteerableWorkflow: naps on durable timers while it is nudged, asked and relabelled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shopfloor.jobs import ReportsProgress, job_input
    from tests.kinds.steerable.models import (
        LabelChanged,
        Messages,
        Nudge,
        SetLabel,
        SteerInput,
        SteerResult,
    )


@workflow.defn(name="SteerableTestWorkflow")
class SteerableWorkflow(ReportsProgress):
    def __init__(self) -> None:
        self._messages: list[str] = []
        self._label = "unlabelled"
        self._finish = False

    @workflow.run
    async def run(self, raw: Any = None) -> SteerResult:
        job = job_input(SteerInput, raw)
        naps = 0
        for nap in range(1, job.naps + 1):
            naps = nap
            ended_early = await self.sleep(
                timedelta(seconds=job.nap_s),
                purpose=f"for nap {nap} of {job.naps} to end",
                step=f"nap {nap}",
                until=lambda: self._finish,
            )
            if ended_early:
                break
        self.report("done", step="finished")
        return SteerResult(
            messages=self._messages, label=self._label, naps_taken=naps, finished_early=self._finish
        )

    @workflow.signal(name="nudge")
    def nudge(self, nudge: Nudge) -> None:
        self._messages.append(nudge.message)

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self._finish = True

    @workflow.query(name="messages")
    def messages(self) -> Messages:
        return Messages(messages=self._messages)

    @workflow.update(name="set_label")
    def set_label(self, change: SetLabel) -> LabelChanged:
        previous, self._label = self._label, change.label
        return LabelChanged(previous=previous, current=change.label)

    @set_label.validator
    def _check_label(self, change: SetLabel) -> None:
        # Rejected updates never reach history: the caller gets the reason, the job goes on.
        if change.label.startswith("!"):
            raise ValueError(f"labels may not start with '!': {change.label!r}")
