"""Job ids. A job id is the workflow id; with an idempotency key it is derived from the key."""

from __future__ import annotations

import hashlib
import json
import uuid

from pydantic import BaseModel


def job_id_for(kind: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return f"{kind}-{uuid.uuid4().hex}"
    # sha256, not hash(): the id must be the same in every process, on every machine.
    return f"{kind}-{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}"


def input_digest(job_input: BaseModel) -> str:
    """Fingerprint of a job's input, kept in the workflow memo to spot a reused key."""
    canonical = json.dumps(job_input.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
