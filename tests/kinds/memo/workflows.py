"""MemoTestWorkflow: one activity that counts the memo's characters, wherever its text is."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shopfloor.jobs import job_input
    from tests.kinds.memo.models import MemoInput, MemoResult
    from tests.kinds.memo.stubs import MEMO_CHARS


@workflow.defn(name="MemoTestWorkflow")
class MemoWorkflow:
    @workflow.run
    async def run(self, raw: Any = None) -> MemoResult:
        memo = job_input(MemoInput, raw)
        chars = await MEMO_CHARS.execute(memo, start_to_close_timeout=timedelta(seconds=30))
        return MemoResult(title=memo.title, chars=chars, text_uri=memo.text_uri)
