"""The CLI tells the truth: exit codes (0 passed, 1 failed, 2 usage, 3 unreachable, 4 still
running), valid JSON when piped, user text never read as markup, whole ids in lists."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Stack, free_port, run_cli


def script(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def test_exit_codes(stack: Stack, tmp_path: Path) -> None:
    ok = stack.cli("submit", "script", script(tmp_path, "ok.py", "print(1)"), "--wait")
    assert ok.returncode == 0, ok.stderr
    failing = script(tmp_path, "bad.py", "import sys\nprint('nope')\nsys.exit(3)")
    failed = stack.cli("submit", "script", failing, "--wait", "--json")
    assert failed.returncode == 1, failed.stderr
    job = json.loads(failed.stdout)
    # A job that did not pass ends FAILED, carrying its whole result (docs/outcomes.md).
    assert (job["status"], job["outcome"]) == ("FAILED", "failed")
    assert job["result"]["exit_code"] == 3
    assert stack.cli("result", job["job_id"]).returncode == 1
    assert stack.cli("result", "no-such-job").returncode == 2
    usage = stack.cli("submit", "script", failing, "-o", "timeout_s=-1")
    assert usage.returncode == 2 and "timeout_s" in usage.stderr
    sleeper = script(tmp_path, "slow.py", "import time\ntime.sleep(60)")
    started = stack.cli("submit", "script", sleeper, "--json")
    job_id = json.loads(started.stdout)["job_id"]
    assert stack.cli("result", job_id).returncode == 4
    cancelled = stack.cli("cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert stack.cli("result", job_id, "--wait", "30").returncode == 1  # CANCELED
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = run_cli("status", job_id, env={"SHOPFLOOR_CONTROLLER_URL": dead})
    assert unreachable.returncode == 3 and "not reachable" in unreachable.stderr


def test_piped_json_is_valid_and_markup_is_text(stack: Stack, tmp_path: Path) -> None:
    noisy = script(
        tmp_path,
        "noisy.py",
        "import sys\n"
        "print('[/tmp/x] [bold]not bold[/bold] ' + 'y' * 300)\n"
        "print('[/oops]', file=sys.stderr)\n"
        "sys.exit(1)\n",
    )
    done = stack.cli("submit", "script", noisy, "--wait", "--json")
    job = json.loads(done.stdout)  # one JSON document, however long its lines
    status = stack.cli("status", job["job_id"], "--json")
    assert json.loads(status.stdout)["job_id"] == job["job_id"]
    shown = stack.cli("result", job["job_id"])
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert "[/tmp/x] [bold]not bold[/bold]" in shown.stdout and "[/oops]" in shown.stdout


def test_list_shows_whole_ids_and_refuses_unknown_statuses(stack: Stack, tmp_path: Path) -> None:
    done = stack.cli("submit", "script", script(tmp_path, "a.py", "print(2)"), "--wait", "--json")
    job_id = json.loads(done.stdout)["job_id"]
    listed = stack.cli("list", "--limit", "50")
    assert listed.returncode == 0 and job_id in listed.stdout.split()
    bogus = stack.cli("list", "--status", "bogus")
    assert bogus.returncode == 2 and "unknown status 'bogus'" in bogus.stderr
    assert "ExecutionStatus" not in bogus.stderr


def test_kind_options_reach_their_kind_only(stack: Stack, tmp_path: Path) -> None:
    """`--env` is the script kind's own option of `submit` (its `Presentation.cli_options`)."""
    env = script(tmp_path, "env.py", "import os\nprint(os.environ['JOB_A'], os.environ['SEED'])")
    done = stack.cli("submit", "script", env, "--env", "JOB_A=x y", "--env", "SEED=42", "--wait")
    assert done.returncode == 0, done.stderr
    assert "x y 42" in done.stdout
    bad = stack.cli("submit", "script", env, "--env", "JOB_A")
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr
    other = stack.cli("submit", "simulation", env, "--env", "JOB_A=1")
    assert other.returncode == 2 and "not an option of simulation jobs" in other.stderr
