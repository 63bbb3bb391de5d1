"""Job ids. A job id is the workflow id; with an idempotency key it is derived from the key.

A job id is also the job's namespace in the artifact store (`artifact://<job id>/…`), so an
id names a directory: ids that contain path syntax, or that equal a system area of the store
(uploads live in `uploads/`), would let a job write over what is not its own. Such ids are
refused by the controller and, for workflows started by any other client, by the workflow
itself (`shopfloor.idguard`), before it does anything.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

from pydantic import BaseModel

# System areas of the artifact store: no job id may equal one (compared case-insensitively:
# a case-insensitive file system or bucket browser would show them as one).
RESERVED_AREAS = frozenset({"uploads"})
MAX_JOB_ID = 255  # one path component
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def job_id_problem(job_id: str) -> str | None:
    """Why `job_id` cannot be a job id, or None."""
    if not job_id:
        return "a job id cannot be empty"
    if len(job_id) > MAX_JOB_ID:
        return f"a job id is at most {MAX_JOB_ID} characters"
    if _UNSAFE.search(job_id):
        return "a job id cannot contain '/', '\\' or control characters (it names a directory)"
    if job_id.startswith("."):
        return "a job id cannot start with '.' ('.', '..' and hidden names are path syntax)"
    if job_id.lower() in RESERVED_AREAS:
        return f"{job_id!r} is reserved for the artifact store's {job_id.lower()} area"
    return None


def check_job_id(job_id: str) -> str:
    """`job_id`, or ValueError saying why it cannot be one."""
    problem = job_id_problem(job_id)
    if problem:
        raise ValueError(f"invalid job id {job_id[:100]!r}: {problem}")
    return job_id


def job_id_for(kind: str, idempotency_key: str | None) -> str:
    """The id of a job the controller starts, checked like any other (a kind from a module
    outside this package names its own ids' prefix)."""
    if idempotency_key is None:
        return check_job_id(f"{kind}-{uuid.uuid4().hex}")
    # sha256, not hash(): the id must be the same in every process, on every machine.
    return check_job_id(f"{kind}-{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}")


def input_digest(job_input: BaseModel) -> str:
    """Fingerprint of a job's input, kept in the workflow memo to spot a reused key."""
    canonical = json.dumps(job_input.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
