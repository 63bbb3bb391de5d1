"""The dashboard's static files, some stored gzip-compressed (`<name>.gz`).

The vendored htmx build is kept compressed: a third of the bytes on the wire, and its text
(full of HTML words that are also kind names) stays out of searches over the source tree. A
request for `<name>` gets the `.gz` as is with `Content-Encoding: gzip` when the client
accepts gzip (every browser does), decompressed otherwise.
"""

from __future__ import annotations

import gzip
import mimetypes
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope


class PrecompressedFiles(StaticFiles):
    def __init__(self, *, directory: Path) -> None:
        super().__init__(directory=directory)
        self._root = directory

    async def get_response(self, path: str, scope: Scope) -> Response:
        packed = self._root / f"{path}.gz"
        if "/" in path or not packed.is_file():
            return await super().get_response(path, scope)
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        headers = {"Cache-Control": "public, max-age=3600", "Vary": "Accept-Encoding"}
        if "gzip" in _header(scope, b"accept-encoding"):
            headers["Content-Encoding"] = "gzip"
            return Response(packed.read_bytes(), media_type=media_type, headers=headers)
        return Response(
            gzip.decompress(packed.read_bytes()), media_type=media_type, headers=headers
        )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1")).lower()
    return ""
