"""The artifact store: files produced by jobs, addressed by `artifact://<job_id>/<path>` URIs.

Results carry URIs, never blobs (Temporal payloads stay small). The default store is a local
directory shared by workers and the controller, which serves it over HTTP.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

SCHEME = "artifact://"


class ArtifactError(ValueError):
    """A URI or name that does not address an artifact (bad form, or escapes the store)."""


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    # -- addressing ------------------------------------------------------------------------
    @staticmethod
    def uri(job_id: str, name: str) -> str:
        return f"{SCHEME}{job_id}/{_store_name(name)}"

    def path_for(self, uri: str) -> Path:
        if not uri.startswith(SCHEME):
            raise ArtifactError(f"not an artifact URI (expected {SCHEME}<job>/<path>): {uri!r}")
        rel = _store_name(uri[len(SCHEME) :])
        if "/" not in rel:
            raise ArtifactError(f"artifact URI needs a job and a path: {uri!r}")
        return self.root / rel

    # -- writing (atomic, so a retried activity or a crash never leaves half a file) ---------
    def put_bytes(self, job_id: str, name: str, data: bytes) -> str:
        return self._put(job_id, name, lambda f: f.write(data))

    def put_file(self, job_id: str, name: str, src: Path) -> str:
        def copy(f: BinaryIO) -> None:
            with open(src, "rb") as source:
                shutil.copyfileobj(source, f)

        return self._put(job_id, name, copy)

    def _put(self, job_id: str, name: str, write: Callable[[BinaryIO], object]) -> str:
        """Writes to a temp file beside the destination, then renames it into place."""
        uri = self.uri(job_id, name)
        dest = self.path_for(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, dest)
        except BaseException:
            os.unlink(tmp)
            raise
        return uri

    def put_tree(self, job_id: str, src_dir: Path, *, prefix: str = "") -> dict[str, str]:
        """Every regular file under `src_dir` (symlinks are skipped: they could point anywhere)."""
        uris: dict[str, str] = {}
        for path in sorted(src_dir.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            name = prefix + path.relative_to(src_dir).as_posix()
            uris[name] = self.put_file(job_id, name, path)
        return uris

    def put_upload(self, name: str, data: bytes) -> str:
        """Content-addressed upload (inputs): the same bytes always get the same URI."""
        digest = hashlib.sha256(data).hexdigest()[:32]
        return self.put_bytes("uploads", f"{digest}/{_store_name(name)}", data)

    def read_bytes(self, uri: str) -> bytes:
        path = self.path_for(uri)
        if not path.is_file():
            raise ArtifactError(f"no such artifact: {uri}")
        return path.read_bytes()


def safe_relpath(name: str, *, inside: str) -> str:
    """`name` as a normalised relative POSIX path that cannot leave the directory it is joined
    to (`inside` names that directory in the error). Raises ArtifactError (a ValueError)."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ArtifactError(f"path must be relative and stay inside {inside}: {name!r}")
    return pure.as_posix()


def _store_name(name: str) -> str:
    rel = safe_relpath(name, inside="the artifact store")
    if any(part.startswith(".tmp-") for part in PurePosixPath(rel).parts):
        raise ArtifactError(f"reserved artifact name: {name!r}")
    return rel
