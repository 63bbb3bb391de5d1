"""Phased jobs and schedules through real processes: a worker SIGKILLed during the durable
wait, the seed's `temporal workflow start` with no input, schedules and the kill switch over
the CLI and HTTP, and a phased job whose steps are a script job and a simulation."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from shopfloor.devserver import DevServer, temporal_binary
from tests.helpers import REPO, Stack, wait_until
from tests.phased.conftest import EXAMPLES, TOKEN, serving_gateway


@pytest.fixture(scope="module")
def module_gateway() -> Iterator:
    with serving_gateway() as gw:
        yield gw


def gateway_env(gateway) -> dict[str, str]:
    return {
        "SHOPFLOOR_GATEWAY_URL": gateway.url,
        "SHOPFLOOR_GATEWAY_TOKEN": TOKEN,
        "SHOPFLOOR_EGRESS_ALLOW": gateway.url.removeprefix("http://"),  # a local gateway
    }


@pytest.fixture(scope="module")
def turn_stack(
    dev_server: DevServer, module_gateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Workers for scripts (schedule actions), phased and poetry-research jobs, with a gateway."""
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("turns"),
        extra_env=gateway_env(module_gateway),
    )
    s.start_worker("--kind", "script", "--kind", "phased", "--kind", "poetry-research")
    s.start_controller()
    yield s
    s.stop()


def test_worker_killed_during_the_wait_second_phase_runs_once(
    dev_server: DevServer, module_gateway, tmp_path: Path
) -> None:
    stack = Stack(
        temporal_address=dev_server.address, tmp=tmp_path, extra_env=gateway_env(module_gateway)
    )
    try:
        first = stack.start_worker("--kind", "poetry-research")
        stack.start_controller()
        job_id = stack.submit("poetry-research", {"wait": "4s"})
        wait_until(
            lambda: (
                module_gateway.calls("poetry-research-execute")
                and (stack.http.get(f"/jobs/{job_id}").json().get("workflow_progress") or {}).get(
                    "wake_at"
                )
            ),
            what="the first turn and the durable wait",
        )
        executes = len(module_gateway.calls("poetry-research-execute"))
        first.sigkill()
        stack.start_worker("--kind", "poetry-research")
        result = stack.result(job_id, wait_s=90)
        assert result["status"] == "COMPLETED", result
        assert len(module_gateway.calls("poetry-research-execute")) == executes
        synthesized = [t for t in module_gateway.calls("poetry-research-synthesize")]
        assert len(synthesized) == 1
    finally:
        stack.stop()


