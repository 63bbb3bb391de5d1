"""Identities and directories of runs: a machine-wide pool of unprivileged uids, and the
per-worker root under which each run gets its own directory.

A uid is leased with an exclusive `flock` on a file named after it (in a root-only directory):
leases are machine-wide across worker processes, and a worker that dies drops its leases with
its file descriptors. The uids need no /etc/passwd entry; each run's gid is its uid.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

WORK_ROOT_PREFIX = "shopfloor-w"
_WORK_ROOT = re.compile(r"^shopfloor-w(\d+)-([0-9a-f]{8})$")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return "00000000"


@dataclass
class UidLease:
    uid: int
    fd: int

    @property
    def gid(self) -> int:
        return self.uid


class UidPool:
    def __init__(self, base: int, count: int, lock_dir: Path) -> None:
        self.base, self.count, self.lock_dir = base, count, lock_dir
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(lock_dir, 0o700)

    def acquire(self) -> UidLease:
        start = random.randrange(self.count)
        for i in range(self.count):
            uid = self.base + (start + i) % self.count
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return UidLease(uid, fd)
        raise RuntimeError(f"all {self.count} sandbox uids from {self.base} are in use")

    @staticmethod
    def release(lease: UidLease) -> None:
        os.close(lease.fd)  # drops the flock


class WorkRoot:
    """`<base>/shopfloor-w<pid>-<boot>`: this worker's run directories. Mode 0711 when runs have
    their own uids (they may pass through to their own directory, not list the others')."""

    def __init__(self, base: Path | None = None, *, shared_with_runs: bool) -> None:
        self.base = Path(base or tempfile.gettempdir())
        self.path = self.base / f"{WORK_ROOT_PREFIX}{os.getpid()}-{boot_id()}"
        self.shared_with_runs = shared_with_runs

    def create(self) -> Path:
        self.sweep()
        self.path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.path, 0o711 if self.shared_with_runs else 0o700)
        return self.path

    def sweep(self) -> list[Path]:
        """Removes the work roots of workers that are gone (killed before they cleaned up)."""
        removed: list[Path] = []
        current_boot = boot_id()
        try:
            entries = list(self.base.iterdir())
        except OSError:
            return removed
        for entry in entries:
            m = _WORK_ROOT.match(entry.name)
            if not m or entry == self.path:
                continue
            pid, boot = int(m.group(1)), m.group(2)
            if boot == current_boot and _alive(pid):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        return removed

    def new_run_dir(self, uid: int | None, gid: int | None) -> Path:
        path = Path(tempfile.mkdtemp(prefix="run-", dir=self.path))
        for sub in ("out", "tmp"):
            (path / sub).mkdir(mode=0o700)
        if uid is not None:
            for p in (path, path / "out", path / "tmp"):
                os.chown(p, uid, gid if gid is not None else uid)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def give_to(path: Path, uid: int | None, gid: int | None) -> None:
    """Hands what the worker put in a run's directory (its inputs) to the run's uid."""
    if uid is None:
        return
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            p = os.path.join(root, name)
            st = os.lstat(p)
            if st.st_uid != uid and not stat.S_ISLNK(st.st_mode):
                os.chown(p, uid, gid if gid is not None else uid, follow_symlinks=False)


def remove_run_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
