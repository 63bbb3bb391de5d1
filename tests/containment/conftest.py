"""Session check (issue 11, must-show 4): no `/tmp/shopfloor-*` is left after the tests.

Work roots of workers the tests SIGKILLed are removed by the next worker to start; the check
does what that next worker would (`WorkRoot.sweep`), then fails the session if anything named
`shopfloor-*` is still in the temp dir.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from shopfloor.sandbox._identity import WorkRoot


def leftovers() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("shopfloor-*"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = leftovers()
    WorkRoot(shared_with_runs=False).sweep()
    left = leftovers()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if left:
        if reporter is not None:
            reporter.write_line(f"FAILED: left in the temp dir after the tests: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        swept = len(before)
        reporter.write_line(f"no shopfloor-* left in the temp dir ({swept} swept work roots)")