def test_seed_command_starts_it_with_no_input(
    dev_server: DevServer, module_gateway, tmp_path: Path
) -> None:
    """`temporal workflow start --type PoetryResearchWorkflow --task-queue clawfactory`."""
    stack = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path,
        queue_prefix="",
        extra_env=gateway_env(module_gateway),
    )
    job_id = f"poetry-research-manual-{uuid.uuid4().hex[:6]}"
    temporal = [temporal_binary(), "workflow", "--address", dev_server.address]
    before = len(module_gateway.calls("poetry-research-execute"))
    try:
        stack.start_worker("--kind", "poetry-research")
        stack.start_controller()
        started = subprocess.run(
            [*temporal[:2], "start", *temporal[2:], "--type", "PoetryResearchWorkflow"]
            + ["--task-queue", "clawfactory", "--workflow-id", job_id],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        wait_until(
            lambda: len(module_gateway.calls("poetry-research-execute")) > before,
            what="the execute turn",
        )
        status = wait_until(
            lambda: (
                (s := stack.http.get(f"/jobs/{job_id}").json()).get("workflow_progress")
                and s["workflow_progress"].get("wake_at")
                and s
            ),
            what="the 2 h wait",
        )
        wake_at = datetime.fromisoformat(status["workflow_progress"]["wake_at"])
        started_at = datetime.fromisoformat(status["started_at"])
        assert timedelta(hours=1, minutes=59) < wake_at - started_at < timedelta(hours=2, minutes=1)
        assert status["kind"] == "poetry-research"
    finally:
        subprocess.run([*temporal[:2], "terminate", *temporal[2:], "--workflow-id", job_id])
        stack.stop()


def test_schedules_apply_trigger_pause_backfill(turn_stack: Stack, tmp_path: Path) -> None:
    sid = f"nightly-script-{uuid.uuid4().hex[:6]}"
    definition = {
        "schedules": [
            {
                "id": sid,
                "cron": "0 4 * * *",
                "timezone": "Europe/Paris",
                "job": {"kind": "script", "input": {"source": "print('scheduled hello')"}},
            }
        ]
    }
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump(definition))

    applied = turn_stack.cli("schedule", "apply", str(path), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout) == [{"id": sid, "action": "created"}]
    described = turn_stack.http.get(f"/schedules/{sid}").json()
    again = turn_stack.cli("schedule", "apply", str(path), "--json")
    assert json.loads(again.stdout) == [{"id": sid, "action": "unchanged"}]
    same = turn_stack.http.get(f"/schedules/{sid}").json()
    assert same == described  # applying twice changed nothing
    assert same["cron"] == ["0 4 * * *"] and same["timezone"] == "Europe/Paris"
    assert len(same["next_runs"]) == 5
    # 04:00 in Paris is 03:00 or 02:00 UTC, depending on the season.
    assert all(datetime.fromisoformat(t).hour in (2, 3) for t in same["next_runs"])

    # Changed definition → updated; its runs keep working.
    definition["schedules"][0]["overlap"] = "buffer_one"
    path.write_text(yaml.safe_dump(definition))
    assert json.loads(turn_stack.cli("schedule", "apply", str(path), "--json").stdout) == [
        {"id": sid, "action": "updated"}
    ]

    assert turn_stack.cli("schedule", "trigger", sid).returncode == 0
    run = wait_until(
        lambda: (
            (d := turn_stack.http.get(f"/schedules/{sid}").json())["recent_runs"]
            and d["recent_runs"][-1]
        ),
        what="the triggered run",
    )
    result = turn_stack.result(run["job_id"], wait_s=60)
    assert result["status"] == "COMPLETED" and "scheduled hello" in result["result"]["stdout_tail"]

    paused = turn_stack.cli("schedule", "pause", sid, "--note", "maintenance")
    assert paused.returncode == 0
    view = turn_stack.http.get(f"/schedules/{sid}").json()
    assert view["paused"] and view["note"] == "maintenance"
    listed = turn_stack.cli("schedule", "list")
    assert sid in listed.stdout and "paused (maintenance)" in listed.stdout
    assert turn_stack.cli("schedule", "unpause", sid).returncode == 0
    assert turn_stack.http.get(f"/schedules/{sid}").json()["paused"] is False

    # Three cron slots of a past range → three runs.
    before = turn_stack.http.get(f"/schedules/{sid}").json()["runs_total"]
    backfill = turn_stack.cli(
        "schedule", "backfill", sid, "2026-01-01T00:00:00Z", "2026-01-03T23:00:00Z"
    )
    assert backfill.returncode == 0, backfill.stderr
    wait_until(
        lambda: turn_stack.http.get(f"/schedules/{sid}").json()["runs_total"] == before + 3,
        what="three backfilled runs",
    )
    runs = turn_stack.http.get(f"/schedules/{sid}").json()["recent_runs"][-3:]
    assert [r["scheduled_at"][:10] for r in runs] == ["2026-01-01", "2026-01-02", "2026-01-03"]

    assert turn_stack.cli("schedule", "delete", sid).returncode == 0
    assert turn_stack.http.get(f"/schedules/{sid}").status_code == 404
    missing = turn_stack.cli("schedule", "trigger", sid)
    assert missing.returncode == 2 and "no schedule" in missing.stderr


