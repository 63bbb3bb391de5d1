"""Issue 22, "the real error, always", for the logs pipeline on a worker with no Docker engine:
through a real `shopfloor worker` and controller, the start activity's failure is short and
kept whole by the server (no "Failure exceeds size limit."), names the engine's address, its
setting and the root cause, and is what `GET /jobs/<id>/result`, `shopfloor result` and
`shopfloor pipeline start` show. (Not retried: seconds of retries install no engine; the in-process
test_docker_runtime.py::test_the_logs_pipeline_without_an_engine_fails_at_once_naming_it holds
the one attempt and the exact message.)"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from shopfloor.devserver import DevServer
from tests.helpers import Stack, free_port, wait_until

ROOT = "No such file or directory"


def _activity_failures(address: str, job_id: str) -> list[list[str]]:
    """Each failed activity's failure as the server keeps it: the messages of its chain."""

    async def read() -> list[list[str]]:
        client = await Client.connect(address)
        history = await client.get_workflow_handle(job_id).fetch_history()
        chains = []
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                failure, chain = event.activity_task_failed_event_attributes.failure, []
                while failure is not None:
                    chain.append(failure.message)
                    failure = failure.cause if failure.HasField("cause") else None
                chains.append(chain)
        return chains

    return asyncio.run(read())


def test_logs_pipeline_without_docker_shows_the_engine_error(tmp_path: Path) -> None:
    # A dev server of its own: the failed `pipeline-logs` job would be what every other test
    # on the session's server lists for the logs pipeline.
    server = DevServer(data_dir=tmp_path / "temporal", port=free_port(), ui_port=free_port())
    server.start()
    socket = f"unix://{tmp_path}/no-docker.sock"
    stack = Stack(
        temporal_address=server.address,
        tmp=tmp_path,
        extra_env={
            "SHOPFLOOR_PIPELINE_HOST": f"no-engine-{uuid.uuid4().hex[:8]}",
            "SHOPFLOOR_PIPELINE_DOCKER_HOST": socket,
        },
    )
    try:
        stack.start_worker("--kind", "pipeline")
        stack.start_controller()
        started = stack.cli("pipeline", "start", "logs")
        assert started.returncode != 0, started.stdout
        shown = " ".join((started.stdout + started.stderr).split())
        assert f"no Docker engine at {socket}" in shown and ROOT in shown, shown
        job_id = "pipeline-logs"
        wait_until(
            lambda: stack.http.get(f"/jobs/{job_id}").json()["status"] == "FAILED",
            timeout_s=30,
            what="the start failed",
        )
        # The server kept the activity's own failure, short, naming the root cause.
        chains = _activity_failures(stack.env["SHOPFLOOR_TEMPORAL_ADDRESS"], job_id)
        assert chains, "no activity failed"
        for chain in chains:
            assert "exceeds size limit" not in " ".join(chain), chain
            assert "no Docker engine" in chain[0] and ROOT in chain[0], chain
            assert len(chain[0]) <= 600, chain
        # Not retried, so never a pending step with a last failure: the job's result shows
        # it (GET /jobs/<id>/result, `shopfloor result`).
        job = stack.http.get(f"/jobs/{job_id}/result").text
        assert "no Docker engine" in job and ROOT in job and "exceeds size limit" not in job
        result = stack.cli("result", job_id)
        text = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 1 and "no Docker engine" in text and ROOT in text, text
        assert "exceeds size limit" not in text
    finally:
        stack.stop()
        server.stop()
