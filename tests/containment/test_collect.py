"""Collecting `out/` (run as the worker would, on a directory untrusted code wrote): regular
files only, no link followed, hard links to files outside the run refused, names checked;
what is refused is listed with the reason."""

from __future__ import annotations

import os
from pathlib import Path

from shopfloor.artifacts import LocalArtifactStore


def test_collect_refuses_links_special_files_and_bad_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = run / "out"
    (out / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (out / "ok.txt").write_text("fine")
    (out / "sub" / "deep.txt").write_text("deep")
    os.link(outside, out / "stolen.txt")  # a hard link to a file outside the run
    (run / "mine.txt").write_text("mine")
    os.link(run / "mine.txt", out / "mine.txt")  # every name of it is inside the run: fine
    (out / "shadow").symlink_to("/etc/shadow")
    (out / "etcdir").symlink_to("/etc")  # a linked directory is not entered
    os.mkfifo(out / "fifo")
    (out / "bad\nname.txt").write_text("x")
    store = LocalArtifactStore(tmp_path / "store")
    got = store.collect_tree("job-1", out, run_dir=run)
    assert sorted(got.uris) == ["mine.txt", "ok.txt", "sub/deep.txt"]
    assert store.read_bytes(got.uris["sub/deep.txt"]) == b"deep"
    assert set(got.refused) == {"stolen.txt", "shadow", "etcdir", "fifo", "bad\nname.txt"}
    assert got.refused["stolen.txt"] == "a hard link to a file outside the run"
    assert got.refused["shadow"].startswith("a symlink")
    assert got.refused["fifo"] == "not a regular file"
    assert "control characters" in got.refused["bad\nname.txt"]
    assert not list((tmp_path / "store").rglob("secret*"))
