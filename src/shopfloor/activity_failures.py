"""Activity failures that fit: the worker-side net under every activity of every kind.

An activity that raises an exception as it came (an HTTP client's, the Docker SDK's, a
storage client's) sends Temporal the whole chain of its causes, each with its stack trace:
dozens of library frames apiece. Past the server's failure size limit the server keeps only
"Failure exceeds size limit." and a cut copy, which is then what every client shows while the
activity retries. Activities turn the failures they expect into short ones themselves
(`failures.activity_failure`); this interceptor does it for any other exception too large to
travel whole: the same type (retry policies name types) and retryability, a message naming the
activity and the root cause, no causes attached. Smaller ones pass as they are.
"""

from __future__ import annotations

import traceback
from typing import Any

from temporalio import activity
from temporalio.exceptions import FailureError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from shopfloor.failures import activity_failure

# The formatted chain (messages and stack traces) of an exception sent as it is, at most:
# well below the server's failure size limit.
MAX_RAW_FAILURE_CHARS = 4000


def too_large(err: BaseException) -> bool:
    """Whether `err` with its causes and stack traces would make a failure past the limit."""
    size = 0
    for line in traceback.format_exception(err):
        size += len(line)
        if size > MAX_RAW_FAILURE_CHARS:
            return True
    return False


class FittingFailuresInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _FittingFailures(next)


class _FittingFailures(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except FailureError:
            raise  # Temporal's own (ApplicationError, CancelledError, ...): as raised
        except Exception as err:
            if not too_large(err):
                raise
            raise activity_failure(activity.info().activity_type, err) from None
