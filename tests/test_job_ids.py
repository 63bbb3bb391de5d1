"""Names belong to their owners. A job's artifacts live under its id, and uploads in the
store's `uploads/` area: a job started from the `temporal` CLI with the id `uploads` wrote
`out/<digest>/<name>` over an existing upload, and the job that used that upload ran the
attacker's code. Now a workflow whose id is reserved or path syntax fails at once (whatever
client started it) and writes nothing, and an upload is checked against its digest when used.
Each test here fails on the code before: the `uploads` job completed and the upload changed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from shopfloor.devserver import DevServer, temporal_binary
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from tests.helpers import Stack

VICTIM = "print('the victim ran its own upload')\n"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _cli_start(dev_server: DevServer, job_id: str, queue: str, payload: str) -> None:
    started = subprocess.run(
        [temporal_binary(), "workflow", "start", "--address", dev_server.address]
        + ["--type", "ScriptExecutionWorkflow", "--task-queue", queue]
        + ["--workflow-id", job_id, "--input", payload],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr


async def _failure(client: Client, job_id: str) -> str:
    handle = client.get_workflow_handle(job_id)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 120)
    return str(failed.value.cause)


async def test_reserved_and_path_ids_from_the_temporal_cli_fail_at_once_and_write_nothing(
    stack: Stack, dev_server: DevServer
) -> None:
    uploaded = stack.http.put("/uploads/victim.py", content=VICTIM.encode())
    assert uploaded.status_code == 201, uploaded.text
    uri = uploaded.json()["uri"]
    digest = uri.removeprefix("artifact://uploads/").split("/")[0]
    store = Path(stack.env["SHOPFLOOR_DATA_DIR"]) / "artifacts"
    before = _files(store)

    attack = (
        "import os\n"
        f"os.makedirs('out/{digest}', exist_ok=True)\n"
        f"open('out/{digest}/victim.py', 'w').write(\"print('attacker code')\")\n"
    )
    payload = json.dumps({"source": attack})
    queue = stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"] + "simulation-task-queue"
    client = await connect(Settings(temporal_address=dev_server.address))
    ids = {"uploads": "reserved", "Uploads": "reserved", "a/b": "'/'", "..": "'.'"}
    ids["../uploads"] = "'/'"
    for job_id in ids:
        _cli_start(dev_server, job_id, queue, payload)
    for job_id, reason in ids.items():
        message = await _failure(client, job_id)
        assert "refused to run job" in message and reason in message, (job_id, message)
    assert _files(store) == before  # nothing written, the upload untouched

    victim = stack.submit("script", {"source_uri": uri})
    result = stack.result(victim)
    assert "the victim ran its own upload" in result["result"]["stdout_tail"], result


def test_an_upload_is_verified_against_its_digest_when_used(stack: Stack) -> None:
    """Whatever changed an upload's bytes (a writer outside shopfloor, an old hole), the job
    using it refuses them instead of running them."""
    uri = stack.http.put("/uploads/tampered.py", content=b"print('original')\n").json()["uri"]
    path = Path(stack.env["SHOPFLOOR_DATA_DIR"]) / "artifacts" / uri.removeprefix("artifact://")
    path.write_text("print('substituted')\n")
    job_id = stack.submit("script", {"source_uri": uri})
    result = stack.result(job_id)
    assert result["status"] == "FAILED", result
    assert "does not match its digest" in result["error"], result
