"""A per-run cgroup (v1 pids controller) to cap and reliably kill a child's whole process tree.

Cgroups are pooled and reused: moving a process into a cgroup it has never held costs the
kernel ~10 ms per job (a new css_set, freed through RCU); into a used one, almost nothing.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from pathlib import Path

from shopfloor.sandbox._limits import PIDS_CGROUP_ROOT

_POOL: list[Path] = []  # empty cgroups of this process, ready for the next run
_POOL_MAX = 64
_swept = False


def _own_parent() -> Path:
    return PIDS_CGROUP_ROOT / "shopfloor" / str(os.getpid())


def _sweep_stale() -> None:
    """Remove what processes that died without `release_pool` (a SIGKILL) left behind."""
    for parent in (PIDS_CGROUP_ROOT / "shopfloor").glob("*"):
        if not parent.name.isdigit() or Path(f"/proc/{parent.name}").exists():
            continue
        for child in parent.glob("*"):
            if child.is_dir():
                _rmdir_quietly(child)
        _rmdir_quietly(parent)


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # still has processes, or already gone


def release_pool() -> None:
    """Removes this process's pooled (empty) cgroups and their parent: call it when the process
    stops running jobs (the worker's zygotes lifespan does)."""
    while _POOL:
        _rmdir_quietly(_POOL.pop())
    _rmdir_quietly(_own_parent())


class PidsCgroup:
    def __init__(self, path: Path) -> None:
        self.path = path
        # pids.events counts refused forks for the cgroup's whole life; a reused one starts > 0.
        self._refused_before = self._refused_forks()

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        """None when this machine gives us no writable pids cgroup (the caller falls back)."""
        while _POOL:
            path = _POOL.pop()
            try:
                (path / "pids.max").write_text(str(max_pids))
                return cls(path)
            except OSError:
                continue
        if not (PIDS_CGROUP_ROOT / "cgroup.procs").exists():
            return None
        global _swept
        if not _swept:
            _swept = True
            _sweep_stale()
        # One parent per worker process, so concurrent workers never touch each other's.
        path = _own_parent() / uuid.uuid4().hex[:12]
        try:
            path.mkdir(parents=True)
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            return None
        return cls(path)

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except OSError:
            return []

    def _refused_forks(self) -> int:
        try:
            for line in (self.path / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def hit_limit(self) -> bool:
        """True when a fork was refused because of pids.max during this run."""
        return self._refused_forks() > self._refused_before

    def kill_all(self) -> None:
        # A fork bomb keeps forking while we kill; pids.max bounds it, a few rounds finish it.
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def release(self) -> None:
        """Kills what is left in it, then returns it to the pool (removed if the pool is full)."""
        self.kill_all()
        if not self.pids() and len(_POOL) < _POOL_MAX:
            _POOL.append(self.path)
            return
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError as err:
                if err.errno == errno.ENOENT:
                    return
                self.kill_all()
                time.sleep(0.02)
