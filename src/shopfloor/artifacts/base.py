"""The artifact store: files produced by jobs, addressed by `artifact://<job_id>/<path>` URIs.

Results carry URIs, never blobs (Temporal payloads stay small). `ArtifactStore` is the
interface every caller uses; where the bytes live is a backend's business: a local directory
(the default, `LocalArtifactStore`, shared by workers and the controller on one machine) or an
S3 bucket (`S3ArtifactStore`, any S3-compatible service, shared across machines). The URIs are
the same either way, so results do not say where their bytes are.
"""

from __future__ import annotations

import abc
import hashlib
import io
import mimetypes
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, BinaryIO, Protocol

from shopfloor.ids import job_id_problem

SCHEME = "artifact://"
UPLOADS = "uploads"  # the system area of uploads: a name no job id may take (shopfloor.ids)
MAX_NAME = 255
MAX_PATH = 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_COPY_CHUNK = 1024 * 1024
MB = 1024 * 1024

_INLINE_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"}
_INLINE_OTHER = {"text/plain", "text/csv", "application/json"}


@dataclass
class Collected:
    """What `collect_tree` stored (name → URI) and what it refused (name → why).
    `over_cap` says which cap the tree went past, when it did: then nothing of it is stored."""

    uris: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    over_cap: str | None = None

    def refused_list(self) -> list[str]:
        return [f"{name}: {why}" for name, why in sorted(self.refused.items())]


class ArtifactError(ValueError):
    """A URI or name that does not address an artifact (bad form, or escapes the store)."""


class Readable(Protocol):
    """A binary stream read in chunks to its end: what a backend stores (`_put_stream`)."""

    def read(self, size: int = -1, /) -> bytes: ...


class ArtifactFile(Protocol):
    """An artifact open to read (`ArtifactStore.open`): a file, an S3 body, either counted."""

    def read(self, size: int = -1, /) -> bytes: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...

    def __iter__(self) -> Iterator[bytes]: ...

    def __enter__(self) -> ArtifactFile: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


# Told how many bytes were stored or read (a prometheus-client Counter's `inc`).
ByteCount = Callable[[int], object]


