"""Kinds declare their signals, queries and updates once; the controller's routes and the CLI
are derived from that. Driven here through real processes with the test-only steerable kind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from shopfloor.devserver import DevServer
from tests.helpers import REPO, Stack, wait_until

STEERABLE = {"SHOPFLOOR_KIND_MODULES": '["tests.kinds.steerable.kind"]', "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def steer_stack(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("steer"),
        extra_env=STEERABLE,
    )
    s.start_worker("--kind", "steerable")
    s.start_controller()
    yield s
    s.stop()


def napping_job(stack: Stack, **job: object) -> str:
    job_id = stack.submit("steerable", {"naps": 1, "nap_s": 3600, **job})
    wait_until(
        lambda: (stack.http.get(f"/jobs/{job_id}").json().get("workflow_progress") or {}).get(
            "wake_at"
        ),
        what="the job to report its nap",
    )
    return job_id


def test_status_shows_the_wake_up_time_of_a_sleeping_job(steer_stack: Stack) -> None:
    job_id = napping_job(steer_stack)
    status = steer_stack.http.get(f"/jobs/{job_id}").json()
    reported = status["workflow_progress"]
    wake_at = datetime.fromisoformat(reported["wake_at"])
    started = datetime.fromisoformat(status["started_at"])
    assert timedelta(minutes=59) < wake_at - started < timedelta(minutes=61)
    assert reported["step"] == "nap 1" and "waiting until" in reported["status"]
    assert status["progress"] == []  # no activity runs: heartbeats alone would show nothing

    shown = steer_stack.cli("status", job_id)
    assert shown.returncode == 0, shown.stderr
    assert f"{wake_at:%Y-%m-%d %H:%M:%S}" in shown.stdout  # "waiting until … UTC for nap 1"
    assert "[nap 1]" in shown.stdout and "wakes at" in shown.stdout
    progress = steer_stack.http.get(f"/jobs/{job_id}/queries/progress").json()
    assert progress["wake_at"] == reported["wake_at"]
    steer_stack.http.post(f"/jobs/{job_id}/signals/finish")


def test_signal_query_update_over_http(steer_stack: Stack) -> None:
    http = steer_stack.http
    job_id = napping_job(steer_stack)
    r = http.post(f"/jobs/{job_id}/signals/nudge", json={"message": "hello"})
    assert r.status_code == 202 and r.json()["signal"] == "nudge", r.text
    assert http.get(f"/jobs/{job_id}/queries/messages").json() == {"messages": ["hello"]}

    r = http.post(f"/jobs/{job_id}/updates/set_label", json={"label": "blue"})
    assert r.status_code == 200, r.text
    assert r.json() == {"previous": "unlabelled", "current": "blue"}
    # Rejected by the workflow's validator: the reason, and the job goes on.
    r = http.post(f"/jobs/{job_id}/updates/set_label", json={"label": "!red"})
    assert r.status_code == 422 and "may not start with '!'" in r.json()["detail"], r.text
    # Rejected by the declared model before anything reaches Temporal.
    r = http.post(f"/jobs/{job_id}/updates/set_label", json={"label": ""})
    assert r.status_code == 422, r.text
    r = http.post(f"/jobs/{job_id}/signals/nudge", json={"msg": "typo"})
    assert r.status_code == 422, r.text

    # Names the kind does not declare: 404 with the names it has.
    r = http.post(f"/jobs/{job_id}/signals/pause")
    assert r.status_code == 404 and "['finish', 'nudge']" in r.json()["detail"], r.text
    r = http.get(f"/jobs/{job_id}/queries/no_such_query")
    assert r.status_code == 404 and "['messages', 'progress']" in r.json()["detail"], r.text
    # A name another kind declares (the agent kind's update): still not this job's.
    r = http.post(f"/jobs/{job_id}/updates/add_instruction", json={"text": "be brief"})
    assert r.status_code == 404 and "['set_label']" in r.json()["detail"], r.text
    assert http.post("/jobs/no-such-job/signals/nudge", json={"message": "x"}).status_code == 404

    assert http.post(f"/jobs/{job_id}/signals/finish").status_code == 202
    result = steer_stack.result(job_id, wait_s=60)
    assert result["status"] == "COMPLETED"
    assert result["result"]["messages"] == ["hello"] and result["result"]["label"] == "blue"
    assert result["result"]["finished_early"] is True

    # The job has ended: 409 for all three, saying so.
    for r in (
        http.post(f"/jobs/{job_id}/signals/nudge", json={"message": "late"}),
        http.get(f"/jobs/{job_id}/queries/messages"),
        http.post(f"/jobs/{job_id}/updates/set_label", json={"label": "late"}),
    ):
        assert r.status_code == 409 and "COMPLETED" in r.json()["detail"], r.text


def test_signal_query_update_from_the_cli(steer_stack: Stack) -> None:
    job_id = napping_job(steer_stack)
    sent = steer_stack.cli("signal", job_id, "nudge", "--json", '{"message": "from the cli"}')
    assert sent.returncode == 0, sent.stderr
    asked = steer_stack.cli("query", job_id, "messages")
    assert asked.returncode == 0 and json.loads(asked.stdout) == {"messages": ["from the cli"]}
    updated = steer_stack.cli("update", job_id, "set_label", "--json", '{"label": "cli"}')
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout) == {"previous": "unlabelled", "current": "cli"}

    unknown = steer_stack.cli("signal", job_id, "pause")
    assert unknown.returncode == 2 and "404" in unknown.stderr and "nudge" in unknown.stderr
    bad_json = steer_stack.cli("update", job_id, "set_label", "--json", "{label")
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr

    assert steer_stack.cli("signal", job_id, "finish").returncode == 0
    steer_stack.result(job_id, wait_s=60)
    late = steer_stack.cli("query", job_id, "messages")
    assert late.returncode == 2 and "409" in late.stderr
    # The help text lists what the registry's kinds declare.
    assert "set_label (steerable)" in steer_stack.cli("update", "--help").stdout


def test_openapi_has_typed_bodies_and_answers(steer_stack: Stack) -> None:
    spec = steer_stack.http.get("/openapi.json").json()
    paths = spec["paths"]
    nudge = paths["/jobs/{job_id}/signals/nudge"]["post"]
    assert nudge["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Nudge")
    update = paths["/jobs/{job_id}/updates/set_label"]["post"]
    assert update["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SetLabel"
    )
    answer = update["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/LabelChanged")
    progress = paths["/jobs/{job_id}/queries/progress"]["get"]["responses"]["200"]
    assert progress["content"]["application/json"]["schema"]["$ref"].endswith("/WorkflowProgress")
    kinds = {k["name"]: k for k in steer_stack.http.get("/kinds").json()}
    assert kinds["steerable"]["signals"] == ["nudge", "finish"]
    assert kinds["script"]["signals"] == []


def test_other_kinds_say_they_have_no_such_signal(stack: Stack) -> None:
    job_id = stack.submit("script", {"source": "print(1)"})
    r = stack.http.post(f"/jobs/{job_id}/signals/nudge", json={"message": "x"})
    assert r.status_code == 404 and "script jobs have no signal 'nudge'" in r.json()["detail"]
    stack.result(job_id)
