"""`collect_tree` against its caps: all or nothing, checked before anything is stored, and
what was stored removed when a file grows past them while it is stored. (Before issue 19 it
took no caps: every test here fails on that code with a TypeError.)"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from shopfloor.artifacts import LocalArtifactStore

MB = 1024 * 1024


def _run_dir(tmp_path: Path, files: dict[str, int]) -> tuple[Path, Path]:
    run = tmp_path / "run"
    out = run / "out"
    out.mkdir(parents=True)
    for name, size in files.items():
        with open(out / name, "wb") as f:
            f.truncate(size)  # sparse: what matters is the size a reader gets
    return run, out


def test_too_many_files_store_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    run, out = _run_dir(tmp_path, {f"f{i}": 1 for i in range(11)})
    got = store.collect_tree("job", out, run_dir=run, max_files=10)
    assert got.uris == {} and got.over_cap is not None
    assert got.refused == {"out/": got.over_cap}
    assert "more than 10 files" in got.over_cap
    assert not (tmp_path / "store").exists()


def test_sparse_bytes_count_by_apparent_size(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    run, out = _run_dir(tmp_path, {"a": 3 * MB, "b": 3 * MB})
    got = store.collect_tree("job", out, run_dir=run, max_bytes=5 * MB)
    assert got.uris == {} and "6.0 MB of files (apparent size)" in str(got.over_cap)
    assert "disk cap of 5 MB" in str(got.over_cap)
    within = store.collect_tree("job", out, run_dir=run, max_bytes=6 * MB, max_files=2)
    assert sorted(within.uris) == ["a", "b"] and within.over_cap is None


class _GrowsTheNextFile(LocalArtifactStore):
    """Stores as the local store does; while storing the first file, the second grows (as a
    process that escaped the run's kill could make it do)."""

    def __init__(self, root: Path, grow: Path) -> None:
        super().__init__(root)
        self.grow = grow

    def _put_stream(self, uri: str, source: BinaryIO) -> None:
        with open(self.grow, "ab") as f:
            f.write(b"x" * MB)
        super()._put_stream(uri, source)


def test_a_file_that_grows_past_the_cap_while_stored_leaves_nothing(tmp_path: Path) -> None:
    run, out = _run_dir(tmp_path, {"a": MB, "b": MB})
    store = _GrowsTheNextFile(tmp_path / "store", out / "b")
    got = store.collect_tree("job", out, run_dir=run, max_bytes=2 * MB)
    assert got.uris == {} and "grew past the run's disk cap" in str(got.over_cap)
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []
