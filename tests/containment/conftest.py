"""Session check (issue 11, must-show 4): no `/tmp/shopfloor-*` is left after the tests.

Work roots of workers the tests SIGKILLed are removed by the next worker to start; the check
does what that next worker would (`WorkRoot.sweep`), then fails the session if anything named
`shopfloor-*` that was not there when the session started is still in the temp dir (a work
root of a live worker that is not ours, e.g. another session's on the same machine, aside).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from shopfloor.sandbox._identity import WorkRoot


def leftovers() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("shopfloor-*"))


# Taken when this conftest is loaded: at collection, before any test has run (a conftest below
# the rootdir does not see pytest_sessionstart when the whole suite runs).
_before: set[Path] = leftovers()


def _ours(pid: int) -> bool:
    """Whether `pid` is this test process or one of its descendants."""
    me = os.getpid()
    for _ in range(64):
        if pid == me:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            return False
    return False


def _live_foreign_worker_root(path: Path) -> bool:
    m = re.match(r"shopfloor-w(\d+)-", path.name)
    return bool(m) and Path(f"/proc/{m.group(1)}").exists() and not _ours(int(m.group(1)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    WorkRoot(shared_with_runs=False).sweep()
    left = sorted(p for p in leftovers() - _before if not _live_foreign_worker_root(p))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if left:
        if reporter is not None:
            reporter.write_line(f"FAILED: left in the temp dir by the tests: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line("no shopfloor-* left in the temp dir by the tests")
