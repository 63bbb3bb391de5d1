"""Uploads (job inputs too big to inline) and artifacts (what jobs produced).

Artifacts are untrusted bytes (a job's code wrote them). They are opened under the store's
root without following symlinks; every response says `X-Content-Type-Options: nosniff` and
`Content-Security-Policy: sandbox`; what a browser could run (HTML, SVG, JS, XML, anything of
an unknown type) comes as a download (`Content-Disposition: attachment`); video, audio,
images, plain text and JSON are shown inline. HTTP Range (206) works, for video seeking.
With an S3 store the object is streamed through with the same headers (a Range is passed on
to S3); browsers normally get presigned S3 links instead (see `links`).

Uploads stream to a temp file (never all in memory) and then into the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from shopfloor.artifacts import (
    SCHEME,
    ArtifactError,
    ArtifactStore,
    LocalArtifactStore,
    media_type_of,
)
from shopfloor.artifacts import disposition as disposition
from shopfloor.controller.deps import AUTH, SettingsDep, StoreDep, require_token
from shopfloor.controller.links import artifact_url, signature_valid

MAX_UPLOAD = 64 * 1024 * 1024
MAX_UPLOAD_NAME = 200
_UPLOAD_NAME_BAD = re.compile(r"[\x00-\x1f\x7f\\/]")
_SINGLE_RANGE = re.compile(r"bytes=(\d+-\d*|-\d+)")
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cache-Control": "private, max-age=60",
}

router = APIRouter(tags=["artifacts"])


def _upload_name_problem(name: str) -> str | None:
    if not name or name in (".", ".."):
        return "the upload needs a file name"
    if len(name) > MAX_UPLOAD_NAME:
        return f"upload name longer than {MAX_UPLOAD_NAME} characters"
    if _UPLOAD_NAME_BAD.search(name):
        return "upload name has control characters, NUL, slashes or backslashes"
    if name.startswith(".tmp-"):
        return "upload name is reserved (.tmp-*)"
    return None


# response_model=None: the return annotation is for mypy; FastAPI would take it for a response
# model (checked answers, another OpenAPI document).
@router.put("/uploads/{name}", status_code=201, dependencies=AUTH, response_model=None)
async def upload(
    name: str, request: Request, store: StoreDep, settings: SettingsDep
) -> dict[str, str]:
    """Upload an input file (a large script, STEP/STL geometry); pass the URI in a job.
    The body is streamed to a temp file (hashed on the way: uploads are content-addressed),
    then into the store."""
    problem = _upload_name_problem(name)
    if problem is not None:
        raise HTTPException(400, f"{problem}: {name[:80]!r}")
    fd, spool = tempfile.mkstemp(prefix="shopfloor-upload-")
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise HTTPException(413, f"upload larger than {MAX_UPLOAD // 2**20} MiB")
                digest.update(chunk)
                f.write(chunk)
        try:
            uri = await asyncio.to_thread(
                store.put_upload_file, name, Path(spool), sha256=digest.hexdigest()
            )
        except ArtifactError as err:
            raise HTTPException(400, str(err)) from err
    finally:
        os.unlink(spool)
    return {"uri": uri, "url": artifact_url(settings, uri)}


def token_or_signed_link(
    request: Request,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="alternative to the header")] = None,
    exp: Annotated[str | None, Query(description="signed link: expiry (unix seconds)")] = None,
    sig: Annotated[str | None, Query(description="signed link: signature")] = None,
) -> None:
    """A signed link (from a result's `links`), the API token, or the dashboard's cookie."""
    if settings.api_token is not None and exp is not None and sig is not None:
        path = request.path_params.get("path", "")
        if signature_valid(settings, path, exp, sig):
            return
        raise HTTPException(403, "this link has expired or is not valid: get a fresh one")
    require_token(settings=settings, authorization=authorization, token=token, request=request)


def _disposition_header(kind: str, name: str) -> str:
    quoted = quote(name, safe="")
    if quoted == name:
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename*=utf-8''{quoted}"


@router.get("/artifacts/{path:path}", dependencies=[Depends(token_or_signed_link)])
async def artifact(
    path: str,
    store: StoreDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    name = path.rsplit("/", 1)[-1]
    media_type = media_type_of(name)
    if not isinstance(store, LocalArtifactStore):
        return await _streamed(store, path, name, media_type, range_header)
    try:
        f = store.open(SCHEME + path)
    except ArtifactError:
        raise HTTPException(404, f"no artifact {path}") from None
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


async def _streamed(
    store: ArtifactStore, path: str, name: str, media_type: str, range_header: str | None
) -> Response:
    """An object of a remote store (S3), streamed through: one `bytes=` range is passed on
    (206 with its Content-Range); several ranges or a malformed one get the whole object."""
    from shopfloor.artifacts.s3 import RangeNotSatisfiable, S3ArtifactStore

    assert isinstance(store, S3ArtifactStore), "S3 is the one store that is not local"

    wanted = range_header.strip() if range_header else None
    if wanted is not None and not _SINGLE_RANGE.fullmatch(wanted):
        wanted = None
    try:
        obj = await asyncio.to_thread(store.get, SCHEME + path, wanted)
    except RangeNotSatisfiable as err:
        return Response(
            status_code=416, headers={**SAFE_HEADERS, "Content-Range": f"bytes */{err.size}"}
        )
    except ArtifactError:
        raise HTTPException(404, f"no artifact {path}") from None
    headers = {
        **SAFE_HEADERS,
        "Accept-Ranges": "bytes",
        "Content-Length": str(obj.length),
        "Content-Disposition": _disposition_header(disposition(media_type), name),
    }
    status = 200
    if obj.content_range:
        status = 206
        headers["Content-Range"] = obj.content_range
    # A sync iterator: Starlette reads it in a thread, so the loop never waits on S3.
    return StreamingResponse(
        obj.chunks(), status_code=status, media_type=media_type, headers=headers
    )
