"""The artifact store: files produced by jobs, addressed by `artifact://<job_id>/<path>` URIs.

Results carry URIs, never blobs (Temporal payloads stay small). The default store is a local
directory shared by workers and the controller, which serves it over HTTP.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

SCHEME = "artifact://"
MAX_NAME = 255
MAX_PATH = 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass
class Collected:
    """What `collect_tree` stored (name → URI) and what it refused (name → why)."""

    uris: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def refused_list(self) -> list[str]:
        return [f"{name}: {why}" for name, why in sorted(self.refused.items())]


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
        """Every regular file under `src_dir` (see `collect_tree`: symlinks, hard links to
        files elsewhere and special files are not stored)."""
        return self.collect_tree(job_id, src_dir, run_dir=src_dir, prefix=prefix).uris

    def collect_tree(
        self, job_id: str, src_dir: Path, *, run_dir: Path, prefix: str = ""
    ) -> Collected:
        """Stores the regular files under `src_dir`, a directory written by untrusted code
        that has stopped running. Never follows a symlink (lstat, O_NOFOLLOW, a walk that
        does not enter linked directories); refuses hard links to files outside `run_dir`
        (a link count higher than the names the run has for the file), special files and
        names that are not plain, printable paths. Refused entries are listed, not dropped."""
        collected = Collected()
        inside = _inode_names(run_dir)
        for rel, entry_stat in _walk_no_follow(src_dir):
            name = prefix + rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            why = _refusal(rel, entry_stat, inside)
            if why is None:
                try:
                    collected.uris[name] = self._put_regular(job_id, name, src_dir / rel)
                except (OSError, ArtifactError) as err:
                    why = f"not stored: {err}"
            if why is not None:
                collected.refused[name] = why
        return collected

    def _put_regular(self, job_id: str, name: str, src: Path) -> str:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as source:
            st = os.fstat(source.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactError("not a regular file")
            return self._put(job_id, name, lambda f: shutil.copyfileobj(source, f))

    def put_upload(self, name: str, data: bytes) -> str:
        """Content-addressed upload (inputs): the same bytes always get the same URI."""
        digest = hashlib.sha256(data).hexdigest()[:32]
        return self.put_bytes("uploads", f"{digest}/{_store_name(name)}", data)

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as f:
            return f.read()

    def open(self, uri: str) -> BinaryIO:
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


def _walk_no_follow(top: Path) -> list[tuple[str, os.stat_result]]:
    """(relative POSIX path, lstat) of every non-directory under `top`, sorted; directories
    are entered only when they are real directories (not symlinks)."""
    found: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(top / rel_dir if rel_dir else top) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            else:
                found.append((rel, st))
    return sorted(found, key=lambda item: item[0])


def _inode_names(run_dir: Path) -> dict[tuple[int, int], int]:
    """How many names each inode has inside `run_dir` (hard links within the run are fine)."""
    counts: dict[tuple[int, int], int] = {}
    for _, st in _walk_no_follow(run_dir):
        key = (st.st_dev, st.st_ino)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _refusal(rel: str, st: os.stat_result, inside: dict[tuple[int, int], int]) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "a symlink (artifacts are regular files; links are never followed)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink > inside.get((st.st_dev, st.st_ino), 0):
        return "a hard link to a file outside the run"
    if len(rel) > MAX_PATH or any(len(p) > MAX_NAME for p in rel.split("/")):
        return "name too long"
    if _BAD_CHARS.search(rel):
        return "name has control characters or backslashes"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not UTF-8"
    try:
        _store_name(rel)
    except ArtifactError as err:
        return str(err)
    return None


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
