"""Script jobs end to end: real dev server, worker and controller processes, HTTP and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from shopfloor.devserver import temporal_binary
from tests.helpers import Stack, wait_until

WRITES_ARTIFACT = """
import os, sys
print("hello", sys.argv[1:])
print("oops", file=sys.stderr)
with open(os.path.join(os.environ["SHOPFLOOR_OUT"], "answer.txt"), "w") as f:
    f.write("42")
os.makedirs("out/plots", exist_ok=True)
open("out/plots/p.csv", "w").write("x,y\\n1,2\\n")
"""


def test_script_job_over_http_with_artifacts(stack: Stack) -> None:
    res = stack.run("script", {"source": WRITES_ARTIFACT, "args": ["a", "b"]})
    assert res["status"] == "COMPLETED"
    result = res["result"]
    assert result["exit_code"] == 0 and result["killed_reason"] is None
    assert result["stdout_tail"] == "hello ['a', 'b']\n"
    assert result["stderr_tail"] == "oops\n"
    assert set(result["artifacts"]) == {"answer.txt", "plots/p.csv"}
    url = res["links"][result["artifacts"]["answer.txt"]]
    assert stack.http.get(url).text == "42"
    assert stack.http.get(res["links"][result["artifacts"]["plots/p.csv"]]).text == "x,y\n1,2\n"


def test_script_from_uploaded_artifact(stack: Stack) -> None:
    up = stack.http.put("/uploads/job.py", content=b"print(6 * 7)")
    assert up.status_code == 201
    res = stack.run("script", {"source_uri": up.json()["uri"]})
    assert res["result"]["stdout_tail"] == "42\n"


def test_worker_secrets_do_not_reach_scripts(stack: Stack) -> None:
    # The stack's worker inherited this test process's environment.
    assert "PATH" in os.environ
    res = stack.run(
        "script", {"source": "import os; print(sorted(os.environ))", "env": {"JOB_X": "1"}}
    )
    names = res["result"]["stdout_tail"]
    assert "JOB_X" in names and "SHOPFLOOR_TEMPORAL_ADDRESS" not in names
    # Nor through the process that forked it (the launcher zygote): a run has its own uid,
    # so the zygote's environment (which holds no secrets either) is not even readable.
    peek = "import os; print(open(f'/proc/{os.getppid()}/environ', 'rb').read())"
    parent_env = stack.run("script", {"source": peek})["result"]
    assert parent_env["exit_code"] == 1
    assert "PermissionError" in parent_env["stderr_tail"]
    assert "SHOPFLOOR_TEMPORAL_ADDRESS" not in parent_env["stdout_tail"]


def test_failure_modes_end_with_clear_reasons_and_worker_survives(stack: Stack) -> None:
    cases = {
        "failing": ({"source": "raise ValueError('bad input')"}, 1, None),
        "timeout": ({"source": "import time; time.sleep(60)", "timeout_s": 2}, None, "timeout"),
        "memory": ({"source": "x = bytearray(16 * 1024**3)", "memory_mb": 512}, 1, "memory"),
        "forkbomb": (
            {"source": "import os\nwhile True:\n    os.fork()", "max_processes": 16},
            1,
            "processes",
        ),
        "os_exit": ({"source": "import os; os._exit(3)"}, 3, None),
    }
    job_ids = {name: stack.submit("script", job) for name, (job, _, _) in cases.items()}
    for name, (_, exit_code, reason) in cases.items():
        res = stack.result(job_ids[name])
        result = res["result"]
        # A job that did not pass ends FAILED, carrying its result (docs/outcomes.md).
        outcome = "timed_out" if reason == "timeout" else "failed"
        assert (res["status"], res["outcome"]) == ("FAILED", outcome), (name, res)
        assert result["exit_code"] == exit_code, (name, result)
        assert result["killed_reason"] == reason, (name, result)
        assert result["attempt"] == 1, (name, result)  # a failing script is a result, not a retry
    assert "ValueError: bad input" in stack.result(job_ids["failing"])["result"]["stderr_tail"]
    assert stack.result(job_ids["timeout"])["result"]["timed_out"] is True
    # The worker is still healthy and serving.
    assert all(w.alive() for w in stack.workers)
    assert stack.run("script", {"source": "print('still here')"})["result"]["stdout_tail"] == (
        "still here\n"
    )


def test_hundred_megabytes_of_output(stack: Stack) -> None:
    code = (
        "import sys\nb = b'y' * 1023 + b'\\n'\n"
        "for _ in range(102400): sys.stdout.buffer.write(b)\nprint('done')"
    )
    result = stack.run("script", {"source": code})["result"]
    assert result["exit_code"] == 0
    assert result["stdout_bytes"] == 100 * 1024 * 1024 + 5
    assert result["stdout_tail"].endswith("done\n") and len(result["stdout_tail"]) <= 65536


def test_cancel_running_job(stack: Stack) -> None:
    job_id = stack.submit(
        "script", {"source": "import time\nprint('working', flush=True)\ntime.sleep(120)"}
    )
    wait_until(
        lambda: any(
            (p.get("details") or {}).get("last_line") == "working"
            for p in stack.http.get(f"/jobs/{job_id}").json()["progress"]
        ),
        timeout_s=30,
        what="heartbeat with progress",
    )
    r = stack.http.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 202
    res = stack.result(job_id, wait_s=30)
    # CANCELED for every client (the temporal CLI and UI too), with what it produced.
    assert res["status"] == "CANCELED" and res["error"] == "cancelled"
    assert res["result"]["killed_reason"] == "cancelled"
    assert res["result"]["stdout_tail"] == "working\n"
    assert stack.http.get(f"/jobs/{job_id}").json()["status"] == "CANCELED"
    assert stack.http.post(f"/jobs/{job_id}/cancel").status_code == 409


def test_status_shows_heartbeat_progress(stack: Stack) -> None:
    job_id = stack.submit(
        "script",
        {"source": "import time\nfor i in range(30):\n    print('tick', i)\n    time.sleep(0.2)"},
    )
    status = wait_until(
        lambda: (
            (s := stack.http.get(f"/jobs/{job_id}").json())["progress"]
            and (s["progress"][0].get("details") or {}).get("stdout_bytes")
            and s
        ),
        timeout_s=20,
        what="progress details",
    )
    details = status["progress"][0]["details"]
    assert status["status"] == "RUNNING" and status["kind"] == "script"
    assert details["stdout_bytes"] > 0 and details["last_line"].startswith("tick")
    assert stack.result(job_id)["result"]["exit_code"] == 0


def test_same_idempotency_key_is_one_job(stack: Stack) -> None:
    key = f"key-{uuid.uuid4()}"
    job = {"source": "import uuid; print(uuid.uuid4())"}
    first = stack.http.post("/jobs/script", json=job, headers={"Idempotency-Key": key})
    second = stack.http.post("/jobs/script", json=job, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["job_id"] == second.json()["job_id"] and second.json()["created"] is False
    out = stack.result(first.json()["job_id"])["result"]["stdout_tail"]
    # After completion the key still names the same job (and its one result).
    third = stack.http.post("/jobs/script", json=job, headers={"Idempotency-Key": key})
    assert third.status_code == 200 and third.json()["job_id"] == first.json()["job_id"]
    assert stack.result(third.json()["job_id"])["result"]["stdout_tail"] == out
    # Reusing the key for different input is refused rather than silently ignored.
    other = stack.http.post(
        "/jobs/script", json={"source": "print(1)"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409


def test_list_jobs(stack: Stack) -> None:
    job_id = stack.submit("script", {"source": "print(1)"})
    stack.result(job_id)
    jobs = stack.http.get("/jobs", params={"kind": "script", "limit": 200}).json()
    assert job_id in {j["job_id"] for j in jobs}
    assert stack.http.get("/jobs", params={"kind": "nope"}).status_code == 400


def test_cli_submit_wait_status_result_list(stack: Stack, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import os\nprint('from the cli')\nopen('out/r.txt','w').write('ok')\n")
    env = {**stack.env, "SHOPFLOOR_CONTROLLER_URL": stack.url}
    cli = [sys.executable, "-m", "shopfloor"]
    done = subprocess.run(
        [*cli, "submit", "script", str(script), "--wait", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout)
    assert res["status"] == "COMPLETED" and res["result"]["stdout_tail"] == "from the cli\n"
    assert any(url.endswith("/r.txt") for url in res["links"].values())
    human = subprocess.run(
        [*cli, "result", res["job_id"]], env=env, capture_output=True, text=True, timeout=60
    )
    assert human.returncode == 0 and "from the cli" in human.stdout and "COMPLETED" in human.stdout
    listed = subprocess.run([*cli, "list", "--json"], env=env, capture_output=True, text=True)
    assert res["job_id"] in {j["job_id"] for j in json.loads(listed.stdout)}
    status = subprocess.run(
        [*cli, "status", res["job_id"]], env=env, capture_output=True, text=True
    )
    assert "COMPLETED" in status.stdout
    bad = subprocess.run(
        [*cli, "submit", "script", str(script), "-o", "timeout_s=-1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "timeout_s" in bad.stderr and "Traceback" not in bad.stderr


def test_plain_temporal_cli_starts_a_script_job(dev_server, tmp_path: Path) -> None:
    """Any client works: the `temporal` CLI, plain JSON, the documented queue name."""
    stack = Stack(temporal_address=dev_server.address, tmp=tmp_path, queue_prefix="")
    try:
        stack.start_worker()
        job_id = f"cli-{uuid.uuid4().hex[:8]}"
        started = subprocess.run(
            [
                temporal_binary(),
                "workflow",
                "start",
                "--address",
                dev_server.address,
                "--type",
                "ScriptExecutionWorkflow",
                "--task-queue",
                "simulation-task-queue",
                "--workflow-id",
                job_id,
                "--input",
                json.dumps({"source": "print('plain json works')"}),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        result = subprocess.run(
            [
                temporal_binary(),
                "workflow",
                "result",
                "--address",
                dev_server.address,
                "--workflow-id",
                job_id,
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "plain json works" in result.stdout and '"exit_code": 0' in result.stdout
    finally:
        stack.stop()


def test_build123d_script_runs_warm(stack: Stack) -> None:
    source = (Path(__file__).parents[2] / "examples" / "cad_part.py").read_text()
    result = stack.run("script", {"source": source})["result"]
    assert result["exit_code"] == 0, result["stderr_tail"]
    assert result["warm"] is True and "bracket volume" in result["stdout_tail"]
    assert "bracket.step" in result["artifacts"]
    cold = stack.run("script", {"source": source, "warm": "never"})["result"]
    assert cold["warm"] is False and cold["stdout_tail"] == result["stdout_tail"]


def test_input_a_retry_cannot_fix_fails_the_job_at_once(stack: Stack) -> None:
    """The controller checks what it can; what only the worker can see (a missing upload)
    fails the job without retries, with the reason in the result."""
    job_id = stack.submit("script", {"source_uri": "artifact://uploads/nope/missing.py"})
    res = stack.result(job_id)
    assert res["status"] == "FAILED"
    assert "cannot read script" in res["error"] and "missing.py" in res["error"]
    progress = stack.http.get(f"/jobs/{job_id}").json()
    assert progress["status"] == "FAILED" and progress["progress"] == []
