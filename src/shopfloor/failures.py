"""What went wrong, in words: the one walker over a Temporal failure's chain of causes.

A failure reaches a client (or a workflow) wrapped: `WorkflowFailureError` → `ActivityError`
("Activity task failed") → `ApplicationError` (what the activity raised) → its own causes.
The wrappers' messages say nothing; the root cause's says what happened. `failure_message`
gives the chain's messages without the wrappers, shortened so that the root's survives.

Imported by workflows: deterministic and light (the SDK's exception types only).
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

# Messages of wrappers that say only where a failure passed, not what it was. The server's
# "Failure exceeds size limit." wraps a failure too large to keep whole: its cause (cut to a
# size the server keeps) is the real error.
WRAPPERS = frozenset(
    {
        "Activity task failed",
        "Child Workflow execution failed",
        "Workflow execution failed",
        "Workflow update failed",
        "Failure exceeds size limit.",
    }
)
# What a status or a step shows at most; the root cause's message is kept whole when it fits.
MAX_MESSAGE_CHARS = 2000


def causes(err: BaseException) -> list[BaseException]:
    """`err`, then what caused it, down to the root (Temporal's `.cause` is `__cause__`)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or getattr(current, "cause", None)
    return chain


def root_cause(err: BaseException) -> BaseException:
    return causes(err)[-1]


def message_of(err: BaseException) -> str:
    """An exception's own message (a Temporal failure's without its type prefix)."""
    return getattr(err, "message", None) or str(err)


def root_message(err: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The root cause's message, shortened to `limit` characters."""
    return shorten(message_of(root_cause(err)), limit)


def failure_message(err: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The chain's messages, outermost first, wrappers and repeats left out, joined by ": ".

    Longer than `limit`: the outer messages give way first, so the root cause's message (the
    real error) is what remains, never "Failure exceeds size limit."."""
    return _joined([message_of(link) for link in causes(err)], limit) or shorten(str(err), limit)


def proto_failure_message(failure: Any, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`failure_message` of a failure as the server keeps it (`temporalio.api.failure.v1.
    Failure`: an activity's last failure in a workflow's description)."""
    messages = []
    while failure is not None:
        messages.append(failure.message)
        failure = failure.cause if failure.HasField("cause") else None
    return _joined(messages, limit)


def _joined(messages: list[str], limit: int) -> str:
    parts: list[str] = []
    for i, message in enumerate(messages):
        wrapper = message in WRAPPERS and i < len(messages) - 1
        if message and not wrapper and message not in parts:
            parts.append(message)
    text = ": ".join(parts)
    while len(text) > limit and len(parts) > 1:
        parts.pop(0)
        text = "…: " + ": ".join(parts)
    return shorten(text, limit)


# An activity's own failure message at most: with no causes attached (`activity_failure`),
# the whole failure stays far below the size at which the server keeps only "Failure exceeds
# size limit." and a cut copy.
MAX_ACTIVITY_MESSAGE_CHARS = 1000


def activity_failure(
    what: str, err: BaseException, *, limit: int = MAX_ACTIVITY_MESSAGE_CHARS, **kwargs: Any
) -> ApplicationError:
    """The failure an activity raises for `err` (`raise activity_failure(...) from None`):
    `what` failed, err's type, then the messages of its chain of causes down to the root,
    shortened to `limit` so the root cause's survives. Its causes are not attached: each
    would carry its stack trace (an HTTP client's run to dozens of frames), and a failure
    over the server's size limit reaches every client as "Failure exceeds size limit.".
    `kwargs` go to the ApplicationError (non_retryable, next_retry_delay, ...); its type is
    err's class name unless given, as Temporal names a failure raised as it is."""
    message = f"{what}: {type(err).__name__}: {failure_message(err, limit)}"
    kwargs.setdefault("type", type(err).__name__)
    return ApplicationError(shorten(message, limit), **kwargs)


def job_failure_message(err: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Why a job (a `WorkflowFailureError`) ended: a cancelled, terminated or timed-out job
    says just that; a failed one gives its `failure_message`."""
    cause = getattr(err, "cause", None) or err.__cause__
    if isinstance(cause, CancelledError):
        return "cancelled"
    if isinstance(cause, TerminatedError):
        return f"terminated: {cause.message}"
    if isinstance(cause, TemporalTimeoutError):
        return "workflow timed out"
    return failure_message(err, limit)


def failure_details(err: BaseException) -> Any:
    """The first details an ApplicationError in the chain carries (a failed step's partial
    result), else None."""
    for link in causes(err):
        if isinstance(link, ApplicationError) and link.details:
            return link.details[0]
    return None


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, cut in the middle to `limit` characters: its start says what failed, its end
    is often the innermost detail."""
    if len(text) <= limit:
        return text
    keep = max(limit - 3, 2)
    head = keep // 2
    return text[:head] + " … " + text[len(text) - (keep - head) :]
