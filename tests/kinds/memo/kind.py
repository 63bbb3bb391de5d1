"""A job kind that exists only in tests, with everything a first-class kind has — a dashboard
page, large-input offload, settings of its own — and no line outside this folder.

Served when `SHOPFLOOR_KIND_MODULES` names this module, as any out-of-tree kind would be.
"""

from __future__ import annotations

from pathlib import Path

from shopfloor.registry import JobKind, Presentation, WorkerBundle
from tests.kinds.memo import presentation
from tests.kinds.memo.models import MemoInput, MemoResult
from tests.kinds.memo.settings import MemoSettings

KIND = JobKind(
    name="memo",
    summary="Counts a memo's characters; a long memo travels through the artifact store.",
    task_queue="memo-test-queue",
    workflow_type="MemoTestWorkflow",
    input_model=MemoInput,
    result_model=MemoResult,
    bundle=WorkerBundle(
        workflows=["tests.kinds.memo.workflows:MemoWorkflow"],
        run_context="tests.kinds.memo.activities:worker",
    ),
    presentation=Presentation(
        page=Path(__file__).with_name("page.html"),
        page_context="tests.kinds.memo.presentation:page_context",
        offload=presentation.offload,
        settings=MemoSettings,
    ),
)
