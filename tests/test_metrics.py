"""Prometheus metrics scraped after real jobs: the worker's endpoint (the SDK's runtime
metrics and shopfloor's job metrics on one port) and the controller's /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shopfloor.devserver import DevServer
from tests.helpers import REPO, Stack, free_port, wait_until

RAMP_BOX = (REPO / "examples" / "ramp_box.py").read_text()


@pytest.fixture(scope="module")
def observed(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("metrics"),
        extra_env={"SHOPFLOOR_WORKER_METRICS_PORT": str(free_port())},
    )
    kinds = ("script", "simulation", "agent", "phased")
    s.start_worker(*[arg for k in kinds for arg in ("--kind", k)])
    s.start_controller()
    yield s
    s.stop()


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_counters_match_the_jobs_that_ran(observed: Stack) -> None:
    worker_metrics = f"http://127.0.0.1:{observed.env['SHOPFLOOR_WORKER_METRICS_PORT']}/metrics"
    jobs = [
        ("script", {"source": "print('ok')"}),
        ("script", {"source": "raise SystemExit(3)"}),
        ("script", {"source": "import time\ntime.sleep(30)", "timeout_s": 1}),
        ("simulation", {"scene": {"kind": "source", "source": RAMP_BOX},
                        "options": {"duration_s": 2, "render": False}}),
        ("agent", {"goalId": "metrics", "specType": "hello", "agentType": "mock-agent"}),
        ("phased", {"definition": {"name": "nap", "steps": [
            {"id": "nap", "type": "delay", "duration": "1s"}]}}),
    ]  # fmt: skip
    ids = [observed.submit(kind, job) for kind, job in jobs]
    results = [observed.result(job_id, wait_s=180) for job_id in ids]
    # A job that did not pass ends FAILED, with its result (docs/outcomes.md).
    assert [(r["status"], r["outcome"]) for r in results] == [
        ("COMPLETED", "passed"),
        ("FAILED", "failed"),
        ("FAILED", "timed_out"),
        *[("COMPLETED", "passed")] * 3,
    ]
    assert results[2]["result"]["killed_reason"] == "timeout"

    expected = {
        ("script", "passed"): 1,
        ("script", "failed"): 1,  # exit 3
        ("script", "timed_out"): 1,  # killed at its time limit
        ("simulation", "passed"): 1,
        ("agent", "passed"): 1,
        ("phased", "passed"): 1,
    }

    def scraped() -> str | None:
        text = httpx.get(worker_metrics, timeout=10).text
        done = all(
            samples(text, "shopfloor_jobs_finished_total", kind=k, outcome=o) == n
            for (k, o), n in expected.items()
        )
        return text if done else None

    text = wait_until(scraped, timeout_s=30, what="job counters on the worker's /metrics")
    assert isinstance(text, str)
    for kind, started in {"script": 3, "simulation": 1, "agent": 1, "phased": 1}.items():
        assert samples(text, "shopfloor_jobs_started_total", kind=kind) == started, kind
    assert samples(text, "shopfloor_jobs_finished_total") == sum(expected.values())
    assert samples(text, "shopfloor_job_duration_seconds_count", kind="script") == 3
    assert samples(text, "shopfloor_sandbox_kills_total", kind="script", reason="timeout") == 1
    assert samples(text, "shopfloor_sandbox_kills_total") == 1
    # One completed attempt per job; a run longer than the local budget also counts its local
    # attempt as `handed_off` (the 1 s timeout races the 1 s budget).
    finished = "shopfloor_activities_finished_total"
    assert samples(text, finished, activity="run_script", outcome="completed") == 3
    assert samples(text, finished, activity="run_simulation", outcome="completed") == 1
    assert samples(text, finished, outcome="error") == 0
    assert samples(text, "shopfloor_zygote_starts_total", zygote="warm") == 1
    # The SDK's own runtime metrics share the endpoint: free slots per queue, among others.
    queue = observed.env["SHOPFLOOR_TASK_QUEUE_PREFIX"] + "simulation-task-queue"
    assert samples(text, "shopfloor_activity_slots_free", task_queue=queue) == 8
    assert (
        samples(
            text,
            "temporal_worker_task_slots_available",
            task_queue=queue,
            worker_type="ActivityWorker",
        )
        == 8
    )

    controller = observed.http.get("/metrics")
    assert controller.status_code == 200
    ctext = controller.text
    for kind in ("script", "simulation", "agent", "phased"):
        submitted = sum(1 for k, _ in jobs if k == kind)
        counted = samples(
            ctext, "shopfloor_http_requests_total", route=f"/jobs/{kind}", method="POST"
        )
        assert counted == submitted, kind
    assert samples(ctext, "shopfloor_http_requests_total", route="/jobs/{job_id}/result") >= 6
    assert samples(ctext, "shopfloor_http_request_duration_seconds_count", route="/metrics") == 0
    assert samples(ctext, "shopfloor_http_exceptions_total") == 0
    missing = observed.http.get("/jobs/no-such-job")
    assert missing.status_code == 404
    again = observed.http.get("/metrics").text
    assert (
        samples(again, "shopfloor_http_requests_total", route="/jobs/{job_id}", status="404") == 1
    )

    # The dashboard shows every one of those jobs in its kind's terms (server-rendered).
    pages = {job_id: observed.http.get(f"/ui/jobs/{job_id}") for job_id in ids}
    assert all(p.status_code == 200 for p in pages.values())
    script_ok, script_exit3, script_killed, simulation, agent, phased = pages.values()
    assert '<td class="exit-code">3</td>' in script_exit3.text
    assert "timeout" in script_killed.text
    assert "Verdict: <strong>SUCCESS</strong>" in simulation.text
    assert "Transcript" in agent.text and "Hello, world!" in agent.text
    assert '<ol class="timeline">' in phased.text and "wait 1s" in phased.text
