"""Uploads (job inputs too big to inline) and artifacts (what jobs produced).

Artifacts are untrusted bytes (a job's code wrote them). They are opened under the store's
root without following symlinks; every response says `X-Content-Type-Options: nosniff` and
`Content-Security-Policy: sandbox`; what a browser could run (HTML, SVG, JS, XML, anything of
an unknown type) comes as a download (`Content-Disposition: attachment`); video, audio,
images, plain text and JSON are shown inline. HTTP Range (206) works, for video seeking.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from shopfloor.artifacts import SCHEME, ArtifactError
from shopfloor.controller.deps import AUTH, SettingsDep, StoreDep, require_token
from shopfloor.controller.links import artifact_url, signature_valid

MAX_UPLOAD = 64 * 1024 * 1024
_INLINE_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"}
_INLINE_OTHER = {"text/plain", "text/csv", "application/json"}
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cache-Control": "private, max-age=60",
}

router = APIRouter(tags=["artifacts"])


@router.put("/uploads/{name}", status_code=201, dependencies=AUTH)
async def upload(name: str, request: Request, store: StoreDep, settings: SettingsDep):
    """Upload an input file (a large script, STEP/STL geometry); pass the URI in a job."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_UPLOAD:
            raise HTTPException(413, f"upload larger than {MAX_UPLOAD // 2**20} MiB")
    try:
        uri = store.put_upload(name, bytes(data))
    except ArtifactError as err:
        raise HTTPException(422, str(err)) from err
    return {"uri": uri, "url": artifact_url(settings, uri)}


def token_or_signed_link(
    request: Request,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="alternative to the header")] = None,
    exp: Annotated[str | None, Query(description="signed link: expiry (unix seconds)")] = None,
    sig: Annotated[str | None, Query(description="signed link: signature")] = None,
) -> None:
    """A signed link (from a result's `links`) or the API token."""
    if settings.api_token is not None and exp is not None and sig is not None:
        path = request.path_params.get("path", "")
        if signature_valid(settings, path, exp, sig):
            return
        raise HTTPException(403, "this link has expired or is not valid: get a fresh one")
    require_token(settings=settings, authorization=authorization, token=token, request=request)


def disposition(media_type: str) -> str:
    """`inline` for what a browser only displays; `attachment` for what it could run."""
    if media_type.startswith(("video/", "audio/")) or media_type in _INLINE_IMAGES:
        return "inline"
    return "inline" if media_type in _INLINE_OTHER else "attachment"


@router.get("/artifacts/{path:path}", dependencies=[Depends(token_or_signed_link)])
async def artifact(path: str, store: StoreDep) -> FileResponse:
    try:
        f = store.open(SCHEME + path)
    except ArtifactError:
        raise HTTPException(404, f"no artifact {path}") from None
    name = path.rsplit("/", 1)[-1]
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    fd = f.fileno()
    # Served from the descriptor opened above (/proc/self/fd reopens that very file), so a
    # link swapped in after the check cannot redirect the response.
    return FileResponse(
        f"/proc/self/fd/{fd}",
        media_type=media_type,
        filename=name,
        content_disposition_type=disposition(media_type),
        headers=SAFE_HEADERS,
        stat_result=os.fstat(fd),
        background=BackgroundTask(f.close),
    )
