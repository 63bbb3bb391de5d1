"""Every workflow a worker runs first checks its own id (`shopfloor.ids`): a job started by
any client (the `temporal` CLI, another SDK) with an id such as `uploads`, `a/b` or `..` fails
at once with the reason, before it runs or writes anything. Kept apart from heavier modules:
the SDK's workflow sandbox imports it."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from shopfloor.ids import job_id_problem

INVALID_JOB_ID = "InvalidJobId"


class _CheckOwnId(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        job_id = workflow.info().workflow_id
        problem = job_id_problem(job_id)
        if problem:
            raise ApplicationError(
                f"refused to run job {job_id[:100]!r}: {problem}",
                type=INVALID_JOB_ID,
                non_retryable=True,
            )
        return await super().execute_workflow(input)


class JobIdInterceptor(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _CheckOwnId
