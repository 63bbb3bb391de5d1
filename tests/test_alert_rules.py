"""The shipped alert rules (deploy/prometheus/alerts.yml) are valid for Prometheus's own
checker, and behave as deploy/prometheus/tests/alerts_test.yml says: nothing fires on an idle
stack, each alert fires on the series that should fire it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
promtool = shutil.which("promtool")
pytestmark = pytest.mark.skipif(promtool is None, reason="promtool: `make setup` installs it")


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [str(promtool), "check", "rules", *sorted(map(str, PROMETHEUS.glob("*.yml")))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 14 rules found" in done.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    done = subprocess.run(
        [str(promtool), "test", "rules", "tests/alerts_test.yml"],
        capture_output=True,
        text=True,
        cwd=PROMETHEUS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
