"""Job input too large for a Temporal payload travels through the artifact store by reference.

Temporal refuses payloads over 2 MB (and warns from 512 KB); a large inline script, file or
STL part would otherwise fail the start, or worse, fail later and be retried. `offload_inline`
moves the large inline fields of a job's input to the store (which fields, and how the input
names them instead, is the kind's own `Presentation.offload`) (content-addressed uploads: the
same bytes, the same URI, so idempotent submits stay idempotent) and rewrites the input to the
`artifact://` references the activities read. What still does not fit is refused at once with
the reason (`InputTooLarge`), never retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from shopfloor.artifacts import ArtifactStore
from shopfloor.registry import PutUpload

Offload = Callable[[dict[str, Any], PutUpload, int], bool]

TEMPORAL_PAYLOAD_LIMIT = 2 * 1024 * 1024
# What a job's input may be once large fields are out: well under Temporal's limit (the
# workflow's own history events and the result share the same server limits).
MAX_INPUT_BYTES = 1536 * 1024


class InputTooLarge(ValueError):
    """The input cannot travel inline and has no large field that can move to the store."""


def _size(job: BaseModel) -> int:
    return len(job.model_dump_json())


def offload_inline(
    job: BaseModel, store: ArtifactStore, *, max_inline: int, offload: Offload | None
) -> BaseModel:
    """`job` with the large inline fields its kind's `offload` picks moved to the store (when
    the whole input is over `max_inline` bytes), or `job` itself. Raises InputTooLarge when it
    still cannot fit."""
    if _size(job) <= max_inline:
        return job
    if offload is not None:
        data = job.model_dump(mode="json", exclude_unset=True)
        if offload(data, store.put_upload, max_inline):
            job = type(job).model_validate(data)
    size = _size(job)
    if size > MAX_INPUT_BYTES:
        raise InputTooLarge(
            f"the job's input is {size // 1024} KiB inline, over the {MAX_INPUT_BYTES // 1024} "
            "KiB a job may carry: upload large parts (PUT /uploads/<name>) and pass their "
            "artifact:// URIs"
        )
    return job