class ArtifactStore(abc.ABC):
    """Where artifacts live: the interface. `store_for(settings)` makes the backend the
    settings name; `LocalArtifactStore(root)` is the local directory store.

    Backends implement `_put_stream` (store a stream under a URI, all or nothing), `_open`
    (read one artifact) and may offer `presigned_url`; naming, the safe collection of a run's
    files, content-addressed uploads and counting bytes are the same for all of them."""

    # What `count_bytes` was told to call (None: nothing counted).
    _stored: ByteCount | None = None
    _read: ByteCount | None = None

    # -- addressing ------------------------------------------------------------------------
    @staticmethod
    def uri(job_id: str, name: str) -> str:
        """Where job `job_id` keeps `name`: only ever under its own id, and never in a system
        area (an id like `uploads` or `a/b` would write over what is not the job's)."""
        problem = job_id_problem(job_id)
        if problem:
            raise ArtifactError(f"not a job's artifact area {job_id[:100]!r}: {problem}")
        return f"{SCHEME}{job_id}/{_store_name(name)}"

    @staticmethod
    def key(uri: str) -> str:
        """`<job>/<path>` of a URI, checked: relative, inside the store, not reserved."""
        if not uri.startswith(SCHEME):
            raise ArtifactError(f"not an artifact URI (expected {SCHEME}<job>/<path>): {uri!r}")
        rel = _store_name(uri[len(SCHEME) :])
        if "/" not in rel:
            raise ArtifactError(f"artifact URI needs a job and a path: {uri!r}")
        return rel

    def describe(self) -> str:
        return type(self).__name__

    # -- the backend's part ----------------------------------------------------------------
    @abc.abstractmethod
    def _put_stream(self, uri: str, source: Readable) -> None:
        """Stores everything `source` yields under `uri`: the whole of it or nothing (a
        retried activity or a crash never leaves half an artifact)."""

    @abc.abstractmethod
    def _open(self, uri: str) -> BinaryIO:
        """The artifact's bytes, to read. Raises ArtifactError when there is none."""

    def presigned_url(self, uri: str, *, ttl_s: int) -> str | None:
        """A URL a browser opens without credentials until `ttl_s` from now, when the backend
        has such URLs of its own (S3); None when links go through the controller."""
        return None

    # -- counting ----------------------------------------------------------------------------
    def count_bytes(self, *, stored: ByteCount, read: ByteCount) -> None:
        """From now on, `stored(n)` and `read(n)` are told the bytes this store's backend
        stores and reads (every put of any backend goes through `_put_stream`, every read
        through `open`)."""
        self._stored, self._read = stored, read

    def _put(self, uri: str, source: Readable) -> None:
        self._put_stream(uri, source if self._stored is None else _Counted(source, self._stored))

    # -- writing -----------------------------------------------------------------------------
    def put_bytes(self, job_id: str, name: str, data: bytes) -> str:
        uri = self.uri(job_id, name)
        self._put(uri, io.BytesIO(data))
        return uri

    def put_file(self, job_id: str, name: str, src: Path) -> str:
        uri = self.uri(job_id, name)
        with open(src, "rb") as source:
            self._put(uri, source)
        return uri

    def collect_tree(
        self,
        job_id: str,
        src_dir: Path,
        *,
        run_dir: Path,
        prefix: str = "",
        max_bytes: int | None = None,
        max_files: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Collected:
        """Stores the regular files under `src_dir`, a directory written by untrusted code
        that has stopped running. Never follows a symlink (lstat, O_NOFOLLOW, a walk that
        does not enter linked directories); refuses hard links to files outside `run_dir`
        (a link count higher than the names the run has for the file), special files and
        names that are not plain, printable paths. Refused entries are listed, not dropped.

        All or nothing against the caps: more than `max_files` entries (refused ones too:
        each is a line of the result) or more than `max_bytes` of files by apparent size (a
        sparse file is read, and stored, dense) store nothing, checked before anything is
        stored; a file that grows past them while being stored removes what was stored.
        `on_progress(done, total)` is called before each entry (a collection can be long: an
        activity heartbeats from it)."""
        entries = _walk_no_follow(src_dir, limit=max_files)
        over = _over_caps(entries, max_bytes, max_files)
        if over is not None:
            return Collected(refused={f"{prefix}{src_dir.name}/": over}, over_cap=over)
        budget = [max_bytes] if max_bytes is not None else None
        collected = Collected()
        # Only a file with more than one name can be a hard link to one outside the run (a
        # file in `src_dir` has a name in `run_dir`): the run dir is walked for those alone.
        linked = any(st.st_nlink > 1 for _, st in entries)
        inside = _inode_names(run_dir) if linked else {}
        for i, (rel, entry_stat) in enumerate(entries):
            if on_progress is not None:
                on_progress(i, len(entries))
            name = prefix + rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            why = _refusal(rel, entry_stat, inside)
            if why is None:
                try:
                    collected.uris[name] = self._put_regular(job_id, name, src_dir / rel, budget)
                except Exception as err:
                    # However the backend passed _OverBudget on (S3 reads in threads of its own).
                    if max_bytes is not None and budget is not None and budget[0] < 0:
                        self._remove_all(collected.uris.values())
                        over = (
                            f"files grew past the run's disk cap of {max_bytes / MB:g} MB "
                            "(disk_mb) while they were stored: nothing of it was kept"
                        )
                        return Collected(refused={f"{prefix}{src_dir.name}/": over}, over_cap=over)
                    if not isinstance(err, OSError | ArtifactError):
                        raise
                    why = f"not stored: {err}"
            if why is not None:
                collected.refused[name] = why
        return collected

    def _put_regular(
        self, job_id: str, name: str, src: Path, budget: list[int] | None = None
    ) -> str:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as source:
            st = os.fstat(source.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactError("not a regular file")
            uri = self.uri(job_id, name)
            self._put(uri, source if budget is None else _Budgeted(source, budget))
            return uri

    def _remove_all(self, uris: Iterable[str]) -> None:
        for uri in list(uris):
            try:
                self._delete(uri)
            except (OSError, ArtifactError):
                pass  # best effort: the store's own error already failed the collection

    def _delete(self, uri: str) -> None:
        """Removes an artifact (none there: nothing to do)."""
        raise NotImplementedError

    def put_upload(self, name: str, data: bytes) -> str:
        """Content-addressed upload (inputs): the same bytes always get the same URI."""
        digest = hashlib.sha256(data).hexdigest()[:32]
        uri = _upload_uri(digest, name)
        self._put(uri, io.BytesIO(data))
        return uri

    def put_upload_file(self, name: str, src: Path, *, sha256: str | None = None) -> str:
        """`put_upload` for bytes in a file (streamed, never all in memory); `sha256` (hex),
        when the caller hashed them while writing the file, saves reading it twice."""
        uri = _upload_uri((sha256 or sha256_file(src))[:32], name)
        with open(src, "rb") as source:
            self._put(uri, source)
        return uri

    # -- reading -----------------------------------------------------------------------------
    def open(self, uri: str) -> ArtifactFile:
        """The artifact's bytes, to read. Raises ArtifactError when there is none."""
        f = self._open(uri)
        return f if self._read is None else _CountedFile(f, self._read)

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as f:
            data = f.read()
        if (expected := upload_digest(uri)) is not None:
            _check_digest(uri, expected, hashlib.sha256(data).hexdigest())
        return data

    def copy_to(self, uri: str, dest: Path) -> None:
        """The artifact's bytes into a new file `dest` (a copy: the store stays out of reach
        of whoever reads `dest`). Raises ArtifactError when there is none."""
        expected = upload_digest(uri)
        digest = hashlib.sha256() if expected is not None else None
        with self.open(uri) as source, open(dest, "xb") as out:
            while chunk := source.read(_COPY_CHUNK):
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
        if expected is not None and digest is not None:
            _check_digest(uri, expected, digest.hexdigest(), written=dest)


def _upload_uri(digest: str, name: str) -> str:
    return f"{SCHEME}{UPLOADS}/{digest}/{_store_name(name)}"


def upload_digest(uri: str) -> str | None:
    """An upload is addressed by its content: the digest (prefix) that bytes read from
    `uploads/<digest>/…` must have (whatever wrote them there, a job's input never runs
    substituted bytes); None for other artifacts, which are not checked."""
    area, _, rest = uri.removeprefix(SCHEME).partition("/")
    return rest.partition("/")[0].lower() if area == UPLOADS else None


def verify_upload_file(uri: str, path: Path) -> None:
    """`upload_digest`'s check of bytes already written to `path` (removed if they fail)."""
    if (expected := upload_digest(uri)) is not None:
        _check_digest(uri, expected, sha256_file(path), written=path)


def _check_digest(uri: str, expected: str, actual: str, *, written: Path | None = None) -> None:
    if len(expected) < 32 or not actual.startswith(expected):
        if written is not None:
            Path(written).unlink(missing_ok=True)
        raise ArtifactError(f"upload {uri} does not match its digest: refused (it was altered)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def media_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def disposition(media_type: str) -> str:
    """`inline` for what a browser only displays; `attachment` for what it could run (HTML,
    SVG, JS, XML, anything of an unknown type)."""
    if media_type.startswith(("video/", "audio/")) or media_type in _INLINE_IMAGES:
        return "inline"
    return "inline" if media_type in _INLINE_OTHER else "attachment"


class _OverBudget(Exception):
    pass


class _Budgeted:
    """A file read through a byte budget shared by a whole collection: the read that would go
    past it raises _OverBudget (a file that grows after the walk measured it)."""

    def __init__(self, source: BinaryIO, budget: list[int]) -> None:
        self.source, self.budget = source, budget

    def read(self, size: int = -1, /) -> bytes:
        data = self.source.read(size)
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            raise _OverBudget
        return data


class _Counted:
    """A binary stream whose reads tell `count` their byte counts (`count_bytes`); the rest
    passes through (what a backend looks for on what it stores: `seekable`, `tell`…)."""

    def __init__(self, stream: Readable, count: ByteCount) -> None:
        self._stream, self._count = stream, count

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._count(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _CountedFile(_Counted):
    """An artifact open to read, its reads counted; the rest is the file's."""

    def __init__(self, file: BinaryIO, count: ByteCount) -> None:
        super().__init__(file, count)
        self._file = file

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[bytes]:  # a file's line iteration
        for line in self._file:
            self._count(len(line))
            yield line

    def __enter__(self) -> _CountedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _over_caps(
    entries: list[tuple[str, os.stat_result]], max_bytes: int | None, max_files: int | None
) -> str | None:
    """Which cap a tree goes past, naming the cap and what was found; None: within both."""
    if max_files is not None and len(entries) > max_files:
        return (
            f"more than {max_files} files, over the cap on artifacts "
            "(SHOPFLOOR_MAX_ARTIFACTS): nothing of it was stored"
        )
    size = sum(st.st_size for _, st in entries if stat.S_ISREG(st.st_mode))
    if max_bytes is not None and size > max_bytes:
        return (
            f"{size / MB:.1f} MB of files (apparent size), over the run's disk cap of "
            f"{max_bytes / MB:g} MB (disk_mb): nothing of it was stored"
        )
    return None


def _walk_no_follow(top: Path, *, limit: int | None = None) -> list[tuple[str, os.stat_result]]:
    """(relative POSIX path, lstat) of every non-directory under `top`, sorted; directories
    are entered only when they are real directories (not symlinks). Stops once it has found
    more than `limit`."""
    found: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack and (limit is None or len(found) <= limit):
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
    if st.st_nlink > inside.get((st.st_dev, st.st_ino), 1):
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
