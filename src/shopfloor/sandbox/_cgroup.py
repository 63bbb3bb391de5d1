"""A per-run cgroup (v1 pids controller) to cap and reliably kill a child's whole process tree."""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from pathlib import Path

from shopfloor.sandbox._limits import PIDS_CGROUP_ROOT


class PidsCgroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        """None when this machine gives us no writable pids cgroup (the caller falls back)."""
        if not (PIDS_CGROUP_ROOT / "cgroup.procs").exists():
            return None
        path = PIDS_CGROUP_ROOT / "shopfloor" / uuid.uuid4().hex
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

    def hit_limit(self) -> bool:
        """True when a fork was refused because of pids.max."""
        try:
            for line in (self.path / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

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

    def remove(self) -> None:
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError as err:
                if err.errno == errno.ENOENT:
                    return
                self.kill_all()
                time.sleep(0.02)
