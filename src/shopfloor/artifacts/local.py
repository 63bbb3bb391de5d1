"""The local directory store (the default): `<root>/<job>/<path>`, served by the controller."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from shopfloor.artifacts.base import _COPY_CHUNK, ArtifactError, ArtifactStore, Readable


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return f"directory {self.root}"

    def path_for(self, uri: str) -> Path:
        return self.root / self.key(uri)

    def _put_stream(self, uri: str, source: Readable) -> None:
        """Writes to a temp file beside the destination, then renames it into place."""
        dest = self.path_for(uri)
        _private_dirs(dest.parent)
        # mkstemp makes the file 0600 whatever the umask: artifacts are the worker's and the
        # controller's to read, no other user's.
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(source, f, _COPY_CHUNK)
            os.replace(tmp, dest)
        except BaseException:
            os.unlink(tmp)
            raise

    def _delete(self, uri: str) -> None:
        self.path_for(uri).unlink(missing_ok=True)

    def _open(self, uri: str) -> BinaryIO:
        """The artifact's regular file, opened under the store's root without following a
        symlink anywhere on the way. Raises ArtifactError when there is none."""
        rel = self.path_for(uri).relative_to(self.root)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise ArtifactError(f"no such artifact: {uri}") from err
        try:
            for part in rel.parts[:-1]:
                nxt = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
                os.close(fd)
                fd = nxt
            leaf = os.open(
                rel.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd
            )
        except OSError as err:
            raise ArtifactError(f"no such artifact: {uri}") from err
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            os.close(leaf)
            raise ArtifactError(f"no such artifact: {uri}")
        return os.fdopen(leaf, "rb")


def _private_dirs(path: Path) -> None:
    """Every missing directory down to `path`, each 0700 whatever the umask (`os.makedirs`
    gives its mode to the last one only)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
