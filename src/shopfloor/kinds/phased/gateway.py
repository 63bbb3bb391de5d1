"""HTTP calls a phased job makes from the worker: agent turns through the gateway (seed 003)
and plain `http` steps. Secrets come from the worker's settings, never from job input."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta

import httpx
from temporalio.exceptions import ApplicationError

from shopfloor import heartbeats
from shopfloor.failures import activity_failure
from shopfloor.heartbeats import waiting_for
from shopfloor.retry_after import retry_after_s

GATEWAY_REJECTED = "GatewayRejected"  # a 4xx: the same call cannot succeed later
UNEXPECTED_STATUS = "UnexpectedStatus"
RETRYABLE_4XX = {408, 429}
# Longer answers go to the artifact store; workflow history keeps a URI.
MAX_INLINE_TEXT = 16 * 1024
MAX_RETRY_AFTER_S = 3600.0


async def heartbeating(call: Awaitable[httpx.Response], what: str) -> httpx.Response:
    """Awaits `call`, heartbeating while it runs: a turn can take minutes, and a worker that
    dies meanwhile is noticed after the heartbeat timeout, not after the 300 s call timeout.
    A cancelled activity takes the request with it."""
    async with heartbeats.heartbeating(waiting_for(what)):
        return await call


def raise_for_status(response: httpx.Response, what: str, *, expected: list[int]) -> None:
    """Retryable: 5xx, 408, 429 (honouring Retry-After). Anything else unexpected is final."""
    if response.status_code in expected:
        return
    message = f"{what}: HTTP {response.status_code}: {response.text[:500].strip()}"
    if response.status_code >= 500 or response.status_code in RETRYABLE_4XX:
        raise ApplicationError(message, next_retry_delay=_retry_after(response))
    error_type = GATEWAY_REJECTED if 400 <= response.status_code < 500 else UNEXPECTED_STATUS
    raise ApplicationError(message, type=error_type, non_retryable=True)


def network_error(err: httpx.HTTPError, what: str) -> ApplicationError:
    """Retryable: the gateway may be restarting. Raise it `from None`: short, naming the root
    cause, with no chain of causes to take it past the server's failure size limit."""
    return activity_failure(what, err)


def _retry_after(response: httpx.Response) -> timedelta | None:
    """The wait the answer asks for (Retry-After as seconds or a date), at most an hour;
    None when it names none: then the step's own backoff applies."""
    if "retry-after" not in response.headers and "retry-after-ms" not in response.headers:
        return None
    return timedelta(seconds=min(retry_after_s(response.headers), MAX_RETRY_AFTER_S))
