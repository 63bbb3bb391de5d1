"""Uploads (job inputs too big to inline) and artifacts (what jobs produced)."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from shopfloor.artifacts import SCHEME
from shopfloor.controller.deps import AUTH, SettingsDep, StoreDep
from shopfloor.controller.links import artifact_url

MAX_UPLOAD = 64 * 1024 * 1024

router = APIRouter(tags=["artifacts"], dependencies=AUTH)


@router.put("/uploads/{name}", status_code=201)
async def upload(name: str, request: Request, store: StoreDep, settings: SettingsDep):
    """Upload an input file (a large script, STEP/STL geometry); pass the URI in a job."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_UPLOAD:
            raise HTTPException(413, f"upload larger than {MAX_UPLOAD // 2**20} MiB")
    uri = store.put_upload(name, bytes(data))
    return {"uri": uri, "url": artifact_url(settings.public_controller_url, uri)}


@router.get("/artifacts/{path:path}")
async def artifact(path: str, store: StoreDep) -> FileResponse:
    file = store.path_for(SCHEME + path)
    if not file.is_file():
        raise HTTPException(404, f"no artifact {path}")
    media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return FileResponse(file, media_type=media_type)