def test_trigger_honours_the_schedules_overlap_policy(turn_stack: Stack, tmp_path: Path) -> None:
    """Issue 22: `overlap: skip` and a run still going → `schedule trigger` starts nothing and
    says so (exit 1); `--overlap allow_all` overrides it for one trigger, and says that too."""
    sid = f"overlap-skip-{uuid.uuid4().hex[:6]}"
    long_run = {"source": "import time\ntime.sleep(120)", "timeout_s": 180}
    definition = {
        "schedules": [
            {
                "id": sid,
                "cron": "0 4 * * *",
                "overlap": "skip",
                "job": {"kind": "script", "input": long_run},
            }
        ]
    }
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump(definition))
    assert turn_stack.cli("schedule", "apply", str(path)).returncode == 0
    first = turn_stack.cli("schedule", "trigger", sid, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "TRIGGERED"
    job_id = wait_until(
        lambda: (
            (d := turn_stack.http.get(f"/schedules/{sid}").json())["recent_runs"]
            and d["recent_runs"][-1]["job_id"]
        ),
        what="the first run",
    )
    jobs = [job_id]
    try:
        wait_until(
            lambda: turn_stack.http.get(f"/jobs/{job_id}").json()["status"] == "RUNNING",
            what="the first run running",
        )
        skipped = turn_stack.cli("schedule", "trigger", sid)
        assert skipped.returncode == 1, skipped.stdout + skipped.stderr
        assert "still running" in skipped.stdout and "skip" in skipped.stdout
        assert job_id in skipped.stdout
        time.sleep(2)  # had Temporal started a run, the schedule would list it by now
        view = turn_stack.http.get(f"/schedules/{sid}").json()
        assert view["runs_total"] == 1 and len(view["recent_runs"]) == 1, view
        over = turn_stack.http.post(f"/schedules/{sid}/trigger", params={"overlap": "allow_all"})
        assert over.status_code == 202, over.text
        body = over.json()
        assert body["status"] == "TRIGGERED" and body["overridden"] is True
        assert body["overlap"] == "allow_all" and body["running"] == [job_id]
        second = wait_until(
            lambda: (
                (d := turn_stack.http.get(f"/schedules/{sid}").json())["runs_total"] == 2
                and d["recent_runs"][-1]["job_id"]
            ),
            what="the overriding run",
        )
        jobs.append(str(second))
    finally:
        for job in jobs:
            turn_stack.http.post(f"/jobs/{job}/cancel")
        turn_stack.cli("schedule", "delete", sid)


def test_bad_schedule_files_are_refused_with_the_field(turn_stack: Stack) -> None:
    cases = [
        ({"id": "x", "cron": "every day", "job": {"kind": "script"}}, "invalid cron"),
        (
            {"id": "x", "cron": "0 4 * * *", "timezone": "Mars/Base", "job": {"kind": "script"}},
            "time zone",
        ),
        ({"id": "x", "cron": "0 4 * * *", "job": {"kind": "nope"}}, "unknown job kind 'nope'"),
        ({"id": "x", "cron": "0 4 * * *", "job": {"kind": "script", "input": {}}}, "job.input"),
    ]
    for schedule, needle in cases:
        r = turn_stack.http.put("/schedules", json={"schedules": [schedule]})
        assert r.status_code == 422 and needle in r.text, (schedule, r.text)


def test_kill_switch_pauses_schedules_refuses_turns_and_comes_back(
    turn_stack: Stack, module_gateway, tmp_path: Path
) -> None:
    shipped = yaml.safe_load((REPO / "examples" / "schedules" / "clawfactory.yaml").read_text())
    assert shipped["schedules"][0]["id"] == "poetry-research-daily"
    assert shipped["schedules"][0]["cron"] == "0 4 * * *"
    path = tmp_path / "clawfactory.yaml"
    path.write_text(yaml.safe_dump(shipped))
    assert turn_stack.cli("schedule", "apply", str(path)).returncode == 0
    manual = f"by-hand-{uuid.uuid4().hex[:6]}"
    path.write_text(
        yaml.safe_dump(
            {
                "schedules": [
                    *shipped["schedules"],
                    {
                        "id": manual,
                        "cron": "0 5 * * *",
                        "job": {"kind": "script", "input": {"source": "1"}},
                    },
                ]
            }
        )
    )
    assert turn_stack.cli("schedule", "apply", str(path)).returncode == 0
    assert turn_stack.cli("schedule", "pause", manual, "--note", "by hand").returncode == 0
    try:
        on = turn_stack.cli("kill-switch", "on", "--reason", "agent wrote nonsense")
        assert on.returncode == 0, on.stderr
        assert json.loads(on.stdout)["on"] is True
        daily = turn_stack.http.get("/schedules/poetry-research-daily").json()
        assert daily["paused"] and "agent wrote nonsense" in daily["note"]
        # A paused schedule can still be triggered: the turn itself refuses.
        turns_before = len(module_gateway.turns)
        assert turn_stack.cli("schedule", "trigger", "poetry-research-daily").returncode == 0
        run = wait_until(
            lambda: turn_stack.http.get("/schedules/poetry-research-daily").json()["recent_runs"],
            what="the triggered run",
        )[-1]
        refused = turn_stack.result(run["job_id"], wait_s=60)
        assert refused["status"] == "FAILED" and "kill switch is on" in refused["error"]
        assert len(module_gateway.turns) == turns_before
        status = turn_stack.cli("kill-switch", "status")
        assert json.loads(status.stdout)["reason"] == "agent wrote nonsense"
    finally:
        off = turn_stack.cli("kill-switch", "off", "--note", "prompt fixed")
    assert off.returncode == 0 and json.loads(off.stdout)["on"] is False
    assert turn_stack.http.get("/schedules/poetry-research-daily").json()["paused"] is False
    # Paused by hand before the switch: still paused, with its own note.
    by_hand = turn_stack.http.get(f"/schedules/{manual}").json()
    assert by_hand["paused"] and by_hand["note"] == "by hand"
    for sid in ("poetry-research-daily", manual):
        turn_stack.http.delete(f"/schedules/{sid}")


def test_phased_job_runs_a_script_then_a_simulation(stack: Stack) -> None:
    definition = yaml.safe_load((EXAMPLES / "script_then_simulation.yaml").read_text())
    job_id = stack.submit("phased", {"definition": definition})
    result = stack.result(job_id, wait_s=180)
    assert result["status"] == "COMPLETED", result
    measure, simulate = result["result"]["steps"]
    assert measure["status"] == "COMPLETED" and measure["result"]["exit_code"] == 0
    assert '{"box_mm": 40}' in measure["result"]["stdout_tail"]
    assert simulate["status"] == "COMPLETED" and simulate["result"]["outcome"] == "SUCCESS"
    assert simulate["result"]["metrics"]["steps"] > 0
    # Each step's job is a job of its own kind, visible as such.
    child = stack.http.get(f"/jobs/{simulate['job_id']}").json()
    assert child["kind"] == "simulation" and child["status"] == "COMPLETED"
