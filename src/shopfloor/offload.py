"""Job input too large for a Temporal payload travels through the artifact store by reference.

Temporal refuses payloads over 2 MB (and warns from 512 KB); a large inline script, file or
STL part would otherwise fail the start, or worse, fail later and be retried. `offload_inline`
moves the large inline fields of a job's input to the store (content-addressed uploads: the
same bytes, the same URI, so idempotent submits stay idempotent) and rewrites the input to the
`artifact://` references the activities read. What still does not fit is refused at once with
the reason (`InputTooLarge`), never retried.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel

from shopfloor.artifacts import ArtifactStore

TEMPORAL_PAYLOAD_LIMIT = 2 * 1024 * 1024
# What a job's input may be once large fields are out: well under Temporal's limit (the
# workflow's own history events and the result share the same server limits).
MAX_INPUT_BYTES = 1536 * 1024


class InputTooLarge(ValueError):
    """The input cannot travel inline and has no large field that can move to the store."""


def _size(job: BaseModel) -> int:
    return len(job.model_dump_json())


def offload_inline(job: BaseModel, store: ArtifactStore, *, max_inline: int) -> BaseModel:
    """`job` with every inline field over `max_inline` bytes moved to the store (when the
    whole input is over it), or `job` itself. Raises InputTooLarge when it still cannot fit."""
    if _size(job) <= max_inline:
        return job
    data = job.model_dump(mode="json", exclude_unset=True)
    changed = _offload_fields(type(job).__name__, data, store, max_inline)
    if changed:
        job = type(job).model_validate(data)
    size = _size(job)
    if size > MAX_INPUT_BYTES:
        raise InputTooLarge(
            f"the job's input is {size // 1024} KiB inline, over the {MAX_INPUT_BYTES // 1024} "
            "KiB a job may carry: upload large parts (PUT /uploads/<name>) and pass their "
            "artifact:// URIs"
        )
    return job


def _offload_fields(model: str, data: dict[str, Any], store: ArtifactStore, limit: int) -> bool:
    changed = False
    if model == "ScriptInput":
        source = data.get("source")
        if isinstance(source, str) and len(source.encode()) > limit // 4:
            data["source_uri"] = store.put_upload("script.py", source.encode())
            data.pop("source")
            changed = True
        for f in data.get("files") or []:
            content = f.get("content") or ""
            if len(content) > limit // 4:
                raw = base64.b64decode(content) if f.get("base64") else content.encode()
                name = f["path"].rsplit("/", 1)[-1]
                f["uri"] = store.put_upload(name, raw)
                f["content"], f["base64"] = "", False
                changed = True
    elif model == "SimulationRequest":
        scene = data.get("scene") or {}
        if scene.get("kind") == "source" and len(scene.get("source", "")) > limit // 4:
            uri = store.put_upload("scene.py", scene["source"].encode())
            data["scene"] = {"kind": "uri", "uri": uri, "format": "py"}
            changed = True
        elif scene.get("kind") == "geometry" and len(scene.get("parts", [])) == 1:
            part = scene["parts"][0]
            if len(part.get("data_base64", "")) > limit // 4:
                fmt = part["format"]
                uri = store.put_upload(f"part.{fmt}", base64.b64decode(part["data_base64"]))
                data["scene"] = {
                    "kind": "uri",
                    "uri": uri,
                    "format": fmt,
                    "label": part["label"],
                    "fixed": part.get("fixed", False),
                }
                changed = True
    return changed
