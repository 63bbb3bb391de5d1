"""Crash tests: real processes killed with SIGKILL mid-job; nothing is lost."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx

from shopfloor.devserver import DevServer
from tests.helpers import Stack, free_port, wait_until

LONG_SCRIPT = """
import time, os
for i in range({seconds}):
    print("tick", i, flush=True)
    time.sleep(1)
open("out/done.txt", "w").write("finished")
print("finished")
"""


def _running_attempt(stack: Stack, job_id: str) -> int:
    progress = stack.http.get(f"/jobs/{job_id}").json()["progress"]
    return progress[0]["attempt"] if progress and progress[0].get("details") else 0


def test_controller_killed_and_restarted_result_is_there(fresh_stack: Stack) -> None:
    fresh_stack.start_worker()
    fresh_stack.start_controller()
    job_id = fresh_stack.submit("script", {"source": LONG_SCRIPT.format(seconds=4)})
    fresh_stack.controller.sigkill()
    try:
        fresh_stack.http.get("/healthz")
        raise AssertionError("controller still answering after SIGKILL")
    except httpx.HTTPError:
        pass
    fresh_stack.start_controller()  # same port, nothing carried over but the settings
    res = fresh_stack.result(job_id)
    assert res["status"] == "COMPLETED" and res["result"]["stdout_tail"].endswith("finished\n")


def test_worker_killed_mid_script_job_completes_once_on_new_worker(fresh_stack: Stack) -> None:
    first = fresh_stack.start_worker()
    fresh_stack.start_controller()
    job_id = fresh_stack.submit("script", {"source": LONG_SCRIPT.format(seconds=6)})
    wait_until(lambda: _running_attempt(fresh_stack, job_id) == 1, timeout_s=30, what="attempt 1")
    first.sigkill()
    fresh_stack.start_worker()
    res = fresh_stack.result(job_id, wait_s=120)
    result = res["result"]
    assert res["status"] == "COMPLETED"
    assert result["exit_code"] == 0 and result["attempt"] == 2
    # One recorded result: exactly one completed run_script in the workflow history.
    history = fresh_stack.http.get(f"/jobs/{job_id}").json()
    assert history["status"] == "COMPLETED"
    assert result["stdout_tail"].count("finished") == 1
    assert "done.txt" in result["artifacts"]


def _script_pids(token: str) -> list[int]:
    """The pids whose command line holds `token` (a script's own argument)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token in (entry / "cmdline").read_text(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in pids if pid != os.getpid()]


def test_worker_killed_in_the_local_phase_counts_that_run(fresh_stack: Stack) -> None:
    """Issue 22: a worker SIGKILLed in the first second of a script, while the run is still
    its local activity (before the hand-off), took that run with it; the job runs again on
    another worker, and its result says attempt 2: the lost run counts, though Temporal's
    local activity attempt starts at 1 again on the new worker."""
    token = f"local-phase-{uuid.uuid4().hex[:12]}"
    # A hand-off budget of 6 s: the whole first second is the local phase for certain.
    first = fresh_stack.start_worker(env={"SHOPFLOOR_HANDOFF_AFTER_S": "6"})
    fresh_stack.start_controller()
    source = LONG_SCRIPT.format(seconds=3)
    # `warm: never`: a fresh interpreter, whose command line carries the token.
    job_id = fresh_stack.submit("script", {"source": source, "args": [token], "warm": "never"})
    started = time.monotonic()
    try:
        wait_until(lambda: bool(_script_pids(token)), timeout_s=30, what="the script runs")
        first.sigkill()
        assert time.monotonic() - started < 30
        fresh_stack.start_worker()
        res = fresh_stack.result(job_id, wait_s=120)
    finally:
        for pid in _script_pids(token):  # the killed worker's run, should it outlive it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    result = res["result"]
    assert res["status"] == "COMPLETED", res
    assert result["exit_code"] == 0 and result["stdout_tail"].count("finished") == 1, result
    assert result["attempt"] == 2, result
    assert "done.txt" in result["artifacts"]


def test_worker_stopped_gracefully_mid_job_does_not_record_a_cancel(fresh_stack: Stack) -> None:
    """SIGTERM (a deploy, Ctrl-C on `up`) cancels activities on that worker; that must not
    end the job as `cancelled`: it runs again on another worker."""
    first = fresh_stack.start_worker()
    fresh_stack.start_controller()
    job_id = fresh_stack.submit("script", {"source": LONG_SCRIPT.format(seconds=8)})
    wait_until(lambda: _running_attempt(fresh_stack, job_id) == 1, timeout_s=30, what="attempt 1")
    first.stop()  # SIGTERM: graceful shutdown, then in-flight activities are cancelled
    fresh_stack.start_worker()
    result = fresh_stack.result(job_id, wait_s=120)["result"]
    assert result["killed_reason"] is None and result["exit_code"] == 0
    assert result["attempt"] >= 2


def test_dev_server_killed_mid_job_and_restarted_on_same_sqlite(tmp_path: Path) -> None:
    server = DevServer(data_dir=tmp_path / "temporal", port=free_port(), ui_port=free_port())
    server.start()
    stack = Stack(temporal_address=server.address, tmp=tmp_path)
    try:
        stack.start_worker()
        stack.start_controller()
        job_id = stack.submit("script", {"source": LONG_SCRIPT.format(seconds=5)})
        wait_until(lambda: _running_attempt(stack, job_id) >= 1, timeout_s=30, what="running")
        server.kill()
        assert stack.http.get("/healthz").status_code == 503
        server.start()
        res = stack.result(job_id, wait_s=180)
        assert res["status"] == "COMPLETED"
        assert res["result"]["exit_code"] == 0
        assert res["result"]["stdout_tail"].endswith("finished\n")
    finally:
        stack.stop()
        server.stop()
